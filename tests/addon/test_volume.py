"""Volume bake: VDBs from an animated mesh, loaded as a Volume object, rendered by Cycles."""
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")  # Blender as a module: Python 3.11 and 3.13 only
import scenes


def volume_scene(frames=(1, 4), move=0.25):
    """A 2-unit domain box and an icosphere sliding +X by `move` units per frame."""
    scene = scenes.empty_scene(frames=frames)
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.0, 0.0, 0.0))
    domain = bpy.context.active_object
    domain.name = "Domain"
    domain.display_type = 'BOUNDS'
    domain.hide_render = True
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2, radius=0.5, location=(-0.4, 0.0, 0.0))
    ball = bpy.context.active_object
    movers = scenes.into_collection(scene, ball)
    for f in frames:
        ball.location.x = -0.4 + move * (f - frames[0])
        ball.keyframe_insert("location", index=0, frame=f)
    scenes.make_linear(ball)
    scene.frame_set(frames[0])
    return scene, domain, movers, ball


def test_volume_bake_loads_and_renders(registered, outdir, tmp_path):
    scene, domain, movers, ball = volume_scene()
    res = bpy.ops.noise_warp.bake_volume(directory=outdir, domain="Domain",
                                         source_collection="Movers", resolution=16, seed=1)
    assert res == {'FINISHED'}
    assert sorted(os.listdir(outdir)) == [f"noise_{f:04d}.vdb" for f in range(1, 5)]
    vol_obj = bpy.data.objects["NoiseWarp Volume"]
    vol = vol_obj.data
    assert vol.is_sequence and vol.frame_duration == 4
    scene.frame_set(3)
    vol.grids.load()
    names = {g.name for g in vol.grids}
    assert {"noise", "density"} <= names
    assert bpy.path.abspath(vol.grids.frame_filepath).endswith("noise_0003.vdb")
    # voxels: 16 along 2 units -> 0.125 units; the ball moves 0.25 = 2 voxels per frame
    from noise3d.vdb import read_vdb
    na, vs, origin = read_vdb(os.path.join(outdir, "noise_0002.vdb"))
    nb = read_vdb(os.path.join(outdir, "noise_0003.vdb"))[0][..., 0]
    na = na[..., 0]
    assert na.shape == (16, 16, 16) and np.allclose(vs, 0.125) and np.allclose(origin, -1.0)
    assert abs(nb.std() - 1) < 0.1
    # inside the ball at frame 3 (centre x = 0.1 -> voxel 8.8): noise came from 2 voxels to -x
    core = np.s_[7:10, 6:10, 6:10]
    src = np.s_[5:8, 6:10, 6:10]
    assert np.corrcoef(nb[core].ravel(), na[src].ravel())[0, 1] > 0.9
    # render one frame with Cycles: only the fog (the ball hidden) against a white world
    ball.hide_render = True
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = 4
    scene.cycles.volume_biased = True
    scene.render.resolution_x, scene.render.resolution_y = 48, 32
    import math
    scene.camera.data.type = 'PERSP'
    scene.camera.location, scene.camera.rotation_euler = (0, -6, 0), (math.pi / 2, 0, 0)
    world = bpy.data.worlds.new("W")
    scene.world = world
    world.color = (1, 1, 1)
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = False
    else:   # world nodes always on: a white background
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (1, 1, 1, 1)
    scene.render.image_settings.file_format = 'PNG'

    def render(name):
        scene.render.filepath = str(tmp_path / name)
        bpy.ops.render.render(write_still=True)
        img = bpy.data.images.load(str(tmp_path / name))
        return np.array(img.pixels[:]).reshape(32, 48, 4)[..., :3]

    with_fog = render("fog.png")
    vol_obj.hide_render = True
    without = render("nofog.png")
    centre = np.s_[12:20, 20:28]
    print("render centre with/without the volume", with_fog[centre].mean(), without[centre].mean(),
          "contrast", with_fog[centre].std())
    assert with_fog[centre].mean() < without[centre].mean() - 0.05
    # visible grain, not a uniform haze (the grid's own fog gave 0.002 here, the grain 0.08)
    assert with_fog[centre].std() > 0.03


def test_volume_bad_inputs(registered, outdir):
    scene, domain, movers, ball = volume_scene()
    with pytest.raises(RuntimeError, match="no object named 'Nope'"):
        bpy.ops.noise_warp.bake_volume(directory=outdir, domain="Nope", source_collection="Movers")
    with pytest.raises(RuntimeError, match="no collection"):
        bpy.ops.noise_warp.bake_volume(directory=outdir, domain="Domain", source_collection="X")
    ball.animation_data_clear()
    with pytest.raises(RuntimeError, match="nothing in 'Movers' moves"):
        bpy.ops.noise_warp.bake_volume(directory=outdir, domain="Domain",
                                       source_collection="Movers", resolution=8)
    assert not os.path.exists(outdir) or os.listdir(outdir) == []


def test_open_mesh_named_in_the_bake_report(registered, outdir):
    """An open surface (Suzanne, a sheet) has no inside: only the noise near it follows it. The
    bake says which object, by name, in its report, not 'mesh 0' on the console."""
    import warnings
    from addon import api
    scene, domain, movers, ball = volume_scene(frames=(1, 3))
    bpy.ops.mesh.primitive_plane_add(size=0.6, location=(0.4, 0.0, 0.0))
    sheet = bpy.context.active_object
    sheet.name = "Sheet"
    for c in list(sheet.users_collection):
        c.objects.unlink(sheet)
    movers.objects.link(sheet)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol = api.bake_volume(scene, outdir, 1, 3, domain="Domain", source_collection="Movers",
                              resolution=8, progress=None)
    assert not [w for w in caught if "not closed" in str(w.message)], [str(w.message) for w in caught]
    notes = [w for w in vol.warnings if "closed" in w]
    assert len(notes) == 1 and "'Sheet'" in notes[0] and ball.name not in notes[0], vol.warnings


def test_volume_topology_change_refused(registered, outdir):
    scene, domain, movers, ball = volume_scene()
    mod = ball.modifiers.new("Sub", 'SUBSURF')
    mod.render_levels = 0   # what the render evaluates (the viewport level does not count)
    mod.keyframe_insert("render_levels", frame=2)
    mod.render_levels = 1
    mod.keyframe_insert("render_levels", frame=3)
    with pytest.raises(RuntimeError, match="changes topology between frames 2 and 3"):
        bpy.ops.noise_warp.bake_volume(directory=outdir, domain="Domain",
                                       source_collection="Movers", resolution=8)
    assert not os.path.exists(outdir) or os.listdir(outdir) == []


def test_volume_scene_settings(registered, outdir):
    scene, domain, movers, ball = volume_scene(frames=(1, 3))
    s = scene.noise_warp
    s.volume_directory, s.domain, s.source_collection, s.resolution = outdir, domain, movers, 8
    s.volume_channels, s.write_density = 2, False
    assert bpy.ops.noise_warp.bake_volume() == {'FINISHED'}
    assert sorted(os.listdir(outdir)) == [f"noise_{f:04d}.vdb" for f in range(1, 4)]


def test_volume_resume_and_existing(registered, outdir):
    from addon import api
    from noise3d.vdb import read_vdb
    scene, domain, movers, ball = volume_scene(frames=(1, 4))
    ref = api.bake_volume(scene, outdir + "_ref", 1, 4, domain, movers, resolution=8, progress=None)
    bake = api.VolumeBake(scene, outdir, 1, 4, domain, movers, resolution=8)
    steps = bake.steps()
    for done, total, _ in steps:
        if done == 2:
            break
    steps.close()
    assert sorted(os.listdir(outdir)) == [".noise_warp", "noise_0001.vdb", "noise_0002.vdb"]
    again = api.VolumeBake(scene, outdir, 1, 4, domain, movers, resolution=8)
    assert again.resume_from["last_frame"] == 2
    again.run(progress=None)
    for f in range(1, 5):
        a = read_vdb(os.path.join(outdir, f"noise_{f:04d}.vdb"))[0]
        b = read_vdb(os.path.join(ref.directory, f"noise_{f:04d}.vdb"))[0]
        assert np.array_equal(a, b)
    with pytest.raises(api.BakeError, match="already holds a volume bake"):
        api.VolumeBake(scene, outdir, 1, 4, domain, movers, resolution=8)
    api.bake_volume(scene, outdir, 1, 4, domain, movers, resolution=8, seed=2, overwrite=True,
                    progress=None)
    assert not np.array_equal(read_vdb(os.path.join(outdir, "noise_0004.vdb"))[0],
                              read_vdb(os.path.join(ref.directory, "noise_0004.vdb"))[0])


def test_volume_flowmap_keeps_the_grain_on_the_ball_and_resumes(registered, outdir):
    """Flow Map through the operator: a ball sliding 0.3 voxel a frame for 9 frames (2.7 voxels)
    keeps its grain: inside it, frame 10 against frame 1 shifted by 2 and 3 voxels shares nearly
    all the noise (particle diffuses half of it away); an interrupted flow-map bake resumes to
    the same files."""
    from addon import api
    from noise3d.vdb import read_vdb
    scene, domain, movers, ball = volume_scene(frames=(1, 10), move=0.3 * 0.125)
    assert bpy.ops.noise_warp.bake_volume(directory=outdir, domain="Domain", source_collection="Movers",
                                          resolution=16, channels=8, method='FLOWMAP') == {'FINISHED'}
    particle = api.bake_volume(scene, outdir + "_p", 1, 10, domain, movers, resolution=16, channels=8,
                               progress=None)
    core = np.s_[3:7, 6:10, 6:10]            # inside the ball at frame 1 (centre x = -0.4: voxel 4.8)

    def shared(folder):
        a = read_vdb(os.path.join(folder, "noise_0001.vdb"))[0]
        b = read_vdb(os.path.join(folder, "noise_0010.vdb"))[0]
        return sum(np.corrcoef(a[core].ravel(), b[3 + k:7 + k, 6:10, 6:10].ravel())[0, 1] for k in (2, 3))

    assert shared(outdir) >= 0.85 and shared(particle.directory) < 0.75, (shared(outdir), shared(particle.directory))
    bake = api.VolumeBake(scene, outdir + "_r", 1, 10, domain, movers, resolution=16, channels=8, method="flowmap")
    steps = bake.steps()
    for done, total, _ in steps:
        if done == 4:
            break
    steps.close()
    again = api.VolumeBake(scene, outdir + "_r", 1, 10, domain, movers, resolution=16, channels=8,
                           method="flowmap")
    assert again.resume_from["last_frame"] == 4
    again.run(progress=None)
    for f in range(1, 11):
        assert np.array_equal(read_vdb(os.path.join(outdir, f"noise_{f:04d}.vdb"))[0],
                              read_vdb(os.path.join(outdir + "_r", f"noise_{f:04d}.vdb"))[0]), f
