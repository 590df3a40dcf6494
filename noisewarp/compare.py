"""`noisewarp compare`: every warping method on the same flows, one table and side-by-side pictures.

Each method runs in its own process so its peak memory (max RSS above the process's baseline
after start-up) is its own; quality numbers come from noisewarp.stats on each method's output,
with coherence measured along the same backward flows, on moving and static content apart.
Rows are ranked by coherence on moving content (the mean over lags 1..L): what warping is for;
fixed noise (it stays put while the content moves) and fresh noise score ≈ 0 there.
`gp` (Warped Diffusion's correlated noise, by far the slowest here) runs only when asked for.
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
         "nearest": "nearest", "bilinear": "bilinear", "fixed": "fixed", "resample": "resample",
         "flowmap": "flowmap (∫ over composed maps)"}


def _resize_flow(flow, h, w):
    import cv2

    H, W = flow.shape[:2]
    if (H, W) == (h, w):
        return flow
    out = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA)
    out[..., 0] *= w / W
    out[..., 1] *= h / H
    return out


def collect_flows(source, path, max_size=256, log=sys.stderr, revealed_path=None):
    """Backward flows of the source (resized so the longer side is <= max_size) -> path (.npy),
    and its revealed masks -> revealed_path when the source gives them."""
    import cv2

    H, W = source.height, source.width
    s = 1.0 if not max_size or max(H, W) <= max_size else max_size / max(H, W)
    h, w = max(2, int(round(H * s / 2)) * 2), max(2, int(round(W * s / 2)) * 2)
    n = source.length - 1
    out = io.NpyFrames(path + ".part.npy", mode="w", dtype=np.float32, shape=(n, h, w, 2))
    masks = None
    for t, flow, _, revealed in source.steps(1):
        out[t - 1] = _resize_flow(flow, h, w)
        if revealed is not None and revealed_path:
            if masks is None:
                masks = io.NpyFrames(revealed_path + ".part.npy", mode="w", dtype=np.uint8, shape=(n, h, w))
            m = cv2.resize(revealed.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.25
            masks[t - 1] = m.astype(np.uint8)
    out.close()
    os.replace(path + ".part.npy", path)
    if masks is not None:
        masks.close()
        os.replace(revealed_path + ".part.npy", revealed_path)
    return h, w


def run_worker(flows_path, method, outdir, channels, seed, revealed_path=None):
    """Child process: warp along the flows (with the revealed masks, when given), save noise.npy,
    print timings and peak memory as JSON (resident memory sampled after every step, and its
    growth over the started-up process)."""
    import core2d

    flows = io.NpyFrames(flows_path, mode="r")     # plain reads: mapped pages would count as the method's
    masks = io.NpyFrames(revealed_path, mode="r") if revealed_path else None
    T = flows.shape[0] + 1
    h, w = flows.shape[1:3]
    from core2d import _taichi

    if _taichi.available():
        _taichi.init()
    base = _rss_mb()  # after imports and Taichi start-up
    w0 = core2d.NoiseWarper(h, w, channels=channels, method=method, seed=seed)
    os.makedirs(outdir, exist_ok=True)
    noise = io.NpyFrames(os.path.join(outdir, ".noise.part.npy"), mode="w", dtype=np.float32,
                         shape=(T,) + w0.output_shape)
    noise[0] = w0.noise
    times = []
    peak = base
    for t in range(1, T):
        flow = np.array(flows[t - 1])
        revealed = np.array(masks[t - 1]).astype(bool) if masks is not None else None
        t0 = time.perf_counter()
        noise[t] = w0.step(flow, revealed=revealed)
        times.append(time.perf_counter() - t0)
        peak = max(peak, _rss_mb())
    noise.close()
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


def default_methods():
    """Every method but gp: its random features make it 100-1000x slower than the others on a
    CPU (95 % of a compare run), and its noise is correlated by design."""
    import core2d

    return [m for m in core2d.METHODS if m != "gp"]


def _f(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def compare(args, log=sys.stderr):
    """Run the methods, write table.md / table.csv / compare.json, side_by_side.png and coherence.png."""
    import core2d
    from .sources import open_source, source_options
    from .stats import analyse

    if not args.methods:
        methods = default_methods()
    elif args.methods.strip() == "all":
        methods = list(core2d.METHODS)
    else:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in core2d.METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)} (choose from {', '.join(core2d.METHODS)}, or all)")
    source = open_source(args.input, **dict(source_options(args), fresh_start=True))
    if source.n_frames < 2:
        raise ValueError(f"{args.input}: need at least 2 frames to compare warping")
    out = os.fspath(args.output)
    if os.path.exists(os.path.join(out, "compare.json")) and not args.force:
        raise ValueError(f"{out}: a comparison already exists (use --force to overwrite)")
    os.makedirs(out, exist_ok=True)
    flows_path = os.path.join(out, "flows.npy")
    revealed_path = os.path.join(out, "revealed.npy")
    if os.path.exists(revealed_path):
        os.remove(revealed_path)
    h, w = collect_flows(source, flows_path, args.max_size, log, revealed_path=revealed_path)
    T = source.n_frames
    lag = min(args.max_lag, T - 1)
    rows = []
    from tqdm import tqdm

    for m in tqdm(methods, desc="compare", file=sys.stderr, disable=args.quiet):
        cmd = [sys.executable, "-m", "noisewarp.compare", "--worker", flows_path, m,
               os.path.join(out, m), str(args.channels), str(args.seed)]
        if os.path.isfile(revealed_path):
            cmd.append(revealed_path)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise ValueError(f"method {m} failed: {tail}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        rep = analyse(os.path.join(out, m, "noise.npy"), flows_path, max_lag=lag, starts=args.ends,
                      revealed_path=revealed_path if os.path.isfile(revealed_path) else None)
        lc = rep["lag_coherence"]
        moving = [v for v in lc["moving"] if v is not None]
        res.update({
            "ks_distance": rep["overall"]["ks_distance_hist"],
            "std": rep["overall"]["std"],
            "lag1_autocorr": max(abs(rep["spatial"]["lag1_x"]), abs(rep["spatial"]["lag1_y"])),
            "coherence_1": rep["temporal"]["mean"],
            "moving_1": lc["moving"][0] if lc["moving"] else None,
            "moving_long": lc["moving"][-1] if lc["moving"] else None,
            "moving_long_transport": lc["moving_transport"][-1] if lc["moving"] else None,
            "static_long": lc["static"][-1] if lc["static"] else None,
            "moving_mean": float(np.mean(moving)) if moving else None,
            "coherence_long": lc["corr"][-1] if lc["corr"] else None, "long_lag": lag,
            "curve": {k: lc[k] for k in ("lags", "moving", "static", "corr")},
            "moving_share": float(np.mean(rep["temporal"]["moving_share"])) if rep["temporal"]["moving_share"] else 0.0,
            "white": bool(all(rep["checks"].values())),
        })
        rows.append(res)
    rows.sort(key=lambda r: -1e9 if r["moving_mean"] is None else -r["moving_mean"])
    for k, r in enumerate(rows):
        r["rank"] = k + 1

    head = ["rank", "method", f"moving, mean lag 1–{lag}", "moving t→t+1", f"moving lag {lag}",
            f"moving lag {lag} / perfect transport", f"static lag {lag}", "white N(0,1)", "std", "KS dist",
            "|lag-1 r|", "ms/frame", "peak RSS MB", "+warp MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = ["rank", "method", "moving_mean", "moving_1", "moving_long", "moving_long_transport", "static_long", "white", "std",
            "ks_distance", "lag1_autocorr", "ms_per_frame", "rss_mb", "peak_mb"]
    csv = [",".join(keys)]
    for r in rows:
        lines.append(f"| {r['rank']} | {r['method']} | {_f(r['moving_mean'])} | {_f(r['moving_1'])} | "
                     f"{_f(r['moving_long'])} | {_f(r['moving_long_transport'])} | {_f(r['static_long'])} | "
                     f"{'yes' if r['white'] else 'no'} | "
                     f"{r['std']:.3f} | {r['ks_distance']:.4f} | {r['lag1_autocorr']:.3f} | {r['ms_per_frame']:.1f} | "
                     f"{r['rss_mb']:.0f} | {r['peak_mb']:.0f} |")
        csv.append(",".join(str(r[k]) for k in keys))
    table = "\n".join(lines)
    share = rows[0]["moving_share"] if rows else 0.0
    info = (f"{source.describe()}, compared at {w}x{h}, {args.channels} channels; coherence carried along the "
            f"flow{' (revealed pixels left out)' if os.path.isfile(revealed_path) else ''}; "
            f"{100 * share:.0f} % of the visible pixels change cell from one frame to the next")
    with io.atomic_path(os.path.join(out, "table.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(f"{info}\n\n{table}\n")
    with io.atomic_path(os.path.join(out, "table.csv")) as tmp:
        with open(tmp, "w") as f:
            f.write("\n".join(csv) + "\n")
    _pictures(out, [r["method"] for r in rows], h, w, T)
    _coherence_plot(out, rows, info)
    with io.atomic_path(os.path.join(out, "compare.json")) as tmp:
        with open(tmp, "w") as f:
            json.dump({"input": info, "frames": T, "size": [h, w], "rows": rows}, f, indent=1)
    print(info, file=sys.stdout)
    print(table, file=sys.stdout)
    return rows


def _coherence_plot(out, rows, info):
    """coherence.png: each method's correlation against lag, moving (solid) and static (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4), layout="constrained")
    for k, r in enumerate(rows):
        c = r["curve"]
        nan = [np.nan if v is None else v for v in c["moving"]]
        ax.plot(c["lags"], nan, "o-", ms=3, color=f"C{k}", label=r["method"])
        ax.plot(c["lags"], [np.nan if v is None else v for v in c["static"]], "--", lw=0.8, color=f"C{k}")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("frame lag k")
    ax.set_ylabel("correlation, frame t+k vs frame t along the flow")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title("moving content (solid), static (dashed)", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    with io.atomic_path(os.path.join(out, "coherence.png")) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


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
    _, _, fp, meth, od, ch, sd, *rv = sys.argv
    run_worker(fp, meth, od, int(ch), int(sd), *rv)
