"""Blender add-on speed: python benchmarks/bench_blender.py [--frames N] [--quick]

1. Texture bake at 256x256, 4 channels, particle method, motion from Cycles' Vector pass:
   the time spent warping against the time of the Vector-pass renders (target: +10% at most).
2. Volume bake: 24 frames of a 64^3 domain moved by a 10k-vertex animated mesh (a deforming,
   moving icosphere) through noise3d's mesh field (target: under 30 s on 2 CPU cores).
3. Volume bake from a smoke simulation: a 64^3 Mantaflow plume baked first (not timed as
   part of the noise), then 24 frames of noise moved by its cached velocity.

Runs headless with the bpy module; user folders go to a temporary directory.
"""
import argparse
import math
import os
import sys
import tempfile
import time

_TMP = tempfile.mkdtemp(prefix="noise_warp_bench_")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "addon")]   # the test scenes' builders
import blender_user  # noqa: E402

blender_user.isolate(os.path.join(_TMP, "user"), override=False)

import bpy  # noqa: E402
import scenes  # noqa: E402


def fresh_scene(size, frames):
    """Factory settings, a perspective camera looking at the origin from -Y."""
    return scenes.empty_scene(size, size, (1, frames),
                              camera=((0.0, -9.0, 3.0), (math.radians(72), 0.0, 0.0)),
                              linear_keys=False)


def animate(obj, attr, frames, values):
    for f, v in zip(frames, values):
        setattr(obj, attr, v)
        obj.keyframe_insert(attr, frame=f)


def texture_bench(frames, out, subdivisions=0):
    """A plane and a moving, turning Suzanne (subdivided `subdivisions` times)."""
    from addon import api
    scene = fresh_scene(256, frames)
    bpy.ops.mesh.primitive_plane_add(size=30.0, location=(0, 0, -1))
    bpy.ops.mesh.primitive_monkey_add(location=(-1.5, 0, 0.5))
    monkey = bpy.context.active_object
    if subdivisions:
        sub = monkey.modifiers.new("Subdivision", 'SUBSURF')
        sub.levels = sub.render_levels = subdivisions
    tris = sum(len(o.evaluated_get(bpy.context.evaluated_depsgraph_get()).data.polygons)
               for o in scene.objects if o.type == 'MESH')
    animate(monkey, "location", (1, frames), ((-1.5, 0, 0.5), (1.5, 0, 0.8)))
    animate(monkey, "rotation_euler", (1, frames), ((0, 0, 0), (0, 0, 1.2)))
    results = []
    for run in range(2):  # the first run compiles Taichi kernels and warms Cycles
        d = os.path.join(out, f"texture_{run}")
        t = time.perf_counter()
        bake = api.bake_texture(scene, d, channels=4, method="PARTICLE", preview="NONE",
                                overwrite=True, progress=None)
        results.append((time.perf_counter() - t, bake.render_seconds, bake.warp_seconds))
    total, render, warp = results[-1]
    n = frames - 1
    print(f"texture 256x256x4, {frames} frames ({n} Vector-pass renders), {tris} faces, "
          "second run:")
    print(f"  Vector-pass render + read: {render:.3f} s ({1000 * render / n:.1f} ms/frame)")
    print(f"  warping (particle):        {warp:.3f} s ({1000 * warp / n:.1f} ms/frame)")
    print(f"  warping / render:          {100 * warp / render:.1f} %  (target <= 10 %)")
    print(f"  whole bake incl. EXR/NPY:  {total:.3f} s (first run {results[0][0]:.3f} s)")
    return warp / render


def volume_bench(frames, res, out):
    from addon import api
    scene = fresh_scene(64, frames)
    bpy.ops.mesh.primitive_cube_add(size=4.0, location=(0, 0, 0))
    domain = bpy.context.active_object
    domain.name = "Domain"
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=6, radius=0.8, location=(-0.8, 0, 0))
    ball = bpy.context.active_object
    scenes.into_collection(scene, ball)
    wave = ball.modifiers.new("Wave", 'WAVE')     # deforms every frame
    wave.height, wave.width, wave.speed = 0.15, 0.6, 0.05
    animate(ball, "location", (1, frames), ((-0.8, 0, 0), (0.8, 0.2, 0.3)))
    animate(ball, "rotation_euler", (1, frames), ((0, 0, 0), (0.5, 0, 1.0)))
    nverts = len(ball.data.vertices)
    t = time.perf_counter()
    bake = api.bake_volume(scene, os.path.join(out, "volume"), 1, frames, domain="Domain",
                           source_collection="Movers", resolution=res, progress=None,
                           overwrite=True)
    total = time.perf_counter() - t
    print(f"volume {tuple(bake.shape)}, {frames} frames, {nverts}-vertex deforming mesh:")
    print(f"  mesh motion field: {bake.motion_seconds:.2f} s, warping: {bake.warp_seconds:.2f} s, "
          f"VDB + state writes: {bake.write_seconds:.2f} s")
    print(f"  whole bake (incl. topology/motion pre-scan, Volume object): {total:.2f} s "
          f"(target < 30 s)")
    return total


def smoke_bench(frames, res, out):
    """A rising, swirling plume baked by Mantaflow, then noise moved by its cached velocity."""
    from addon import api
    scene = fresh_scene(64, frames)
    dom = scenes.smoke_plume(scene, os.path.join(out, "smoke_cache"), res, (1, frames))
    t = time.perf_counter()
    scenes.bake_fluid(dom)
    sim = time.perf_counter() - t
    t = time.perf_counter()
    bake = api.bake_volume(scene, os.path.join(out, "smoke_noise"), 1, frames, motion="SMOKE",
                           smoke_domain="Smoke", resolution=res, progress=None, overwrite=True)
    total = time.perf_counter() - t
    print(f"smoke-driven volume {tuple(bake.shape)}, {frames} frames (Mantaflow bake {sim:.2f} s, "
          "not counted):")
    print(f"  velocity read + resample: {bake.motion_seconds:.2f} s, warping: "
          f"{bake.warp_seconds:.2f} s, VDB + state writes: {bake.write_seconds:.2f} s")
    print(f"  whole noise bake: {total:.2f} s")
    bpy.ops.wm.read_factory_settings()   # frees the Mantaflow solver before exit
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--out", default=os.path.join(_TMP, "out"))
    a = p.parse_args()
    import addon
    addon.register()
    print(f"Blender {bpy.app.version_string}, {os.cpu_count()} CPU threads")
    texture_bench(a.frames, a.out, 0)
    texture_bench(a.frames, a.out, 3)
    volume_bench(a.frames, a.resolution, a.out)
    smoke_bench(a.frames, a.resolution, a.out)


if __name__ == "__main__":
    main()
