"""Motion fields from meshes: rigid motion reproduced inside, fall-off outside, several meshes, bad input."""
import numpy as np
import pytest
import trimesh

import noise3d
from noise3d import mesh as M

from . import vol_helpers as H

SHAPE = (24, 22, 20)
VS = 0.1
ORIGIN = np.array([-1.2, -1.1, -1.0])


def centres(shape=SHAPE, vs=VS, origin=ORIGIN):
    return (H.grid(shape) + 0.5) * vs + origin


def winding_inside(mesh, shape=SHAPE, vs=VS, origin=ORIGIN):
    return M.winding_numbers((np.asarray(mesh.vertices) - origin) / vs, np.asarray(mesh.faces), shape) != 0


def test_winding_numbers_match_analytic_inside():
    box = trimesh.creation.box(extents=(1.0, 0.8, 0.6))
    inside = winding_inside(box)
    expect = (np.abs(centres()) < np.array([0.5, 0.4, 0.3])).all(-1)
    assert np.array_equal(inside, expect)
    sphere = trimesh.creation.icosphere(3, radius=0.7)
    r = np.linalg.norm(centres(), axis=-1)
    inside = winding_inside(sphere)
    assert inside[r < 0.68].all() and not inside[r > 0.7].any()


@pytest.mark.parametrize("stride", [1, 2])
def test_translated_sphere_gives_the_translation_inside(stride):
    a = trimesh.creation.icosphere(3, radius=0.7)
    t = np.array([0.05, -0.12, 0.23])
    b = a.copy()
    b.apply_translation(t)
    flow, weight = M.mesh_motion_field(a, b, SHAPE, ORIGIN, VS, stride=stride, return_weight=True)
    inside = winding_inside(a)
    assert inside.sum() > 1000
    assert np.abs(flow[inside] - t / VS).max() < 1e-4
    assert (weight[inside] == 1).all()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("subdivisions", [0, 2])
def test_rigidly_rotated_box_gives_the_rigid_flow_inside(stride, subdivisions):
    box = trimesh.creation.box(extents=(1.0, 0.8, 0.6))
    for _ in range(subdivisions):
        box = box.subdivide()
    R = trimesh.transformations.rotation_matrix(np.deg2rad(12), [0.3, 0.2, 1.0], point=[0.05, 0.0, -0.02])
    moved = box.copy()
    moved.apply_transform(R)
    flow = M.mesh_motion_field(box, moved, SHAPE, ORIGIN, VS, stride=stride)
    c = centres()
    expect = ((c @ R[:3, :3].T + R[:3, 3]) - c) / VS
    inside = winding_inside(box)
    assert inside.sum() == 480
    assert np.abs(flow[inside] - expect[inside]).max() < 1e-4


def test_field_falls_off_to_background_outside_the_band():
    a = trimesh.creation.icosphere(2, radius=0.4)
    b = a.copy()
    b.apply_translation([0.1, 0.0, 0.0])
    band = 3.0
    c = centres()
    dist = (np.linalg.norm(c, axis=-1) - 0.4) / VS          # voxels from the sphere (outside > 0)
    for bg in (None, np.array([0.0, 0.5, -0.25])):
        flow, weight = M.mesh_motion_field(a, b, SHAPE, ORIGIN, VS, band=band, background=bg, return_weight=True)
        bgv = np.zeros(3) if bg is None else bg
        far = dist > band + 1.5
        assert far.sum() > 1000
        assert np.array_equal(weight[far], np.zeros(far.sum(), np.float32))
        assert np.allclose(flow[far], bgv, atol=1e-6)
        mid = (dist > 0.5) & (dist < band - 0.5)
        assert ((weight[mid] > 0) & (weight[mid] < 1)).all()
        # in the band the flow is a blend of the translation and the background
        assert np.allclose(flow[mid], weight[mid, None] * np.array([1.0, 0, 0]) + (1 - weight[mid, None]) * bgv,
                           atol=1e-4)
    # weight decreases with distance (smoothstep of the distance)
    _, weight = M.mesh_motion_field(a, b, SHAPE, ORIGIN, VS, band=band, return_weight=True)
    order = np.argsort(dist[mid])
    w = weight[mid][order]
    d = dist[mid][order]
    assert np.corrcoef(d, w)[0, 1] < -0.9


def test_several_meshes_each_move_their_inside():
    s1 = trimesh.creation.icosphere(2, radius=0.3)
    s1.apply_translation([-0.6, 0.0, 0.0])
    s2 = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    s2.apply_translation([0.6, 0.1, 0.0])
    t1, t2 = np.array([0.0, 0.1, 0.0]), np.array([-0.05, 0.0, 0.2])
    m1, m2 = s1.copy(), s2.copy()
    m1.apply_translation(t1)
    m2.apply_translation(t2)
    flow = M.mesh_motion_field([s1, s2], [m1, m2], SHAPE, ORIGIN, VS, band=2.0)
    i1, i2 = winding_inside(s1), winding_inside(s2)
    assert i1.sum() > 100 and i2.sum() > 100
    assert np.abs(flow[i1] - t1 / VS).max() < 1e-4
    assert np.abs(flow[i2] - t2 / VS).max() < 1e-4
    far = ~(i1 | i2)
    assert np.abs(flow[far]).max() <= max(np.abs(t1).max(), np.abs(t2).max()) / VS + 1e-4


def test_vertex_arrays_and_faces_work_like_trimesh():
    box = trimesh.creation.box(extents=(0.6, 0.6, 0.6))
    moved = np.asarray(box.vertices) * 1.1 + 0.02             # a scale: affine, so exact inside
    f1 = M.mesh_motion_field(box, (moved, box.faces), SHAPE, ORIGIN, VS)
    f2 = M.mesh_motion_field((box.vertices, box.faces), moved, SHAPE, ORIGIN, VS)
    assert np.array_equal(f1, f2)
    c = centres()
    inside = winding_inside(box)
    assert np.abs(f1[inside] - (c[inside] * 0.1 + 0.02) / VS).max() < 1e-4


def test_different_topologies_are_refused():
    a = trimesh.creation.icosphere(1)
    b = trimesh.creation.icosphere(2)
    with pytest.raises(ValueError, match="vertices"):
        M.mesh_motion_field(a, b, SHAPE, ORIGIN, VS)
    with pytest.raises(ValueError, match="faces"):
        M.mesh_motion_field(a, (a.vertices, a.faces[::-1]), SHAPE, ORIGIN, VS)
    with pytest.raises(ValueError, match="mesh"):
        M.mesh_motion_field([a, a], [a], SHAPE, ORIGIN, VS)
    with pytest.raises(ValueError, match="NaN"):
        M.mesh_motion_field(a, np.full_like(a.vertices, np.nan), SHAPE, ORIGIN, VS)
    with pytest.raises(ValueError, match="voxel size"):
        M.mesh_motion_field(a, a, SHAPE, ORIGIN, 0.0)


def test_mesh_motion_carries_the_noise_inside():
    """A box moved by whole voxels: swapping the meshes gives the backward flow, and the noise
    deep inside the box (where no outside voxel competes for the cells) is shifted exactly."""
    from scipy import ndimage

    box = trimesh.creation.box(extents=(1.4, 1.4, 1.2))
    shift = np.array([2, 1, -1])
    moved = box.copy()
    moved.apply_translation(shift * VS)
    backward = noise3d.mesh_motion_field(moved, box, SHAPE, ORIGIN, VS)
    inside = winding_inside(moved)
    assert np.abs(backward[inside] + shift).max() < 1e-4
    backward = np.round(backward, 4)            # drop the fit's float rounding (~1e-7 voxels)
    v = noise3d.VolumeWarper(SHAPE, channels=2, seed=4)
    x = v.noise.copy()
    y = v.step(backward)
    deep = ndimage.binary_erosion(inside, iterations=3)
    idx = np.argwhere(deep)
    assert len(idx) >= 8 * 8 * 6
    assert np.array_equal(y[deep], x[tuple((idx - shift).T)])
    H.assert_white(y, "after mesh motion")


def test_grid_for_meshes_covers_the_meshes():
    a = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    shape, origin, vs = M.grid_for_meshes([a], 40, band=3.0)
    assert max(shape) == 40
    lo = origin
    hi = origin + np.array(shape) * vs
    assert (lo < np.asarray(a.vertices).min(0) - 3 * vs).all() and (hi > np.asarray(a.vertices).max(0) + 3 * vs).all()


def test_twist_is_followed_closely_inside():
    """A non-affine motion (a box twisting about X): the ray blend inside stays close to it."""
    box = trimesh.creation.box(extents=(1.2, 0.5, 0.5)).subdivide().subdivide()
    V = np.asarray(box.vertices)
    ang = 0.6 * V[:, 0]
    W = V.copy()
    W[:, 1] = np.cos(ang) * V[:, 1] - np.sin(ang) * V[:, 2]
    W[:, 2] = np.sin(ang) * V[:, 1] + np.cos(ang) * V[:, 2]
    shape, origin, vs = (48, 24, 24), np.array([-0.75, -0.375, -0.375]), 1.5 / 48
    flow, weight = M.mesh_motion_field(box, (W, box.faces), shape, origin, vs, return_weight=True)
    c = centres(shape, vs, origin)
    a = 0.6 * c[..., 0]
    exact = np.stack([np.zeros_like(a), np.cos(a) * c[..., 1] - np.sin(a) * c[..., 2] - c[..., 1],
                      np.sin(a) * c[..., 1] + np.cos(a) * c[..., 2] - c[..., 2]], -1) / vs
    inside = weight == 1
    err = np.linalg.norm(flow - exact, axis=-1)[inside]
    size = np.linalg.norm(exact, axis=-1)[inside].max()
    assert size > 3.0
    assert err.max() < 0.08 * size and err.mean() < 0.02 * size, (err.max(), err.mean(), size)


def test_open_sheet_moves_only_its_band():
    """An open surface bounds no solid: it drags the volume only within the band around it."""
    V = np.array([[-0.8, -0.8, 0.0], [0.8, -0.8, 0.0], [0.8, 0.8, 0.0], [-0.8, 0.8, 0.0]])
    F = np.array([[0, 1, 2], [0, 2, 3]])
    assert not M.is_closed(F) and M.is_closed(np.asarray(trimesh.creation.box().faces))
    t = np.array([0.0, 0.0, 0.05])
    with pytest.warns(UserWarning, match="not closed"):
        flow, weight = M.mesh_motion_field((V, F), V + t, SHAPE, ORIGIN, VS, band=3.0, return_weight=True)
    c = centres()
    z = c[..., 2] / VS                                   # voxels from the sheet's plane
    over = (np.abs(c[..., 0]) < 0.7) & (np.abs(c[..., 1]) < 0.7)
    near = over & (np.abs(z) < 0.6)
    assert near.sum() > 100
    assert np.allclose(flow[near], t / VS * weight[near, None], atol=1e-3)
    assert (weight[near] > 0.7).all()
    assert (weight[np.abs(z) > 4.0] == 0).all() and (weight < 1).all()   # no inside anywhere


def test_mesh_enclosing_the_whole_domain():
    """The surface is far outside the grid: every voxel is inside and moves rigidly."""
    big = trimesh.creation.box(extents=(6.0, 6.0, 6.0))
    R = trimesh.transformations.rotation_matrix(np.deg2rad(5), [0, 1, 1])
    moved = big.copy()
    moved.apply_transform(R)
    flow, weight = M.mesh_motion_field(big, moved, SHAPE, ORIGIN, VS, return_weight=True)
    c = centres()
    expect = ((c @ R[:3, :3].T + R[:3, 3]) - c) / VS
    assert (weight == 1).all()
    assert np.abs(flow - expect).max() < 1e-4
