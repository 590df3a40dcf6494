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
