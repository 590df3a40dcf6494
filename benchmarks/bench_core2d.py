"""Per-frame time and peak memory of every 2D method; streaming memory; supersampling coherence.

    python benchmarks/bench_core2d.py                       # the README table (CPU here, CUDA when present)
    python benchmarks/bench_core2d.py --sizes 512 --channels 4 --methods particle,grid
    python benchmarks/bench_core2d.py --stream              # 42 frames at 512²×4: peak RSS
    python benchmarks/bench_core2d.py --coherence           # frame 0 vs 40 against supersampling s
    python benchmarks/bench_core2d.py --reference PATH      # also time a copy of the public reference
                                                            # particle code (its test.py) on the same flows

Every configuration runs in its own process, so peak memory (VmHWM) is its own.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from noisewarp.io import peak_memory_mb  # noqa: E402


def rotation_flow(H, W, degrees=1.0):
    """Backward flow of a rotation about the frame centre (the reference's 'rotate' case)."""
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    cx, cy = jj + 0.5 - W / 2, ii + 0.5 - H / 2
    th = np.deg2rad(degrees)
    return np.stack([np.cos(th) * cx - np.sin(th) * cy - cx, np.sin(th) * cx + np.cos(th) * cy - cy],
                    -1).astype(np.float32)


def worker(cfg):
    """Time `frames` steps after one warm-up step; print JSON."""
    import core2d

    H, W, C = cfg["height"], cfg["width"], cfg["channels"]
    flow = rotation_flow(H, W)
    t0 = time.perf_counter()
    w = core2d.NoiseWarper(H, W, channels=C, method=cfg["method"], seed=0, backend=cfg["backend"],
                           supersample=cfg.get("supersample", 1))
    w.step(flow)                                   # compiles the kernels
    setup = time.perf_counter() - t0
    times = []
    for _ in range(cfg["frames"]):
        t = time.perf_counter()
        w.step(flow)
        times.append(time.perf_counter() - t)
    from core2d import _taichi
    arch = _taichi.init() if w.backend == "taichi" else "numpy"
    print(json.dumps(dict(cfg, s_per_frame=float(np.median(times)), setup_s=setup, arch=arch,
                          peak_mb=peak_memory_mb())))


def stream_worker(cfg):
    """Warp `frames` frames, appending each to a .npy file; peak RSS must not grow with the frames."""
    import core2d

    H, W, C, T = cfg["height"], cfg["width"], cfg["channels"], cfg["frames"]
    flow = rotation_flow(H, W)
    w = core2d.NoiseWarper(H, W, channels=C, method=cfg["method"], seed=0, backend=cfg["backend"])
    path = os.path.join(tempfile.mkdtemp(), "noise.npy")
    rss = []
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (T, H, W, C)})
        f.write(w.noise.tobytes())
        for t in range(1, T):
            f.write(w.step(flow).tobytes())
            rss.append(peak_memory_mb())
    assert np.load(path, mmap_mode="r").shape == (T, H, W, C)
    shutil.rmtree(os.path.dirname(path))
    print(json.dumps(dict(cfg, peak_mb=rss[-1], peak_mb_after_5=rss[4])))


def run(cfg, mode="worker"):
    res = subprocess.run([sys.executable, __file__, f"--{mode}", json.dumps(cfg)], capture_output=True,
                         text=True, cwd=ROOT)
    if res.returncode != 0:
        return dict(cfg, error=res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def reference(path, H, W, frames=12):
    """Run the public reference's test.py on the same rotation, per frame (difference of two lengths)."""
    def once(T):
        name = f"noisewarp_bench_{T}"
        data = os.path.join(path, "data", name)
        os.makedirs(data, exist_ok=True)
        b = rotation_flow(H, W)
        # its convention: (r, c) with r down, and it builds the backward map as p - flow
        flows = np.stack([np.stack([-b[..., 1], -b[..., 0]], -1)] * T)
        np.save(os.path.join(data, "flows.npy"), flows)
        t = time.perf_counter()
        res = subprocess.run([sys.executable, "test.py", "-n", name], cwd=path, capture_output=True, text=True)
        dt = time.perf_counter() - t
        usage = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        shutil.rmtree(data, ignore_errors=True)
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-500:])
        return dt, usage
    t2, _ = once(2)
    tn, mem = once(frames + 2)
    return (tn - t2) / frames, mem


def coherence(s_values=(1, 2, 4, 8), size=96, frames=40):
    """Frame t against frame 0 at the true shift of a (0.3, 0.7) px/frame translation, t = 0..frames."""
    import core2d

    flow = np.tile(np.array([-0.3, -0.7], np.float32), (size, size, 1))
    curves = {}
    for s in s_values:
        w = core2d.NoiseWarper(size, size, channels=4, seed=0, backend="taichi", supersample=s)
        x = w.noise.astype(np.float64)
        r = [1.0]
        for t in range(1, frames + 1):
            y = w.step(flow).astype(np.float64)
            dx, dy = int(np.floor(0.3 * t)), int(np.floor(0.7 * t))
            fx, fy = 0.3 * t - dx, 0.7 * t - dy
            # the true shift is fractional: compare with the cell of largest overlap, report the
            # correlation against what perfect transport would give there ((1-fx)(1-fy) etc.)
            bx, by = dx + (fx > 0.5), dy + (fy > 0.5)
            ideal = (1 - abs(fx - (fx > 0.5))) * (1 - abs(fy - (fy > 0.5)))
            c = float(np.mean(y[by:, bx:] * x[:size - by, :size - bx]))
            r.append(c / ideal)
        curves[s] = r
    return curves


def plot_coherence(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    for s, r in curves.items():
        ax.plot(range(len(r)), r, label=f"supersample {s}")
    ax.set_xlabel("frame t (steady 0.3, 0.7 px/frame translation)")
    ax.set_ylabel("corr(frame t, frame 0) / ideal")
    ax.set_title("long-range coherence along the motion (1 = perfect transport)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256,512,1024,1920x1080")
    ap.add_argument("--channels", default="4,16")
    ap.add_argument("--methods", default="particle,grid,nearest,upsample,bilinear,gp")
    ap.add_argument("--backend", default="taichi")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=20.0,
                    help="skip larger sizes of a method once one frame takes longer than this")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--coherence", action="store_true")
    ap.add_argument("--plot", metavar="PNG", help="with --coherence: also draw the curves")
    ap.add_argument("--reference", metavar="PATH")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--stream-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.stream_worker:
        return stream_worker(json.loads(args.stream_worker))

    if args.coherence:
        curves = coherence()
        print("| supersample s | corr(frame 40, frame 0) at the true shift (12, 28) px |")
        print("|---|---|")
        for s, r in curves.items():
            print(f"| {s} | {r[-1]:.3f} |")
        if args.plot:
            plot_coherence(curves, args.plot)
        return
    if args.stream:
        r = run(dict(height=512, width=512, channels=4, frames=42, method="particle", backend=args.backend),
                "stream-worker")
        print(f"42 frames at 512²×4 streamed to a .npy: peak RSS {r['peak_mb']:.0f} MB "
              f"(after 5 frames: {r['peak_mb_after_5']:.0f} MB)")
        return

    sizes = []
    for s in args.sizes.split(","):
        w, _, h = s.partition("x")
        sizes.append((int(h or w), int(w)))
    print(f"| method | size | channels | s/frame | peak MB | arch |")
    print("|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        slow = False
        for H, W in sizes:
            for C in map(int, args.channels.split(",")):
                if slow:
                    print(f"| {method} | {W}×{H} | {C} | (skipped: > {args.max_seconds:.0f} s) | | |")
                    continue
                frames = args.frames if method != "gp" else 1
                r = run(dict(height=H, width=W, channels=C, method=method, backend=args.backend, frames=frames))
                if "error" in r:
                    print(f"| {method} | {W}×{H} | {C} | error: {r['error']} | | |")
                    continue
                slow = r["s_per_frame"] > args.max_seconds
                print(f"| {method} | {W}×{H} | {C} | {r['s_per_frame']:.4f} | {r['peak_mb']:.0f} | {r['arch']} |",
                      flush=True)
    if args.reference:
        for H, W in sizes:
            try:
                dt, mem = reference(args.reference, H, W)
                print(f"| reference particle | {W}×{H} | 4 | {dt:.4f} | {mem:.0f} | its default |")
            except Exception as exc:  # report, keep going
                print(f"| reference particle | {W}×{H} | 4 | error: {exc} | | |")


if __name__ == "__main__":
    main()
