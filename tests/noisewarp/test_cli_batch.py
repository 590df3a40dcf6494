"""`noisewarp batch` on a local Ray with two small videos: outputs, summary, resumability."""
import json

import numpy as np
import pytest

from noisewarp.cli import main

from .cli_util import H, W, write_video

ray = pytest.importorskip("ray", reason="batch needs Ray (pip install 'noisewarp[ray]')")


def test_batch_two_videos_then_rerun(tmp_path, capsys):
    vids = tmp_path / "videos"
    vids.mkdir()
    write_video(vids / "a.mp4", frames=5, seed=1)
    write_video(vids / "b.mp4", frames=4, seed=2)
    (vids / "readme.txt").write_text("not a video")
    out = tmp_path / "out"
    argv = ["batch", str(vids), "-o", str(out), "--num-cpus", "2", "--channels", "2", "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos"] == 2 and summary["failed"] == 0
    assert {r["video"]: r["status"] for r in summary["results"]} == {"a.mp4": "done", "b.mp4": "done"}
    a = np.load(out / "a" / "noise.npy")
    b = np.load(out / "b" / "noise.npy")
    assert a.shape == (5, H, W, 2) and b.shape == (4, H, W, 2)
    # same bytes as the single-video command
    assert main(["warp", str(vids / "a.mp4"), "-o", str(tmp_path / "single"), "--channels", "2", "-q"]) == 0
    assert (tmp_path / "single" / "noise.npy").read_bytes() == (out / "a" / "noise.npy").read_bytes()
    capsys.readouterr()
    # a rerun finds the work done; a broken video is reported, not fatal for the others
    (vids / "c.mp4").write_bytes(b"\0" * 100)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "c.mp4" in err and "cannot decode" in err
    summary = json.loads((out / "summary.json").read_text())
    status = {r["video"]: r["status"] for r in summary["results"]}
    assert status == {"a.mp4": "skipped (done)", "b.mp4": "skipped (done)", "c.mp4": "failed"}
    assert not (out / "c").exists()
