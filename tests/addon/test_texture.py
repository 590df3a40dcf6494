"""Texture bake through the operator and the API, on tiny scenes (64x48, 4 frames)."""
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")  # Blender as a module: Python 3.11 and 3.13 only
import scenes


def cube_columns(frame, px=3.0, start=1):
    """Columns inside the cube (20 px wide, centred at 17 + px*(frame-start)), 3 px margin."""
    cx = 32 + scenes.PX_PER_UNIT * -1.5 + px * (frame - start)
    return np.arange(int(cx - 10 + 3), int(cx + 10 - 3))


def test_cube_moving_right_moves_noise_right(registered, outdir):
    scenes.moving_cube_scene(px_per_frame=3.0)
    assert bpy.ops.noise_warp.bake_texture(directory=outdir, channels=4, seed=3) == {'FINISHED'}
    files = sorted(os.listdir(outdir))
    assert files == ["noise.npy"] + [f"noise_{f:04d}.exr" for f in range(1, 5)]
    n = np.load(os.path.join(outdir, "noise.npy"))
    assert n.shape == (4, 48, 64, 4) and n.dtype == np.float32
    from noisewarp.io import read_exr
    exr = read_exr(os.path.join(outdir, "noise_0003.exr"))
    assert np.array_equal(exr["G"], n[2, :, :, 1])
    rows = slice(24 - 7, 24 + 7)
    for f in range(2, 5):
        cols = cube_columns(f)
        cur = n[f - 1][rows][:, cols]
        prev_true = n[f - 2][rows][:, cols - 3]
        prev_wrong = n[f - 2][rows][:, cols]
        assert np.corrcoef(cur.ravel(), prev_true.ravel())[0, 1] > 0.999
        assert abs(np.corrcoef(cur.ravel(), prev_wrong.ravel())[0, 1]) < 0.2
        # the static background (rows the cube never reaches) keeps its noise exactly
        assert np.array_equal(n[f - 1][:10], n[f - 2][:10])
        assert np.array_equal(n[f - 1][-10:], n[f - 2][-10:])
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05
    # the sequence is loaded and a preview material reads it
    img = bpy.data.images["noise_warp:bake"]
    assert img.source == 'SEQUENCE' and bpy.path.abspath(img.filepath).endswith("noise_0001.exr")
    mat = bpy.data.materials["NoiseWarp Preview"]
    tex = next(nd for nd in mat.node_tree.nodes if nd.type == 'TEX_IMAGE')
    assert tex.image == img and tex.image_user.frame_duration == 4


def test_render_settings_restored(registered, outdir):
    scene, _ = scenes.moving_cube_scene()
    scene.render.engine = 'BLENDER_WORKBENCH'
    scene.render.use_motion_blur = True
    scene.render.resolution_percentage = 50
    scene.render.image_settings.file_format = 'PNG'
    scene.render.filepath = "//render/"
    scene.frame_set(2)
    bpy.ops.noise_warp.bake_texture(directory=outdir, scale=2.0)
    n = np.load(os.path.join(outdir, "noise.npy"))
    assert n.shape[1:3] == (48, 64)  # 50% of 64x48, times 2
    r = scene.render
    assert (r.engine, r.use_motion_blur, r.resolution_percentage) == ('BLENDER_WORKBENCH', True, 50)
    assert (r.image_settings.file_format, r.filepath, scene.frame_current) == ('PNG', "//render/", 2)


OUTPUTS = {   # image_settings as an artist leaves them (media_type first, as the UI sets it)
    "jpeg": dict(media_type='IMAGE', file_format='JPEG', color_mode='RGB', quality=77),
    "exr_dwaa_half": dict(media_type='IMAGE', file_format='OPEN_EXR', color_mode='RGB',
                          color_depth='16', exr_codec='DWAA'),
    "exr_multilayer_zip": dict(media_type='MULTI_LAYER_IMAGE', file_format='OPEN_EXR_MULTILAYER',
                               color_depth='32', exr_codec='ZIP'),
    "tiff_16": dict(media_type='IMAGE', file_format='TIFF', color_depth='16', tiff_codec='LZW'),
    "ffmpeg": dict(media_type='VIDEO', file_format='FFMPEG'),
    "png_8": dict(media_type='IMAGE', file_format='PNG', color_mode='RGB', color_depth='8',
                  compression=90),
}


@pytest.mark.parametrize("output", sorted(OUTPUTS))
def test_every_setting_restored_after_vector_pass(registered, outdir, output):
    """An EEVEE scene with motion blur, a second view layer, extra passes and a given output
    format: after a Vector-pass bake every setting of the scene is what it was, and the noise
    followed the cube (2.5 px/frame: correlation 0.5 with each of the two cells it overlaps)."""
    import follow
    scene, _ = scenes.moving_cube_scene(px_per_frame=2.5)
    r = scene.render
    r.engine = 'BLENDER_EEVEE'
    for attr, value in (("taa_render_samples", 7), ("use_raytracing", True),
                        ("use_shadows", False)):
        if hasattr(scene.eevee, attr):
            setattr(scene.eevee, attr, value)
    r.use_motion_blur, r.motion_blur_shutter = True, 0.3
    r.film_transparent, r.use_border, r.border_max_x = True, True, 0.6
    r.filepath, r.use_file_extension = "//render/shot_", True
    scene.cycles.samples, scene.cycles.use_denoising = 37, True
    s = r.image_settings
    for attr, value in OUTPUTS[output].items():
        if hasattr(s, attr):
            setattr(s, attr, value)
    if output == "ffmpeg":
        r.ffmpeg.format, r.ffmpeg.codec, r.ffmpeg.constant_rate_factor = 'MPEG4', 'H264', 'HIGH'
    layer = scene.view_layers[0]
    layer.use_pass_normal, layer.use_pass_mist = True, True
    scene.view_layers.new("Second").use_pass_z = False
    scene.frame_set(2)
    before = scenes.settings_dump(scene)
    assert before["scene.render.image_settings.file_format"] == OUTPUTS[output]["file_format"]
    bake = bpy.ops.noise_warp.bake_texture(directory=outdir, channels=4, preview='NONE')
    assert bake == {'FINISHED'}
    assert scenes.dump_differences(before, scenes.settings_dump(scene)) == []
    n = np.load(os.path.join(outdir, "noise.npy"))
    # inside the cube on frames 2-4, clear of the strip it uncovers (which shares its old cells)
    follow.assert_follows(n, [1, 2, 3], np.arange(17, 31), np.arange(19, 28), (2.5, 0))


def test_moving_ortho_camera_follows_true_motion(registered, outdir):
    """An orthographic camera panning 2.3 px left, 0.6 px down per frame over a ground plane,
    with a box riding along with it (still in the view): Cycles' own Vector pass gets this
    wrong (a depth-dependent ramp); the bake follows the true motion and says what it did."""
    import follow
    scene = scenes.empty_scene(64, 48, (1, 4))
    scenes.add_plane(scene)
    bpy.ops.mesh.primitive_cube_add(size=1.6, location=(0.0, 0.0, 0.0))
    box = bpy.context.active_object
    step = np.array([2.3, 0.6]) / scenes.PX_PER_UNIT   # world units per frame (+x, +y)
    for obj in (scene.camera, box):
        for f in (1, 4):
            obj.location.x, obj.location.y = step * (f - 1)
            obj.keyframe_insert("location", frame=f)
        scenes.make_linear(obj)
    scene.timeline_markers.new("Shot", frame=1).camera = scene.camera   # binds the camera
    scene.frame_set(1)
    before = scenes.settings_dump(scene)
    bake = api_bake(scene, outdir)
    assert any("orthographic camera moves" in w for w in bake.warnings)
    assert scenes.dump_differences(before, scenes.settings_dump(scene)) == []
    n = np.load(bake.npy_path)
    # the ground slides 2.3 px left and 0.6 px down in the image (above and below the box)
    for rows in (np.arange(3, 13), np.arange(36, 45)):
        follow.assert_follows(n, [1, 2, 3], rows, np.arange(4, 57), (-2.3, 0.6))
    # the box keeps its place in the view: its noise does not move (its left strip shares
    # cells with the ground coming out from under it)
    follow.assert_follows(n, [1, 2, 3], np.arange(18, 30), np.arange(30, 38), (0.0, 0.0),
                          extra=((-2, 1), (-3, 1)))


def test_ortho_camera_zoom_roll_pan_is_exact(registered):
    """An orthographic camera panning, rising, rolling and zooming (orthographic scale) over a
    plane and a moving cube: the corrected Vector pass equals the projected mesh motion."""
    import tempfile
    from addon.motion import MeshMotion, VectorPassRenderer
    scene, cube = scenes.moving_cube_scene(px_per_frame=1.7)
    cam = scene.camera
    for f in (1, 4):
        t = f - 1
        cam.location = (0.2 * t, -0.05 * t, 10.0 + 0.5 * t)
        cam.rotation_euler.z = 0.05 * t
        cam.data.ortho_scale = 6.4 + 0.3 * t
        cam.keyframe_insert("location", frame=f)
        cam.keyframe_insert("rotation_euler", frame=f)
        cam.data.keyframe_insert("ortho_scale", frame=f)
    scenes.make_linear(cam)
    scenes.make_linear(cam.data)
    with tempfile.TemporaryDirectory() as tmp:
        vector = VectorPassRenderer(scene, 64, 48, tmp)
        try:
            flows = {f: vector.flow(f) for f in (2, 3, 4)}
        finally:
            vector.close()
    assert vector.notes and scene.camera == cam
    mesh = MeshMotion(scene, 64, 48)
    for f, flow in flows.items():
        assert np.abs(flow).max() > 3
        off = np.abs(mesh.flow(f) - flow).max(-1) > 1e-3
        assert off.sum() <= 3, (f, off.sum())


def api_bake(scene, outdir, **kw):
    from addon import api
    kw.setdefault("channels", 4)
    kw.setdefault("preview", 'NONE')
    return api.bake_texture(scene, outdir, progress=None, **kw)


def test_mesh_motion_matches_vector_pass(registered):
    """Perspective camera, a rotating cube: projected mesh motion = Cycles' Vector pass."""
    from addon.motion import MeshMotion
    scene, cube = scenes.moving_cube_scene()
    cam = scene.camera
    cam.data.type = 'PERSP'
    cam.location, cam.rotation_euler = (0.5, -3.0, 8.0), (0.35, 0.0, 0.1)
    cube.rotation_euler = (0.2, 0.3, 0.0)
    cube.keyframe_insert("rotation_euler", frame=1)
    cube.rotation_euler = (0.2, 0.3, 0.9)
    cube.keyframe_insert("rotation_euler", frame=4)
    scenes.make_linear(cube)
    a = scenes.vector_pass_flow(scene, 3, 64, 48)
    b = MeshMotion(scene, 64, 48).flow(3)
    moving = np.abs(a).max(-1) > 0
    assert moving.sum() > 300
    assert np.abs(a - b).max() < 0.05


def test_mesh_motion_of_a_plane_reaching_behind_the_camera(registered):
    """A perspective camera moving over a ground plane of one quad that reaches behind it: the
    triangles are clipped at the near plane, not dropped, so the ground moves as Cycles sees it."""
    from addon.motion import MeshMotion
    scene = scenes.empty_scene(64, 48, (1, 4), camera=((0.0, -6.0, 1.5), (1.35, 0.0, 0.0)))
    scenes.add_plane(scene, size=40.0)
    cam = scene.camera
    for f, x in ((1, 0.0), (4, 0.6)):
        cam.location.x = x
        cam.keyframe_insert("location", index=0, frame=f)
    scenes.make_linear(cam)
    a = scenes.vector_pass_flow(scene, 3, 64, 48)
    b, revealed = MeshMotion(scene, 64, 48).motion(3)
    ground = np.abs(a).max(-1) > 0
    assert ground.sum() > 1000
    assert np.abs(a - b)[ground].max() < 0.05
    entering = ground & (np.arange(64) + 0.5 + a[..., 0] >= 64)   # came from beyond the right edge
    assert entering.sum() > 20
    np.testing.assert_array_equal(revealed, entering)


def test_mesh_motion_bake_and_latent(registered, outdir):
    scenes.moving_cube_scene(px_per_frame=8.0, width=64, height=48)
    res = bpy.ops.noise_warp.bake_texture(directory=outdir, motion='MESH', latent_factor=8,
                                          channels=16, preview='NONE')
    assert res == {'FINISHED'}
    n = np.load(os.path.join(outdir, "noise.npy"))
    assert n.shape == (4, 6, 8, 16)
    # 8 px/frame = one latent cell: a cell inside the cube (and clear of the background
    # uncovered behind it, which also draws on the cube's old cells) moves by exactly one cell
    assert np.corrcoef(n[2, 2:4, 4].ravel(), n[1, 2:4, 3].ravel())[0, 1] > 0.99


def test_deforming_mesh(registered, outdir):
    """A shape key stretching a grid to the right: the noise follows the deformation."""
    scene = scenes.empty_scene()
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=8, y_subdivisions=8, size=4.0)
    obj = bpy.context.active_object
    obj.shape_key_add(name="Basis")
    key = obj.shape_key_add(name="Stretch")
    for v in key.data:
        v.co.x = v.co.x * 1.5 + 0.6    # right side moves 1.6 units, left side 0.4 units
    key.value = 0.0
    key.keyframe_insert("value", frame=1)
    key.value = 1.0
    key.keyframe_insert("value", frame=4)
    scenes.make_linear(obj.data.shape_keys)
    res = bpy.ops.noise_warp.bake_texture(directory=outdir, channels=1, preview='NONE')
    assert res == {'FINISHED'}
    n = np.load(os.path.join(outdir, "noise.npy"))[..., 0]
    assert n.shape == (4, 48, 64)
    # flow of frame 2 from the mesh, compared with what the noise did
    from addon.motion import MeshMotion
    flow = MeshMotion(scene, 64, 48).flow(2)
    dx = flow[..., 0][10:38, 20:40]
    assert dx.min() < -0.5 and dx.std() > 0.1          # it deforms (not a translation)
    # warped correlation at the flow's own shift is high, at zero shift low
    follow, static = follow_correlation(n[1], n[0], flow, slice(10, 38), slice(20, 40))
    assert follow > 0.4 and follow > static + 0.2


def follow_correlation(cur, prev, flow, rows, cols):
    """corr(cur[p], prev[nearest cell to p + flow(p)]) and corr at zero shift, over a window."""
    ys, xs = np.mgrid[rows, cols]
    sx = np.clip(np.round(xs + flow[ys, xs, 0]).astype(int), 0, cur.shape[1] - 1)
    sy = np.clip(np.round(ys + flow[ys, xs, 1]).astype(int), 0, cur.shape[0] - 1)
    follow = np.corrcoef(cur[ys, xs].ravel(), prev[sy, sx].ravel())[0, 1]
    static = np.corrcoef(cur[ys, xs].ravel(), prev[ys, xs].ravel())[0, 1]
    return follow, static


def test_rigid_body_scene(registered, outdir):
    """A falling rigid body seen from the side: unbaked and bake_simulations off -> clear
    error, nothing written; by default the bake bakes the cache first, says so, and the noise
    falls with it."""
    import math
    from addon import api
    scene = scenes.empty_scene(frames=(1, 12))
    cam = scene.camera
    cam.location, cam.rotation_euler = (0.0, -10.0, 0.0), (math.pi / 2, 0.0, 0.0)
    bpy.ops.mesh.primitive_cube_add(size=1.6, location=(0.0, 0.0, 1.2))
    bpy.ops.rigidbody.object_add()
    cache = scene.rigidbody_world.point_cache
    cache.frame_start, cache.frame_end = 1, 12
    with pytest.raises(api.BakeError, match="bake the simulation caches first"):
        api.TextureBake(scene, outdir, bake_simulations=False)
    assert not os.path.exists(outdir) or os.listdir(outdir) == []
    assert not cache.is_baked
    bake = api.bake_texture(scene, outdir, channels=1, preview='NONE', progress=None)
    assert cache.is_baked
    assert bake.warnings == ["baked the simulation caches first: Rigid Body World"]
    n = np.load(os.path.join(outdir, "noise.npy"))[..., 0]
    flow = scenes.vector_pass_flow(scene, 12, 64, 48)
    moving = np.abs(flow).max(-1) > 0
    assert flow[..., 1][moving].mean() > 1.0 or flow[..., 1][moving].mean() < -1.0
    assert flow[..., 1][moving].mean() < 0   # came from above: y down, so the pixel moved down
    ys, xs = np.nonzero(moving)
    rows = slice(ys.min() + 3, ys.max() - 2)
    cols = slice(xs.min() + 3, xs.max() - 2)
    follow, static = follow_correlation(n[11], n[10], flow, rows, cols)
    assert follow > 0.4 and follow > static + 0.2
    assert np.array_equal(n[11][:, :10], n[10][:, :10])   # static background kept


def test_nothing_moves(registered, outdir):
    scenes.moving_cube_scene(px_per_frame=0.0)
    with pytest.raises(RuntimeError, match="nothing moves"):
        bpy.ops.noise_warp.bake_texture(directory=outdir)
    assert os.listdir(outdir) == []


def test_no_camera(registered, outdir):
    scene, _ = scenes.moving_cube_scene()
    scene.camera = None
    with pytest.raises(RuntimeError, match="no camera"):
        bpy.ops.noise_warp.bake_texture(directory=outdir)
    assert not os.path.exists(outdir)


def test_unwritable_folder(registered, tmp_path):
    scenes.moving_cube_scene()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(str(ro), os.W_OK):  # running as root: a path under a regular file instead
            target = str(tmp_path / "file.txt" / "sub")
            (tmp_path / "file.txt").write_text("x")
        else:
            target = str(ro)
        with pytest.raises(RuntimeError, match="not writable|is a file"):
            bpy.ops.noise_warp.bake_texture(directory=target)
    finally:
        ro.chmod(0o700)
    assert os.listdir(str(ro)) == []


def test_existing_outputs_refused_then_overwritten(registered, outdir):
    scenes.moving_cube_scene()
    bpy.ops.noise_warp.bake_texture(directory=outdir, channels=1, preview='NONE')
    before = {f: os.path.getmtime(os.path.join(outdir, f)) for f in os.listdir(outdir)}
    with pytest.raises(RuntimeError, match="already holds a bake"):
        bpy.ops.noise_warp.bake_texture(directory=outdir, channels=1)
    assert before == {f: os.path.getmtime(os.path.join(outdir, f)) for f in os.listdir(outdir)}
    a = np.load(os.path.join(outdir, "noise.npy"))
    assert bpy.ops.noise_warp.bake_texture(directory=outdir, channels=1, seed=5, overwrite=True,
                                           preview='NONE') == {'FINISHED'}
    b = np.load(os.path.join(outdir, "noise.npy"))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_topology_change_falls_back_to_vector_pass(registered, outdir):
    scene, cube = scenes.moving_cube_scene()
    mod = cube.modifiers.new("Sub", 'SUBSURF')
    mod.render_levels = 0   # what the render evaluates (the viewport level does not count)
    mod.keyframe_insert("render_levels", frame=2)
    mod.render_levels = 1
    mod.keyframe_insert("render_levels", frame=3)
    from addon import api
    bake = api.bake_texture(scene, outdir, channels=1, motion='MESH', preview='NONE')
    assert any("topology" in w and "Vector pass" in w for w in bake.warnings)
    assert len(bake.files) == 4


def test_scene_settings_are_the_defaults(registered, outdir):
    scene, _ = scenes.moving_cube_scene()
    s = scene.noise_warp
    s.directory, s.channels, s.seed, s.preview = outdir, 2, 7, 'NONE'
    s.frame_start, s.frame_end = 2, 4
    assert bpy.ops.noise_warp.bake_texture() == {'FINISHED'}
    n = np.load(os.path.join(outdir, "noise.npy"))
    assert n.shape == (3, 48, 64, 2)
    assert sorted(os.listdir(outdir)) == ["noise.npy", "noise_0002.exr", "noise_0003.exr",
                                          "noise_0004.exr"]


def test_interrupted_bake_resumes(registered, outdir):
    from addon import api
    scene, _ = scenes.moving_cube_scene(frames=(1, 5))
    full = api.bake_texture(scene, outdir + "_full", channels=2, preview='NONE', progress=None)
    ref = np.load(full.npy_path)
    bake = api.TextureBake(scene, outdir, channels=2, preview='NONE')
    steps = bake.steps()
    for done, total, _ in steps:
        if done == 3:
            break
    steps.close()   # like Esc in the UI
    assert sorted(f for f in os.listdir(outdir) if f.endswith(".exr")) == [
        "noise_0001.exr", "noise_0002.exr", "noise_0003.exr"]
    again = api.TextureBake(scene, outdir, channels=2, preview='NONE')
    assert again.resume_from["last_frame"] == 3
    again.run(progress=None)
    assert np.array_equal(np.load(again.npy_path), ref)
    assert not os.path.exists(os.path.join(outdir, ".noise_warp"))


def test_cycles_unavailable(registered, outdir):
    import addon_utils
    scenes.moving_cube_scene()
    addon_utils.disable("cycles", default_set=True)
    try:
        with pytest.raises(RuntimeError, match="Cycles is not available"):
            bpy.ops.noise_warp.bake_texture(directory=outdir)
        assert not os.path.exists(outdir)
        # the mesh-motion route needs no renderer
        assert bpy.ops.noise_warp.bake_texture(directory=outdir, motion='MESH',
                                               preview='NONE') == {'FINISHED'}
    finally:
        addon_utils.enable("cycles", default_set=True)


def test_preview_material_shows_the_right_frame(registered, outdir, tmp_path):
    """The preview material, rendered by Cycles (no denoiser), shows exactly the baked frame."""
    from addon import api
    from noisewarp.io import read_exr
    scene, _ = scenes.moving_cube_scene(frames=(3, 6))
    bake = api.bake_texture(scene, outdir, channels=3, progress=None)
    n = np.load(bake.npy_path)
    for obj in scene.objects:
        if obj.type == 'MESH':
            obj.data.materials.clear()
            obj.data.materials.append(bake.material)
    c = scene.cycles
    scene.render.engine = 'CYCLES'
    c.samples, c.filter_width, c.use_denoising = 1, 0.01, False
    s = scene.render.image_settings
    s.file_format, s.color_depth = 'OPEN_EXR', '32'
    scene.render.filepath = str(tmp_path / "preview.exr")
    for frame in (3, 5):
        scene.frame_set(frame)
        bpy.ops.render.render(write_still=True)
        r = read_exr(str(tmp_path / "preview.exr"))
        img = np.stack([r["R"], r["G"], r["B"]], axis=-1)
        expected = np.clip((n[frame - 3] + 3) / 6, 0, 1)
        assert np.abs(img - expected).max() < 1e-3
