"""Flow map against particle where the defaults are chosen: the `warp` command on a real clip and
the Blender texture bake. python benchmarks/bench_flowmap_default.py [--cli] [--blender]

For each: long-range coherence (frame t+k against frame t carried along the flow, on content
that moved and stayed visible, raw and relative to perfect transport; noisewarp.stats) at lags
1, 24 and 40, and the time per frame (warp alone, and the whole job or bake per frame).

- cli: `noisewarp warp bikes.mp4 --frames A:B --size WxH` for each method (DIS flows and revealed
  masks, as the command runs by default), coherence from its --save-flows output.
- blender: a perspective camera dollying past a ground grid while Suzanne moves and turns,
  baked with the Vector pass (as the panel does); coherence measured along the exact mesh motion
  (its flows and visibility masks). The second bake of each method is timed (the first compiles).
Prints a table and the command that made it.
"""
import argparse
import math
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests", "addon")]
METHODS = ("particle", "flowmap")
LAGS = (1, 24, 40)


def coherence(noise, flows, revealed):
    from noisewarp.stats import analyse

    lc = analyse(noise, flows, max_lag=max(LAGS), revealed_path=revealed)["lag_coherence"]
    n = len(lc["lags"])
    return {k: (lc["moving"][k - 1], lc["moving_transport"][k - 1]) if k <= n else (None, None) for k in LAGS}


def cli(args, tmp):
    from noisewarp.runner import warp_to_folder
    from noisewarp.sources import open_source

    rows = []
    for m in METHODS:
        src = open_source(args.video, frames=args.frames).conform(size=args.size)
        out = os.path.join(tmp, "cli_" + m)
        s = warp_to_folder(src, out, method=m, save_flows=True, progress=False)
        pf = s["per_frame_seconds"]
        c = coherence(os.path.join(out, "noise.npy"), os.path.join(out, "flows.npy"),
                      os.path.join(out, "revealed.npy"))
        rows.append(("warp " + os.path.basename(args.video), f"{args.size} ×4", m, c, pf["warp"], sum(pf.values())))
    return rows


def blender(args, tmp):
    import blender_user

    blender_user.isolate(os.path.join(tmp, "user"), override=False)
    import bpy
    import scenes
    import addon
    from addon import api
    from addon.motion import MeshMotion

    addon.register()
    n, size = args.bake_frames, args.bake_size
    scene = scenes.empty_scene(size, size * 9 // 16, (1, n), camera=((-1.0, -9.0, 3.0), (math.radians(72), 0, 0)),
                               linear_keys=True)
    ground = scenes.quad_grid(scene, 40, 40, 40.0, 40.0)   # the figures in the docs were made with this grid
    ground.location.z = -1.0
    bpy.ops.mesh.primitive_monkey_add(location=(-1.5, 0, 0.5))
    monkey = bpy.context.active_object
    for f, loc, rot in ((1, (-1.5, 0, 0.5), 0.0), (n, (1.5, 0, 0.8), 1.2)):
        monkey.location, monkey.rotation_euler = loc, (0, 0, rot)
        monkey.keyframe_insert("location", frame=f)
        monkey.keyframe_insert("rotation_euler", frame=f)
    cam = scene.camera
    for f, x in ((1, -1.0), (n, 1.0)):
        cam.location.x = x
        cam.keyframe_insert("location", frame=f)
    h, w = api.render_size(scene)
    mesh = MeshMotion(scene, w, h)
    motion = [mesh.motion(f) for f in range(2, n + 1)]
    flows, masks = os.path.join(tmp, "bake_flows.npy"), os.path.join(tmp, "bake_revealed.npy")
    np.save(flows, np.stack([m[0] for m in motion]))
    np.save(masks, np.stack([m[1] for m in motion]).astype(np.uint8))
    rows = []
    for m in METHODS:
        for run in range(2):
            t = time.perf_counter()
            b = api.bake_texture(scene, os.path.join(tmp, f"bake_{m}"), channels=4, method=m, preview="NONE",
                                 overwrite=True, progress=None)
            total = time.perf_counter() - t
        c = coherence(b.npy_path, flows, masks)
        rows.append(("Blender texture bake", f"{w}x{h} ×4", m, c, b.warp_seconds / (n - 1), total / (n - 1)))
    addon.unregister()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", action="store_true")
    ap.add_argument("--blender", action="store_true")
    ap.add_argument("--video", default="/work/shared/data/bikes.mp4")
    ap.add_argument("--frames", default="150:250", help="input frames of the clip (A:B)")
    ap.add_argument("--size", default="320x136", help="size the clip is warped at")
    ap.add_argument("--bake-frames", type=int, default=49)
    ap.add_argument("--bake-size", type=int, default=256, help="render width (height 9/16 of it)")
    args = ap.parse_args()
    if not (args.cli or args.blender):
        args.cli = args.blender = True
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.cli:
            rows += cli(args, tmp)
        if args.blender:
            rows += blender(args, tmp)
    f = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    head = ["where", "size", "method"] + [f"moving lag {k} (/ perfect)" for k in LAGS] + ["warp ms/frame", "all ms/frame"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for where, size, m, c, warp, total in rows:
        cells = [f"{f(c[k][0])} ({f(c[k][1])})" for k in LAGS]
        print(f"| {where} | {size} | {m} | " + " | ".join(cells) + f" | {1e3 * warp:.0f} | {1e3 * total:.0f} |")
    print("\npython " + " ".join([os.path.relpath(__file__, REPO)] + sys.argv[1:]))
    try:
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    except OSError:
        pass


if __name__ == "__main__":
    main()
