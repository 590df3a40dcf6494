"""The installed extension's bake times: python benchmarks/bench_extension.py [--zip Z] [--frames N]

Builds this platform's zip (or takes --zip), installs it into a Blender holding nothing but
the bpy module of this Python (5.0.1 under 3.11, 5.2.3 under 3.13), and bakes a 256x256,
4-channel texture (a plane and a moving, turning Suzanne; Vector-pass motion) N times:
  session 1, empty Taichi offline cache: the first bake (starts Taichi, compiles every kernel)
    and a later one;
  session 2, a new process reusing that cache: its first bake (Taichi start + cache load);
  sessions 3 and 4, another empty cache, then reusing it: the panel's background warm-up
    (warmup.start, every method the panel offers) runs while the scene is set up, then the
    first bake.
Each bake runs as the Bake button does (warmup.warm_up on the first of a session, then
api.bake_texture). Prints a table: the whole bake, the warm-up, the Vector-pass renders (the
first of a session also starts Cycles) and the warping.
"""
import argparse
import json
import os
import sys
import tempfile
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(REPO, "tests", "addon"), os.path.join(REPO, "addon")]
import blender_user  # noqa: E402

SESSION = textwrap.dedent('''
    import json, math, os, sys, time
    sys.path.insert(0, sys.argv[1])
    import bpy
    zip_path, out, frames, bakes = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    mod = "bl_ext.user_default.noise_warp"
    if mod not in bpy.context.preferences.addons:
        bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                 enable_on_install=True)
    import importlib
    warm = importlib.import_module(mod + ".warmup")
    t0 = time.perf_counter()
    job = warm.start() if sys.argv[6] == "1" else None    # what the panel's first draw does
    scene = bpy.context.scene
    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    scene.render.resolution_x = scene.render.resolution_y = 256
    scene.frame_start, scene.frame_end = 1, frames
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.location, cam.rotation_euler = (0.0, -9.0, 3.0), (math.radians(72), 0.0, 0.0)
    scene.collection.objects.link(cam)
    scene.camera = cam
    bpy.ops.mesh.primitive_plane_add(size=30.0, location=(0, 0, -1))
    bpy.ops.mesh.primitive_monkey_add(location=(-1.5, 0, 0.5))
    monkey = bpy.context.active_object
    for f, loc, rot in ((1, (-1.5, 0, 0.5), 0.0), (frames, (1.5, 0, 0.8), 1.2)):
        monkey.location, monkey.rotation_euler = loc, (0, 0, rot)
        monkey.keyframe_insert("location", frame=f)
        monkey.keyframe_insert("rotation_euler", frame=f)
    background = job.wait() and time.perf_counter() - t0 if job else None
    api = importlib.import_module(mod + ".api")
    rows = []
    for i in range(bakes):   # what the Bake button does: warm up (first time only), then bake
        t = time.perf_counter()
        bake = api.TextureBake(scene, os.path.join(out, str(i)), channels=4, preview="NONE",
                               overwrite=True)
        compiled = warm.warm_up(bake) or 0.0
        bake.run(progress=None)
        rows.append({"whole": time.perf_counter() - t, "warm_up": compiled,
                     "render": bake.render_seconds, "warp": bake.warp_seconds})
    print("RESULT " + json.dumps({"rows": rows, "blender": bpy.app.version_string,
                                  "background": background,
                                  "python": "%d.%d" % sys.version_info[:2]}))
''')


def session(folder, zip_path, frames, bakes, cache, background=False):
    r = blender_user.run_in_clean_blender(folder, SESSION,
                                          [zip_path, os.path.join(folder, "out"), frames, bakes,
                                           int(background)], ti_cache=cache)
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
    if r.returncode or line is None:
        sys.exit(r.stdout[-3000:] + r.stderr[-3000:])
    return json.loads(line[7:])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zip", help="an already built zip for this platform")
    p.add_argument("--frames", type=int, default=24)
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="noise_warp_bench_ext_")
    zip_path = a.zip
    if not zip_path:
        import build
        zip_path = build.build(os.path.join(tmp, "dist"), [build.current_platform()],
                               os.path.join(REPO, "build", "wheelhouse"), validate=False)[0]
    cache = os.path.join(tmp, "ti_cache")       # empty: as on a computer that never baked
    folder = os.path.join(tmp, "blender")      # one user folder: installed once
    cold = session(folder, zip_path, a.frames, 2, cache)
    warm = session(folder, zip_path, a.frames, 1, cache)
    ahead = session(folder, zip_path, a.frames, 1, os.path.join(tmp, "ti_cache_2"), background=True)
    ahead_cached = session(folder, zip_path, a.frames, 1, os.path.join(tmp, "ti_cache_2"), background=True)
    print(f"Blender {cold['blender']} (bpy module, Python {cold['python']}), "
          f"texture 256x256x4, {a.frames} frames, Vector pass, {os.cpu_count()} CPUs")
    print("| bake | whole bake | Taichi start + compile | Vector-pass renders | warping |")
    print("|---|---|---|---|---|")
    for label, r in (("first of a session, empty kernel cache", cold["rows"][0]),
                     ("later in the same session", cold["rows"][1]),
                     ("first of a new session, cached kernels", warm["rows"][0]),
                     (f"first of a session, empty kernel cache, after the panel's background warm-up "
                      f"({ahead['background']:.1f} s, every method)", ahead["rows"][0]),
                     (f"first of a new session, cached kernels, after the background warm-up "
                      f"({ahead_cached['background']:.1f} s)", ahead_cached["rows"][0])):
        print(f"| {label} | {r['whole']:.1f} s | {r['warm_up']:.1f} s | {r['render']:.1f} s | "
              f"{r['warp']:.2f} s |")
    print(f"command: python benchmarks/bench_extension.py --frames {a.frames}")


if __name__ == "__main__":
    main()
