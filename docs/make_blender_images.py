"""Render the README/docs pictures of the Blender add-on: python docs/make_blender_images.py

docs/img/blender_texture.png: a moving, turning Suzanne (Cycles, left); the baked noise of
that frame seen through the preview material (middle); where the noise differs from the
previous frame's (right, white = changed): only where the object moves, the static
background keeps its noise bit for bit.
docs/img/blender_volume.png: the `noise` grid of a volume bake around a moving ball, shown as
sparse fog (voxels above 1.2 sigma) so the grains are visible.
docs/img/blender_smoke.png: a rising smoke plume baked by Mantaflow and noise moved by its
cached velocity, one vertical slice: the smoke density, the noise, and where the noise
changed since the previous frame (white): inside the smoke only.
"""
import math
import os
import sys
import tempfile

TMP = tempfile.mkdtemp(prefix="noise_warp_docs_")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "addon")]   # the test scenes' builders
import blender_user  # noqa: E402

blender_user.isolate(os.path.join(TMP, "user"), override=False)

import bpy  # noqa: E402
import numpy as np  # noqa: E402
import scenes  # noqa: E402

OUT = os.path.join(REPO, "docs", "img")


def render(scene, path, samples):
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False   # the denoiser would smear the noise
    scene.view_settings.view_transform = 'Standard'
    scene.render.image_settings.file_format = 'PNG'
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path, check_existing=False)
    w, h = img.size
    px = np.array(img.pixels[:], np.float32).reshape(h, w, 4)[::-1, :, :3]
    bpy.data.images.remove(img)
    return px


def save_png(path, rgb):
    import imageio.v3 as iio
    iio.imwrite(path, (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))


def texture_picture():
    from addon import api
    scene = scenes.empty_scene(320, 240, (1, 16),
                               camera=((0.0, -7.5, 4.2), (math.radians(60), 0.0, 0.0)),
                               sun=((0.6, 0.3, 0.4), 3.0), linear_keys=False)
    bpy.ops.mesh.primitive_plane_add(size=30.0, location=(0, 0, -1))
    bpy.ops.mesh.primitive_monkey_add(location=(-1.6, 0, 0.2))
    monkey = bpy.context.active_object
    monkey.modifiers.new("Sub", 'SUBSURF').render_levels = 2
    bpy.ops.object.shade_smooth()
    for f, x, rz in ((1, -1.6, -0.4), (16, 1.6, 0.6)):
        monkey.location.x, monkey.rotation_euler.z = x, rz
        monkey.keyframe_insert("location", frame=f)
        monkey.keyframe_insert("rotation_euler", frame=f)
    bake = api.bake_texture(scene, os.path.join(TMP, "noise"), channels=3, progress=None,
                            supersample=1)
    scene.frame_set(12)
    shaded = render(scene, os.path.join(TMP, "shaded.png"), 16)
    for obj in scene.objects:
        if obj.type == 'MESH':
            obj.data.materials.clear()
            obj.data.materials.append(bake.material)
    noise = render(scene, os.path.join(TMP, "noise.png"), 1)
    n = np.load(bake.npy_path)
    changed = (np.abs(n[11] - n[10]).max(-1) > 0).astype(np.float32)
    changed = np.repeat(changed[..., None], 3, -1)
    gap = np.ones((240, 6, 3), np.float32)
    save_png(os.path.join(OUT, "blender_texture.png"),
             np.concatenate([shaded, gap, noise, gap, changed], 1))


def volume_picture():
    from addon import api
    scene = scenes.empty_scene(320, 240, (1, 12),
                               camera=((0.0, -5.5, 1.6), (math.radians(75), 0.0, 0.0)),
                               sun=((0.7, 0.2, 0.5), 4.0), linear_keys=False)
    bpy.ops.mesh.primitive_cube_add(size=2.4)
    domain = bpy.context.active_object
    domain.name, domain.hide_render, domain.display_type = "Domain", True, 'BOUNDS'
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=3, radius=0.45)
    ball = bpy.context.active_object
    movers = scenes.into_collection(scene, ball)
    ball.hide_render = True
    for f, x in ((1, -0.7), (12, 0.7)):
        ball.location.x = x
        ball.keyframe_insert("location", frame=f)
    bake = api.bake_volume(scene, os.path.join(TMP, "vol"), 1, 12, domain, movers, resolution=24,
                           progress=None)
    mat = bake.object.data.materials[0]
    nt = mat.node_tree
    node = next(n for n in nt.nodes if n.type == 'PRINCIPLED_VOLUME')
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_name = "noise"
    ramp = nt.nodes.new("ShaderNodeMapRange")
    ramp.inputs["From Min"].default_value, ramp.inputs["From Max"].default_value = 1.2, 2.5
    ramp.inputs["To Max"].default_value = 60.0
    nt.links.new(attr.outputs["Fac"], ramp.inputs["Value"])
    nt.links.new(ramp.outputs["Result"], node.inputs["Density"])
    node.inputs["Density Attribute"].default_value = ""
    scene.cycles.volume_biased = True
    scene.frame_set(12)
    save_png(os.path.join(OUT, "blender_volume.png"), render(scene, os.path.join(TMP, "v.png"), 32))


def smoke_picture(frame=30, res=48):
    from addon import api
    from noise3d.vdb import read_dense, read_vdb
    scene = scenes.empty_scene(frames=(1, frame), linear_keys=False)
    dom = scenes.smoke_plume(scene, os.path.join(TMP, "smoke_cache"), res, (1, frame),
                             source=(-0.4, 0.0, 0.6), radius=0.45, vorticity=0.3)
    scenes.bake_fluid(dom)
    out = os.path.join(TMP, "smoke_noise")
    api.bake_volume(scene, out, 1, frame, motion="SMOKE", smoke_domain="Smoke", resolution=res,
                    progress=None)
    density = read_dense(os.path.join(TMP, "smoke_cache", "data", f"fluid_data_{frame:04d}.vdb"),
                         "density", (res,) * 3)[0]
    now = read_vdb(os.path.join(out, f"noise_{frame:04d}.vdb"))[0][..., 0]
    before = read_vdb(os.path.join(out, f"noise_{frame - 1:04d}.vdb"))[0][..., 0]
    y = res // 2

    def panel(a):   # x right, z up, 6x nearest upscaling
        return np.kron(a[:, y, :].T[::-1], np.ones((6, 6)))
    d = panel(density / max(float(density.max()), 1e-6))
    n = panel(np.clip(now / 6 + 0.5, 0, 1))
    c = panel((now != before).astype(np.float32))
    gap = np.ones((d.shape[0], 8))
    img = np.concatenate([d, gap, n, gap, c], 1)
    save_png(os.path.join(OUT, "blender_smoke.png"), np.repeat(img[..., None], 3, -1))
    bpy.ops.wm.read_factory_settings()   # frees the Mantaflow solver


if __name__ == "__main__":
    import addon
    addon.register()
    os.makedirs(OUT, exist_ok=True)
    texture_picture()
    volume_picture()
    smoke_picture()
    print("wrote", *(os.path.join(OUT, f"blender_{n}.png") for n in ("texture", "volume", "smoke")))
