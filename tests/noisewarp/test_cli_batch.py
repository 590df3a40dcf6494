"""`noisewarp batch` on a local Ray with two small videos: outputs, summary, resumability."""
import json

import numpy as np
import pytest

from noisewarp.cli import main

from .cli_util import H, W, write_video


def test_batch_two_videos_then_rerun(tmp_path, capsys):
    pytest.importorskip("ray", reason="batch needs Ray (pip install 'noisewarp[ray]')")
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


def test_rerun_with_changed_options(tmp_path):
    """A video's finished outputs count as done only for the same options; --force redoes them.
    (The task body, without Ray: batch runs exactly this per video.)"""
    from noisewarp.batch import warp_one
    from noisewarp.cli import build_parser
    from noisewarp.runner import options_from_args
    from noisewarp.sources import source_options

    video = str(write_video(tmp_path / "a.mp4", frames=4, seed=1))
    out = str(tmp_path / "out" / "a")

    def run(*extra, force=False):
        args = build_parser().parse_args(["batch", str(tmp_path), "-o", str(tmp_path / "out"), "-q", *extra])
        opts, shape = options_from_args(args)
        opts = {k: v for k, v in opts.items() if k not in ("resume", "force", "progress", "verbose")}
        return warp_one(video, out, opts, source_options(args), shape, force=force)

    assert run("--channels", "2")["status"] == "done"
    assert run("--channels", "2")["status"] == "skipped (done)"
    before = (tmp_path / "out" / "a" / "noise.npy").read_bytes()
    r = run("--channels", "3", "--latent-factor", "4", "--save-flows")
    assert r["status"] == "failed" and "options differ" in r["error"] and "channels" in r["error"]
    assert (tmp_path / "out" / "a" / "noise.npy").read_bytes() == before        # untouched
    r = run("--channels", "3", "--latent-factor", "4", "--save-flows", force=True)
    assert r["status"] == "redone (options changed)" and r["shape"] == [4, H // 4, W // 4, 3]
    assert np.load(tmp_path / "out" / "a" / "noise.npy").shape == (4, H // 4, W // 4, 3)
    assert (tmp_path / "out" / "a" / "flows.npy").is_file()


def test_table_columns_line_up():
    """Statuses longer than the header ('redone (options changed)') keep the columns aligned."""
    from noisewarp.batch import table
    lines = table([{"video": "a.mp4", "status": "redone (options changed)", "frames": 12, "seconds": 10.4},
                   {"video": "long_name.mp4", "status": "skipped (done)", "frames": 7, "seconds": 0.1},
                   {"video": "b.mp4", "status": "failed", "frames": 0, "seconds": 0.0, "error": "broken"}])
    end = lines[0].index("frames") + len("frames")
    for line in lines[1:]:
        assert line[:end].split()[-1].isdigit() and line[end] == " ", lines
    assert lines[1].split("  ")[0].strip() == "a.mp4" and lines[3].endswith("  broken")
