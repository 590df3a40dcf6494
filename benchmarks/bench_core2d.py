"""Per-frame time and peak memory of every 2D method; streaming memory; supersampling coherence.

    python benchmarks/bench_core2d.py                       # the README table (CPU here, CUDA when present)
    python benchmarks/bench_core2d.py --sizes 512 --channels 4 --methods particle,grid
    python benchmarks/bench_core2d.py --stream              # 42 frames at 512²×4: peak RSS
    python benchmarks/bench_core2d.py --coherence           # frame 0 vs 40 against supersampling s
    python benchmarks/bench_core2d.py --reference PATH      # side by side with the public reference kernel
    python benchmarks/bench_core2d.py --first-step          # first step with an empty kernel cache, 4/16/64 ch

Every configuration runs in its own process, so peak memory (VmHWM) is its own.
"""
import argparse
import json
import os
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
    times, cpu = [], []
    for _ in range(cfg["frames"]):
        t, c = time.perf_counter(), time.process_time()
        w.step(flow)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    from core2d import _taichi
    arch = _taichi.init() if w.backend == "taichi" else "numpy"
    print(json.dumps(dict(cfg, s_per_frame=float(np.median(times)), s_min=float(np.min(times)),
                          cpu_s=float(np.median(cpu)), setup_s=setup, arch=arch, peak_mb=peak_memory_mb())))


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


# ----------------------------------------------------------------------------- side by side
CASES = ("translate", "rotate", "zoom")


def case_flow(case, H, W):
    """Backward flows of the reference's three cases: content moving (0.3, 0.7) px/frame, turning
    1°/frame, growing ×1.02/frame about the frame centre."""
    if case == "translate":
        return np.tile(np.array([-0.3, -0.7], np.float32), (H, W, 1))
    if case == "rotate":
        return rotation_flow(H, W)
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    cx, cy = jj + 0.5 - W / 2, ii + 0.5 - H / 2
    return np.stack([cx / 1.02 - cx, cy / 1.02 - cy], -1).astype(np.float32)


def side_worker(cfg):
    """One side of the side-by-side run: build a warper, then time one frame per line on stdin.

    'ours': NoiseWarper.step. 'reference': the public reference's per-frame driver body
    (set_deformation, set_noise, run, noise_field.to_numpy(), as its test.py does), with its
    kernel on Taichi's CPU backend in float64 (its default_fp) instead of the GPU arch its test.py asks
    for (which crashes on machines without one).
    """
    H, W, C, flow = cfg["height"], cfg["width"], 4, case_flow(cfg["case"], cfg["height"], cfg["width"])
    if cfg["side"] == "ours":
        import core2d

        w = core2d.NoiseWarper(H, W, channels=C, method="particle", seed=0, backend="taichi")
        prev = w.noise.copy()

        def frame():
            return w.step(flow)
    else:
        sys.path.insert(0, os.path.join(cfg["reference"], "src"))
        import taichi as ti

        ti.init(arch=ti.cpu, default_fp=ti.f64, random_seed=0, log_level=ti.ERROR, offline_cache=True)
        from warp_particle import ParticleWarper   # the reference's own module, unmodified

        warper = ParticleWarper(H, W, C)
        ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
        # its map: (row, col) of each pixel centre's source position (it subtracts 0.5 itself)
        deformation = np.stack([ii + 0.5 + flow[..., 1], jj + 0.5 + flow[..., 0]], -1)
        state = {"noise": np.random.RandomState(0).randn(H, W, C)}
        prev = state["noise"]

        def frame():
            warper.set_deformation(deformation)
            warper.set_noise(state["noise"])
            warper.run()
            state["noise"] = warper.noise_field.to_numpy()
            return state["noise"]
    y = frame()                                        # compiles
    print(json.dumps({"ready": True, "coherence": transport_corr(prev, y, flow)}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        t, c = time.perf_counter(), time.process_time()
        frame()
        print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c}), flush=True)


def transport_corr(x, y, flow):
    """Mean corr(y_p, x at the cell under p's backward-mapped centre): checks that both sides
    read the flow the same way (the reference's convention is easy to get wrong)."""
    H, W = flow.shape[:2]
    ii, jj = np.mgrid[0:H, 0:W]
    si = np.floor(ii + 0.5 + flow[..., 1]).astype(int)
    sj = np.floor(jj + 0.5 + flow[..., 0]).astype(int)
    ok = (si >= 0) & (si < H) & (sj >= 0) & (sj < W)
    return float(np.mean(np.asarray(y, np.float64)[ok] * np.asarray(x, np.float64)[si[ok], sj[ok]]))


def _reply(proc):
    """The worker's next JSON line (Taichi prints its banner on stdout)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("worker exited")
        if line.startswith("{"):
            return json.loads(line)


def side_by_side(path, sizes, cases, repeats):
    """Both sides in their own process, frames interleaved (ours, reference, ours, ...)."""
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"({os.cpu_count()} CPUs; Taichi CPU backend, default threads on both sides)")
    print("| case | size | ours s/frame min / median | reference min / median | ratio (min) | ratio (median) "
          "| ratio (CPU time) | coherence ours / ref |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for H, W in sizes:
        for case in cases:
            procs = {}
            try:
                for side in ("ours", "reference"):
                    cfg = dict(side=side, height=H, width=W, case=case, reference=path)
                    procs[side] = subprocess.Popen([sys.executable, __file__, "--side-worker", json.dumps(cfg)],
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                                   cwd=ROOT)
                ready = {side: _reply(p) for side, p in procs.items()}
                t = {side: [] for side in procs}
                for _ in range(repeats):
                    for side, p in procs.items():
                        p.stdin.write("step\n")
                        p.stdin.flush()
                        t[side].append(_reply(p))
            except Exception as exc:  # report, keep going
                print(f"| {case} | {W}×{H} | error: {exc} | | | | | |", flush=True)
                continue
            finally:
                for p in procs.values():
                    p.stdin.close() if p.stdin and not p.stdin.closed else None
                    p.wait()
            o = np.array([v["wall"] for v in t["ours"]])
            r = np.array([v["wall"] for v in t["reference"]])
            cpu = np.median([v["cpu"] for v in t["reference"]]) / np.median([v["cpu"] for v in t["ours"]])
            print(f"| {case} | {W}×{H} | {o.min():.4f} / {np.median(o):.4f} | {r.min():.4f} / {np.median(r):.4f} "
                  f"| **{r.min() / o.min():.1f}×** | {np.median(r) / np.median(o):.1f}× | {cpu:.1f}× "
                  f"| {ready['ours']['coherence']:.2f} / {ready['reference']['coherence']:.2f} |", flush=True)
            rows.append(r.min() / o.min())
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {repeats} interleaved frames "
          f"per side and case after one compiling frame")
    return rows


# ----------------------------------------------------------------------------- first step
_FIRST = """
import sys, time
import numpy as np
sys.path.insert(0, {root!r})
t0 = time.perf_counter()
import core2d
w = core2d.NoiseWarper(24, 32, channels={C}, method={method!r}, seed=0, backend="taichi")
t1 = time.perf_counter()
w.step(np.tile(np.array([-0.3, -0.7], np.float32), (24, 32, 1)))
print(t1 - t0, time.perf_counter() - t1)
"""


def first_step(channels, methods):
    """Time of the first step of a fresh process with an empty Taichi cache (what a new user, a
    CI run or a new Ray worker waits), 24×32 frame."""
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| method | channels | import + init s | first step s (compiles) |")
    print("|---|---|---|---|")
    for method in methods:
        for C in channels:
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, NOISEWARP_TI_CACHE=cache, TI_OFFLINE_CACHE_FILE_PATH=cache)
                res = subprocess.run([sys.executable, "-c", _FIRST.format(root=ROOT, C=C, method=method)],
                                     env=env, capture_output=True, text=True)
            if res.returncode:
                print(f"| {method} | {C} | error | {res.stderr.strip().splitlines()[-1]} |")
                continue
            init, step = map(float, res.stdout.split()[-2:])
            print(f"| {method} | {C} | {init:.1f} | {step:.1f} |", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


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
    ap.add_argument("--reference", metavar="PATH",
                    help="time the public reference particle kernel (a checkout of its repository) side by "
                         "side with ours: interleaved frames, same flows, translate/rotate/zoom")
    ap.add_argument("--cases", default=",".join(CASES), help="with --reference")
    ap.add_argument("--repeats", type=int, default=7, help="with --reference: timed frames per side and case")
    ap.add_argument("--first-step", action="store_true",
                    help="first step of a fresh process with an empty kernel cache, for each channel count")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--stream-worker", help=argparse.SUPPRESS)
    ap.add_argument("--side-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.stream_worker:
        return stream_worker(json.loads(args.stream_worker))
    if args.side_worker:
        return side_worker(json.loads(args.side_worker))

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
    if args.reference:
        if "--sizes" not in sys.argv:
            sizes = [(512, 512), (1024, 1024), (1080, 1920)]
        return side_by_side(args.reference, sizes, args.cases.split(","), args.repeats)
    if args.first_step:
        chans = [4, 16, 64] if "--channels" not in sys.argv else [int(c) for c in args.channels.split(",")]
        methods = ["particle"] if "--methods" not in sys.argv else args.methods.split(",")
        return first_step(chans, methods)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"| method | size | channels | s/frame min / median | CPU s/frame | peak MB | arch |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        slow = False
        for H, W in sizes:
            for C in map(int, args.channels.split(",")):
                if slow:
                    print(f"| {method} | {W}×{H} | {C} | (skipped: > {args.max_seconds:.0f} s) | | | |")
                    continue
                frames = args.frames if method != "gp" else 1
                r = run(dict(height=H, width=W, channels=C, method=method, backend=args.backend, frames=frames))
                if "error" in r:
                    print(f"| {method} | {W}×{H} | {C} | error: {r['error']} | | | |")
                    continue
                slow = r["s_min"] > args.max_seconds
                print(f"| {method} | {W}×{H} | {C} | {r['s_min']:.4f} / {r['s_per_frame']:.4f} | {r['cpu_s']:.4f} "
                      f"| {r['peak_mb']:.0f} | {r['arch']} |", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.frames} frames "
          "after one compiling frame; CPU time summed over threads")

if __name__ == "__main__":
    main()
