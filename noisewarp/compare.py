"""`noisewarp compare`: every warping method on the same flows, one table and side-by-side pictures.

Each method runs in its own process so its peak memory (max RSS above the process's baseline
after start-up) is its own; quality numbers come from noisewarp.stats on each method's output,
measured along the same backward flows.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

from . import io

SHORT = {"particle": "particle (∫, Deng et al.)", "grid": "grid (∫, exact polygons)",
         "upsample": "upsample (Chang et al. k=4)", "gp": "gp (Warped Diffusion RFF)",
         "nearest": "nearest", "bilinear": "bilinear", "fixed": "fixed", "resample": "resample"}


def _resize_flow(flow, h, w):
    import cv2

    H, W = flow.shape[:2]
    if (H, W) == (h, w):
        return flow
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA)
    out[..., 0] *= w / W
    out[..., 1] *= h / H
    return out


def collect_flows(source, path, max_size=256, log=sys.stderr):
    """Backward flows of the source (resized so the longer side is <= max_size) -> path (.npy)."""
    H, W = source.height, source.width
    s = 1.0 if not max_size or max(H, W) <= max_size else max_size / max(H, W)
    h, w = max(2, int(round(H * s / 2)) * 2), max(2, int(round(W * s / 2)) * 2)
    out = np.lib.format.open_memmap(path + ".part.npy", mode="w+", dtype=np.float32,
                                    shape=(source.n_frames - 1, h, w, 2))
    for t, flow, _ in source.flows(1):
        out[t - 1] = _resize_flow(flow, h, w)
    out.flush()
    del out
    os.replace(path + ".part.npy", path)
    return h, w


def run_worker(flows_path, method, outdir, channels, seed):
    """Child process: warp along the flows, save noise.npy, print timings and peak memory as JSON
    (resident memory sampled after every step, and its growth over the started-up process)."""
    import core2d

    flows = np.load(flows_path, mmap_mode="r")
    T = flows.shape[0] + 1
    h, w = flows.shape[1:3]
    from core2d import _taichi

    if _taichi.available():
        _taichi.init()
    base = _rss_mb()  # after imports and Taichi start-up
    w0 = core2d.NoiseWarper(h, w, channels=channels, method=method, seed=seed)
    os.makedirs(outdir, exist_ok=True)
    noise = np.lib.format.open_memmap(os.path.join(outdir, ".noise.part.npy"), mode="w+",
                                      dtype=np.float32, shape=(T,) + w0.output_shape)
    noise[0] = w0.noise
    times = []
    peak = base
    for t in range(1, T):
        flow = np.asarray(flows[t - 1])
        t0 = time.perf_counter()
        noise[t] = w0.step(flow)
        times.append(time.perf_counter() - t0)
        peak = max(peak, _rss_mb())
    noise.flush()
    del noise
    os.replace(os.path.join(outdir, ".noise.part.npy"), os.path.join(outdir, "noise.npy"))
    steady = times[1:] if len(times) > 1 else times  # the first step compiles kernels
    print(json.dumps({"method": method, "ms_per_frame": 1e3 * float(np.median(steady)),
                      "first_step_ms": 1e3 * times[0] if times else None,
                      "peak_mb": max(0.0, peak - base), "rss_mb": peak}))


def _rss_mb():
    """Resident memory now (Linux /proc), else the process's peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _slice(noise, row):
    return np.stack([io.noise_to_uint8(np.asarray(noise[t][row][None], np.float32))[0]
                     for t in range(noise.shape[0])])


def compare(args, log=sys.stderr):
    """Run the methods, write table.md / table.csv / compare.json and side_by_side.png."""
    import core2d
    from .stats import analyse

    methods = list(core2d.METHODS) if not args.methods else [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in core2d.METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)} (choose from {', '.join(core2d.METHODS)})")
    from .sources import open_source, source_options

    source = open_source(args.input, **dict(source_options(args), fresh_start=True))
    if source.n_frames < 2:
        raise ValueError(f"{args.input}: need at least 2 frames to compare warping")
    out = os.fspath(args.output)
    if os.path.exists(os.path.join(out, "compare.json")) and not args.force:
        raise ValueError(f"{out}: a comparison already exists (use --force to overwrite)")
    os.makedirs(out, exist_ok=True)
    flows_path = os.path.join(out, "flows.npy")
    h, w = collect_flows(source, flows_path, args.max_size, log)
    T = source.n_frames
    lag = min(16, T - 1)
    rows = []
    from tqdm import tqdm

    for m in tqdm(methods, desc="compare", file=sys.stderr, disable=args.quiet):
        cmd = [sys.executable, "-m", "noisewarp.compare", "--worker", flows_path, m,
               os.path.join(out, m), str(args.channels), str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise ValueError(f"method {m} failed: {tail}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        rep = analyse(os.path.join(out, m, "noise.npy"), flows_path, max_lag=lag, starts=4)
        lc = rep["lag_coherence"]
        res.update({
            "ks_distance": rep["overall"]["ks_distance_hist"],
            "std": rep["overall"]["std"],
            "lag1_autocorr": max(abs(rep["spatial"]["lag1_x"]), abs(rep["spatial"]["lag1_y"])),
            "coherence_1": rep["temporal"]["mean"],
            "coherence_long": lc["corr"][-1] if lc["corr"] else None, "long_lag": lag,
            "white": bool(rep["checks"]["spatially_white"] and rep["checks"]["std_one"]),
        })
        rows.append(res)

    head = ["method", "ms/frame", "peak RSS MB", "+warp MB", "std", "KS dist", "|lag-1 r|", "coh t→t+1", f"coh lag {lag}", "white N(0,1)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    csv = [",".join(["method", "ms_per_frame", "rss_mb", "peak_mb", "std", "ks_distance", "lag1_autocorr",
                     "coherence_1", "coherence_long", "white"])]
    for r in rows:
        lines.append(f"| {r['method']} | {r['ms_per_frame']:.1f} | {r['rss_mb']:.0f} | {r['peak_mb']:.0f} | {r['std']:.3f} | "
                     f"{r['ks_distance']:.4f} | {r['lag1_autocorr']:.3f} | {r['coherence_1']:.3f} | "
                     f"{r['coherence_long']:.3f} | {'yes' if r['white'] else 'no'} |")
        csv.append(",".join(str(r[k]) for k in ["method", "ms_per_frame", "rss_mb", "peak_mb", "std", "ks_distance",
                                                "lag1_autocorr", "coherence_1", "coherence_long", "white"]))
    table = "\n".join(lines)
    info = f"{source.describe()}, compared at {w}x{h}, {args.channels} channels"
    with io.atomic_path(os.path.join(out, "table.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(f"{info}\n\n{table}\n")
    with io.atomic_path(os.path.join(out, "table.csv")) as tmp:
        with open(tmp, "w") as f:
            f.write("\n".join(csv) + "\n")
    _pictures(out, methods, h, w, T)
    with io.atomic_path(os.path.join(out, "compare.json")) as tmp:
        with open(tmp, "w") as f:
            json.dump({"input": info, "frames": T, "size": [h, w], "rows": rows}, f, indent=1)
    print(info, file=sys.stdout)
    print(table, file=sys.stdout)
    return rows


def _pictures(out, methods, h, w, T):
    """side_by_side.png: per method, the last frame and a space-time slice of the middle row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(methods)
    fig, axes = plt.subplots(n, 2, figsize=(9, 1.9 * n + 0.4), squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1.6]})
    for k, m in enumerate(methods):
        noise = np.load(os.path.join(out, m, "noise.npy"), mmap_mode="r")
        axes[k, 0].imshow(io.noise_to_uint8(np.asarray(noise[-1], np.float32)), interpolation="nearest")
        axes[k, 1].imshow(_slice(noise, h // 2), interpolation="nearest", aspect="auto")
        axes[k, 0].set_ylabel(SHORT.get(m, m), fontsize=8)
        for ax in axes[k]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title(f"frame {T - 1}", fontsize=9)
    axes[0, 1].set_title("space-time slice of the middle row (time ↓)", fontsize=9)
    with io.atomic_path(os.path.join(out, "side_by_side.png")) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    _, _, fp, meth, od, ch, sd = sys.argv
    run_worker(fp, meth, od, int(ch), int(sd))
