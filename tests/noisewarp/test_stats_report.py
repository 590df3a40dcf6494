"""`noisewarp stats`: the report's numbers and plots on inputs whose answers are known."""
import json

import numpy as np

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
