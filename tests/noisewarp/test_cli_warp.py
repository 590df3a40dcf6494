"""`noisewarp warp` end to end on small inputs the tests write themselves."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from noisewarp import io
from noisewarp.cli import build_parser, main

from .cli_util import H, W, constant_flows, shifted, write_video
from ..core2d.helpers import assert_white


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return str(write_video(tmp_path_factory.mktemp("vid") / "clip.mp4", frames=6))


def test_warp_video_all_formats(video, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["warp", video, "-o", str(out), "--format", "npy,exr,png,mp4", "--channels", "3",
               "--save-flows", "--verbose"])
    err = capsys.readouterr().err
    assert rc == 0, err
    noise = np.load(out / "noise.npy")
    assert noise.shape == (6, H, W, 3) and noise.dtype == np.float32   # one noise frame per video frame
    for t in range(6):
        assert_white(noise[t], f"frame {t}")
    # the content moves 3 px right per frame, and so does the noise (away from the borders)
    a, b = shifted(noise[2], noise[3], 3)
    assert np.corrcoef(a[8:-8, 8:-8].ravel(), b[8:-8, 8:-8].ravel())[0, 1] > 0.5
    exrs = sorted(os.listdir(out / "exr"))
    assert exrs == [f"noise_{k:04d}.exr" for k in range(1, 7)]
    ch = io.read_exr(out / "exr" / "noise_0004.exr")
    assert sorted(ch) == ["B", "G", "R"]
    np.testing.assert_array_equal(ch["G"], noise[3][..., 1])
    assert len(os.listdir(out / "png")) == 6
    import imageio.v3 as iio

    assert iio.imread(out / "preview.mp4").shape[0] == 6
    assert np.load(out / "flows.npy").shape == (5, H, W, 2)
    run = json.loads((out / "run.json").read_text())
    assert run["frames"] == 6 and run["shape"] == [6, H, W, 3]
    assert "per frame:" in err and "flow" in err and "warp" in err   # --verbose stage times
    assert "frame" in err and "6/6" in err                            # tqdm progress on stderr
    assert not [n for n in os.listdir(out) if n.startswith(".") and n != ".noisewarp"]  # no temporaries


def test_warp_latent_float16_and_frame_range(tmp_path, capsys):
    flows = tmp_path / "flows.npy"
    np.save(flows, constant_flows(9, -1.0, -2.0, h=64, w=96))
    out = tmp_path / "lat"
    rc = main(["warp", str(flows), "-o", str(out), "--latent-factor", "8", "--channels", "16",
               "--dtype", "float16", "--frames", "2:8", "-q"])
    assert rc == 0, capsys.readouterr().err
    noise = np.load(out / "noise.npy")
    assert noise.shape == (6, 8, 12, 16) and noise.dtype == np.float16
    for t in range(6):
        assert_white(noise[t].astype(np.float32), f"latent frame {t}")
    # temporal structure survives pooling: consecutive latent frames are correlated
    r = np.corrcoef(noise[1].ravel().astype(np.float32), noise[2].ravel().astype(np.float32))[0, 1]
    assert r > 4 / np.sqrt(noise[1].size)


def test_existing_output_needs_force(video, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["warp", video, "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("noisewarp: error:") and "--force" in err[0]
    assert sorted(os.listdir(out)) == ["keep.txt"]
    assert main(["warp", video, "-o", str(out), "-q", "--force"]) == 0
    assert (out / "noise.npy").is_file() and (out / "keep.txt").read_text() == "mine"


def test_resume_after_interrupt_gives_identical_bytes(tmp_path, monkeypatch, capsys):
    flows = tmp_path / "flows.npy"
    rs = np.random.default_rng(1)
    np.save(flows, rs.uniform(-2, 2, size=(7, H, W, 2)).astype(np.float32))
    args = ["warp", str(flows), "--format", "npy,exr", "--supersample", "2", "--degrade", "0.2", "-q"]
    assert main(args + ["-o", str(tmp_path / "full")]) == 0

    part = tmp_path / "part"
    monkeypatch.setenv("NOISEWARP_INTERRUPT_AFTER", "3")
    assert main(args + ["-o", str(part)]) == 130
    assert "--resume" in capsys.readouterr().err
    assert not (part / "noise.npy").exists()          # the final file appears only when complete
    assert json.loads((part / ".noisewarp" / "progress.json").read_text())["done"] == 3
    assert main(args + ["-o", str(part)]) == 2          # not overwritten without --resume/--force
    monkeypatch.delenv("NOISEWARP_INTERRUPT_AFTER")
    assert main(args + ["-o", str(part), "--resume"]) == 0
    assert (part / "noise.npy").read_bytes() == (tmp_path / "full" / "noise.npy").read_bytes()
    for k in range(1, 9):
        name = f"noise_{k:04d}.exr"
        assert (part / "exr" / name).read_bytes() == (tmp_path / "full" / "exr" / name).read_bytes()
    # resuming a finished run is a no-op; resuming with other options is refused
    assert main(args + ["-o", str(part), "--resume"]) == 0
    assert main(args[:-1] + ["--seed", "5", "-q", "-o", str(part), "--resume"]) == 2
    assert "options differ" in capsys.readouterr().err


def test_resume_video_identical(video, tmp_path, monkeypatch):
    assert main(["warp", video, "-o", str(tmp_path / "a"), "-q"]) == 0
    monkeypatch.setenv("NOISEWARP_INTERRUPT_AFTER", "2")
    assert main(["warp", video, "-o", str(tmp_path / "b"), "-q"]) == 130
    monkeypatch.delenv("NOISEWARP_INTERRUPT_AFTER")
    assert main(["warp", video, "-o", str(tmp_path / "b"), "-q", "--resume"]) == 0
    assert (tmp_path / "a" / "noise.npy").read_bytes() == (tmp_path / "b" / "noise.npy").read_bytes()


def test_degrade_mask(tmp_path):
    flows = tmp_path / "flows.npy"
    np.save(flows, constant_flows(2, 0.0))            # zero flow: the noise would stay identical
    mask = np.zeros((H, W), np.float32)
    mask[:, W // 2:] = 1.0                            # right half: all fresh
    np.save(tmp_path / "mask.npy", mask)
    assert main(["warp", str(flows), "-o", str(tmp_path / "o"), "--degrade-mask",
                 str(tmp_path / "mask.npy"), "-q"]) == 0
    n = np.load(tmp_path / "o" / "noise.npy")
    left = np.corrcoef(n[1, :, :W // 2].ravel(), n[2, :, :W // 2].ravel())[0, 1]
    right = np.corrcoef(n[1, :, W // 2:].ravel(), n[2, :, W // 2:].ravel())[0, 1]
    assert left > 0.99 and abs(right) < 4 / np.sqrt(n[1, :, W // 2:].size)


def test_every_subcommand_dispatches_through_func():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in ("warp", "stats", "compare", "demo", "batch"):
        assert name in sub.choices
    for name, p in sub.choices.items():
        assert callable(p.get_default("func")), name
    try:
        from noisewarp import volume as n3
    except Exception:
        n3 = None
    assert ("volume" in sub.choices) == (n3 is not None and hasattr(n3, "register"))


def test_console_script_exit_status(tmp_path):
    """A real process: exit status 2, one line, no traceback."""
    exe = os.path.join(os.path.dirname(sys.executable), "noisewarp")
    cmd = [exe] if os.path.isfile(exe) else [sys.executable, "-m", "noisewarp.cli"]
    proc = subprocess.run(cmd + ["warp", str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("[Taichi]")]
    assert lines == [f"noisewarp: error: {tmp_path / 'nope.mp4'}: no such file or folder"]
    assert not (tmp_path / "o").exists()


def test_checkpoint_interval_resume(tmp_path, monkeypatch):
    flows = tmp_path / "flows.npy"
    np.save(flows, np.random.default_rng(4).uniform(-1, 1, size=(6, H, W, 2)).astype(np.float32))
    args = ["warp", str(flows), "-q", "--checkpoint-every", "2"]
    assert main(args + ["-o", str(tmp_path / "full")]) == 0
    monkeypatch.setenv("NOISEWARP_INTERRUPT_AFTER", "5")
    assert main(args + ["-o", str(tmp_path / "part")]) == 130
    # Ctrl-C saves the state after the last complete frame, whatever the checkpoint interval
    assert json.loads((tmp_path / "part" / ".noisewarp" / "progress.json").read_text())["done"] == 5
    monkeypatch.delenv("NOISEWARP_INTERRUPT_AFTER")
    assert main(args + ["-o", str(tmp_path / "part"), "--resume"]) == 0
    assert (tmp_path / "part" / "noise.npy").read_bytes() == (tmp_path / "full" / "noise.npy").read_bytes()


def test_memory_does_not_grow_with_length(tmp_path):
    """Streaming: the Python-side peak allocation is the same for 4 and 40 frames."""
    import tracemalloc

    peaks = []
    for n in (4, 40):
        p = tmp_path / f"f{n}.npy"
        np.save(p, constant_flows(n - 1, 0.5, 0.25))
        tracemalloc.start()
        assert main(["warp", str(p), "-o", str(tmp_path / f"o{n}"), "-q"]) == 0
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    frame_bytes = H * W * 4 * 4
    assert peaks[1] < peaks[0] + 10 * frame_bytes, peaks   # 36 more frames would add 36 frames


_RSS_SCRIPT = """
import sys
from noisewarp.cli import main
rc = main(["warp", sys.argv[1], "-o", sys.argv[2], "-q", "--format", "npy,mp4"])
# VmHWM: this process's own peak (ru_maxrss would carry over the forking parent's)
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(rc, hwm)
"""


def test_resident_memory_does_not_grow_with_length(tmp_path):
    """Peak RSS of a whole `warp` process (file pages included) for 3 and 48 frames of 256²×4,
    MP4 preview included (it reads noise.npy one frame at a time, never mapping the whole file)."""
    import subprocess
    import sys

    peaks = []
    for n in (3, 48):
        p = tmp_path / f"f{n}.npy"
        np.save(p, constant_flows(n - 1, 0.5, 0.25, h=256, w=256))
        res = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(p), str(tmp_path / f"o{n}")],
                             capture_output=True, text=True, timeout=300)
        rc, kb = res.stdout.split()[-2:]
        assert rc == "0", res.stderr[-1000:]
        peaks.append(int(kb) / 1024)
    # 45 more frames of output are 45 MB: a run that kept them resident would show it
    assert peaks[1] < peaks[0] + 15, peaks


def _interrupt_on_call(monkeypatch, owner, name, k):
    """Make owner.name raise KeyboardInterrupt on its k-th call (0-based), as a Ctrl-C would."""
    real = getattr(owner, name)
    calls = [0]

    def wrapped(*a, **kw):
        calls[0] += 1
        if calls[0] == k + 1:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.parametrize("where", ["npy", "exr", "png", "mp4", "npy-cthw"])
def test_interrupt_inside_a_write_then_resume(tmp_path, monkeypatch, capsys, where):
    """Ctrl-C inside the write of frame 3 (or of the preview), then --resume: every output has the
    bytes of an uninterrupted run (the warper had already stepped frame 3: it must not count as done)."""
    flows = tmp_path / "flows.npy"
    np.save(flows, np.random.default_rng(5).uniform(-2, 2, size=(6, H, W, 2)).astype(np.float32))
    args = ["warp", str(flows), "--format", "npy,exr,png,mp4", "-q", "--checkpoint-every", "1"]
    if where == "npy-cthw":
        args += ["--layout", "cthw"]
    assert main(args + ["-o", str(tmp_path / "full")]) == 0
    owner, name = {"npy": (io.NpyFrames, "__setitem__"), "exr": (io, "write_exr"), "png": (io, "write_png"),
                   "mp4": (io.Mp4Writer, "append"), "npy-cthw": (io.NpyFrames, "__setitem__")}[where]
    with monkeypatch.context() as m:
        _interrupt_on_call(m, owner, name, 3)
        assert main(args + ["-o", str(tmp_path / "part")]) == 130
    capsys.readouterr()
    assert main(args + ["-o", str(tmp_path / "part"), "--resume"]) == 0, capsys.readouterr().err
    full, part = tmp_path / "full", tmp_path / "part"
    names = ["noise.npy", "preview.mp4", "frames.png", "spacetime.png"] + [f"{d}/noise_{k:04d}.{d}" for d in ("exr", "png") for k in range(1, 8)]
    for n in names:
        assert (part / n).read_bytes() == (full / n).read_bytes(), n
