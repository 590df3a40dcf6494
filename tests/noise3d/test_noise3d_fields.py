"""Velocity grids stored in index units (Mantaflow caches) → backward flows on noise grids."""
import numpy as np
import pytest

from noise3d import index_velocity_flow, staggered_to_centred


def test_staggered_to_centred_averages_the_two_faces():
    x = np.arange(5, dtype=np.float32)
    mac = np.zeros((5, 4, 3, 3), np.float32)
    mac[..., 0] = x[:, None, None]             # face i of cell i holds i
    mac[..., 1] = 2 * np.arange(4)[None, :, None]
    mac[..., 2] = 7.0
    c = staggered_to_centred(mac)
    assert np.allclose(c[:-1, ..., 0], x[:-1, None, None] + 0.5)
    assert np.allclose(c[:, :-1, :, 1], 2 * np.arange(3)[None, :, None] + 1)
    assert np.allclose(c[..., 2], 7.0)


def test_identity_map_is_minus_v_dt():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(6, 5, 4, 3)).astype(np.float32)
    m = np.eye(4)
    m[:3, 3] = 0.5                              # cell i's centre at i + 0.5: voxels from 0
    flow = index_velocity_flow(v, m, 0.25, (6, 5, 4), np.zeros(3), 1.0)
    assert np.allclose(flow, -0.25 * v, atol=1e-6)


def test_rotated_scaled_grid_and_outside():
    """A grid of 0.5-unit cells turned 90° about Z: index +X is world +Y."""
    v = np.zeros((8, 8, 8, 3), np.float32)
    v[..., 0] = 2.0                             # 2 cells per time unit along index X
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], np.float64)
    m = np.eye(4)
    m[:3, :3] = rot * 0.5
    m[:3, 3] = rot @ (0.5 * np.full(3, 0.5))    # grid covers rot([0, 4]^3)
    # target: 0.25-unit voxels covering world x in [-4, 0], y, z in [0, 4], plus a slab beyond
    flow = index_velocity_flow(v, m, 0.5, (16, 20, 16), np.array([-4.0, 0.0, 0.0]), 0.25)
    inside = flow[2:14, 2:14, 2:14]
    # 2 cells/unit * 0.5 units = 1 cell = 0.5 world units along +Y = 2 target voxels
    assert np.allclose(inside[..., 1], -2.0, atol=1e-5)
    assert np.allclose(inside[..., [0, 2]], 0.0, atol=1e-5)
    assert np.allclose(flow[:, 17:], 0.0)       # y > 4.25: outside the velocity grid


@pytest.mark.parametrize("bad, match", [
    (dict(velocity=np.zeros((4, 4, 4))), "velocity must be"),
    (dict(index_to_world=np.zeros((4, 4))), "invertible"),
    (dict(velocity=np.full((4, 4, 4, 3), np.nan, np.float32)), "NaN"),
])
def test_bad_input(bad, match):
    args = dict(velocity=np.zeros((4, 4, 4, 3), np.float32), index_to_world=np.eye(4), dt=1.0,
                shape=(4, 4, 4), origin=np.zeros(3), voxel_size=1.0)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        index_velocity_flow(**args)


def test_same_grid_shortcut_matches_resampling():
    """The no-resampling path (target grid = velocity grid) equals trilinear sampling."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=(7, 6, 5, 3)).astype(np.float32)
    m = np.diag([0.5, 0.5, 0.5, 1.0])
    m[:3, 3] = [1.25, -0.75, 0.25]              # cell i's centre: 1.25 + 0.5 i (x)
    origin = np.array([1.0, -1.0, 0.0])          # so the target voxels are those cells
    fast = index_velocity_flow(v, m, 0.3, (7, 6, 5), origin, 0.5)
    slow = index_velocity_flow(v, m, 0.3, (7, 6, 5), origin + 1e-4, 0.5)  # forces resampling
    assert np.allclose(fast, -0.3 * v, atol=1e-6)
    assert np.allclose(fast[:-1, :-1, :-1], slow[:-1, :-1, :-1], atol=2e-3)
