"""`noisewarp stats`: the report's numbers and plots on inputs whose answers are known."""
import json

import numpy as np
import pytest

from noisewarp.cli import main
from noisewarp.stats import analyse

T, H, W, C = 5, 32, 48, 4
PLOTS = {"histogram.png", "autocorrelation.png", "per_frame.png", "coherence.png",
         "lag_coherence.png", "overview.png"}


def shifting_sequence(dx=2, seed=0):
    """Frame t+1 = frame t moved dx px right, fresh noise in the uncovered strip; its backward flows."""
    rs = np.random.default_rng(seed)
    frames = [rs.standard_normal((H, W, C)).astype(np.float32)]
    for _ in range(T - 1):
        nxt = rs.standard_normal((H, W, C)).astype(np.float32)
        nxt[:, dx:] = frames[-1][:, :-dx]
        frames.append(nxt)
    flows = np.zeros((T - 1, H, W, 2), np.float32)
    flows[..., 0] = -dx
    return np.stack(frames), flows


def test_report_on_white_noise(tmp_path, capsys):
    noise = np.random.default_rng(1).standard_normal((T, H, W, C)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    assert main(["stats", str(tmp_path / "noise.npy"), "-o", str(tmp_path / "rep")]) == 0
    assert "all checks pass" in capsys.readouterr().err
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["shape"] == [T, H, W, C]
    assert all(rep["checks"].values()), rep["checks"]
    n = H * W * C
    assert abs(rep["overall"]["mean"] - noise.mean()) < 1e-6
    assert abs(rep["overall"]["std"] - noise.std()) < 1e-5
    for key in ("mean", "std", "ks_stat", "ks_p"):
        assert len(rep["per_frame"][key]) == T
    np.testing.assert_allclose(rep["per_frame"]["mean"], noise.reshape(T, -1).mean(1), atol=1e-6)
    assert max(abs(m) for m in rep["per_frame"]["mean"]) < 4 / np.sqrt(n)
    ac = np.array(rep["spatial"]["autocorr_map"])
    r = ac.shape[0] // 2
    assert ac[r, r] == 1.0 and abs(rep["spatial"]["lag1_x"]) < 4 / np.sqrt(H * W * C)
    # independent frames: no coherence in place, at any lag
    assert abs(rep["temporal"]["mean"]) < 4 / np.sqrt(n)
    assert rep["lag_coherence"]["lags"] == list(range(1, T))
    assert set(rep["plots"].values()) == PLOTS
    for name in PLOTS:
        assert (tmp_path / "rep" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_coherence_follows_the_flows(tmp_path):
    noise, flows = shifting_sequence()
    np.save(tmp_path / "noise.npy", noise)
    np.save(tmp_path / "flows.npy", flows)
    along = analyse(tmp_path / "noise.npy", tmp_path / "flows.npy")
    assert along["temporal"]["along_flow"]
    assert min(along["temporal"]["coherence"]) > 0.999          # exact copies along the motion
    assert min(along["lag_coherence"]["corr"]) > 0.999          # composed maps stay exact
    in_place = analyse(tmp_path / "noise.npy")
    assert abs(in_place["temporal"]["mean"]) < 4 / np.sqrt(H * W * C)


def test_flows_at_video_size_for_latent_noise(tmp_path):
    noise, flows = shifting_sequence(dx=1)
    np.save(tmp_path / "noise.npy", noise)
    big = np.repeat(np.repeat(flows, 4, axis=1), 4, axis=2) * 4   # the same motion at 4× the size
    np.save(tmp_path / "flows.npy", big)
    rep = analyse(tmp_path / "noise.npy", tmp_path / "flows.npy")
    assert min(rep["temporal"]["coherence"]) > 0.999


def test_correlated_noise_fails_whiteness(tmp_path):
    import cv2

    rs = np.random.default_rng(2)
    blurred = np.stack([cv2.GaussianBlur(rs.standard_normal((H, W, C)).astype(np.float32), (0, 0), 1.0)
                        for _ in range(T)])
    blurred /= blurred.std()
    np.save(tmp_path / "noise.npy", blurred)
    rep = analyse(tmp_path / "noise.npy")
    assert not rep["checks"]["spatially_white"]
    assert rep["spatial"]["lag1_x"] > 0.3
    assert "FAILED" in rep["summary_line"]


def test_existing_report_needs_force(tmp_path, capsys):
    np.save(tmp_path / "noise.npy", np.random.default_rng(3).standard_normal((2, 8, 8, 1)).astype(np.float32))
    args = ["stats", str(tmp_path / "noise.npy"), "-o", str(tmp_path / "rep")]
    assert main(args) == 0
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


def half_moving(kind, T=6, h=40, w=64, C=4, seed=5):
    """Left half still, right half moving 2 px right per frame; `kind` of noise on top:
    'fixed' (same every frame), 'fresh' (new every frame), 'carried' (moves with the content)."""
    rs = np.random.default_rng(seed)
    frames = [rs.standard_normal((h, w, C)).astype(np.float32)]
    for _ in range(T - 1):
        prev = frames[-1]
        if kind == "fixed":
            nxt = prev.copy()
        elif kind == "fresh":
            nxt = rs.standard_normal((h, w, C)).astype(np.float32)
        else:
            nxt = rs.standard_normal((h, w, C)).astype(np.float32)
            nxt[:, :w // 2] = prev[:, :w // 2]
            nxt[:, w // 2 + 2:] = prev[:, w // 2:-2]
        frames.append(nxt)
    flows = np.zeros((T - 1, h, w, 2), np.float32)
    flows[:, :, w // 2:, 0] = -2.0
    return np.stack(frames), flows


@pytest.mark.parametrize("kind", ["fixed", "fresh", "carried"])
def test_coherence_moving_and_static(tmp_path, kind):
    """Fixed noise: 1 on static content, ≈ 0 on moving content (it stays while the content moves);
    fresh noise ≈ 0 everywhere; noise carried by the motion: 1 on both, at every lag."""
    noise, flows = half_moving(kind)
    np.save(tmp_path / "noise.npy", noise)
    np.save(tmp_path / "flows.npy", flows)
    revealed = np.zeros(flows.shape[:3], np.uint8)
    revealed[:, :, 32:34] = 1                     # the strip the moving half uncovers (fresh noise)
    np.save(tmp_path / "revealed.npy", revealed)
    rep = analyse(tmp_path / "noise.npy", tmp_path / "flows.npy", max_lag=4)
    lc, tm = rep["lag_coherence"], rep["temporal"]
    assert lc["lags"] == [1, 2, 3, 4]
    for k in range(4):
        tol = 4.5 / np.sqrt(lc["n_moving"][k])
        moving, static = lc["moving"][k], lc["static"][k]
        if kind == "fixed":
            assert abs(moving) < tol and static > 0.999
        elif kind == "fresh":
            assert abs(moving) < tol and abs(static) < 4.5 / np.sqrt(lc["n_static"][k])
        else:
            assert moving > 0.999 and static > 0.999
    expect = {"fixed": (0, 1), "fresh": (0, 0), "carried": (1, 1)}[kind]
    assert abs(tm["mean_moving"] - expect[0]) < 0.1 and abs(tm["mean_static"] - expect[1]) < 0.1
    assert "moving" in rep["summary_line"] and "static" in rep["summary_line"]


def test_revealed_pixels_leave_the_measure(tmp_path):
    noise, flows = half_moving("carried")
    np.save(tmp_path / "noise.npy", noise)
    np.save(tmp_path / "flows.npy", flows)
    full = analyse(tmp_path / "noise.npy", tmp_path / "flows.npy", max_lag=2)
    masks = np.zeros(flows.shape[:3], np.uint8)
    masks[:, :, 40:48] = 1                         # 8 columns revealed in every frame
    np.save(tmp_path / "revealed.npy", masks)      # found beside flows.npy
    part = analyse(tmp_path / "noise.npy", tmp_path / "flows.npy", max_lag=2)
    assert part["revealed"] and part["lag_coherence"]["revealed_masks"]
    n_full, n_part = full["lag_coherence"]["n_moving"][0], part["lag_coherence"]["n_moving"][0]
    assert n_part < n_full - 8 * 40 * 4 * 0.9
    np.save(tmp_path / "bad.npy", masks[:, :10])
    with pytest.raises(ValueError, match="revealed masks must be"):
        analyse(tmp_path / "noise.npy", tmp_path / "flows.npy", revealed_path=tmp_path / "bad.npy")


def test_thresholds_scale_with_the_sample(tmp_path):
    """A 22x18x16 latent with a lag-1 correlation of ~0.1 fails (the old fixed tolerance, 0.3 for
    this size, let it pass); per-frame KS p-values are judged at ALPHA / T."""
    from noisewarp.stats import ALPHA

    rs = np.random.default_rng(6)
    x = rs.standard_normal((4, 18, 23, 16)).astype(np.float32)
    mild = (x[:, :, :-1] + 0.1 * x[:, :, 1:]) / np.sqrt(1.01)       # corr 0.1 with the right neighbour
    np.save(tmp_path / "mild.npy", mild)
    rep = analyse(tmp_path / "mild.npy")
    assert 0.05 < rep["spatial"]["lag1_x"] < 0.15
    assert not rep["checks"]["spatially_white"]
    np.save(tmp_path / "white.npy", rs.standard_normal((4, 18, 22, 16)).astype(np.float32))
    rep = analyse(tmp_path / "white.npy")
    assert all(rep["checks"].values()), rep["checks_detail"]
    d = rep["checks_detail"]["gaussian_ks"]
    assert d["limit"] == ALPHA / 4 and d["value"] > d["limit"]
    # a frame of uniform noise (variance 1) among white frames: KS finds it
    bad = rs.standard_normal((5, 64, 64, 4)).astype(np.float32)
    bad[2] = rs.uniform(-np.sqrt(3), np.sqrt(3), size=bad[2].shape)
    np.save(tmp_path / "bad.npy", bad)
    rep = analyse(tmp_path / "bad.npy")
    assert not rep["checks"]["gaussian_ks"] and rep["checks"]["std_one"]


def test_docs_state_the_thresholds():
    """docs/cli.md states the rule the code applies."""
    import os

    from noisewarp.stats import ALPHA, MIN_SAMPLES

    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "cli.md"), encoding="utf-8").read()
    assert f"α = {ALPHA}" in text and "Bonferroni" in text and f"{MIN_SAMPLES} values" in text


@pytest.mark.parametrize("scale", [0.8, 1.25])
def test_perfect_transport_follows_the_pixel_quad(scale):
    """Coherence relative to perfect transport uses the pixel's square carried back (its corners
    followed too): the exact grid warper scores 1 at lag 1 under a zoom, where the unit square's
    overlap would say 0.94 or 1.09."""
    import core2d
    from noisewarp.stats import coherence_along_flow

    H, W = 64, 96
    ii, jj = np.mgrid[0:H, 0:W] + 0.5
    f = np.stack([(jj - W / 2) * (scale - 1), (ii - H / 2) * (scale - 1)], -1).astype(np.float32)
    flows = np.stack([f] * 3)
    n = core2d.warp_sequence(flows, channels=8, method="grid", seed=1, backend="numpy")
    c = coherence_along_flow(n, flows, max_lag=1, ends=3)
    assert abs(c["all_transport"][0] - 1) < 0.03, c["all_transport"]
