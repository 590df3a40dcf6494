"""Model-ready noise: --model presets, --layout, and the recipe from noise.npy to a pipeline's
`latents=` (NumPy only: the recipe's axis logic, checked against the pipelines' shapes)."""
import json

import numpy as np
import pytest

from noisewarp import io, models
from noisewarp.cli import build_parser, main
from noisewarp.runner import options_from_args

from .cli_util import H, W


def _opts(*argv):
    return options_from_args(build_parser().parse_args(["warp", "in.mp4", "-o", "out", *argv]))


# what each pipeline's prepare_latents builds for its default size and frame count (docs/cli.md)
PIPELINE_LATENTS = {"cogvideox": (1, 13, 16, 60, 90), "wan": (1, 16, 21, 60, 104),
                    "hunyuan": (1, 16, 33, 90, 160), "gwtf": (1, 13, 16, 60, 90)}


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_presets_give_the_pipeline_shapes(name):
    opts, shape = _opts("--model", name)
    m = models.MODELS[name]
    assert opts["channels"] == 16 and opts["latent_factor"] == 8 and opts["layout"] == m["layout"]
    w, h = shape["size"]
    n = shape["num_frames"]
    assert (n - 1) % 4 == 0 and shape["rule"] == ((4, 1) if opts["temporal_factor"] == 4 else None)
    T = models.latent_frames(n, opts["temporal_factor"])
    file_shape = io.layout_shape(opts["layout"], T, h // 8, w // 8, 16)
    lat = models.latents_for(np.zeros(file_shape, np.float32), model=name)
    assert lat.shape == PIPELINE_LATENTS[name] and lat.dtype == np.float32


def test_user_options_override_a_preset():
    opts, shape = _opts("--model", "cogvideox", "--size", "64x48", "--num-frames", "9", "--layout", "thwc",
                        "--dtype", "float16")
    assert shape["size"] == "64x48" and shape["num_frames"] == 9
    assert opts["layout"] == "thwc" and opts["dtype"] == "float16" and opts["channels"] == 16
    opts, shape = _opts()
    assert (opts["channels"], opts["latent_factor"], opts["temporal_factor"], opts["layout"]) == (4, 1, 1, "thwc")
    assert shape["size"] is None and shape["num_frames"] is None


def test_latent_frame_rule():
    assert [models.latent_frames(n, 4) for n in (1, 5, 49, 81, 129)] == [1, 2, 13, 21, 33]


@pytest.mark.parametrize("layout", io.LAYOUTS)
def test_latents_for_maps_every_value(layout):
    """latents[0, ...] holds noise frame t, channel c, pixel (i, j) where the pipeline expects it."""
    T, h, w, C = 13, 6, 10, 16
    thwc = np.arange(T * h * w * C, dtype=np.float32).reshape(T, h, w, C)
    stored = {"thwc": thwc, "tchw": thwc.transpose(0, 3, 1, 2), "cthw": thwc.transpose(3, 0, 1, 2)}[layout]
    assert stored.shape == io.layout_shape(layout, T, h, w, C)
    np.testing.assert_array_equal(io.to_thwc(stored, layout), thwc)
    cog = models.latents_for(stored, model="cogvideox", layout=layout)     # [B, T, C, H, W]
    wan = models.latents_for(stored, model="wan", layout=layout)           # [B, C, T, H, W]
    rs = np.random.default_rng(0)
    for _ in range(20):
        t, i, j, c = rs.integers(T), rs.integers(h), rs.integers(w), rs.integers(C)
        assert cog[0, t, c, i, j] == thwc[t, i, j, c] == wan[0, c, t, i, j]
    gw = models.latents_for(np.repeat(thwc, 4, axis=0)[:49], model="gwtf", layout="thwc")
    assert gw.shape == (1, 13, C, h, w)      # Go-with-the-Flow keeps 49 frames; takes 0, 4, ..., 48
    np.testing.assert_array_equal(gw[0, 1], np.repeat(thwc, 4, axis=0)[4].transpose(2, 0, 1))


def test_latents_for_refuses_the_wrong_noise():
    with pytest.raises(ValueError, match="16 latent channels"):
        models.latents_for(np.zeros((13, 6, 10, 4), np.float32), model="cogvideox", layout="thwc")
    with pytest.raises(ValueError, match="which model"):
        models.latents_for(np.zeros((13, 6, 10, 16), np.float32))
    with pytest.raises(ValueError, match="unknown --model"):
        models.latents_for(np.zeros((13, 6, 10, 16), np.float32), model="sora")


@pytest.mark.parametrize("layout", ["tchw", "cthw"])
def test_layout_files_hold_the_same_noise(tmp_path, layout):
    p = tmp_path / "f.npy"
    np.save(p, np.random.default_rng(1).uniform(-1, 1, size=(4, H, W, 2)).astype(np.float32))
    assert main(["warp", str(p), "-o", str(tmp_path / "a"), "-q", "--channels", "3"]) == 0
    assert main(["warp", str(p), "-o", str(tmp_path / "b"), "-q", "--channels", "3", "--layout", layout]) == 0
    a, b = np.load(tmp_path / "a" / "noise.npy"), np.load(tmp_path / "b" / "noise.npy")
    assert b.shape == io.layout_shape(layout, 5, H, W, 3)
    np.testing.assert_array_equal(io.to_thwc(b, layout), a)
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["layout"] == layout and run["file_shape"] == list(b.shape)
    with io.NoiseFrames(tmp_path / "b" / "noise.npy", layout=layout) as f:   # frame reader, any layout
        np.testing.assert_array_equal(f[2], a[2])


def test_model_run_end_to_end(tmp_path, capsys):
    """--model wan at a test size: cthw latents [C, T, H/8, W/8], the 4k+1 rule, and latents_for
    reading run.json (channels overridden to 4 here to keep the test quick)."""
    p = tmp_path / "f.npy"
    np.save(p, np.full((11, 48, 64, 2), -1.5, np.float32))
    out = tmp_path / "wan"
    assert main(["warp", str(p), "-o", str(out), "--model", "wan", "--size", "64x32", "--num-frames", "9",
                 "--channels", "4"]) == 0
    err = capsys.readouterr().err
    assert "using 9 of the 12 frames" in err and "crop 64x48 -> 64x32" in err and "[C,T,H,W]" in err
    n = np.load(out / "noise.npy")
    assert n.shape == (4, 3, 4, 8)
    with pytest.raises(ValueError, match="16 latent channels"):
        models.latents_for(out / "noise.npy")            # model and layout come from run.json
    # a clip too short for the model's 81 frames, and a size the model cannot take
    assert main(["warp", str(p), "-o", str(tmp_path / "x"), "--model", "wan", "--size", "64x32", "-q"]) == 2
    err = capsys.readouterr().err
    assert "12 frames, 81 needed" in err and "--pad" in err
    assert main(["warp", str(p), "-o", str(tmp_path / "x"), "--model", "wan", "--size", "72x40",
                 "--num-frames", "9", "-q"]) == 2
    assert "divisible by 16" in capsys.readouterr().err
