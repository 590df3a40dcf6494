"""`noisewarp stats`: does a noise stack look like what diffusion models expect, and does it move?

Per frame: mean, std and the Kolmogorov-Smirnov test against N(0,1); whiteness (spatial
autocorrelation map, cross-channel correlation). Every check is a test at a family-wise
false-alarm rate ALPHA: a tolerance of z/√n standard errors for the n samples it rests on,
z Bonferroni-corrected for the number of values compared (frames, offsets, channel pairs), so
the verdict means the same for a 22x18 latent and a 4K frame.

Coherence is measured along the motion: frame t's noise is carried to frame t+k through the
composed backward flows (each pixel of frame t+k followed back k steps, the noise of frame t
taken at the cell it lands in) and correlated with frame t+k on the pixels that stayed visible
(inside the frame all along, and not revealed at any step when masks are given), separately
where the content moved to another cell ("moving": fixed noise scores ≈ 0 there, since it
stays put while the content moves) and where it did not ("static"). Without flows the noise
is compared in place. Frames are read one at a time, so stacks larger than memory are fine.

Even noise carried perfectly with the content correlates only partly with the one cell its
pixel lands in: for perfect transport, y_p = W(R)/sqrt|R| over the pixel's square carried back
(R: its corners followed through the same flows), so corr = |R ∩ cell| / sqrt|R| (0.49 for a
(0.3, 0.7) px offset). So each lag also reports coherence "relative to perfect transport": the
correlation divided by the mean of that value. 1 means the noise is exactly where the content
took it however far back; frame-to-frame warpers fall below 1 as the lag grows (each step
re-samples the sub-pixel structure), flow-map noise stays near 1.
"""
import json
import os

import numpy as np

from . import io

HIST_EDGES = np.linspace(-5, 5, 101)
KS_SAMPLE = 200_000       # values per frame for the KS test (all of them below this)
ALPHA = 0.01              # family-wise false-alarm rate of each check
REGIONS = ("all", "moving", "static")
MIN_SAMPLES = 1000        # a correlation from fewer values (standard error > 0.03) is not reported


def z_limit(tests, alpha=ALPHA):
    """Two-sided normal quantile for `tests` comparisons at family-wise rate alpha (Bonferroni)."""
    from scipy.stats import norm

    return float(norm.isf(alpha / (2 * max(1, int(tests)))))


def _read_layout(path, layout):
    """The layout of a noise file: given, or from the run.json beside it, else thwc."""
    if layout:
        return layout
    meta = os.path.join(os.path.dirname(os.path.abspath(os.fspath(path))), "run.json")
    if os.path.isfile(meta):
        try:
            with open(meta) as f:
                run = json.load(f)
            if os.path.basename(os.fspath(path)) == "noise.npy" and run.get("layout") in io.LAYOUTS:
                return run["layout"]
        except (OSError, ValueError):
            pass
    return "thwc"


def _check_noise(path, layout=None):
    """A frame reader ([H, W, C] frames, whatever the layout) for a float noise stack."""
    path = os.fspath(path)
    arr = io.load_npy(path, mmap_mode="r")
    if arr.ndim != 4 or arr.dtype.kind != "f":
        raise ValueError(f"{path}: expected a float noise stack [T, H, W, C], got {arr.shape} {arr.dtype}")
    if arr.dtype.byteorder not in "=|" or not arr.flags.c_contiguous:
        raise ValueError(f"{path}: expected a native-endian C-ordered array")
    del arr
    return io.NoiseFrames(path, layout=_read_layout(path, layout))


def _check_flows(path, noise_shape):
    """Backward flows [T-1, H·F, W·F, 2] -> a frame reader and the factor F down to the noise grid."""
    path = os.fspath(path)
    flows = io.load_npy(path, mmap_mode="r")
    T, h, w = noise_shape[:3]
    if flows.ndim != 4 or flows.shape[-1] != 2 or flows.shape[0] != T - 1:
        raise ValueError(f"{path}: flows must be [T-1, H, W, 2] = [{T - 1}, ..., 2] (backward, "
                         f"library convention), got {flows.shape}")
    f = flows.shape[1] // h
    if f < 1 or flows.shape[1] != f * h or flows.shape[2] != f * w:
        raise ValueError(f"{path}: flows are {flows.shape[2]}x{flows.shape[1]}, noise is {w}x{h} "
                         "(flows must be the same size or an integer multiple)")
    return io.NpyFrames(path, mode="r"), f


def _check_revealed(path, flows_shape):
    path = os.fspath(path)
    m = io.load_npy(path, mmap_mode="r")
    if m.shape != tuple(flows_shape[:3]):
        raise ValueError(f"{path}: revealed masks must be [T-1, H, W] = {tuple(flows_shape[:3])}, got {m.shape}")
    return io.NpyFrames(path, mode="r")


def _flow_at(flows, k, f):
    """Backward flow k (linking frames k and k+1) on the noise grid (block mean, scaled by 1/F)."""
    flow = np.asarray(flows[k], np.float32)
    if not np.isfinite(flow).all():
        raise ValueError(f"flow {k} has NaN/inf values")
    if f > 1:
        h, w = flow.shape[0] // f, flow.shape[1] // f
        flow = flow.reshape(h, f, w, f, 2).mean(axis=(1, 3)) / f
    return flow


def _mask_at(masks, k, f):
    """Revealed mask k on the noise grid: a cell counts as revealed if any of its pixels is."""
    m = np.asarray(masks[k]).astype(bool)
    if f > 1:
        m = m.reshape(m.shape[0] // f, f, m.shape[1] // f, f).any(axis=(1, 3))
    return m


def centres(h, w):
    ii, jj = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([jj + 0.5, ii + 0.5], axis=-1)


def sample_back(prev, flow=None, positions=None):
    """prev [H, W, C] sampled at the cells containing p + B(p) (nearest cell); mask of in-frame hits."""
    h, w = prev.shape[:2]
    if positions is None:
        positions = centres(h, w)
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


class _Corr:
    """Pearson correlation accumulated over many (a, b) pairs, and the mean overlap of the pairs
    (what perfect transport would give)."""

    def __init__(self):
        self.s = np.zeros(7)   # n, Σa, Σb, Σab, Σa², Σb², Σoverlap

    def add(self, a, b, overlap=None):
        per = a[0].size if a.ndim > 1 and len(a) else 1      # channels of each pixel
        a = a.astype(np.float64).ravel()
        b = b.astype(np.float64).ravel()
        so = a.size if overlap is None else float(np.sum(overlap, dtype=np.float64)) * per
        self.s += [a.size, a.sum(), b.sum(), (a * b).sum(), (a * a).sum(), (b * b).sum(), so]

    def transport(self):
        """The correlation relative to perfect transport (its value / the mean overlap)."""
        v = self.value()
        return None if v is None or self.s[6] <= 0 else float(v * self.s[0] / self.s[6])

    @property
    def n(self):
        return int(self.s[0])

    def value(self):
        n, sa, sb, sab, saa, sbb = self.s[:6]
        if n < MIN_SAMPLES:
            return None
        cov = sab - sa * sb / n
        den = np.sqrt(max(saa - sa * sa / n, 0) * max(sbb - sb * sb / n, 0))
        return float(cov / den) if den > 0 else None


def _regions(x1, x0, cells_moved, visible, overlap):
    """Frame pairs of the three regions: visible pixels, moving (landed in another cell) or not."""
    out = {}
    for name, m in (("all", visible), ("moving", visible & cells_moved), ("static", visible & ~cells_moved)):
        out[name] = (x1[m], x0[m], overlap[m])
    return out


def overlap_with_cell(positions):
    """Area the unit square centred at each position shares with the cell containing it."""
    d = np.abs(positions - np.floor(positions) - 0.5)
    return (1 - d[..., 0]) * (1 - d[..., 1])


def transported_overlap(corners, positions):
    """What perfect transport correlates with the cell each pixel lands in: |R ∩ cell| / sqrt|R|,
    R the quad of its corners carried back ([H+1, W+1, 2]); the unit square's overlap where R is
    degenerate (folded, collapsed)."""
    from core2d import grid

    P = np.stack([corners[:-1, :-1], corners[:-1, 1:], corners[1:, 1:], corners[1:, :-1]], axis=2)
    P = P.reshape(-1, 4, 2).astype(np.float64)
    cell = np.floor(positions.reshape(-1, 2))
    area = grid.shoelace(P).astype(np.float64)
    d = np.roll(P, -1, axis=1) - P
    turn = d[..., 0] * np.roll(d, -1, axis=1)[..., 1] - d[..., 1] * np.roll(d, -1, axis=1)[..., 0]
    good = (area > 1e-3) & ~((turn < 0).any(-1))
    out = overlap_with_cell(positions).reshape(-1).astype(np.float64)
    if good.any():
        ov = grid.cell_overlap(P[good], cell[good, 0], cell[good, 1]).astype(np.float64)
        out[good] = ov / np.sqrt(area[good])
    return out.reshape(positions.shape[:-1])


def coherence_along_flow(noise, flows=None, f=1, masks=None, max_lag=16, ends=8):
    """Correlation of frame t+k with frame t carried along the flow, for k = 1..max_lag, on the
    pixels that stayed visible, split into moving and static; plus every frame's lag-1 value.

    Lag curves use the same end frames for every lag (`ends` of them, spread over the stack),
    so the curve compares like with like."""
    T, h, w = len(noise), noise.shape[1], noise.shape[2]
    L = min(int(max_lag), T - 1)
    p0 = centres(h, w)
    c0 = np.stack(np.meshgrid(np.arange(w + 1, dtype=np.float32), np.arange(h + 1, dtype=np.float32)), -1)
    own = np.floor(p0).astype(np.int64)
    flow_cache, mask_cache = {}, {}

    def flow(k):                       # backward flow linking frames k and k+1 (noise grid)
        if k not in flow_cache:
            flow_cache[k] = _flow_at(flows, k, f)
        return flow_cache[k]

    def revealed(k):
        if masks is None:
            return None
        if k not in mask_cache:
            mask_cache[k] = _mask_at(masks, k, f)
        return mask_cache[k]

    def walk(t1, lags, acc):
        """Follow frame t1's pixels back; add each lag's pairs to acc[lag][region]."""
        x1 = np.asarray(noise[t1], np.float32)
        pos, visible = p0.copy(), np.ones((h, w), bool)
        corners = c0.copy()
        for k in range(1, max(lags) + 1):
            s = t1 - k + 1                                   # stepping from frame s to s-1
            if flows is not None:
                m = revealed(s - 1)
                if m is not None:                            # revealed in frame s at the current cell
                    ci = np.clip(np.floor(pos[..., 1]).astype(np.int64), 0, h - 1)
                    cj = np.clip(np.floor(pos[..., 0]).astype(np.int64), 0, w - 1)
                    visible &= ~m[ci, cj]
                pos = compose_back(pos, flow(s - 1))
                corners = compose_back(corners, flow(s - 1))
            x0, inside = sample_back(np.asarray(noise[t1 - k], np.float32), positions=pos)
            visible &= inside
            if k in lags:
                moved = np.any(np.floor(pos).astype(np.int64) != own, axis=-1)
                perfect = transported_overlap(corners, pos) if flows is not None else np.ones((h, w))
                for name, (a, b, o) in _regions(x1, x0, moved, visible, perfect).items():
                    acc[k][name].add(a, b, o)
        for name in flow_cache.copy():                        # keep the flows the next ends need
            if name < t1 - L:
                flow_cache.pop(name)
                mask_cache.pop(name, None)

    curve = {k: {r: _Corr() for r in REGIONS} for k in range(1, L + 1)}
    per_frame = {r: [] for r in REGIONS}
    moving_share = []
    if L >= 1:
        chosen = set(np.unique(np.linspace(L, T - 1, min(int(ends), T - L)).astype(int)).tolist())
        for t1 in range(1, T):
            lags = set(range(1, L + 1)) if t1 in chosen else {1}
            acc = {k: {r: _Corr() for r in REGIONS} for k in lags}
            walk(t1, lags, acc)
            for r in REGIONS:
                per_frame[r].append(acc[1][r].value())
            n_all = acc[1]["all"].n
            moving_share.append(acc[1]["moving"].n / n_all if n_all else 0.0)
            if t1 in chosen:
                for k in lags:
                    for r in REGIONS:
                        curve[k][r].s += acc[k][r].s
    lags = list(range(1, L + 1))
    out = {"lags": lags, "along_flow": flows is not None, "revealed_masks": masks is not None,
           "per_frame": per_frame, "moving_share_lag1": moving_share}
    for r in REGIONS:
        out[r] = [curve[k][r].value() for k in lags]
        out[f"{r}_transport"] = [curve[k][r].transport() for k in lags]
        out[f"n_{r}"] = [curve[k][r].n for k in lags]
    return out


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


def _mean(values):
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def analyse(noise_path, flows_path=None, max_lag=16, starts=8, revealed_path=None, layout=None):
    """All the numbers of the report (a dict), reading one frame at a time."""
    from scipy import stats as sps

    noise = _check_noise(noise_path, layout)
    T, h, w, C = noise.shape
    flows = f = masks = None
    if flows_path:
        flows, f = _check_flows(flows_path, noise.shape)
        if revealed_path is None:
            beside = os.path.join(os.path.dirname(os.path.abspath(os.fspath(flows_path))), "revealed.npy")
            revealed_path = beside if os.path.isfile(beside) else None
        if revealed_path:
            masks = _check_revealed(revealed_path, flows.shape)
    rs = np.random.default_rng(0)
    n_px = h * w * C
    pick = rs.choice(n_px, size=KS_SAMPLE, replace=False) if n_px > KS_SAMPLE else slice(None)
    n_ks = min(n_px, KS_SAMPLE)
    hist = np.zeros(len(HIST_EDGES) - 1, np.int64)
    total = s1 = s2 = 0.0
    per = {"mean": [], "std": [], "ks_stat": [], "ks_p": []}
    ac_sum = None
    cross = []
    nonfinite = 0
    ac_frames = set(np.unique(np.linspace(0, T - 1, min(T, 16)).astype(int)).tolist())
    crop = (min(h, 256), min(w, 256))
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
            cy, cx = (h - crop[0]) // 2, (w - crop[1]) // 2
            ac = autocorr_map(x[cy:cy + crop[0], cx:cx + crop[1]])
            ac_sum = ac if ac_sum is None else ac_sum + ac
        if C > 1:
            cc = np.corrcoef(x.reshape(-1, C).T)
            cross.append(float(np.max(np.abs(cc[~np.eye(C, dtype=bool)]))))
    ac_map = ac_sum / len(ac_frames)
    r = ac_map.shape[0] // 2
    off = ac_map.copy()
    off[r, r] = 0
    cdf = np.concatenate([[0], np.cumsum(hist)]) / max(1, total)
    ks_hist = float(np.max(np.abs(cdf - sps.norm.cdf(HIST_EDGES))))
    p_min = float(np.min(per["ks_p"]))
    coh = coherence_along_flow(noise, flows, f or 1, masks, max_lag=max_lag, ends=starts)

    mean = s1 / total
    std = float(np.sqrt(max(s2 / total - mean * mean, 0.0)))
    n_frame = h * w * C
    # Tolerances: z standard errors of the statistic for the samples of ONE frame (frames can
    # be correlated in time: that is the point), z Bonferroni-corrected over what is compared
    z_t = z_limit(T)
    tol_mean = z_t / np.sqrt(n_frame)
    tol_std = z_t * np.sqrt(0.5 / n_frame)
    dy, dx = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    n_off = C * (crop[0] - np.abs(dy)) * (crop[1] - np.abs(dx))
    tol_ac = z_limit(((2 * r + 1) ** 2 - 1) // 2) / np.sqrt(n_off)   # per offset; symmetric pairs
    tol_cross = z_limit(T * C * (C - 1) // 2) / np.sqrt(h * w)
    ac_ratio = float(np.max(np.abs(off) / tol_ac)) if r else 0.0
    detail = {
        "finite": dict(value=nonfinite, limit=0, passed=nonfinite == 0),
        "mean_zero": dict(value=float(np.max(np.abs(per["mean"]))), limit=float(tol_mean)),
        "std_one": dict(value=float(np.max(np.abs(np.array(per["std"]) - 1))), limit=float(tol_std)),
        "gaussian_ks": dict(value=p_min, limit=ALPHA / T, note="smallest per-frame KS p-value; must exceed the limit"),
        "spatially_white": dict(value=ac_ratio, limit=1.0, note="largest |autocorrelation| / its tolerance over offsets"),
        "channels_uncorrelated": dict(value=float(np.max(cross)) if cross else 0.0, limit=float(tol_cross)),
    }
    for k, d in detail.items():
        if "passed" not in d:
            d["passed"] = bool(d["value"] > d["limit"]) if k == "gaussian_ks" else bool(d["value"] < d["limit"])
    checks = {k: bool(d["passed"]) for k, d in detail.items()}
    lag1 = {reg: _mean(coh["per_frame"][reg]) for reg in REGIONS}
    rep = {
        "file": os.path.abspath(os.fspath(noise_path)),
        "flows": os.path.abspath(os.fspath(flows_path)) if flows_path else None,
        "revealed": os.path.abspath(os.fspath(revealed_path)) if masks is not None else None,
        "shape": [T, h, w, C], "layout": noise.layout, "dtype": str(noise.dtype),
        "overall": {"mean": mean, "std": std, "n": int(total), "nonfinite": nonfinite,
                    "ks_distance_hist": ks_hist, "ks_p_min_frame": p_min, "ks_sample_per_frame": int(n_ks)},
        "alpha": ALPHA,
        "tolerances": {"per_frame_mean": float(tol_mean), "per_frame_std": float(tol_std),
                       "ks_p_per_frame": ALPHA / T, "autocorr_lag1": float(tol_ac[r, r + 1]) if r else None,
                       "cross_channel": float(tol_cross)},
        "per_frame": per,
        "spatial": {"lag1_x": float(ac_map[r, r + 1]), "lag1_y": float(ac_map[r + 1, r]),
                    "max_abs_offcentre": float(np.max(np.abs(off))), "radius": int(r),
                    "autocorr_map": ac_map.tolist(),
                    "cross_channel_max": float(np.max(cross)) if cross else None},
        "temporal": {"along_flow": flows is not None, "coherence": coh["per_frame"]["all"],
                     "moving": coh["per_frame"]["moving"], "static": coh["per_frame"]["static"],
                     "moving_share": coh["moving_share_lag1"], "mean": lag1["all"],
                     "mean_moving": lag1["moving"], "mean_static": lag1["static"]},
        "lag_coherence": {"lags": coh["lags"], "corr": coh["all"], "moving": coh["moving"],
                          "static": coh["static"], "n_moving": coh["n_moving"], "n_static": coh["n_static"],
                          "moving_transport": coh["moving_transport"], "static_transport": coh["static_transport"],
                          "transport": coh["all_transport"],
                          "along_flow": flows is not None, "revealed_masks": masks is not None},
        "checks": checks,
        "checks_detail": detail,
    }

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    where = (f"along flow: moving {fmt(lag1['moving'])}, static {fmt(lag1['static'])}" if flows is not None
             else f"in place {fmt(lag1['all'])}")
    kept = coh["moving_transport"][-1] if coh["lags"] else None
    if flows is not None and kept is not None:
        where += f"; moving content {coh['lags'][-1]} frames on: {fmt(kept)} of perfect transport"
    rep["summary_line"] = (f"{T} frames {w}x{h}x{C}: mean {mean:+.4f}, std {std:.4f}, min KS p {p_min:.2g}, "
                           f"lag-1 autocorr {rep['spatial']['lag1_x']:+.4f}/{rep['spatial']['lag1_y']:+.4f}, "
                           f"coherence t→t+1 {where}; "
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

    def _nan(v):
        return [np.nan if x is None else x for x in v]

    def coherence_panel(ax):
        tm = rep["temporal"]
        x = np.arange(1, len(tm["coherence"]) + 1)
        if tm["along_flow"]:
            ax.plot(x, _nan(tm["moving"]), ".-", color="C3", label="moving")
            ax.plot(x, _nan(tm["static"]), ".-", color="C0", label="static")
            ax.legend(loc="lower left", fontsize=8)
        else:
            ax.plot(x, _nan(tm["coherence"]), ".-", color="0.3", label="all")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("frame t+1")
        ax.set_title("frame t+1 vs t " + ("along the flow" if tm["along_flow"] else "(in place)"))

    def lag_panel(ax):
        lc = rep["lag_coherence"]
        if lc["along_flow"]:
            ax.plot(lc["lags"], _nan(lc["moving"]), "o-", color="C3", label="moving content")
            ax.plot(lc["lags"], _nan(lc["static"]), "o-", color="C0", label="static content")
            ax.plot(lc["lags"], _nan(lc["moving_transport"]), ":", color="C3",
                    label="moving / perfect transport")
            ax.legend(loc="lower left", fontsize=8)
        else:
            ax.plot(lc["lags"], _nan(lc["corr"]), "o-", color="0.3")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylim(-0.05, 1.15)
        ax.set_xlabel("frame lag k")
        ax.set_ylabel("correlation")
        ax.set_title("frame t+k vs t " + ("along the flow" if lc["along_flow"] else "(in place)"))

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


def report(noise_path, outdir, flows=None, force=False, max_lag=16, revealed=None, layout=None):
    """`noisewarp stats`: analyse, then write report.json and the PNG plots into outdir."""
    outdir = os.fspath(outdir)
    rep = analyse(noise_path, flows, max_lag=max_lag, revealed_path=revealed, layout=layout)  # validates first
    if os.path.exists(os.path.join(outdir, "report.json")) and not force:
        raise ValueError(f"{outdir}: a report already exists (use --force to overwrite)")
    os.makedirs(outdir, exist_ok=True)
    rep["plots"] = plot(rep, outdir)
    out = {k: v for k, v in rep.items() if not k.startswith("_")}
    with io.atomic_path(os.path.join(outdir, "report.json")) as tmp:
        with open(tmp, "w") as fh:
            json.dump(out, fh, indent=1, default=_jsonable)
    return out
