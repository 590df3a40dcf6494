"""Scenes built the way artists build them (rigs, shape keys, hair, instances, render-only
modifiers, scripts), baked through the API: the noise follows the true motion (ALGORITHMS.md
§6 correlations) and the scene is left as it was."""
import os

import numpy as np
import pytest

import bpy
import follow
import scenes


def bake_texture(scene, outdir, **kw):
    from addon import api
    kw.setdefault("channels", 4)
    kw.setdefault("preview", 'NONE')
    return api.bake_texture(scene, outdir, progress=None, **kw)


def true_flows(scene, frames, width=64, height=48):
    """Cycles' Vector pass (right for perspective and still orthographic cameras): the truth."""
    return {f: scenes.vector_pass_flow(scene, f, width, height) for f in frames}


def assert_mesh_motion_matches(scene, truth, width=64, height=48):
    """Mesh motion equals the Vector pass but for pixels whose centre lies exactly on an edge."""
    from addon.motion import MeshMotion
    mesh = MeshMotion(scene, width, height)
    for f, flow in truth.items():
        off = np.abs(mesh.flow(f) - flow).max(-1) > 0.05
        assert off.sum() <= 3, (f, off.sum())


# ----------------------------------------------------------------------------- case 3

def test_bending_arm_is_not_a_topology_change(registered, outdir):
    """A two-bone arm of quads bending 60 degrees at the elbow: Blender re-splits the squashed
    elbow quads along their other diagonal (frame 4), the vertices stay the same, so mesh
    motion follows it with no fallback, and the noise moves with the forearm."""
    scene = scenes.empty_scene(64, 48, (1, 4))
    arm, rig = scenes.two_bone_arm(scene, degrees=60.0)
    truth = true_flows(scene, (2, 3, 4))
    assert_mesh_motion_matches(scene, truth)
    bake = bake_texture(scene, outdir, motion='MESH')
    assert bake.warnings == []
    n = np.load(bake.npy_path)
    moving = {f - 1: np.abs(flow).max(-1) > 0.5 for f, flow in truth.items()}
    assert all(m.sum() > 100 for m in moving.values())
    follow.assert_follows_flow(n, {f - 1: flow for f, flow in truth.items()}, moving)
    # the upper arm does not move: its noise is kept bit for bit
    assert np.array_equal(n[3][21:27, 18:28], n[0][21:27, 18:28])


def test_concave_shape_key_is_not_a_topology_change(registered, outdir):
    """A sheet whose shape key slides its left part by (1.3, 0.4) px/frame and dents three
    quads until they are concave: no topology change, exact overlap correlations."""
    scene = scenes.empty_scene(64, 48, (1, 4))
    scenes.dented_sheet(scene, shift_px=(1.3, 0.4))
    bake = bake_texture(scene, outdir, motion='MESH')
    assert bake.warnings == []
    n = np.load(bake.npy_path)
    # the sliding part spans x in [2, 27] + 1.3 t px, y in [4, 44] + 0.4 t: inside it, away
    # from its edges
    follow.assert_follows(n, [1, 2, 3], np.arange(10, 38), np.arange(10, 24), (1.3, 0.4))


def test_concave_shape_key_volume(registered, outdir):
    """The dented slab in a volume bake (0.1-unit voxels): no topology refusal, and inside the
    sliding part the noise moves by (1.3, -0.4, 0) voxels per frame, exact overlaps."""
    from addon import api
    from noise3d.vdb import read_vdb
    scene = scenes.empty_scene(64, 48, (1, 4))
    sheet = scenes.dented_sheet(scene, shift_px=(1.3, 0.4))
    scenes.into_collection(scene, sheet)
    bpy.ops.mesh.primitive_cube_add(size=1.0, scale=(6.4, 4.8, 0.8))
    domain = bpy.context.active_object
    domain.hide_render = True
    bake = api.bake_volume(scene, outdir, domain=domain, source_collection="Movers",
                           resolution=64, write_density=False, progress=None)
    n = np.stack([read_vdb(f)[0] for f in bake.files])
    assert n.shape[1:4] == (64, 48, 8)
    # world x = -3.2 + 0.1 i, y = -2.4 + 0.1 j: the sliding part (x from -3 + 0.13 t, up to
    # -0.5 + 0.13 t; y in [-2, 2] - 0.04 t), inside the slab (z in [-0.3, 0.3])
    follow.assert_follows_volume(n, [1, 2, 3], (np.arange(7, 25), np.arange(8, 40),
                                                np.arange(2, 6)), (1.3, -0.4, 0.0))
