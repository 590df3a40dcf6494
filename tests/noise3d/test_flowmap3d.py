"""noise3d.flowmap: the volumetric flow map is white every frame, keeps its coherence with frame 0,
starts revealed content fresh, resumes exactly, and its NumPy reference and kernels agree."""
import numpy as np
import pytest

from core2d import grid as grid2d
from noise3d import VolumeWarper

from .vol_helpers import Z, assert_white, grid, rotation_flow

SHAPE = (14, 16, 12)


def volume_maps(shape):
    p = grid(shape) + 0.5
    d = p - np.array(shape) / 2.0
    z = np.zeros_like(d[..., 0])
    return {"rotate": rotation_flow(shape, 12, (1, 1, 0)), "zoom_in": (-0.5 * d).astype(np.float32),
            "zoom_out": (1.5 * d).astype(np.float32),
            "fold": np.stack([np.abs(d[..., 0]) - d[..., 0], z, z], -1).astype(np.float32),
            "collapse": (-d).astype(np.float32), "out_of_volume": np.full(shape + (3,), 500.0, np.float32),
            "random": (np.random.RandomState(3).randn(*shape, 3) * 1.5).astype(np.float32),
            "shift": np.broadcast_to(np.float32([0.3, -0.7, 0.45]), shape + (3,)).copy()}


@pytest.mark.parametrize("name", sorted(volume_maps(SHAPE)))
def test_every_frame_is_white(name):
    v = VolumeWarper(SHAPE, channels=4, method="flowmap", seed=7, backend="taichi")
    assert_white(v.noise, "initial")
    for t in range(2):
        assert_white(v.step(volume_maps(SHAPE)[name]), f"{name} step {t + 1}")


def _rotation_transport(shape, degrees):
    """Perfect transport after a rotation by `degrees` about the Z axis through the centre: each
    voxel's preimage is a rotated square × the same Z slab; corr with the voxel of frame 0 that
    holds the preimage of its centre = the square's overlap with that cell (it has unit area)."""
    X, Y, _ = shape
    c = np.array([X / 2, Y / 2])
    th = np.deg2rad(-degrees)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    i, j = np.mgrid[0:X, 0:Y].astype(np.float64)
    sq = np.stack([np.stack([i, j], -1), np.stack([i + 1, j], -1), np.stack([i + 1, j + 1], -1),
                   np.stack([i, j + 1], -1)], 2)
    back = (sq - c) @ R.T + c
    cen = np.floor((np.stack([i + 0.5, j + 0.5], -1) - c) @ R.T + c).astype(np.int64)
    local = (back - cen[:, :, None, :]).reshape(-1, 4, 2).astype(np.float32)
    z = np.zeros(len(local), np.float32)
    overlap = grid2d.cell_overlap(local, z, z).reshape(X, Y)
    ok = (cen[..., 0] >= 0) & (cen[..., 0] < X) & (cen[..., 1] >= 0) & (cen[..., 1] < Y)
    return cen, overlap, ok


@pytest.mark.parametrize("depth", [1, 2])
def test_long_range_coherence(depth):
    """20 frames of a 1.5°/frame rotation: frame 20 keeps >= 0.9 of the correlation perfect
    transport has with frame 0 (particle keeps far less: diffusion)."""
    shape, T, step = (24, 24, 6), 20, 1.5
    flow = rotation_flow(shape, step, (0, 0, 1))
    ratios = {}
    for method in ("flowmap", "particle"):
        v = VolumeWarper(shape, channels=8, method=method, seed=4, backend="taichi", depth=depth)
        x0 = v.noise.copy()
        for _ in range(T):
            y = v.step(flow)
        assert_white(y, f"{method} frame {T}")
        cen, overlap, ok = _rotation_transport(shape, step * T)
        a = y[ok]                                           # [n, Z, C]
        b = x0[cen[ok][:, 0], cen[ok][:, 1]]
        r = float(np.mean(a.astype(np.float64) * b))
        perfect = float(overlap[ok].mean())
        se = 1 / np.sqrt(a.size) / perfect
        ratios[method] = r / perfect
        if method == "flowmap":
            assert 0.9 + Z * se < 1.02, "too small to tell"
    assert ratios["flowmap"] >= 0.9, ratios
    assert ratios["particle"] < 0.7, ratios


def test_static_volume_with_revealed_region():
    """Zero flow keeps every voxel bit for bit; revealed voxels get fresh, white noise and keep it."""
    v = VolumeWarper(SHAPE, channels=4, method="flowmap", seed=2, backend="taichi")
    x0 = v.noise.copy()
    mask = np.zeros(SHAPE, bool)
    mask[3:9, 2:12, 4:10] = True
    zero = np.zeros(SHAPE + (3,), np.float32)
    y1 = v.step(zero, revealed=mask).copy()
    assert np.array_equal(y1[~mask], x0[~mask])
    fresh = y1[mask]
    n = fresh.size
    assert abs(fresh.mean()) < Z / np.sqrt(n) and abs(fresh.var() - 1) < Z * np.sqrt(2 / n)
    assert abs(np.mean(fresh.astype(np.float64) * x0[mask])) < Z / np.sqrt(n)
    assert v.last_stats["revealed_voxels"] == mask.sum()
    assert np.array_equal(v.step(zero), y1)                 # the new region stays put


@pytest.mark.parametrize("depth", [1, 2])
def test_numpy_reference_and_kernels_agree(depth):
    shape = (8, 9, 6)
    maps = volume_maps(shape)
    mask = np.zeros(shape, bool)
    mask[2:5, 3:9, 1:4] = True
    kw = dict(channels=3, method="flowmap", seed=9, depth=depth)
    a = VolumeWarper(shape, backend="numpy", **kw)
    b = VolumeWarper(shape, backend="taichi", **kw)
    np.testing.assert_allclose(a.noise, b.noise, atol=2e-4)
    for name, m in (("zoom_in", None), ("rotate", mask), ("random", None), ("fold", None)):
        ya, yb = a.step(maps[name], revealed=m), b.step(maps[name], revealed=m)
        assert a.last_stats == b.last_stats, name
        bad = np.abs(ya - yb) > 2e-4               # allow the shared RNG's rare NumPy/Taichi mismatch
        assert bad.mean() < 5e-4, f"{name}: {bad.sum()} values differ"


def test_save_and_load_resume_exactly(tmp_path):
    maps = volume_maps(SHAPE)
    flows = [maps["zoom_out"], maps["shift"], maps["rotate"], maps["shift"]]
    a = VolumeWarper(SHAPE, channels=2, method="flowmap", seed=5, backend="taichi", reanchor=3.0)
    for f in flows[:2]:
        a.step(f)
    assert a.last_stats["stored_voxels"] > 0                 # re-anchored sub-cells are part of the state
    a.save(tmp_path / "v.npz")
    b = VolumeWarper.load(tmp_path / "v.npz", backend="taichi")
    assert b.frame == 2 and b.depth == a.depth and b.reanchor == 3.0
    for f in flows[2:]:
        assert np.array_equal(a.step(f), b.step(f))


def test_bad_options_and_masks():
    with pytest.raises(ValueError, match="depth"):
        VolumeWarper(SHAPE, method="flowmap", depth=3)
    with pytest.raises(ValueError, match="initial noise"):
        VolumeWarper(SHAPE, method="flowmap", noise=np.zeros(SHAPE + (1,), np.float32))
    v = VolumeWarper(SHAPE, channels=1, method="flowmap", seed=1, backend="taichi")
    with pytest.raises(ValueError, match="revealed mask at frame 1 has shape"):
        v.step(np.zeros(SHAPE + (3,), np.float32), revealed=np.zeros((3, 3, 3), bool))
    assert v.frame == 0


@pytest.mark.parametrize("method", ["particle", "supersample"])
def test_revealed_gives_other_methods_fresh_noise(method):
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 4:12, 3:9] = True
    flow = volume_maps(SHAPE)["shift"]
    a = VolumeWarper(SHAPE, channels=2, method=method, seed=3, backend="taichi")
    b = VolumeWarper(SHAPE, channels=2, method=method, seed=3, backend="taichi")
    ya, yb = a.step(flow), b.step(flow, revealed=mask)
    if method == "particle":
        assert np.array_equal(ya[~mask], yb[~mask])
    n = yb[mask].size
    assert abs(np.mean(ya[mask].astype(np.float64) * yb[mask])) < Z / np.sqrt(n)
    assert_white(yb, method)
