"""`noisewarp stats`: does a noise stack look like what diffusion models expect, and does it move?

Per frame: mean, std and the Kolmogorov-Smirnov distance to N(0,1); whiteness (spatial
autocorrelation map, cross-channel correlation); coherence: frame t+1 against frame t sampled
where each pixel came from (with flows), and the same against frame lag (maps composed).
Frames are read one at a time from a memory map, so stacks larger than memory are fine.
"""
import json
import os

import numpy as np

from . import io

HIST_EDGES = np.linspace(-5, 5, 101)
KS_SAMPLE = 20000


def _open_npy(path):
    """A read-only memory map of a .npy file, or one clear ValueError naming it."""
    path = os.fspath(path)
    return path, io.load_npy(path, mmap_mode="r")


def _check_noise(path):
    path, noise = _open_npy(path)
    if not isinstance(noise, np.ndarray) or noise.ndim != 4 or noise.dtype.kind != "f":
        raise ValueError(f"{path}: expected a float noise stack [T, H, W, C], got "
                         f"{getattr(noise, 'shape', '?')} {getattr(noise, 'dtype', '')}")
    return noise


def _check_flows(path, noise_shape):
    """Backward flows [T-1, H·F, W·F, 2] -> a memory map and the factor F down to the noise grid."""
    path, flows = _open_npy(path)
    T, h, w = noise_shape[:3]
    if flows.ndim != 4 or flows.shape[-1] != 2 or flows.shape[0] != T - 1:
        raise ValueError(f"{path}: flows must be [T-1, H, W, 2] = [{T - 1}, ..., 2] (backward, "
                         f"library convention), got {flows.shape}")
    f = flows.shape[1] // h
    if f < 1 or flows.shape[1] != f * h or flows.shape[2] != f * w:
        raise ValueError(f"{path}: flows are {flows.shape[2]}x{flows.shape[1]}, noise is {w}x{h} "
                         "(flows must be the same size or an integer multiple)")
    return flows, f


def _flow_at(flows, k, f):
    """Backward flow k (linking frames k and k+1) on the noise grid (block mean, scaled by 1/F)."""
    flow = np.asarray(flows[k], np.float32)
    if not np.isfinite(flow).all():
        raise ValueError(f"flow {k} has NaN/inf values")
    if f > 1:
        h, w = flow.shape[0] // f, flow.shape[1] // f
        flow = flow.reshape(h, f, w, f, 2).mean(axis=(1, 3)) / f
    return flow


def sample_back(prev, flow=None, positions=None):
    """prev [H, W, C] sampled at the cells containing p + B(p) (nearest cell); mask of in-frame hits."""
    h, w = prev.shape[:2]
    if positions is None:
        ii, jj = np.mgrid[0:h, 0:w].astype(np.float32)
        positions = np.stack([jj + 0.5, ii + 0.5], axis=-1)
        if flow is not None:
            positions = positions + flow
    cj = np.floor(positions[..., 0]).astype(np.int64)
    ci = np.floor(positions[..., 1]).astype(np.int64)
    ok = (cj >= 0) & (cj < w) & (ci >= 0) & (ci < h)
    out = prev[np.clip(ci, 0, h - 1), np.clip(cj, 0, w - 1)]
    return out, ok


def compose_back(positions, flow):
    """Follow one more backward flow from continuous positions (bilinear flow lookup)."""
    import cv2

    mx = positions[..., 0] - 0.5
    my = positions[..., 1] - 0.5
    d = cv2.remap(flow, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_REPLICATE)
    return positions + d


def _corr(a, b, mask):
    a = a[mask].astype(np.float64).ravel()
    b = b[mask].astype(np.float64).ravel()
    if a.size < 2:
        return float("nan")
    a -= a.mean()
    b -= b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def autocorr_map(frame, radius=6):
    """Spatial autocorrelation (mean over channels) for offsets within ±radius; 1 at the centre."""
    x = frame.astype(np.float64)
    x = x - x.mean(axis=(0, 1))
    h, w = x.shape[:2]
    spec = np.fft.rfft2(x, s=(2 * h, 2 * w), axes=(0, 1))
    ac = np.fft.irfft2(np.abs(spec) ** 2, s=(2 * h, 2 * w), axes=(0, 1)).mean(axis=-1)
    ac = np.fft.fftshift(ac)
    cy, cx = h, w
    r = min(radius, h - 1, w - 1)
    crop = ac[cy - r:cy + r + 1, cx - r:cx + r + 1]
    # divide by the number of overlapping pixels at each offset, then by the variance
    oy = h - np.abs(np.arange(-r, r + 1))
    ox = w - np.abs(np.arange(-r, r + 1))
    crop = crop / (oy[:, None] * ox[None, :])
    return crop / crop[r, r]


def analyse(noise_path, flows_path=None, max_lag=16, starts=8):
    """All the numbers of the report (a dict), reading one frame at a time."""
    from scipy import stats as sps

    noise = _check_noise(noise_path)
    T, h, w, C = noise.shape
    flows = f = None
    if flows_path:
        flows, f = _check_flows(flows_path, noise.shape)
    rs = np.random.default_rng(0)
    n_px = h * w * C
    pick = rs.choice(n_px, size=min(KS_SAMPLE, n_px), replace=False)
    hist = np.zeros(len(HIST_EDGES) - 1, np.int64)
    total = s1 = s2 = 0.0
    per = {"mean": [], "std": [], "ks_stat": [], "ks_p": []}
    ac_sum = None
    cross = []
    coh = []
    nonfinite = 0
    prev = None
    ac_frames = set(np.unique(np.linspace(0, T - 1, min(T, 16)).astype(int)).tolist())
    for t in range(T):
        x = np.asarray(noise[t], np.float32)
        bad = ~np.isfinite(x)
        if bad.any():
            nonfinite += int(bad.sum())
            x = np.where(bad, 0, x)
        flat = x.ravel()
        hist += np.histogram(flat, HIST_EDGES)[0]
        total += flat.size
        s1 += float(flat.sum(dtype=np.float64))
        s2 += float((flat.astype(np.float64) ** 2).sum())
        per["mean"].append(float(flat.mean(dtype=np.float64)))
        per["std"].append(float(flat.std(dtype=np.float64)))
        ks = sps.kstest(flat[pick], "norm")
        per["ks_stat"].append(float(ks.statistic))
        per["ks_p"].append(float(ks.pvalue))
        if t in ac_frames:  # a few frames, central crop: the FFT is the slow part
            cy, cx = max(0, (h - 256) // 2), max(0, (w - 256) // 2)
            ac = autocorr_map(x[cy:cy + 256, cx:cx + 256])
            ac_sum = ac if ac_sum is None else ac_sum + ac
        if C > 1:
            cc = np.corrcoef(x.reshape(-1, C).T)
            cross.append(float(np.max(np.abs(cc[~np.eye(C, dtype=bool)]))))
        if prev is not None:
            flow = _flow_at(flows, t - 1, f) if flows is not None else None
            back, ok = sample_back(prev, flow)
            coh.append(_corr(x, back, ok))
        prev = x
    ac_map = ac_sum / len(ac_frames)
    r = ac_map.shape[0] // 2
    off = ac_map.copy()
    off[r, r] = 0
    # overall KS distance from the histogram of every value (descriptive); the test itself is
    # per frame (frames are correlated in time, so pooling them would not give a valid p-value)
    cdf = np.concatenate([[0], np.cumsum(hist)]) / max(1, total)
    ks_hist = float(np.max(np.abs(cdf - sps.norm.cdf(HIST_EDGES))))
    p_min = float(np.min(per["ks_p"]))

    lags, lag_corr = [], []
    if T > 1:
        for lag in range(1, min(max_lag, T - 1) + 1):
            vals = []
            for t0 in np.unique(np.linspace(0, T - 1 - lag, min(starts, T - lag)).astype(int)):
                ii, jj = np.mgrid[0:h, 0:w].astype(np.float32)
                pos = np.stack([jj + 0.5, ii + 0.5], axis=-1)
                if flows is not None:
                    for k in range(t0 + lag, t0, -1):  # frame k's backward flow is flows[k-1]
                        pos = compose_back(pos, _flow_at(flows, k - 1, f))
                src = np.asarray(noise[t0], np.float32)
                back, ok = sample_back(src, positions=pos)
                vals.append(_corr(np.asarray(noise[t0 + lag], np.float32), back, ok))
            lags.append(lag)
            lag_corr.append(float(np.nanmean(vals)))

    mean = s1 / total
    std = float(np.sqrt(max(s2 / total - mean * mean, 0.0)))
    n_frame = h * w * C
    # frames are correlated in time (that is the point), so tolerances use one frame's size
    tol_mean = 4 / np.sqrt(n_frame)
    tol_corr = 4 / np.sqrt(h * w)
    checks = {
        "finite": nonfinite == 0,
        "mean_zero": abs(mean) < tol_mean,
        "std_one": abs(std - 1) < 4 * np.sqrt(0.5 / n_frame) + 1e-3,
        "gaussian_ks": bool(p_min * T > 1e-3),  # Bonferroni over frames
        "spatially_white": bool(np.max(np.abs(off)) < tol_corr * 1.5),
        "channels_uncorrelated": bool(not cross or np.max(cross) < 4 / np.sqrt(h * w) * 1.5),
    }
    rep = {
        "file": os.path.abspath(os.fspath(noise_path)),
        "flows": os.path.abspath(os.fspath(flows_path)) if flows_path else None,
        "shape": [T, h, w, C], "dtype": str(noise.dtype),
        "overall": {"mean": mean, "std": std, "n": int(total), "nonfinite": nonfinite,
                    "ks_distance_hist": ks_hist, "ks_p_min_frame": p_min, "ks_sample_per_frame": int(pick.size)},
        "tolerances": {"mean": tol_mean, "lag_correlation": tol_corr, "per_frame_mean": 4 / np.sqrt(n_frame),
                       "per_frame_std": 4 * np.sqrt(0.5 / n_frame)},
        "per_frame": per,
        "spatial": {"lag1_x": float(ac_map[r, r + 1]), "lag1_y": float(ac_map[r + 1, r]),
                    "max_abs_offcentre": float(np.max(np.abs(off))), "radius": int(r),
                    "autocorr_map": ac_map.tolist(),
                    "cross_channel_max": float(np.max(cross)) if cross else None},
        "temporal": {"along_flow": flows is not None, "coherence": coh,
                     "mean": float(np.nanmean(coh)) if coh else None},
        "lag_coherence": {"lags": lags, "corr": lag_corr},
        "checks": checks,
    }
    rep["summary_line"] = (f"{T} frames {w}x{h}x{C}: mean {mean:+.4f}, std {std:.4f}, min KS p {p_min:.2g}, "
                           f"lag-1 autocorr {rep['spatial']['lag1_x']:+.4f}/{rep['spatial']['lag1_y']:+.4f}, "
                           f"coherence t→t+1 {rep['temporal']['mean'] if coh else float('nan'):.3f}"
                           f"{' (along flow)' if flows is not None else ' (in place)'}; "
                           f"{'all checks pass' if all(checks.values()) else 'FAILED: ' + ', '.join(k for k, v in checks.items() if not v)}")
    rep["_hist"] = hist
    return rep


def plot(rep, outdir):
    """The report's PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}

    def save(fig, name):
        with io.atomic_path(os.path.join(outdir, name)) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        files[name.split(".")[0]] = name

    def hist_panel(ax):
        hist = rep["_hist"]
        centres = (HIST_EDGES[:-1] + HIST_EDGES[1:]) / 2
        width = HIST_EDGES[1] - HIST_EDGES[0]
        ax.bar(centres, hist / (hist.sum() * width), width=width, color="#7aa6c2", label="noise")
        xs = np.linspace(-5, 5, 400)
        ax.plot(xs, np.exp(-xs ** 2 / 2) / np.sqrt(2 * np.pi), "k-", lw=1.2, label="N(0,1)")
        ax.set_yscale("log")
        ax.set_ylim(1e-6, 1)
        ax.set_title(f"histogram (mean {rep['overall']['mean']:+.3f}, std {rep['overall']['std']:.3f})")
        ax.legend(loc="upper right", fontsize=8)

    def ac_panel(ax, fig):
        m = np.array(rep["spatial"]["autocorr_map"])
        r = m.shape[0] // 2
        shown = m.copy()
        shown[r, r] = np.nan
        lim = max(0.02, float(np.nanmax(np.abs(shown))))
        im = ax.imshow(shown, cmap="RdBu_r", vmin=-lim, vmax=lim, extent=[-r - .5, r + .5, r + .5, -r - .5])
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title("spatial autocorrelation (centre = 1 hidden)")
        ax.set_xlabel("dx")
        ax.set_ylabel("dy")

    def per_frame_panels(axes):
        pf = rep["per_frame"]
        t = np.arange(len(pf["mean"]))
        tol = rep["tolerances"]["per_frame_mean"]
        axes[0].plot(t, pf["mean"], ".-")
        axes[0].axhspan(-tol, tol, color="0.9")
        axes[0].set_ylabel("mean")
        axes[1].plot(t, pf["std"], ".-")
        axes[1].axhspan(1 - rep["tolerances"]["per_frame_std"], 1 + rep["tolerances"]["per_frame_std"], color="0.9")
        axes[1].axhline(1, color="k", lw=0.8)
        axes[1].set_ylabel("std")
        axes[2].plot(t, pf["ks_stat"], ".-")
        axes[2].set_ylabel("KS distance")
        axes[2].set_xlabel("frame")

    def coherence_panel(ax):
        coh = rep["temporal"]["coherence"]
        ax.plot(np.arange(1, len(coh) + 1), coh, ".-")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("frame t+1")
        ax.set_title("coherence: frame t+1 vs frame t " + ("warped back" if rep["temporal"]["along_flow"] else "(in place)"))

    def lag_panel(ax):
        lc = rep["lag_coherence"]
        ax.plot(lc["lags"], lc["corr"], "o-")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("frame lag")
        ax.set_title("coherence against lag" + (" (along flow)" if rep["temporal"]["along_flow"] else ""))

    fig, ax = plt.subplots(figsize=(5, 3.6), layout="constrained")
    hist_panel(ax)
    save(fig, "histogram.png")
    fig, ax = plt.subplots(figsize=(4.6, 3.8), layout="constrained")
    ac_panel(ax, fig)
    save(fig, "autocorrelation.png")
    fig, axes = plt.subplots(3, 1, figsize=(6, 5), sharex=True, layout="constrained")
    per_frame_panels(axes)
    save(fig, "per_frame.png")
    fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
    coherence_panel(ax)
    save(fig, "coherence.png")
    fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
    lag_panel(ax)
    save(fig, "lag_coherence.png")

    fig = plt.figure(figsize=(13, 7), layout="constrained")
    gs = fig.add_gridspec(3, 3)
    hist_panel(fig.add_subplot(gs[0:2, 0]))
    ac_panel(fig.add_subplot(gs[0:2, 1]), fig)
    per_frame_panels([fig.add_subplot(gs[k, 2]) for k in range(3)])
    coherence_panel(fig.add_subplot(gs[2, 0]))
    lag_panel(fig.add_subplot(gs[2, 1]))
    fig.suptitle(rep["summary_line"], fontsize=9)
    save(fig, "overview.png")
    return files


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def report(noise_path, outdir, flows=None, force=False, max_lag=16):
    """`noisewarp stats`: analyse, then write report.json and the PNG plots into outdir."""
    outdir = os.fspath(outdir)
    rep = analyse(noise_path, flows, max_lag=max_lag)  # validates inputs before writing anything
    if os.path.exists(os.path.join(outdir, "report.json")) and not force:
        raise ValueError(f"{outdir}: a report already exists (use --force to overwrite)")
    os.makedirs(outdir, exist_ok=True)
    rep["plots"] = plot(rep, outdir)
    out = {k: v for k, v in rep.items() if not k.startswith("_")}
    with io.atomic_path(os.path.join(outdir, "report.json")) as tmp:
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1, default=_jsonable)
    return out
