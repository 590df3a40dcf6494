"""Per-stage per-frame times of `noisewarp warp` on a 720p clip: is warping at most as slow as
estimating the flow?

    .venv/bin/python benchmarks/bench_cli.py                      # bikes.mp4 resized to 1280x720
    .venv/bin/python benchmarks/bench_cli.py --frames 10 --method particle --preset medium
    .venv/bin/python benchmarks/bench_cli.py --synthetic          # no input video needed

Stages: read (decode + colour conversion), flow (OpenCV DIS, backward), warp (NoiseWarper.step),
write (noise.npy frame), checkpoint (warper state). The first warp step (kernel compilation)
is excluded from the warp average.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
DEFAULT_VIDEO = "/work/shared/data/bikes.mp4"


def make_clip(path, frames, width, height, video=None):
    import cv2

    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25, (width, height))
    if video and os.path.isfile(video):
        cap = cv2.VideoCapture(video)
        for _ in range(frames):
            ok, f = cap.read()
            if not ok:
                break
            out.write(cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC))
        cap.release()
    else:  # a synthetic pan over a smooth texture
        rs = np.random.default_rng(0)
        big = cv2.GaussianBlur((rs.random((height, width + 4 * frames, 3)) * 255).astype(np.uint8), (0, 0), 3)
        for t in range(frames):
            out.write(np.ascontiguousarray(big[:, 4 * t:4 * t + width]))
    out.release()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=DEFAULT_VIDEO)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--method", default="particle")
    ap.add_argument("--preset", default="medium", choices=["ultrafast", "fast", "medium"])
    ap.add_argument("--supersample", type=int, default=1)
    ap.add_argument("--occlusions", action=argparse.BooleanOptionalAction, default=True,
                    help="revealed masks as warp makes them by default (a second DIS flow per frame)")
    args = ap.parse_args()

    from noisewarp.runner import warp_to_folder
    from noisewarp.sources import open_source

    with tempfile.TemporaryDirectory() as tmp:
        clip = os.path.join(tmp, "clip.mp4")
        make_clip(clip, args.frames + 1, args.width, args.height, None if args.synthetic else args.video)
        src = open_source(clip, dis_preset=args.preset)
        # one throw-away step so kernel compilation is not counted
        import core2d

        w = core2d.NoiseWarper(src.height, src.width, channels=4, method=args.method,
                               supersample=args.supersample)
        w.step(np.zeros((src.height, src.width, 2), np.float32))
        t0 = time.perf_counter()
        summary = warp_to_folder(src, os.path.join(tmp, "out"), method=args.method,
                                 supersample=args.supersample, progress=False, occlusions=args.occlusions)
        wall = time.perf_counter() - t0
    pf = summary["per_frame_seconds"]
    res = {"size": f"{args.width}x{args.height}", "frames": summary["frames"], "method": args.method,
           "supersample": args.supersample, "dis_preset": args.preset, "occlusions": args.occlusions,
           "ms_per_frame": {k: round(v * 1e3, 1) for k, v in pf.items()},
           "wall_s": round(wall, 2), "warp_le_flow": pf["warp"] <= pf["flow"],
           "warp_over_flow": round(pf["warp"] / pf["flow"], 2)}
    print(json.dumps(res))
    print(f"{res['size']} {args.method} s={args.supersample} DIS {args.preset}: " +
          ", ".join(f"{k} {v} ms" for k, v in res["ms_per_frame"].items()) +
          f"  -> warp/flow = {res['warp_over_flow']} ({'OK' if res['warp_le_flow'] else 'warping is slower'})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
