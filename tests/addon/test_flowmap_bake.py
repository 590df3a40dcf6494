"""Flow-map noise in the texture bake, and the revealed masks both motion sources give, on real
Cycles renders at 64x48: a cube sliding 0.43 px/frame over a still ground plane for 21 frames."""
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")  # Blender as a module: Python 3.11 and 3.13 only
import scenes

V, H, W, FRAMES = 0.43, 48, 64, (1, 22)
Z = 4.0


def inside(frame):
    """The cube's pixels at a frame (by pixel centre): 20 px wide from x = 7 + 0.43 (f - 1), rows
    14-33. Its edges stay at least 0.04 px from every pixel centre over the shot."""
    jj = np.arange(W) + 0.5
    m = np.zeros((H, W), bool)
    m[14:34] = (jj >= 7 + V * (frame - 1)) & (jj < 27 + V * (frame - 1))
    return m


def uncovered(frame):
    """The strip of ground the cube uncovers at a frame: under it at frame - 1, not now."""
    return inside(frame - 1) & ~inside(frame)


@pytest.mark.parametrize("motion", ["VECTOR", "MESH"])
def test_revealed_mask_is_the_uncovered_strip(registered, motion, tmp_path):
    """Vector pass (forward-backward consistency of its two directions) and mesh motion (exact
    visibility): the mask is the strip the cube uncovers, pixel for pixel, every frame."""
    from addon.motion import MeshMotion, VectorPassRenderer
    scene, _ = scenes.moving_cube_scene(px_per_frame=V, frames=(1, 8))
    source = (VectorPassRenderer(scene, W, H, str(tmp_path)) if motion == "VECTOR"
              else MeshMotion(scene, W, H))
    try:
        strips = 0
        for f in range(2, 9):
            flow, revealed = source.motion(f)
            assert revealed.dtype == bool and revealed.shape == (H, W)
            np.testing.assert_array_equal(revealed, uncovered(f), err_msg=f"frame {f}")
            np.testing.assert_allclose(flow[inside(f)], [[-V, 0]] * inside(f).sum(), atol=1e-4)
            strips += revealed.any()
        assert strips >= 3
    finally:
        source.close()


def bake(scene, outdir, method, motion, **kw):
    from addon import api
    return api.bake_texture(scene, outdir, channels=8, method=method, motion=motion, preview='NONE',
                            progress=None, **kw)


@pytest.mark.parametrize("motion", ["VECTOR", "MESH"])
def test_flowmap_bake_keeps_background_follows_object_refreshes_revealed(registered, motion, tmp_path):
    """Flow map: the ground keeps its noise bit for bit, the cube's noise after 21 frames is at
    the true shift (9.03 px) with >= 0.9 of perfect transport (particle forgets it), and the
    pixels the cube uncovers get fresh white noise, not the cube's."""
    scene, _ = scenes.moving_cube_scene(px_per_frame=V, frames=FRAMES)
    if motion == "VECTOR":   # through the operator, as the panel's button runs it
        assert bpy.ops.noise_warp.bake_texture(directory=str(tmp_path / "f"), channels=8, method='FLOWMAP',
                                               motion=motion, preview='NONE') == {'FINISHED'}
        n = np.load(tmp_path / "f" / "noise.npy")
    else:
        n = np.load(bake(scene, str(tmp_path / "f"), "flowmap", motion).npy_path)
    assert n.shape == (22, H, W, 8)
    touched = np.any([inside(f) for f in range(*FRAMES)] + [inside(FRAMES[1])], 0)
    for k in range(1, 22):
        assert np.array_equal(n[k][~touched], n[0][~touched]), f"ground changed at frame {k + 1}"
        assert abs(n[k].mean()) < Z / np.sqrt(n[k].size) and abs(n[k].std() - 1) < Z * np.sqrt(0.5 / n[k].size)
    obj = inside(22) & np.roll(inside(1), 9, axis=1)     # the cube's pixels at frame 22, moved 9.03 px
    perfect = 1 - 0.03                                   # the unit square 0.03 px off the cell it lands in

    def ratio(noise):
        return np.corrcoef(noise[21][obj].ravel(), noise[0][np.roll(obj, -9, axis=1)].ravel())[0, 1] / perfect

    se = 1 / np.sqrt(obj.sum() * 8)
    assert ratio(n) >= 0.9 + Z * se, ratio(n)
    fresh = np.concatenate([n[f - 1][uncovered(f)] for f in range(2, 23)]).ravel()
    before = np.concatenate([n[f - 2][uncovered(f)] for f in range(2, 23)]).ravel()
    m = fresh.size
    assert m > 1000
    assert abs(fresh.mean()) < Z / np.sqrt(m) and abs(fresh.var() - 1) < Z * np.sqrt(2 / m)
    assert abs(np.corrcoef(fresh, before)[0, 1]) < Z / np.sqrt(m)
    if motion == "MESH":     # the same shot with particle: frame-to-frame warping forgets
        p = np.load(bake(scene, str(tmp_path / "p"), "particle", motion).npy_path)
        assert ratio(p) < 0.5


def test_occlusions_setting_reaches_the_warper(registered, tmp_path):
    """Turned off, the uncovered strip is not refreshed: particle carries the cube's noise into it."""
    scene, _ = scenes.moving_cube_scene(px_per_frame=V, frames=(1, 10))
    on = np.load(bake(scene, str(tmp_path / "on"), "particle", "MESH").npy_path)
    off = np.load(bake(scene, str(tmp_path / "off"), "particle", "MESH", occlusions=False).npy_path)
    for n, fresh in ((on, True), (off, False)):
        a = np.concatenate([n[f - 1][uncovered(f)] for f in range(2, 11)]).ravel()
        b = np.concatenate([n[f - 2][uncovered(f)] for f in range(2, 11)]).ravel()
        r = np.corrcoef(a, b)[0, 1]
        assert (abs(r) < Z / np.sqrt(a.size)) if fresh else r > 0.3, (fresh, r)
    assert scene.noise_warp.occlusions is True
    assert os.path.isfile(os.path.join(tmp_path, "on", "noise_0010.exr"))


def test_content_coming_into_view_is_revealed(registered, tmp_path):
    """An orthographic camera panning 2.3 px left and 0.6 px down a frame over a ground plane,
    a box riding with it: the two columns and the row entering the view, and the ground coming
    out from under the box, are revealed; the Vector pass and the meshes agree pixel for pixel."""
    from addon.motion import MeshMotion, VectorPassRenderer
    scene = scenes.empty_scene(W, H, (1, 4))
    scenes.add_plane(scene)
    bpy.ops.mesh.primitive_cube_add(size=1.6, location=(0.0, 0.0, 0.0))
    box = bpy.context.active_object
    step = np.array([2.3, 0.6]) / scenes.PX_PER_UNIT
    for obj in (scene.camera, box):
        for f in (1, 4):
            obj.location.x, obj.location.y = step * (f - 1)
            obj.keyframe_insert("location", frame=f)
        scenes.make_linear(obj)
    vector = VectorPassRenderer(scene, W, H, str(tmp_path))
    try:
        masks = [vector.motion(f)[1] for f in (2, 3, 4)]
    finally:
        vector.close()
    mesh = MeshMotion(scene, W, H)
    for f, m in zip((2, 3, 4), masks):
        np.testing.assert_array_equal(m, mesh.motion(f)[1], err_msg=f"frame {f}")
        assert m[:, -2:].all() and m[0].all() and not m[1:, :-2][:, :20].any()
        assert m[17:32, 22:24].all()        # the ground coming out at the box's left edge
