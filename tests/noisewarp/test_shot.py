"""The shot a warp reads: frame ranges and steps (chunks join exactly), frame counts (trim,
hold, the 4k+1 rule), temporal latents, and output sizes (crop, pad, stretch: flows rescaled)."""
import json
import os

import numpy as np
import pytest

from noisewarp.cli import main

from .cli_util import H, W, constant_flows, write_video
from ..core2d.helpers import assert_white


def _noise(d):
    return np.load(os.path.join(d, "noise.npy"))


@pytest.fixture(scope="module")
def random_flows(tmp_path_factory):
    p = tmp_path_factory.mktemp("flows") / "flows.npy"
    np.save(p, np.random.default_rng(3).uniform(-1.5, 1.5, size=(9, H, W, 2)).astype(np.float32))
    return str(p)


def test_chunks_join_exactly(random_flows, tmp_path, capsys):
    """Noise of frames A:B = the same frames of the whole shot, EXRs named by input frame."""
    assert main(["warp", random_flows, "-o", str(tmp_path / "all"), "-q", "--format", "npy,exr"]) == 0
    whole = _noise(tmp_path / "all")
    parts = []
    for a, b in ((0, 4), (4, 7), (7, 10)):
        out = tmp_path / f"c{a}"
        assert main(["warp", random_flows, "-o", str(out), "--frames", f"{a}:{b}", "--format", "npy,exr"]) == 0
        parts.append(_noise(out))
        assert sorted(os.listdir(out / "exr")) == [f"noise_{k + 1:04d}.exr" for k in range(a, b)]
        for k in range(a, b):
            name = f"exr/noise_{k + 1:04d}.exr"
            assert (out / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
    assert "warping input frames 0..3 first" in capsys.readouterr().err
    assert np.concatenate(parts).tobytes() == whole.tobytes()
    # --fresh-start: the chunk starts from fresh noise instead (the old behaviour, faster)
    assert main(["warp", random_flows, "-o", str(tmp_path / "fresh"), "--frames", "4:7", "--fresh-start", "-q"]) == 0
    fresh = _noise(tmp_path / "fresh")
    assert np.array_equal(fresh[0], whole[0]) and not np.array_equal(fresh[0], whole[4])


def test_frame_step_composes_flows(tmp_path):
    """0:10:2 takes every other frame: two 1 px shifts become one exact 2 px shift; a chunk with
    the same step joins the stepped shot."""
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(9, -1.0))           # backward flow -1: content moves 1 px right
    assert main(["warp", str(p), "-o", str(tmp_path / "s"), "--frames", "0:10:2", "-q"]) == 0
    n = _noise(tmp_path / "s")
    assert n.shape[0] == 5
    for t in range(4):
        assert np.array_equal(n[t + 1][:, 2:], n[t][:, :-2])      # exact integer shift
        assert_white(n[t + 1], f"stepped frame {t + 1}")
    assert main(["warp", str(p), "-o", str(tmp_path / "c"), "--frames", "4:10:2", "-q"]) == 0
    assert _noise(tmp_path / "c").tobytes() == n[2:].tobytes()
    assert main(["warp", str(p), "-o", str(tmp_path / "neg"), "--frames", "-4::2", "-q"]) == 0
    assert _noise(tmp_path / "neg").tobytes() == n[3:].tobytes()   # frames 6, 8


def test_video_frame_step(tmp_path):
    video = str(write_video(tmp_path / "v.mp4", frames=7, dx=2))
    assert main(["warp", video, "-o", str(tmp_path / "o"), "--frames", "0:7:2", "-q"]) == 0
    n = _noise(tmp_path / "o")
    assert n.shape[0] == 4
    a, b = n[1][8:-8, 8:-12], n[2][8:-8, 12:-8]        # content moved 4 px between kept frames
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.5


def test_num_frames_trim_pad_and_rule(random_flows, tmp_path, capsys):
    whole_dir = tmp_path / "all"
    assert main(["warp", random_flows, "-o", str(whole_dir), "-q"]) == 0
    whole = _noise(whole_dir)
    assert main(["warp", random_flows, "-o", str(tmp_path / "t"), "--num-frames", "6"]) == 0
    assert "using 6 of the 10 frames" in capsys.readouterr().err
    assert _noise(tmp_path / "t").tobytes() == whole[:6].tobytes()
    assert main(["warp", random_flows, "-o", str(tmp_path / "p"), "--num-frames", "13", "-q"]) == 2
    assert "--pad" in capsys.readouterr().err
    assert main(["warp", random_flows, "-o", str(tmp_path / "p"), "--num-frames", "13", "--pad", "-q"]) == 0
    padded = _noise(tmp_path / "p")
    assert padded.shape[0] == 13 and padded[:10].tobytes() == whole.tobytes()
    for t in range(10, 13):
        assert np.array_equal(padded[t], whole[9])             # held frame: zero flow, same noise
    # 10 frames do not fit 4k+1
    assert main(["warp", random_flows, "-o", str(tmp_path / "r"), "--temporal-factor", "4", "-q"]) == 2
    err = capsys.readouterr().err
    assert "4k+1" in err and "--num-frames 9" in err and "--num-frames 13 --pad" in err
    assert main(["warp", random_flows, "-o", str(tmp_path / "r"), "--temporal-factor", "4",
                 "--num-frames", "10", "-q"]) == 2
    assert "use 9 or 13" in capsys.readouterr().err


def test_temporal_factor_keeps_exact_frames(random_flows, tmp_path):
    """--temporal-factor 4 on 9 frames: latent frames = frames 0, 4, 8 of the full run, bit for
    bit (kept, never averaged), each white; flows.npy links the kept frames."""
    assert main(["warp", random_flows, "-o", str(tmp_path / "all"), "-q", "--num-frames", "9",
                 "--channels", "3"]) == 0
    whole = _noise(tmp_path / "all")
    assert main(["warp", random_flows, "-o", str(tmp_path / "t"), "-q", "--num-frames", "9", "--channels", "3",
                 "--temporal-factor", "4", "--save-flows", "--format", "npy,png"]) == 0
    lat = _noise(tmp_path / "t")
    assert lat.shape == (3, H, W, 3)
    assert lat.tobytes() == whole[[0, 4, 8]].tobytes()
    for k in range(3):
        assert_white(lat[k], f"latent frame {k}")
    assert sorted(os.listdir(tmp_path / "t" / "png")) == ["noise_0001.png", "noise_0005.png", "noise_0009.png"]
    run = json.loads((tmp_path / "t" / "run.json").read_text())
    assert run["frame_numbers"] == [0, 4, 8] and run["video_frames"] == 9
    flows = np.load(tmp_path / "t" / "flows.npy")
    assert flows.shape == (2, H, W, 2)
    # the saved flow from frame 4 to 8 is the composition of the four input flows
    from noisewarp.sources import compose_backward

    src = np.load(random_flows)
    acc = src[7]
    for k in (6, 5, 4):
        acc = compose_backward(acc, src[k])
    np.testing.assert_allclose(flows[1], acc, atol=1e-5)


@pytest.mark.parametrize("fit,size,shift", [("stretch", "24x32", (1, 1)), ("crop", "48x16", (2, 1)),
                                            ("pad", "64x32", (2, 1))])
def test_output_size_rescales_the_flow(tmp_path, fit, size, shift):
    """Content moving (2, 1) px/frame at 48x32: stretched to 24x32 it moves (1, 1) px; cropped
    or padded it still moves (2, 1) (pad borders are still: their noise stays)."""
    p = tmp_path / "f.npy"
    np.save(p, constant_flows(3, -2.0, -1.0))
    assert main(["warp", str(p), "-o", str(tmp_path / "o"), "--size", size, "--fit", fit, "-q"]) == 0
    n = _noise(tmp_path / "o")
    w, h = (int(v) for v in size.split("x"))
    assert n.shape == (4, h, w, 4)
    dx, dy = shift
    if fit == "pad":     # 48x32 centred in 64x32: still 8 px bars left and right
        assert np.array_equal(n[2][dy:, 8 + dx:56], n[1][:h - dy, 8:56 - dx])
        # (bar cells 6, 7 are also asked for by the content entering at the left edge: shared)
        assert np.array_equal(n[2][:, :6], n[1][:, :6]) and np.array_equal(n[2][:, 56:], n[1][:, 56:])
    else:
        assert np.array_equal(n[2][dy:, dx:], n[1][:h - dy, :w - dx])
    for t in range(4):
        assert_white(n[t], f"{fit} frame {t}")


def test_video_size_fit(tmp_path):
    """A video resized before the flow (DIS at the output size): the noise still follows it."""
    video = str(write_video(tmp_path / "v.mp4", frames=5, dx=4, h=64, w=96))
    assert main(["warp", video, "-o", str(tmp_path / "o"), "--size", "48x32", "--format", "npy,mp4", "-q"]) == 0
    n = _noise(tmp_path / "o")
    assert n.shape == (5, 32, 48, 4)
    a, b = n[2][6:-6, 6:-8], n[3][6:-6, 8:-6]          # 4 px at 96 wide = 2 px at 48
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.5
    import imageio.v3 as iio

    frames = iio.imread(tmp_path / "o" / "preview.mp4")
    assert frames.shape[0] == 5 and frames.shape[1:3] == (32, 48 * 2 + 4)   # video | noise


def test_bad_shot_options(random_flows, tmp_path, capsys):
    for extra, expect in ((["--size", "12by8"], "WIDTHxHEIGHT"), (["--frames", "0:8:0"], "step"),
                          (["--frames", "1:2:3:4"], "A:B"), (["--num-frames", "0"], "positive"),
                          (["--size", "50x30", "--latent-factor", "4"], "divisible by --latent-factor 4")):
        assert main(["warp", random_flows, "-o", str(tmp_path / "o"), "-q"] + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], (extra, err)
    assert not (tmp_path / "o").exists()


def test_revealed_masks_saved_and_used_by_stats(tmp_path):
    """--occlusions with --save-flows keeps the forward-backward masks (revealed.npy); stats
    finds them beside flows.npy and leaves those pixels out of the coherence measure."""
    from noisewarp.stats import analyse

    video = str(write_video(tmp_path / "v.mp4", frames=5, dx=3))
    out = tmp_path / "o"
    assert main(["warp", video, "-o", str(out), "--occlusions", "--save-flows", "-q"]) == 0
    m = np.load(out / "revealed.npy")
    assert m.shape == (4, H, W) and m.dtype == np.uint8
    assert m[:, 6:-6, 6:-6].mean() < 0.05                # a plain translation hides and reveals nothing
    rep = analyse(out / "noise.npy", out / "flows.npy", max_lag=2)
    assert rep["revealed"] and rep["lag_coherence"]["revealed_masks"]
