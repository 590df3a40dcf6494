"""Flow-map noise: speed against particle, long-range coherence, and what zoom and re-anchoring cost.

    python benchmarks/bench_flowmap.py --speed                # 512²×4 and 1920×1080×16, interleaved with particle
    python benchmarks/bench_flowmap.py --speed --sizes 512 --depths 0,1,2
    python benchmarks/bench_flowmap.py --compile              # first-step time, 4 vs 16 channels (fresh caches)
    python benchmarks/bench_flowmap.py --coherence --plot docs/img/flowmap_coherence.png
    python benchmarks/bench_flowmap.py --zoom                 # 120 frames of zoom out: cost and coherence over time
    python benchmarks/bench_flowmap.py --accuracy             # consecutive and long-range coherence, six motions

Speed runs one process per size: particle and flow-map warpers step in turn on a 1°/frame
rotation, and the median of the timed frames is reported (after one warm-up frame each).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks.bench_core2d import rotation_flow  # noqa: E402
from tests.core2d.helpers import Motion, transport_ratio  # noqa: E402


def speed_worker(cfg):
    import core2d
    from core2d import _taichi

    H, W, C = cfg["height"], cfg["width"], cfg["channels"]
    flow = rotation_flow(H, W)
    warpers = {"particle": core2d.NoiseWarper(H, W, channels=C, method="particle", seed=0, backend="taichi")}
    for d in cfg["depths"]:
        warpers[f"flowmap depth {d}"] = core2d.NoiseWarper(H, W, channels=C, method="flowmap", seed=0,
                                                           backend="taichi", depth=d)
    for w in warpers.values():
        w.step(flow)
    times = {k: [] for k in warpers}
    for _ in range(cfg["frames"]):
        for k, w in warpers.items():
            t = time.perf_counter()
            w.step(flow)
            times[k].append(time.perf_counter() - t)
    out = {k: float(np.median(v)) for k, v in times.items()}
    req = {k: w.last_stats.get("requests_per_pixel") for k, w in warpers.items()}
    print(json.dumps(dict(cfg, times=out, requests=req, arch=_taichi.init())))


def compile_worker(cfg):
    import core2d

    t = time.perf_counter()
    w = core2d.NoiseWarper(64, 64, channels=cfg["channels"], method="flowmap", seed=0, backend="taichi")
    w.step(rotation_flow(64, 64))
    print(json.dumps(dict(cfg, first_step_s=time.perf_counter() - t)))


def run(mode, cfg, env=None):
    res = subprocess.run([sys.executable, __file__, f"--{mode}-worker", json.dumps(cfg)], capture_output=True,
                         text=True, cwd=ROOT, env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def coherence(size=96, frames=40, channels=4):
    """corr(frame t, frame 0) / perfect transport along a (0.3, 0.7) px/frame translation, for
    particle with supersampling s = 1, 2, 4, 8 and flow-map."""
    import core2d

    motion = Motion(size, size, "translate", (0.3, 0.7))
    flow = motion.flow()
    runs = {f"particle, supersample {s}": dict(method="particle", supersample=s) for s in (1, 2, 4, 8)}
    runs["flow-map"] = dict(method="flowmap")
    curves, cost = {}, {}
    for name, kw in runs.items():
        w = core2d.NoiseWarper(size, size, channels=channels, seed=0, backend="taichi", **kw)
        x0 = w.noise.copy()
        r, spent = [1.0], 0.0
        for t in range(1, frames + 1):
            t0 = time.perf_counter()
            y = w.step(flow)
            spent += time.perf_counter() - t0
            q, perfect = motion.transport(t, 0)
            r.append(transport_ratio(y, x0, q, perfect)[1])
        curves[name], cost[name] = r, spent / frames
    return curves, cost


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.6, 3.6), dpi=120)
    for name, r in curves.items():
        ax.plot(range(len(r)), r, label=name, lw=2.4 if name == "flow-map" else 1.2)
    ax.set_xlabel("frame t (steady 0.3, 0.7 px/frame translation)")
    ax.set_ylabel("corr(frame t, frame 0) / perfect")
    ax.set_title("long-range coherence along the motion (1 = perfect transport)")
    ax.set_ylim(-0.05, 1.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path)


def zoom(size=128, frames=120, rate=1 / 1.02, channels=4):
    """Zoom out at 2 %/frame: the preimage of a pixel grows 4 %/frame in area. With re-anchoring
    (r = 4) and without: work per pixel, time, pixels re-anchored, and coherence between
    consecutive frames (against exact transport) and with frame t-20."""
    import core2d

    motion = Motion(size, size, "zoom", rate)
    flow = motion.flow()
    rows = []
    for reanchor in (4.0, 0.0):
        w = core2d.NoiseWarper(size, size, channels=channels, method="flowmap", seed=1, backend="taichi",
                               reanchor=reanchor)
        frames_ = [w.noise.copy()]
        for t in range(1, frames + 1):
            t0 = time.perf_counter()
            y = w.step(flow)
            dt = time.perf_counter() - t0
            frames_.append(y.copy())
            q, perfect = motion.transport(t, t - 1)
            cons = transport_ratio(y, frames_[t - 1], q, perfect)[1]
            far = None
            if t >= 20:
                q, perfect = motion.transport(t, t - 20)
                far = transport_ratio(y, frames_[t - 20], q, perfect)[1]
            rows.append(dict(reanchor=reanchor, frame=t, area=(1 / rate) ** (2 * t), s=dt,
                             requests=w.last_stats["requests_per_pixel"], reanchored=w.last_stats["reanchored_pixels"],
                             consecutive=cons, lag20=far))
    return rows


MOTIONS = {"translate (0.37, 0.71) px": ("translate", (0.37, 0.71)), "slow (0.04, 0) px": ("translate", (0.04, 0.0)),
           "rotate 1°": ("rotate", 1.0), "zoom in 2 %": ("zoom", 1.02), "zoom out 2 %": ("zoom", 1 / 1.02),
           "swirl 2°": ("swirl", 2.0)}


def accuracy(size=96, frames=40, channels=8, depths=(1, 2)):
    """Per motion and warper: consecutive frames against exact transport (min..max over the 40
    pairs; the change 1 - r for slow motion) and frame 40 against frame 0 / perfect transport."""
    import core2d

    rows = []
    for label, (kind, rate) in MOTIONS.items():
        motion = Motion(size, size, kind, rate)
        flow = motion.flow()
        warpers = {"particle": dict(method="particle")}
        warpers.update({f"flow-map depth {d}": dict(method="flowmap", depth=d) for d in depths})
        for name, kw in warpers.items():
            w = core2d.NoiseWarper(size, size, channels=channels, seed=2, backend="taichi", **kw)
            fr = [w.noise.copy()]
            cons, change = [], []
            for t in range(1, frames + 1):
                fr.append(w.step(flow).copy())
                q, perfect = motion.transport(t, t - 1)
                cons.append(transport_ratio(fr[t], fr[t - 1], q, perfect)[1])
                ok = (q >= 0).ravel()
                a = fr[t].reshape(-1, channels)[ok].astype(np.float64)
                b = fr[t - 1].reshape(-1, channels)[q.ravel()[ok]].astype(np.float64)
                change.append(np.mean((a - b) ** 2) / 2 / (1 - perfect.ravel()[ok].mean()))
            q, perfect = motion.transport(frames, 0)
            rows.append(dict(motion=label, warper=name, cons=(min(cons), max(cons)), change=(min(change), max(change)),
                             long=transport_ratio(fr[frames], fr[0], q, perfect)[1]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--sizes", default="512x512x4,1920x1080x16", help="WxHxC list")
    ap.add_argument("--depths", default="2")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--coherence", action="store_true")
    ap.add_argument("--plot", metavar="PNG")
    ap.add_argument("--zoom", action="store_true")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--speed-worker", help=argparse.SUPPRESS)
    ap.add_argument("--compile-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.speed_worker:
        return speed_worker(json.loads(args.speed_worker))
    if args.compile_worker:
        return compile_worker(json.loads(args.compile_worker))
    print("command:", "python benchmarks/bench_flowmap.py " + " ".join(sys.argv[1:]))
    if args.speed:
        depths = [int(d) for d in args.depths.split(",")]
        print("| size | channels | particle s/frame | " + " | ".join(f"flow-map depth {d} s/frame (× particle)"
                                                            for d in depths) + " | arch |")
        print("|---|---|---|" + "---|" * len(depths) + "---|")
        for spec in args.sizes.split(","):
            W, H, C = (int(v) for v in spec.split("x"))
            r = run("speed", dict(width=W, height=H, channels=C, depths=depths, frames=args.frames))
            p = r["times"]["particle"]
            cells = " | ".join(f"{r['times'][f'flowmap depth {d}']:.3f} ({r['times'][f'flowmap depth {d}'] / p:.1f}×)"
                               for d in depths)
            print(f"| {W}×{H} | {C} | {p:.3f} | {cells} | {r['arch']} |", flush=True)
    if args.compile:
        print("| channels | first flow-map step (compile + run), fresh kernel cache |")
        print("|---|---|")
        for C in (4, 16):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, NOISEWARP_TI_CACHE=cache, TI_OFFLINE_CACHE_FILE_PATH=cache)
                r = run("compile", dict(channels=C), env)
            print(f"| {C} | {r['first_step_s']:.1f} s |", flush=True)
    if args.coherence:
        curves, cost = coherence()
        print("| warper | corr(frame t, frame 0) / perfect transport: t = 10, 20, 30, 40 | s/frame (96²×4) |")
        print("|---|---|---|")
        for name, r in curves.items():
            print(f"| {name} | {r[10]:.3f}, {r[20]:.3f}, {r[30]:.3f}, {r[40]:.3f} | {cost[name]:.3f} |")
        if args.plot:
            plot(curves, args.plot)
    if args.accuracy:
        print("| motion | warper | consecutive / exact (min..max) | change / exact (min..max) | frame 40 vs 0 / perfect |")
        print("|---|---|---|---|---|")
        for r in accuracy(depths=[int(d) for d in args.depths.split(",")]):
            print(f"| {r['motion']} | {r['warper']} | {r['cons'][0]:.3f}..{r['cons'][1]:.3f} | "
                  f"{r['change'][0]:.2f}..{r['change'][1]:.2f} | {r['long']:.3f} |", flush=True)
    if args.zoom:
        rows = zoom()
        print("| reanchor | frame | preimage area (px²) | requests/px | s/frame | re-anchored px | consecutive / exact | vs frame t-20 / perfect |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["frame"] % 10 == 0 or r["reanchored"]:
                lag = "" if r["lag20"] is None else f"{r['lag20']:.3f}"
                print(f"| {r['reanchor']:g} | {r['frame']} | {r['area']:.2f} | {r['requests']:.1f} | {r['s']:.3f} | "
                      f"{r['reanchored']} | {r['consecutive']:.3f} | {lag} |")


if __name__ == "__main__":
    main()
