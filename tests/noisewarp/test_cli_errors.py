"""Bad input: one clear line on stderr naming the file and the problem, exit status 2,
no traceback, no output folder left behind."""
import os

import numpy as np
import pytest

from noisewarp import io
from noisewarp.cli import main

from .cli_util import H, W, constant_flows, write_vector_exrs


def run_bad(argv, capsys, expect):
    """Run, check exit 2 + a single 'noisewarp: error:' line matching every string in expect."""
    rc = main(argv)
    cap = capsys.readouterr()
    lines = [l for l in cap.err.splitlines() if l.strip()]
    assert rc == 2, cap.err
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("noisewarp: error: "), lines[0]
    assert "Traceback" not in cap.err
    for e in expect:
        assert e in lines[0], (e, lines[0])
    return lines[0]


def test_missing_file(tmp_path, capsys):
    out = tmp_path / "out"
    run_bad(["warp", str(tmp_path / "nope.mp4"), "-o", str(out)], capsys, ["nope.mp4", "no such file"])
    assert not out.exists()


def test_unreadable_video(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(4096))
    out = tmp_path / "out"
    run_bad(["warp", str(bad), "-o", str(out)], capsys, ["broken.mp4", "cannot decode"])
    assert not out.exists()


def test_unsupported_input_type(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    run_bad(["warp", str(f), "-o", str(tmp_path / "o")], capsys, ["notes.txt", "unsupported input"])


def test_nan_flows_midway_leave_nothing(tmp_path, capsys):
    flows = constant_flows(5, 1.0)
    flows[3, 4, 7, 1] = np.nan
    p = tmp_path / "flows.npy"
    np.save(p, flows)
    out = tmp_path / "out"
    run_bad(["warp", str(p), "-o", str(out), "--format", "npy,exr,png", "-q"], capsys,
            ["flows.npy", "frame 3", "NaN/inf"])
    assert not out.exists()


def test_inf_in_flo(tmp_path, capsys):
    d = tmp_path / "flo"
    d.mkdir()
    f = constant_flows(2, 1.0)
    f[1, 0, 0, 0] = np.inf
    for k in range(2):
        io.write_flo(d / f"f{k}.flo", f[k])
    run_bad(["warp", str(d), "-o", str(tmp_path / "o"), "-q"], capsys, ["f1.flo", "NaN/inf"])
    assert not (tmp_path / "o").exists()


def test_flo_frames_of_different_sizes(tmp_path, capsys):
    d = tmp_path / "flo"
    d.mkdir()
    io.write_flo(d / "a.flo", np.zeros((H, W, 2), np.float32))
    io.write_flo(d / "b.flo", np.zeros((H + 2, W, 2), np.float32))
    run_bad(["warp", str(d), "-o", str(tmp_path / "o"), "-q"], capsys, ["b.flo", "different sizes"])
    assert not (tmp_path / "o").exists()


def test_exr_frames_of_different_sizes(tmp_path, capsys):
    d = write_vector_exrs(tmp_path / "exr", 2, 1.0, 0.0)
    write_vector_exrs(tmp_path / "other", 1, 1.0, 0.0, h=H + 4)
    os.replace(tmp_path / "other" / "frame_0001.exr", d / "frame_0003.exr")
    run_bad(["warp", str(d), "-o", str(tmp_path / "o"), "-q"], capsys, ["frame_0003.exr", "different sizes"])
    assert not (tmp_path / "o").exists()


def test_exr_without_vector_pass(tmp_path, capsys):
    d = tmp_path / "exr"
    d.mkdir()
    for k in range(2):
        io.write_exr(d / f"f{k}.exr", np.ones((H, W, 3), np.float32),
                     names=["ViewLayer.Combined.R", "ViewLayer.Combined.G", "ViewLayer.Combined.B"])
    run_bad(["warp", str(d), "-o", str(tmp_path / "o")], capsys, ["f0.exr", "no Vector pass"])


def test_all_zero_vector_pass(tmp_path, capsys):
    d = write_vector_exrs(tmp_path / "exr", 3, 0.0, 0.0)
    run_bad(["warp", str(d), "-o", str(tmp_path / "o"), "-q"], capsys,
            ["frame_0001.exr", "all zeros", "motion blur"])
    assert not (tmp_path / "o").exists()


def test_not_an_exr(tmp_path, capsys):
    d = tmp_path / "exr"
    d.mkdir()
    (d / "a.exr").write_bytes(b"garbage" * 10)
    run_bad(["warp", str(d), "-o", str(tmp_path / "o")], capsys, ["a.exr", "not a readable OpenEXR"])


def test_ambiguous_npy_layout(tmp_path, capsys):
    p = tmp_path / "f.npy"
    np.save(p, np.zeros((3, 2, 6, 2), np.float32))
    run_bad(["warp", str(p), "-o", str(tmp_path / "o")], capsys, ["f.npy", "--flow-layout"])


def test_latent_factor_not_dividing(tmp_path, capsys):
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(2, 0.0))
    run_bad(["warp", str(p), "-o", str(tmp_path / "o"), "--latent-factor", "5"], capsys,
            ["f.npy", "not divisible by --latent-factor 5"])
    assert not (tmp_path / "o").exists()


def test_bad_format_and_mask(tmp_path, capsys):
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(2, 0.0))
    run_bad(["warp", str(p), "-o", str(tmp_path / "o"), "--format", "npy,gif"], capsys, ["gif"])
    np.save(tmp_path / "m.npy", np.full((5, 5), 0.5, np.float32))
    run_bad(["warp", str(p), "-o", str(tmp_path / "o"), "--degrade-mask", str(tmp_path / "m.npy")],
            capsys, ["m.npy", "expected"])
    assert not (tmp_path / "o").exists()


def test_stats_bad_inputs(tmp_path, capsys):
    run_bad(["stats", str(tmp_path / "none.npy"), "-o", str(tmp_path / "r")], capsys, ["none.npy"])
    np.save(tmp_path / "flat.npy", np.zeros((4, 4), np.float32))
    run_bad(["stats", str(tmp_path / "flat.npy"), "-o", str(tmp_path / "r")], capsys, ["flat.npy", "[T, H, W, C]"])
    np.save(tmp_path / "n.npy", np.zeros((3, 4, 4, 2), np.float32))
    np.save(tmp_path / "fl.npy", np.zeros((5, 4, 4, 2), np.float32))
    run_bad(["stats", str(tmp_path / "n.npy"), "--flows", str(tmp_path / "fl.npy"), "-o", str(tmp_path / "r")],
            capsys, ["fl.npy", "T-1"])
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("cmd", ["compare", "batch"])
def test_other_commands_missing_input(tmp_path, capsys, cmd):
    run_bad([cmd, str(tmp_path / "missing"), "-o", str(tmp_path / "o")], capsys, ["missing"])
    assert not (tmp_path / "o").exists()


def test_output_is_a_file(tmp_path, capsys):
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(2, 0.0))
    (tmp_path / "out").write_text("a file")
    run_bad(["warp", str(p), "-o", str(tmp_path / "out")], capsys, ["out", "not a folder"])
    assert (tmp_path / "out").read_text() == "a file"


def test_empty_output_is_refused(tmp_path, capsys, monkeypatch):
    """`-o ''` must not write into the current folder (nor overwrite a noise.npy there)."""
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(2, 0.0))
    here = tmp_path / "here"
    here.mkdir()
    (here / "noise.npy").write_bytes(b"precious")
    monkeypatch.chdir(here)
    for cmd in (["warp", str(p)], ["stats", str(p)], ["compare", str(p)], ["demo"]):
        run_bad(cmd + ["-o", ""], capsys, ["-o", "empty"])
    assert sorted(os.listdir(here)) == ["noise.npy"] and (here / "noise.npy").read_bytes() == b"precious"


def test_text_file_named_npy(tmp_path, capsys):
    f = tmp_path / "flows.npy"
    f.write_text("0 1 2\n3 4 5\n")
    for argv in (["warp", str(f), "-o", str(tmp_path / "o")], ["stats", str(f), "-o", str(tmp_path / "r")]):
        line = run_bad(argv, capsys, ["flows.npy", "not a NumPy .npy file"])
        assert "pickle" not in line
    p = tmp_path / "g.npy"
    np.save(p, constant_flows(2, 0.0))
    run_bad(["warp", str(p), "-o", str(tmp_path / "o"), "--degrade-mask", str(f)], capsys, ["not a NumPy .npy"])


def test_bad_stack_shape_is_quoted_whole(tmp_path, capsys):
    p = tmp_path / "f.npy"
    np.save(p, np.zeros((5, 64, 96, 3), np.float32))
    run_bad(["warp", str(p), "-o", str(tmp_path / "o")], capsys, ["(5, 64, 96, 3)"])
    run_bad(["warp", str(p), "-o", str(tmp_path / "o"), "--flow-layout", "nhwc"], capsys, ["(5, 64, 96, 3)"])


def test_broken_video_gives_only_our_line(tmp_path):
    """FFmpeg's own complaint ('moov atom not found') must not precede our one line."""
    import subprocess
    import sys

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(4000))  # an MP4 without its moov
    proc = subprocess.run([sys.executable, "-m", "noisewarp.cli", "warp", str(bad), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("noisewarp: error:") and "cannot decode" in lines[0]


def _unwritable_folder(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    if os.access(d, os.W_OK):               # root ignores permissions: use a folder the kernel refuses
        d = "/sys/noisewarp_test"
        if not os.path.isdir("/sys"):
            pytest.skip("no unwritable folder available")
    return os.path.join(d, "out")


def test_unwritable_output_folder(tmp_path, capsys):
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(2, 0.0))
    out = _unwritable_folder(tmp_path)
    line = run_bad(["warp", str(p), "-o", out, "-q"], capsys, ["noisewarp_test" if "sys" in out else "ro",
                                                            "cannot write"])
    assert "[Errno" not in line


def test_demo_interrupt_does_not_suggest_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NOISEWARP_INTERRUPT_AFTER", "2")
    assert main(["demo", "-o", str(tmp_path / "d"), "--frames", "4", "--size", "32", "-q"]) == 130
    err = capsys.readouterr().err
    assert "--resume" not in err and "--force" in err


def test_warp_interrupt_suggests_resume_with_counts(tmp_path, capsys, monkeypatch):
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(4, 1.0))
    monkeypatch.setenv("NOISEWARP_INTERRUPT_AFTER", "2")
    assert main(["warp", str(p), "-o", str(tmp_path / "o"), "-q"]) == 130
    err = capsys.readouterr().err
    assert "after 2 of 5 frames" in err and "--resume" in err


def test_negative_frame_range_is_a_value(tmp_path, capsys):
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(9, 1.0))
    assert main(["warp", str(p), "-o", str(tmp_path / "o"), "--frames", "-4:", "-q"]) == 0, capsys.readouterr().err
    assert np.load(tmp_path / "o" / "noise.npy").shape[0] == 4


def test_nchw_stack_without_direction_warns(tmp_path, capsys):
    p = tmp_path / "raft.npy"
    np.save(p, np.moveaxis(constant_flows(2, 1.0), -1, 1))   # [N, 2, H, W], as RAFT writes
    assert main(["warp", str(p), "-o", str(tmp_path / "a"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "--flow-direction forward" in err
    assert main(["warp", str(p), "-o", str(tmp_path / "b"), "-q", "--flow-direction", "forward"]) == 0
    assert "warning" not in capsys.readouterr().err
    np.save(tmp_path / "plain.npy", constant_flows(2, 1.0))   # [N, H, W, 2]: the documented default
    assert main(["warp", str(tmp_path / "plain.npy"), "-o", str(tmp_path / "c"), "-q"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_negative_checkpoint_interval(tmp_path, capsys):
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(2, 1.0))
    run_bad(["warp", str(p), "-o", str(tmp_path / "o"), "--checkpoint-every", "-1"], capsys, ["--checkpoint-every"])
    assert not (tmp_path / "o").exists()


def test_help_texts():
    """Every option of warp and batch explains itself, batch takes warp's job options, and the
    checkpoint help states the current rule."""
    from noisewarp.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    opts = {}
    for name in ("warp", "batch", "stats", "compare", "demo"):
        acts = [a for a in sub.choices[name]._actions if a.dest != "help"]
        missing = [a.dest for a in acts if not a.help]
        assert not missing, (name, missing)
        opts[name] = {s for a in acts for s in a.option_strings}
    job = opts["warp"] - {"--resume", "-v", "--verbose", "--revealed"}   # masks belong to one input
    assert job <= opts["batch"], job - opts["batch"]
    text = sub.choices["warp"].format_help()
    assert "every 2 s" in text and "16 MB" not in text


def test_runaway_settings_are_refused_with_their_cost(tmp_path, capsys):
    """--supersample 64 on 176x144 needs ~20 GB: refused before anything is allocated, with the cost."""
    p = tmp_path / "f.npy"
    np.save(p, np.zeros((2, 144, 176, 2), np.float32))
    out = tmp_path / "o"
    line = run_bad(["warp", str(p), "-o", str(out), "--supersample", "64", "--max-memory", "4G"], capsys,
                   ["f.npy", "GB of memory", "s per frame", "checkpoints of 1.7 GB", "--max-memory is 4.0 GB",
                    "--supersample"])
    assert not out.exists()
    run_bad(["warp", str(p), "-o", str(out), "--supersample", "512"], capsys, ["available"])   # ~1.5 TB
    assert main(["warp", str(p), "-o", str(out), "-q", "--max-memory", "lots"]) == 2
    assert "--max-memory" in capsys.readouterr().err


def test_estimate_figures_and_verbose_line(tmp_path, capsys):
    from noisewarp.runner import estimate

    c = estimate(144, 176, 4, "particle", 64, steps=10, out_frames=11)
    assert 15e9 < c["memory"] < 30e9 and abs(c["state"] - 1.66e9) < 0.02e9   # what the issue measured
    assert 30 < c["seconds_per_step"] < 300
    small = estimate(144, 176, 4, "particle", 1, steps=10, out_frames=11)
    assert small["memory"] < 0.5e9 and small["seconds_per_step"] < 0.1
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(2, 0.0))
    assert main(["warp", str(p), "-o", str(tmp_path / "o"), "--verbose"]) == 0
    assert "noisewarp: estimate: about" in capsys.readouterr().err
