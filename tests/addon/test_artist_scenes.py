"""Scenes built the way artists build them (rigs, shape keys, hair, instances, render-only
modifiers, scripts), baked through the API: the noise follows the true motion (ALGORITHMS.md
§6 correlations) and the scene is left as it was."""
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")  # Blender as a module: Python 3.11 and 3.13 only
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
    region = (np.arange(7, 25), np.arange(8, 40), np.arange(2, 6))
    follow.assert_follows_volume(n, [(t, region) for t in (1, 2, 3)], (1.3, -0.4, 0.0))


# ----------------------------------------------------------------------------- case 7

def render_only_scene():
    """Five boxes sliding 1.3 px/frame to the right over a ground plane, as artists set them
    up: a low-poly ball with a render-level Subdivision, a box with a render-only Array copy,
    a box hidden in the viewport (eye icon), one disabled in viewports, and one that is in
    the viewport but not in renders."""
    scene = scenes.empty_scene(64, 48, (1, 4))
    scenes.add_plane(scene)
    movers = []
    bpy.ops.mesh.primitive_uv_sphere_add(segments=8, ring_count=4, radius=0.8,
                                         location=(-1.8, 0.9, 0.0))
    ball = bpy.context.active_object
    sub = ball.modifiers.new("Subdivision", 'SUBSURF')
    sub.levels, sub.render_levels = 0, 2
    movers.append(ball)
    for name, loc in (("Arrayed", (0.4, 1.4)), ("EyeHidden", (-1.8, -1.3)),
                      ("ViewportDisabled", (0.4, -1.3)), ("NotRendered", (2.2, -0.6))):
        bpy.ops.mesh.primitive_cube_add(size=0.8, location=loc + (0.0,))
        obj = bpy.context.active_object
        obj.name = name
        movers.append(obj)
    array = movers[1].modifiers.new("Array", 'ARRAY')
    array.relative_offset_displace = (1.5, 0.0, 0.0)
    array.show_viewport = False
    movers[2].hide_set(True)
    movers[3].hide_viewport = True
    movers[4].hide_render = True
    for obj in movers:
        x0 = obj.location.x
        for f in (1, 4):
            obj.location.x = x0 + 0.13 * (f - 1)
            obj.keyframe_insert("location", index=0, frame=f)
        scenes.make_linear(obj)
    scene.frame_set(1)
    return scene


def test_mesh_motion_follows_the_render(registered, outdir):
    """Mesh motion sees what the render sees: the smooth ball, the Array copy, both hidden
    boxes, not the unrendered one. Its flows equal Cycles' Vector pass and the noise follows."""
    scene = render_only_scene()
    truth = true_flows(scene, (2, 3, 4))
    assert_mesh_motion_matches(scene, truth)
    scene.frame_set(1)
    before = scenes.settings_dump(scene)
    bake = bake_texture(scene, outdir, motion='MESH')
    assert scenes.dump_differences(before, scenes.settings_dump(scene)) == []
    from addon.motion import _RenderDepsgraph
    assert not _RenderDepsgraph.is_registered   # the engine exists only during evaluations
    n = np.load(bake.npy_path)
    moving = {f - 1: np.abs(flow).max(-1) > 0.5 for f, flow in truth.items()}
    assert all(m.sum() > 250 for m in moving.values())
    follow.assert_follows_flow(n, {f - 1: flow for f, flow in truth.items()}, moving)
    # where the unrendered box is, the ground keeps its noise
    assert np.array_equal(n[3][26:31, 51:55], n[0][26:31, 51:55])


def test_volume_motion_follows_the_render(registered, outdir):
    """A volume bake of a collection holding only a ball hidden in the viewport and a box whose
    Array copy is render-only: both are seen (the copy moves noise where it is rendered)."""
    from addon import api
    from noise3d.vdb import read_vdb
    scene = render_only_scene()
    movers = bpy.data.collections.new("Movers")
    scene.collection.children.link(movers)
    for name in ("EyeHidden", "Arrayed"):
        movers.objects.link(bpy.data.objects[name])
    scene.frame_set(1)
    bpy.ops.mesh.primitive_cube_add(size=1.0, scale=(6.4, 4.8, 1.0))
    domain = bpy.context.active_object
    domain.hide_render = True
    bake = api.bake_volume(scene, outdir, domain=domain, source_collection=movers,
                           resolution=64, write_density=False, progress=None)
    n = np.stack([read_vdb(f)[0] for f in bake.files])
    # 0.1-unit voxels from (-3.2, -2.4, -0.5); boxes 0.8 units: the hidden box spans x from
    # -2.2 + 0.13 t, y in [-1.7, -0.9], z in [-0.4, 0.4]; the Array copy x from 0.8 + 0.13 t,
    # y in [1.0, 1.8]
    z = np.arange(2, 8)
    for xs, ys in ((np.arange(14, 18), np.arange(9, 13)), (np.arange(48, 52), np.arange(36, 40))):
        follow.assert_follows_volume(n, [(t, (xs, ys, z)) for t in (1, 2, 3)], (1.3, 0.0, 0.0))


# ----------------------------------------------------------------------------- case 4

def hair_emitter(scene, dynamics=False, render_type='PATH', size=2.0, location=(0.0, 0.0, 0.0),
                 count=40, length=0.4):
    """A plane growing hair (static unless `dynamics`), as the Particle Properties make it."""
    bpy.ops.mesh.primitive_plane_add(size=size, location=location)
    emitter = bpy.context.active_object
    emitter.name = "Hairy"
    bpy.ops.object.particle_system_add()
    psys = emitter.particle_systems[0]
    psys.settings.type = 'HAIR'
    psys.settings.count, psys.settings.hair_length = count, length
    psys.settings.render_type = render_type
    psys.use_hair_dynamics = dynamics
    return emitter


def slide(obj, px=(1.3, 0.0), frames=(1, 4)):
    """Keyframe obj to slide by px (image x right, y down) per frame, linearly."""
    x0, y0 = obj.location.x, obj.location.y
    for f in frames:
        obj.location.x = x0 + px[0] / scenes.PX_PER_UNIT * (f - frames[0])
        obj.location.y = y0 - px[1] / scenes.PX_PER_UNIT * (f - frames[0])
        obj.keyframe_insert("location", frame=f)
    scenes.make_linear(obj)


def test_what_counts_as_a_simulation(registered):
    """Only simulations that move things need a baked cache: static hair and particles without
    physics follow their emitter; dynamic hair, physics particles, cloth and rigid bodies do not."""
    from addon.motion import unbaked_simulations
    scene = scenes.empty_scene()
    hair_emitter(scene)
    assert unbaked_simulations(scene) == []
    emitter = hair_emitter(scene, location=(3.0, 0.0, 0.0))
    emitter.particle_systems[0].settings.type = 'EMITTER'
    emitter.particle_systems[0].settings.physics_type = 'NO'
    assert unbaked_simulations(scene) == []
    emitter.particle_systems[0].settings.physics_type = 'NEWTON'
    dynamic = hair_emitter(scene, dynamics=True, location=(-3.0, 0.0, 0.0))
    bpy.ops.mesh.primitive_plane_add(location=(0.0, 3.0, 0.0))
    cloth = bpy.context.active_object
    cloth.modifiers.new("Cloth", 'CLOTH')
    bpy.ops.mesh.primitive_cube_add(location=(0.0, -3.0, 0.0))
    bpy.ops.rigidbody.object_add()
    names = [n for n, _ in unbaked_simulations(scene)]
    assert names == ["Rigid Body World", f"{emitter.name} (ParticleSystem)",
                     f"{dynamic.name} (ParticleSystem)", f"{cloth.name} (Cloth)"]


def test_static_hair_does_not_block_the_bake(registered, outdir):
    """A sliding plane with static hair strands: nothing to bake, and the noise slides with
    the plane and its hair (1.3 px/frame: overlaps 0.7 and 0.3)."""
    scene = scenes.empty_scene(64, 48, (1, 4))
    emitter = hair_emitter(scene, size=3.0)
    slide(emitter)
    bake = bake_texture(scene, outdir, bake_simulations=False)
    assert bake.warnings == []
    n = np.load(bake.npy_path)
    # the plane spans x in [17, 47] + 1.3 t px, y in [9, 39]
    follow.assert_follows(n, [1, 2, 3], np.arange(13, 36), np.arange(23, 45), (1.3, 0.0))


def test_unbaked_cloth_is_baked_first(registered, outdir):
    """A cloth sheet dropping onto a floor, never baked: refused when asked not to bake it;
    by default the bake bakes its cache first, says so, and the noise falls with the cloth."""
    import math
    from addon import api
    scene = scenes.empty_scene(64, 48, (1, 8), camera=((0.0, -5.0, 3.0),
                                                      (math.radians(60), 0.0, 0.0)))
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=8, y_subdivisions=8, size=2.0,
                                    location=(0.0, 0.0, 1.5))
    sheet = bpy.context.active_object
    cloth = sheet.modifiers.new("Cloth", 'CLOTH')
    cloth.point_cache.frame_end = 8
    with pytest.raises(api.BakeError, match=r"Grid \(Cloth\)"):
        api.TextureBake(scene, outdir, bake_simulations=False)
    assert not os.path.exists(outdir)
    bake = bake_texture(scene, outdir)
    assert cloth.point_cache.is_baked
    assert bake.warnings == ["baked the simulation caches first: Grid (Cloth)"]
    n = np.load(bake.npy_path)
    truth = true_flows(scene, range(2, 9))
    moving = {f - 1: np.abs(flow).max(-1) > 0.5 for f, flow in truth.items()}
    assert sum(m.sum() for m in moving.values()) > 500
    follow.assert_follows_flow(n, {f - 1: flow for f, flow in truth.items()}, moving)


# ----------------------------------------------------------------------------- case 5

def box_region(center, size, origin, voxel, margin=2):
    """Voxel indices (per axis) whose centres are inside a box, `margin` voxels in."""
    out = []
    for c, o in zip(center, origin):
        lo = int(np.ceil((c - size / 2 - o) / voxel - 0.5)) + margin
        hi = int(np.floor((c + size / 2 - o) / voxel - 0.5)) - margin
        out.append(np.arange(lo, hi + 1))
    return tuple(out)


def test_instances_carry_their_instancers_motion(registered, outdir):
    """A Geometry Nodes scatter (cubes on two points) and a hair emitter showing pebbles, both
    sliding 0.13 units/frame: the volume noise moves with every instance (1.3 voxels: exact
    overlaps), though neither object has a surface of its own in the render."""
    from addon import api
    from addon.motion import RenderEvaluation
    from noise3d.vdb import read_vdb
    scene = scenes.empty_scene(64, 48, (1, 4))
    scatter = scenes.instancer(scene, [(-2.0, 1.0, 0.0), (-0.4, 1.2, 0.0)], size=1.0)
    emitter = hair_emitter(scene, render_type='OBJECT', size=2.4, location=(1.4, -0.8, 0.0),
                           count=3, length=1.0)   # hair instances are scaled by the length
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(30.0, 0.0, 0.0))
    pebble = bpy.context.active_object
    pebble.name = "Pebble"
    pebble.hide_render = True                  # the instances render, the original not
    settings = emitter.particle_systems[0].settings
    settings.instance_object, settings.particle_size = pebble, 1.0
    emitter.show_instancer_for_render = False
    movers = bpy.data.collections.new("Movers")
    scene.collection.children.link(movers)
    for obj in (scatter, emitter):
        for c in list(obj.users_collection):
            c.objects.unlink(obj)
        movers.objects.link(obj)
        slide(obj)
    bpy.ops.mesh.primitive_cube_add(size=1.0, scale=(6.4, 4.8, 1.4))
    domain = bpy.context.active_object
    domain.hide_render = True
    bake = api.bake_volume(scene, outdir, domain=domain, source_collection=movers,
                           resolution=64, write_density=False, progress=None)
    assert bake.warnings == []
    n = np.stack([read_vdb(f)[0] for f in bake.files])
    origin, voxel = bake.origin, bake.voxel_size
    assert n.shape[1:4] == (64, 48, 14) and abs(voxel - 0.1) < 1e-6
    regions = []
    for t in (1, 2, 3):
        boxes = RenderEvaluation(scene)(t + 1, lambda dg: [
            (np.array(i.matrix_world)[:3, 3], np.linalg.norm(np.array(i.matrix_world)[:3, 0]))
            for i in dg.object_instances if i.is_instance])
        assert len(boxes) == 5 and all(size > 0.9 for _, size in boxes)
        regions += [(t, box_region(c, size, origin, voxel)) for c, size in boxes]
    follow.assert_follows_volume(n, regions, (1.3, 0.0, 0.0))


def test_appearing_objects_are_said(registered, outdir):
    """A box that stops rendering halfway (keyed visibility, like a particle dying): the bake
    goes on and says that the noise follows it only while it exists."""
    from addon import api
    scene = scenes.empty_scene(64, 48, (1, 4))
    bpy.ops.mesh.primitive_cube_add(size=0.8, location=(-1.0, 0.0, 0.0))
    stays = bpy.context.active_object
    bpy.ops.mesh.primitive_cube_add(size=0.8, location=(1.0, 0.0, 0.0))
    leaves = bpy.context.active_object
    movers = scenes.into_collection(scene, stays)
    for c in list(leaves.users_collection):
        c.objects.unlink(leaves)
    movers.objects.link(leaves)
    for obj in (stays, leaves):
        slide(obj)
    leaves.hide_render = False
    leaves.keyframe_insert("hide_render", frame=2)
    leaves.hide_render = True
    leaves.keyframe_insert("hide_render", frame=3)
    bpy.ops.mesh.primitive_cube_add(size=4.0)
    domain = bpy.context.active_object
    domain.hide_render = True
    bake = api.bake_volume(scene, outdir, domain=domain, source_collection=movers,
                           resolution=16, progress=None)
    assert len(bake.files) == 4
    assert any("appears or disappears" in w for w in bake.warnings), bake.warnings


# ----------------------------------------------------------------------------- case 6

def test_own_volume_stays_out_of_motion_renders(registered, outdir):
    """After a volume bake, its Volume object sits in front of the camera: the next texture
    bake's Vector pass must not see it (same noise as before it existed, bit for bit; the old
    code took 100 s here rendering the fog) and it renders again afterwards."""
    from addon import api
    scene, cube = scenes.moving_cube_scene(px_per_frame=2.5)
    reference = bake_texture(scene, outdir + "_before")
    movers = scenes.into_collection(scene, cube)
    bpy.ops.mesh.primitive_cube_add(size=1.0, scale=(6.4, 4.8, 2.0))
    domain = bpy.context.active_object
    domain.hide_render = True
    volume = api.bake_volume(scene, outdir + "_volume", domain=domain, source_collection=movers,
                             resolution=16, progress=None)
    assert volume.object.hide_render is False
    scene.frame_set(1)
    before = scenes.settings_dump(scene)
    bake = bake_texture(scene, outdir)
    assert scenes.dump_differences(before, scenes.settings_dump(scene)) == []
    assert np.array_equal(np.load(bake.npy_path), np.load(reference.npy_path))


# ----------------------------------------------------------------------------- case 8

def test_script_moved_domain(registered, outdir):
    """A script that makes and moves the domain, then bakes at once: the volume fills the
    domain where the script put it (the depsgraph is brought up to date first)."""
    from addon import api
    import test_volume
    scene, domain, movers, ball = test_volume.volume_scene()
    domain.location.x, domain.scale = 0.5, (1.5, 1.0, 0.5)   # x in [-1, 2], z in [-0.5, 0.5]
    bake = api.bake_volume(scene, outdir, domain=domain, source_collection=movers,
                           resolution=12, progress=None)
    assert bake.shape == (12, 8, 4)
    assert np.allclose(bake.origin, (-1.0, -1.0, -0.5)) and np.isclose(bake.voxel_size, 0.25)
    mesh = bpy.data.meshes.new("Box")      # a domain built from data, never evaluated yet
    mesh.from_pydata([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], [],
                     [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4),
                      (1, 5, 7, 3)])
    box = bpy.data.objects.new("Box", mesh)
    scene.collection.objects.link(box)
    box.location, box.hide_render = (0.0, 0.0, 1.0), True
    bake = api.bake_volume(scene, outdir + "_box", domain=box, source_collection=movers,
                           resolution=8, progress=None)
    assert bake.shape == (8, 8, 8) and np.allclose(bake.origin, (-1.0, -1.0, 0.0))


def test_odd_render_size_at_half(registered, outdir, tmp_path):
    """259 x 147 at 50 %: Blender renders 129 x 73 (it rounds down), and so is the noise."""
    scene, _ = scenes.moving_cube_scene(width=259, height=147)
    scene.render.resolution_percentage = 50
    bake = bake_texture(scene, outdir, channels=1)
    assert np.load(bake.npy_path).shape == (4, 73, 129, 1)
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = 1
    scene.render.image_settings.file_format = 'PNG'
    scene.render.filepath = str(tmp_path / "frame.png")
    bpy.ops.render.render(write_still=True)
    assert tuple(bpy.data.images.load(str(tmp_path / "frame.png")).size) == (129, 73)


def test_latent_factor_larger_than_the_frame(registered, outdir):
    from addon import api
    scene, _ = scenes.moving_cube_scene()          # 64 x 48
    with pytest.raises(api.BakeError, match="latent factor 64 is larger than the frame"):
        api.TextureBake(scene, outdir, latent_factor=64)
    assert not os.path.exists(outdir)
    assert api.TextureBake(scene, outdir, latent_factor=16).width == 64


def test_outputs_survive_save_and_reload(registered, tmp_path):
    """In a saved .blend, bakes into '//' folders: the image sequence and the volume are stored
    relative to the file, the preview material is kept (a fake user) though nothing uses it
    yet, and after saving and opening the file again all of it is there and loads."""
    from addon import api
    import test_volume
    scene, domain, movers, ball = test_volume.volume_scene()
    blend = str(tmp_path / "shot" / "shot.blend")
    os.makedirs(os.path.dirname(blend))
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    scene = bpy.context.scene
    texture = api.bake_texture(scene, "//noise/", channels=1, progress=None)
    volume = api.bake_volume(scene, "//volume/", domain="Domain", source_collection="Movers",
                             resolution=8, progress=None)
    assert texture.image.filepath == "//noise/noise_0001.exr"
    assert volume.object.data.filepath == "//volume/noise_0001.vdb"
    assert texture.material.users >= 1
    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=blend)
    mat = bpy.data.materials["NoiseWarp Preview"]
    image = next(n for n in mat.node_tree.nodes if n.type == 'TEX_IMAGE').image
    assert image.filepath == "//noise/noise_0001.exr" and image.source == 'SEQUENCE'
    assert os.path.isfile(bpy.path.abspath(image.filepath))
    vol = bpy.data.objects["NoiseWarp Volume"]
    assert vol.data.filepath == "//volume/noise_0001.vdb" and vol.data.materials[0] is not None
    vol.data.grids.load()
    assert "noise" in {g.name for g in vol.data.grids}
