"""The `warp` cost estimate next to what runs really take: peak memory and seconds per frame.

    python benchmarks/bench_estimate.py [--size 176x144] [--supersample 1 4 8] [--methods particle grid]

Each setting runs `warp` on a few frames of a constant-motion flow stack in a fresh process and
reads that process's VmHWM; the estimate is noisewarp.runner.estimate for the same setting.
Prints a table and the command that made it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CHILD = """
import json, sys, time
import numpy as np
import core2d
from noisewarp.runner import warp_to_folder
from noisewarp.sources import open_source
w = core2d.NoiseWarper(8, 8, channels=int(sys.argv[5]), method=sys.argv[3])   # compile first
w.step(np.zeros((8, 8, 2), np.float32))
src = open_source(sys.argv[1])
s = warp_to_folder(src, sys.argv[2], method=sys.argv[3], supersample=int(sys.argv[4]),
                   channels=int(sys.argv[5]), progress=False)
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({"peak": int(hwm) * 1024, "warp_s": s["per_frame_seconds"]["warp"]}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="176x144")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--supersample", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--methods", nargs="+", default=["particle", "grid"])
    args = ap.parse_args()
    from noisewarp.runner import estimate

    w, h = (int(v) for v in args.size.split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        flows = os.path.join(tmp, "flows.npy")
        f = np.zeros((args.frames - 1, h, w, 2), np.float32)
        f[..., 0], f[..., 1] = -0.6, -0.3
        np.save(flows, f)
        for m in args.methods:
            for s in args.supersample:
                out = os.path.join(tmp, f"{m}{s}")
                proc = subprocess.run([sys.executable, "-c", CHILD, flows, out, m, str(s), str(args.channels)],
                                      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
                if proc.returncode:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    continue
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                est = estimate(h, w, args.channels, m, s, steps=args.frames - 1, out_frames=args.frames)
                rows.append((m, s, est["memory"] / 1e6, got["peak"] / 1e6, est["seconds_per_step"], got["warp_s"]))
    print(f"{args.size}, {args.channels} channels, {args.frames} frames")
    print("| method | S | estimated MB | peak MB | estimated s/frame | measured s/frame |")
    print("|---|---|---|---|---|---|")
    for m, s, em, pm, es, ms in rows:
        print(f"| {m} | {s} | {em:.0f} | {pm:.0f} | {es:.3f} | {ms:.3f} |")
    print("\n" + " ".join(["python", "benchmarks/bench_estimate.py"] + sys.argv[1:]))


if __name__ == "__main__":
    main()
