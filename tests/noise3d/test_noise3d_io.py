"""Volumes in and out: OpenVDB round trips (openvdb through bpy must import here), placement, .npz."""
import os

import numpy as np
import pytest

import noise3d
from noise3d import vdb as V

from .vol_helpers import needs_openvdb


@needs_openvdb
def test_openvdb_is_reachable_through_bpy():
    assert V.openvdb_module() is not None


@needs_openvdb
@pytest.mark.parametrize("channels", [1, 3])
def test_vdb_round_trip(tmp_path, channels):
    shape = (12, 10, 7)
    rs = np.random.default_rng(channels)
    noise = rs.normal(size=shape + (channels,)).astype(np.float32)
    noise[0, 0, 0] = 0.0                                   # a background-valued voxel survives too
    vs, origin = 0.25, np.array([1.0, -2.0, 0.5])
    path = noise3d.write_vdb(tmp_path / "noise_0001.vdb", noise, vs, origin, density=True)
    assert path.endswith("noise_0001.vdb") and os.path.isfile(path)
    assert [p.name for p in tmp_path.iterdir()] == ["noise_0001.vdb"]   # no temporary left over
    back, bvs, borg = noise3d.read_vdb(path)
    assert np.array_equal(back, noise)
    np.testing.assert_allclose(bvs, [vs] * 3)
    np.testing.assert_allclose(borg, origin, atol=1e-12)
    dens, _, _ = noise3d.read_vdb(path, name="density")
    np.testing.assert_allclose(dens[..., 0], np.clip((noise[..., 0] + 3) / 6, 0, 1), atol=1e-7)
    vdb = V.openvdb_module()
    grids, _ = vdb.readAll(path)
    names = sorted(g.name for g in grids)
    assert names == sorted(V.channel_names("noise", channels) + ["density"])
    g = {g.name: g for g in grids}["density"]
    assert g.gridClass == vdb.GridClass.FOG_VOLUME
    # OpenVDB index (0,0,0) is the centre of the first voxel
    np.testing.assert_allclose(g.transform.indexToWorld((0, 0, 0)), origin + vs / 2)


@needs_openvdb
def test_blender_places_the_volume_on_its_domain(tmp_path):
    bpy = pytest.importorskip("bpy", reason="needs Blender as a module (pip install bpy)")

    shape, vs, origin = (12, 10, 8), 0.25, np.array([1.0, -2.0, 0.5])
    noise = np.random.default_rng(0).normal(size=shape + (1,)).astype(np.float32)
    path = noise3d.write_vdb(tmp_path / "noise.vdb", noise, vs, origin, density=True)
    vol = bpy.data.volumes.new("noise_test")
    vol.filepath = path
    assert vol.grids.load(), vol.grids.error_message
    assert sorted(g.name for g in vol.grids) == ["density", "noise"]
    ob = bpy.data.objects.new("noise_test", vol)
    bpy.context.scene.collection.objects.link(ob)
    ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    bb = np.array([list(v) for v in ev.bound_box])
    # Blender's box is rounded up to whole 8³ leaf nodes: the low corner is exact
    np.testing.assert_allclose(bb.min(0), origin, atol=1e-6)
    top = origin + np.array(shape) * vs
    assert (bb.max(0) >= top - 1e-6).all() and (bb.max(0) <= top + 8 * vs).all()
    bpy.data.objects.remove(ob)
    bpy.data.volumes.remove(vol)


def test_npz_fallback_without_openvdb(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEWARP_NO_OPENVDB", "1")
    noise = np.random.default_rng(1).normal(size=(5, 6, 7, 2)).astype(np.float32)
    path = noise3d.write_vdb(tmp_path / "noise_0002.vdb", noise, [0.1, 0.2, 0.3], (1, 2, 3), density=True)
    assert path.endswith("noise_0002.npz")
    back, vs, org = noise3d.read_vdb(tmp_path / "noise_0002.vdb")
    assert np.array_equal(back, noise)
    np.testing.assert_allclose(vs, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(org, [1, 2, 3])
    with np.load(path) as z:
        assert z["density"].shape == (5, 6, 7)


@needs_openvdb
def test_velocity_grid_round_trip_and_flow(tmp_path):
    shape, vs, origin = (8, 9, 10), 0.5, np.array([-1.0, 0.0, 2.0])
    vel = np.zeros(shape + (3,), np.float32)
    vel[..., 0] = 2.0          # 2 world units / s along X
    vel[..., 2] = -1.0
    vel[3, 4, 5] = (0.5, 0.25, 0.125)
    path = noise3d.write_velocity_vdb(tmp_path / "vel.vdb", vel, vs, origin)
    back, bvs, borg = noise3d.read_velocity(path)
    assert np.array_equal(back, vel)
    np.testing.assert_allclose(bvs, [vs] * 3)
    np.testing.assert_allclose(borg, origin)
    fwd = noise3d.velocity_to_flow(back, dt=0.25, voxel_size=vs)
    np.testing.assert_allclose(fwd[0, 0, 0], [1.0, 0.0, -0.5])       # 2·0.25/0.5 voxels
    bwd = noise3d.velocity_to_flow(back, dt=0.25, voxel_size=vs, direction="backward")
    assert np.array_equal(bwd, -fwd)
    with pytest.raises(ValueError, match="time step"):
        noise3d.velocity_to_flow(back, dt=0)
    bad = vel.copy()
    bad[1, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        noise3d.velocity_to_flow(bad)


def test_resample_field_places_values_in_world_space():
    field = np.zeros((10, 10, 10, 1), np.float32)
    field[..., 0] = np.arange(10)[:, None, None]              # value = x index
    # the same field on a grid shifted by 2 source voxels and twice as fine
    out = noise3d.resample_field(field, 1.0, (0, 0, 0), (8, 4, 4), 0.5, (2.0, 3.0, 3.0))
    centres_x = 2.0 + (np.arange(8) + 0.5) * 0.5              # world x of target centres
    np.testing.assert_allclose(out[:, 1, 1, 0], centres_x - 0.5, atol=1e-5)


@needs_openvdb
def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        noise3d.read_vdb(tmp_path / "missing.vdb")
    junk = tmp_path / "junk.vdb"
    junk.write_bytes(b"not a vdb")
    with pytest.raises(ValueError, match="OpenVDB"):
        noise3d.read_vdb(junk)
    ok = noise3d.write_vdb(tmp_path / "n.vdb", np.zeros((2, 2, 2), np.float32), 1.0, (0, 0, 0))
    with pytest.raises(ValueError, match="no grid named 'velocity'"):
        noise3d.read_velocity(ok)
    with pytest.raises(ValueError, match="must be"):
        noise3d.read_velocity(tmp_path / "v.txt")
