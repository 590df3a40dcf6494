"""Flow-map noise and revealed masks through the command line: warp on a video and on flow
stacks, masks reaching every method, resume / chunks / temporal factor byte for byte, batch's
task body, demo, compare and stats."""
import json

import numpy as np
import pytest

from noisewarp.cli import main

from .cli_util import H, W, shifted, write_video
from ..core2d.helpers import assert_white
from ..core2d.test_flowmap import sliding_object

Z = 4.0


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A 16x16 object sliding right 0.45 px/frame over a still background, 23 frames of 32x48:
    the flow stack, its revealed masks (the strip the object uncovers) and the object per frame."""
    d = tmp_path_factory.mktemp("slide")
    inside, flows, revealed = sliding_object(H, W, 22, v=0.45, x0=6.0, y0=8)
    np.save(d / "flows.npy", np.stack(flows))
    np.save(d / "revealed.npy", np.stack(revealed))
    return d, np.stack(inside), np.stack(revealed)


def test_flowmap_on_a_video(tmp_path, capsys):
    video = str(write_video(tmp_path / "clip.mp4", frames=6))
    out = tmp_path / "o"
    assert main(["warp", video, "-o", str(out), "--method", "flowmap", "--save-flows", "-q"]) == 0, \
        capsys.readouterr().err
    noise = np.load(out / "noise.npy")
    assert noise.shape == (6, H, W, 4)
    for t in range(6):
        assert_white(noise[t], f"frame {t}")
    a, b = shifted(noise[2], noise[3], 3)       # the content moves 3 px right a frame
    assert corr(a[8:-8, 8:-8], b[8:-8, 8:-8]) > 0.5
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["method"] == "flowmap" and run["config"]["occlusions"]
    assert np.load(out / "revealed.npy").shape == (5, H, W)   # forward-backward DIS masks


@pytest.mark.parametrize("method", ["particle", "flowmap"])
def test_revealed_masks_reach_the_warper(slide, tmp_path, method):
    """--revealed masks: the uncovered strip gets fresh white noise (not the object that was
    there); without them (--no-occlusions) particle copies the object's noise into it. Flow-map
    keeps the background bit for bit and the object's noise >= 0.9 of perfect transport after
    22 frames."""
    d, inside, revealed = slide
    base = ["warp", str(d / "flows.npy"), "--method", method, "--channels", "8", "-q"]
    assert main(base + ["-o", str(tmp_path / "m"), "--revealed", str(d / "revealed.npy")]) == 0
    assert main(base + ["-o", str(tmp_path / "n"), "--no-occlusions"]) == 0
    y, y_off = np.load(tmp_path / "m" / "noise.npy"), np.load(tmp_path / "n" / "noise.npy")
    fresh = np.concatenate([y[t + 1][revealed[t]] for t in range(22)])
    before = np.concatenate([y[t][revealed[t]] for t in range(22)])
    n = fresh.size
    assert abs(fresh.mean()) < Z / np.sqrt(n) and abs(fresh.var() - 1) < Z * np.sqrt(2 / n)
    assert abs(corr(fresh, before)) < Z / np.sqrt(n)
    if method == "particle":
        copied = np.concatenate([y_off[t + 1][revealed[t]] for t in range(22)])
        assert corr(copied, np.concatenate([y_off[t][revealed[t]] for t in range(22)])) > 0.5
    touched = inside.any(0)
    far = ~np.array([np.convolve(r, np.ones(5), "same") > 0 for r in touched])   # 2 px clear of it
    if method == "flowmap":
        far = ~touched
    for t in range(1, 23):
        assert np.array_equal(y[t][far], y[0][far]), f"background changed at frame {t}"
        assert_white(y[t], f"frame {t}")
    if method == "flowmap":    # 22 × 0.45 = 9.9 px: the nearest whole shift overlaps 0.9
        obj = inside[22]
        r = corr(y[22][obj], y[0][np.roll(obj, -10, axis=1)])
        assert r / 0.9 >= 0.9, r


def test_flowmap_resume_chunks_and_temporal_factor(slide, tmp_path, monkeypatch, capsys):
    """Flow-map state (corners, anchors, kept sub-cells) through checkpoints: an interrupted run
    resumed, a --frames chunk and --temporal-factor frames all equal the whole run's bytes;
    revealed masks are composed across temporal groups."""
    from noisewarp.runner import checkpoint_interval

    d, _, revealed = slide
    flows = np.load(d / "flows.npy")[:8]
    np.save(tmp_path / "flows.npy", flows)
    np.save(tmp_path / "revealed.npy", revealed[:8])
    base = ["warp", str(tmp_path / "flows.npy"), "--method", "flowmap", "--revealed", str(tmp_path / "revealed.npy"),
            "-q", "--depth", "1", "--reanchor", "3"]
    full = tmp_path / "full"
    assert main(base + ["-o", str(full), "--save-flows"]) == 0
    whole = np.load(full / "noise.npy")
    assert whole.shape == (9, H, W, 4)
    np.testing.assert_array_equal(np.load(full / "revealed.npy"), revealed[:8])
    part = tmp_path / "part"
    monkeypatch.setenv("NOISEWARP_INTERRUPT_AFTER", "4")
    assert main(base + ["-o", str(part), "--save-flows", "--checkpoint-every", "3"]) == 130
    monkeypatch.delenv("NOISEWARP_INTERRUPT_AFTER")
    capsys.readouterr()
    assert main(base + ["-o", str(part), "--save-flows", "--checkpoint-every", "3", "--resume"]) == 0
    for name in ("noise.npy", "flows.npy", "revealed.npy"):
        assert (part / name).read_bytes() == (full / name).read_bytes(), name
    assert main(base + ["-o", str(tmp_path / "chunk"), "--frames", "4:9"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "chunk" / "noise.npy"), whole[4:])
    tf = tmp_path / "tf"
    assert main(base + ["-o", str(tf), "--temporal-factor", "4", "--save-flows"]) == 0
    np.testing.assert_array_equal(np.load(tf / "noise.npy"), whole[[0, 4, 8]])
    m = np.load(tf / "revealed.npy").astype(bool)
    assert m.shape == (2, H, W)
    assert (m[0] >= revealed[3]).all() and m[0].sum() > revealed[3].sum()   # revealed on the way counts
    # a bigger state is saved less often, never more than 5 % of the time
    assert checkpoint_interval(0.01) == 2.0 and checkpoint_interval(0.5) == pytest.approx(10.0)


def test_flowmap_options_and_bad_masks(slide, tmp_path, capsys):
    d, _, _ = slide
    flows = str(d / "flows.npy")
    assert main(["warp", flows, "-o", str(tmp_path / "a"), "--depth", "1", "-q"]) == 2
    assert "--depth is an option of --method flowmap" in capsys.readouterr().err
    assert main(["warp", flows, "-o", str(tmp_path / "b"), "--method", "flowmap", "--depth", "9", "-q"]) == 2
    assert "depth must be an integer in [0, 6]" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((3, H, W), bool))
    assert main(["warp", flows, "-o", str(tmp_path / "c"), "--revealed", str(tmp_path / "bad.npy"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "revealed masks must be [N-1, H, W] = [22, 32, 48]" in err[0]
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_forward_flows_reveal_what_nothing_lands_on(tmp_path):
    """Forward flows (Go-with-the-Flow, .flo): the inversion's holes are the revealed pixels,
    and the backward flow is the same as without them."""
    from noisewarp import io
    from noisewarp.sources import open_source

    fwd = np.zeros((2, H, W, 2), np.float32)
    fwd[:, 8:24, 10:26, 0] = 2.0             # an object moving 2 px right; the background still
    np.save(tmp_path / "fwd.npy", fwd)
    src = open_source(str(tmp_path / "fwd.npy"), flow_direction="forward", occlusions=True)
    steps = list(src.steps(1))
    expect = np.zeros((H, W), bool)
    expect[8:24, 10:12] = True               # the 2 px strip it uncovers
    for s in steps:
        np.testing.assert_array_equal(s.revealed, expect)
        np.testing.assert_array_equal(s.flow, io.backward_from_forward(fwd[0]))


def test_stats_and_compare_show_the_long_range_gain(tmp_path, capsys):
    """A (0.3, 0.7) px/frame translation for 20 frames: particle forgets where its noise was
    (coherence relative to perfect transport falls with the lag), flow-map keeps it."""
    flows = np.zeros((20, H, W, 2), np.float32)
    flows[..., 0], flows[..., 1] = -0.3, -0.7
    np.save(tmp_path / "flows.npy", flows)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "flows.npy"), "-o", str(out), "--methods", "particle,flowmap",
                 "-q"]) == 0, capsys.readouterr().err
    assert "perfect transport" in capsys.readouterr().out
    rows = {r["method"]: r for r in json.loads((out / "compare.json").read_text())["rows"]}
    assert rows["flowmap"]["white"] and rows["particle"]["white"]
    assert rows["flowmap"]["moving_1"] == pytest.approx(rows["particle"]["moving_1"], abs=0.05)
    assert rows["flowmap"]["moving_long_transport"] > 0.9 > 0.3 > rows["particle"]["moving_long_transport"]
    assert rows["flowmap"]["rank"] == 1
    from noisewarp.compare import default_methods

    assert "flowmap" in default_methods()
    from noisewarp.stats import report

    rep = report(out / "flowmap" / "noise.npy", tmp_path / "st", flows=tmp_path / "flows.npy")
    lc = rep["lag_coherence"]
    assert min(lc["moving_transport"]) > 0.9 and "of perfect transport" in rep["summary_line"]


def test_demo_and_batch_take_flowmap(tmp_path, capsys):
    from noisewarp.batch import warp_one
    from noisewarp.cli import build_parser
    from noisewarp.runner import options_from_args
    from noisewarp.sources import source_options

    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--frames", "5", "--size", "48", "--method", "flowmap", "-q"]) == 0
    masks = np.load(out / "revealed.npy")          # the background the disc uncovers
    assert masks.shape == (4, 48, 72) and masks.any()
    rep = json.loads((out / "stats" / "report.json").read_text())
    assert rep["lag_coherence"]["revealed_masks"] and all(rep["checks"].values())

    video = str(write_video(tmp_path / "a.mp4", frames=4, seed=1))
    args = build_parser().parse_args(["batch", str(tmp_path), "-o", str(tmp_path / "b"), "-q", "--method", "flowmap",
                                      "--depth", "1"])
    opts, shape = options_from_args(args)
    opts = {k: v for k, v in opts.items() if k not in ("resume", "force", "progress", "verbose")}
    r = warp_one(video, str(tmp_path / "b" / "a"), opts, source_options(args), shape)
    assert r["status"] == "done", r
    assert main(["warp", video, "-o", str(tmp_path / "single"), "--method", "flowmap", "--depth", "1", "-q"]) == 0
    assert (tmp_path / "single" / "noise.npy").read_bytes() == (tmp_path / "b" / "a" / "noise.npy").read_bytes()
    run = json.loads((tmp_path / "single" / "run.json").read_text())
    assert run["config"]["warper_options"] == {"depth": 1}
