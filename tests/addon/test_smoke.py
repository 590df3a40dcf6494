"""Volume bake driven by a smoke simulation: a real Mantaflow bake, its OpenVDB cache read back.

The puff is emitted once with an initial velocity (no gravity, buoyancy or vorticity), so it
drifts along +X by about a cell per frame. The unit check advects the cached density with the
flow the add-on derives, using MacCormack like Mantaflow: the best scale must be 1.
"""
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")  # Blender as a module: Python 3.11 and 3.13 only
import scenes

RES = 24
FRAMES = (1, 8)


def smoke_scene(cache, speed=4.0, data_format="OPENVDB"):
    scene = scenes.empty_scene(frames=FRAMES)
    scene.gravity = (0.0, 0.0, 0.0)
    scene.render.fps = 24
    dom = scenes.smoke_plume(scene, cache, RES, FRAMES, center=(0.0, 0.0, 0.0),
                             source=(-1.0, 0.0, 0.0), radius=0.6, behavior='GEOMETRY',
                             initial_velocity=(speed, 0.0, 0.0), cache_data_format=data_format,
                             alpha=0.0, beta=0.0, vorticity=0.0)
    return scene, dom


def bake_fluid(dom):
    assert scenes.bake_fluid(dom) == {'FINISHED'}


@pytest.fixture
def baked_smoke(registered, tmp_path):
    scene, dom = smoke_scene(tmp_path / "cache")
    bake_fluid(dom)
    yield scene, dom, tmp_path / "cache"
    scenes.empty_scene()   # frees the Mantaflow solvers before the next test


def _density(cache, frame):
    from noise3d.vdb import read_dense
    return read_dense(os.path.join(cache, "data", f"fluid_data_{frame:04d}.vdb"), "density",
                      (RES,) * 3)[0]


def _maccormack(a, flow):
    """Advect a by a backward flow (voxels) the way Mantaflow does: order 2, clamped."""
    from scipy import ndimage
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in a.shape], indexing="ij"), 0)

    def back(x, f):
        return ndimage.map_coordinates(x, grid + np.moveaxis(f, -1, 0), order=1, mode="nearest")
    fwd = back(a, flow)
    corrected = fwd + 0.5 * (a - back(fwd, -flow))
    return np.clip(corrected, ndimage.minimum_filter(a, 3), ndimage.maximum_filter(a, 3))


def test_mantaflow_repaired_and_cache_baked(baked_smoke):
    import manta
    from addon.fluid import mantaflow_broken
    assert not mantaflow_broken() and hasattr(manta.LevelsetGrid, "setConst")
    scene, dom, cache = baked_smoke
    names = sorted(os.listdir(cache / "data"))
    assert names == [f"fluid_data_{f:04d}.vdb" for f in range(FRAMES[0], FRAMES[1] + 1)]


def test_smoke_flow_moves_density_like_mantaflow(baked_smoke, outdir):
    """The derived flow, at scale 1, is what carries the cached density from frame to frame."""
    from addon.api import VolumeBake
    scene, dom, cache = baked_smoke
    bake = VolumeBake(scene, outdir, motion="SMOKE", smoke_domain="Smoke",
                      resolution=RES)
    assert bake.shape == (RES,) * 3 and bake.domain == dom
    motion = bake.source.motion
    assert motion.res == (RES,) * 3
    assert motion.frame_length == pytest.approx(0.1 * 25 / 24)
    scales = np.round(np.arange(0.0, 1.81, 0.1), 2)
    for frame in (3, 5, 7):
        flow = motion.flow(frame, bake.shape, bake.origin, bake.voxel_size)
        assert flow[..., 0].min() < -0.5          # the puff moves about a cell per frame, +X
        a0, a1 = _density(cache, frame - 1), _density(cache, frame)
        err = [float(((_maccormack(a0, s * flow) - a1) ** 2).sum()) for s in scales]
        best = scales[int(np.argmin(err))]
        assert 0.8 <= best <= 1.2, (frame, dict(zip(scales, np.round(err, 4))))
        assert min(err) < 0.5 * err[0]            # the motion explains most of the change


def test_smoke_volume_bake_follows_the_puff(baked_smoke, outdir):
    from noise3d.vdb import read_vdb
    scene, dom, cache = baked_smoke
    res = bpy.ops.noise_warp.bake_volume(directory=outdir, motion='SMOKE', smoke_domain="Smoke",
                                         resolution=RES, seed=3)
    assert res == {'FINISHED'}
    assert sorted(os.listdir(outdir)) == [f"noise_{f:04d}.vdb"
                                          for f in range(FRAMES[0], FRAMES[1] + 1)]
    assert bpy.data.objects["NoiseWarp Volume"].data.frame_duration == FRAMES[1] - FRAMES[0] + 1
    from addon.api import VolumeBake
    motion = VolumeBake(scene, outdir, motion="SMOKE", smoke_domain="Smoke", resolution=RES,
                        overwrite=True).source.motion
    noise = [read_vdb(os.path.join(outdir, f"noise_{f:04d}.vdb"))[0][..., 0]
             for f in range(FRAMES[0], FRAMES[1] + 1)]
    n = RES ** 3
    for x in noise:
        assert abs(x.mean()) < 4.5 / np.sqrt(n) and abs(x.std() - 1) < 4.5 * np.sqrt(0.5 / n)
    shifted, still = [], []
    for i, frame in enumerate(range(FRAMES[0] + 1, FRAMES[1] + 1)):
        flow = motion.flow(frame, (RES,) * 3, -2.0 * np.ones(3), 4.0 / RES)
        prev, cur = noise[i], noise[i + 1]
        from scipy import ndimage
        calm = ndimage.maximum_filter(np.abs(flow).max(-1), size=5) == 0
        assert calm.sum() > n // 4                         # most of the box holds no smoke
        assert np.array_equal(cur[calm], prev[calm])      # no smoke, no motion: same noise
        # cells that came about one voxel from -X: their noise came from there
        one = (np.abs(flow[..., 0] + 1) < 0.25) & (np.abs(flow[..., 1:]).max(-1) < 0.25)
        one[0] = False
        idx = np.nonzero(one)
        src = (idx[0] - 1,) + idx[1:]
        shifted.append((cur[idx], prev[src]))
        still.append((cur[idx], prev[idx]))
    a = np.concatenate([s[0] for s in shifted])
    b = np.concatenate([s[1] for s in shifted])
    c = np.concatenate([s[1] for s in still])
    assert len(a) > 200
    r_moved, r_still = np.corrcoef(a, b)[0, 1], np.corrcoef(a, c)[0, 1]
    assert r_moved > 0.6 and r_moved > r_still + 0.25, (r_moved, r_still, len(a))


def test_smoke_bad_inputs(registered, tmp_path, outdir):
    from addon.api import BakeError, VolumeBake
    scene, dom = smoke_scene(tmp_path / "never_baked")
    try:
        with pytest.raises(BakeError, match="no frame 1 .*bake the domain first"):
            VolumeBake(scene, outdir, motion="SMOKE", smoke_domain="Smoke", resolution=8).run(None)
        with pytest.raises(BakeError, match="not a fluid domain"):
            VolumeBake(scene, outdir, motion="SMOKE", smoke_domain="Camera", resolution=8)
        with pytest.raises(BakeError, match="no smoke domain"):
            VolumeBake(scene, outdir, motion="SMOKE", resolution=8)
        dom.modifiers["Fluid"].domain_settings.cache_data_format = 'UNI'
        with pytest.raises(BakeError, match="OpenVDB"):
            VolumeBake(scene, outdir, motion="SMOKE", smoke_domain="Smoke", resolution=8)
        assert not os.path.exists(outdir) or not os.listdir(outdir)
    finally:
        scenes.empty_scene()


def test_damaged_smoke_cache_refused_before_openvdb_reads_it(baked_smoke, outdir):
    """A metadata length blown up to 2 GB in a cache file: the layout walk refuses it (OpenVDB
    itself would first allocate what the length says)."""
    from addon.api import BakeError, VolumeBake
    scene, dom, cache = baked_smoke
    path = os.path.join(cache, "data", "fluid_data_0002.vdb")
    data = bytearray(open(path, "rb").read())
    at = data.index(b"file_voxel_count")           # name, then the type name, then the value length
    at += len(b"file_voxel_count")
    type_len = int.from_bytes(data[at:at + 4], "little")
    at += 4 + type_len
    data[at:at + 4] = (0x7FFFFFF0).to_bytes(4, "little")
    open(path, "wb").write(bytes(data))
    with pytest.raises(BakeError, match="fluid_data_0002.vdb: not a readable OpenVDB file .*needs"):
        VolumeBake(scene, outdir, motion="SMOKE", smoke_domain="Smoke", resolution=8).run(None)
    assert not os.path.exists(outdir) or not os.listdir(outdir)
