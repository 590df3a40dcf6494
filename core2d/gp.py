"""Warped Diffusion (Daras et al. 2024): a Gaussian-process sample from random Fourier features.

`ξ(x) = sqrt(2/J) Σ_j w_j cos(<z_j, x> + b_j)`, `w ~ N(0,1)`, `z ~ N(0, ℓ⁻² I)` truncated at
norm 2/ℓ, `b ~ U(0, 2π)`. The field exists on the whole plane, so warping is evaluation at the
source positions: the state is the position in frame 0's pixel coordinates of every pixel,
composed frame by frame, and the noise is ξ there (correlated, not white: for models
fine-tuned on it). The paper's ε = 2/(π·resolution) in unit-square coordinates is
ℓ = 2/π pixels, the default here.

The frequencies are rounded to multiples of 2π/T, so the field is exactly T-periodic, with
T a power of two ≥ 4× the frame and ≥ 64 ℓ (a shift of ≤ 2π/T in the spectrum: invisible).
Whole periods of any displacement are then dropped exactly, and positions stay within a few T
of the origin, where float32 resolves ~T/2²⁴ px ≪ ℓ: a long pan keeps its detail and a huge
(finite) flow gives a proper sample instead of NaN or a constant frame.
"""
import numpy as np

from . import rng

DEFAULT_LENGTHSCALE = 2.0 / np.pi


def period(shape, lengthscale):
    """T: the smallest power of two ≥ 4× the longer side of `shape` and ≥ 64 ℓ (pixels)."""
    return float(2.0 ** np.ceil(np.log2(max(4.0 * max(shape), 64.0 * lengthscale, 1.0))))


def features(seed, channels, J=3000, lengthscale=DEFAULT_LENGTHSCALE, period=None):
    """(z [C, J, 2], b [C, J], w [C, J]) float32, drawn from the counter RNG (rejection for the
    truncation); z rounded to multiples of 2π/period when given (a period-periodic field)."""
    j = np.arange(J)
    z = np.zeros((channels, J, 2), np.float32)
    b = np.zeros((channels, J), np.float32)
    w = np.zeros((channels, J), np.float32)
    for c in range(channels):
        todo = np.ones(J, bool)
        attempt = 0
        while todo.any():
            zx, zy = rng.gauss_pair(seed, attempt, rng.FEATURE, j, 4 * c, 0)
            z_try = np.stack([zx, zy], -1) / np.float32(lengthscale)
            ok = todo & (np.hypot(zx, zy) <= 2.0)
            z[c][ok] = z_try[ok]
            todo &= ~ok
            attempt += 1
        if period:
            step = 2 * np.pi / period
            z[c] = (np.round(z[c].astype(np.float64) / step) * step).astype(np.float32)
        b[c] = np.float32(2 * np.pi) * rng.uniform(seed, 0, rng.FEATURE, j, 4 * c + 1, 0)
        w[c] = rng.gauss_pair(seed, 0, rng.FEATURE, j, 4 * c + 2, 0)[0]
    return z, b, w


def evaluate_numpy(pos, z, b, w, chunk=4096):
    """ξ at positions pos [N, 2] for each channel -> [N, C]."""
    N = pos.shape[0]
    C, J = w.shape
    out = np.empty((N, C), np.float32)
    scale = np.float32(np.sqrt(2.0 / J))
    for s in range(0, N, chunk):
        p = pos[s:s + chunk].astype(np.float32)
        for c in range(C):
            out[s:s + chunk, c] = (np.cos(p @ z[c].T + b[c]) @ w[c]) * scale
    return out


def compose_positions(pos, flow, period):
    """Frame-0 positions of the new frame's pixels: pos interpolated at p + B(p).

    Bilinear inside the frame; outside, the nearest border value plus the offset to it
    (the map is continued as a translation), so no position is ever lost. The field being
    `period`-periodic, whole periods of B are dropped (fmod is exact) and the result is moved
    by whole periods towards the origin: positions stay small and precise whatever B.
    """
    H, W = flow.shape[:2]
    T = float(period)
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    f = flow.astype(np.float64)
    mx, my = jj + f[..., 0], ii + f[..., 1]                  # source pixel-centre coordinates
    cx, cy = np.clip(mx, 0, W - 1), np.clip(my, 0, H - 1)
    j0 = np.minimum(np.floor(cx).astype(np.int64), max(W - 2, 0))
    i0 = np.minimum(np.floor(cy).astype(np.int64), max(H - 2, 0))
    j1, i1 = np.minimum(j0 + 1, W - 1), np.minimum(i0 + 1, H - 1)
    fx, fy = (cx - j0)[..., None], (cy - i0)[..., None]
    p = pos.astype(np.float64)
    out = (p[i0, j0] * (1 - fx) * (1 - fy) + p[i0, j1] * fx * (1 - fy)
           + p[i1, j0] * (1 - fx) * fy + p[i1, j1] * fx * fy)
    for k, (m, c, grid) in enumerate(((mx, cx, jj), (my, cy, ii))):
        r = np.fmod(f[..., k], T)                            # B modulo whole periods, exactly
        r = np.where(r >= T / 2, r - T, np.where(r < -T / 2, r + T, r))
        out[..., k] += np.where(np.abs(f[..., k]) < T / 2, m - c, (grid - c) + r)
        out[..., k] -= T * np.round(np.mean(out[..., k]) / T)
    return out.astype(np.float32)


_K = None


def _kernel():
    global _K
    if _K is None:
        import taichi as ti

        nd = ti.types.ndarray

        @ti.kernel
        def evaluate(pos: nd(dtype=ti.f32, ndim=2), z: nd(dtype=ti.f32, ndim=3), b: nd(dtype=ti.f32, ndim=2),
                     w: nd(dtype=ti.f32, ndim=2), out: nd(dtype=ti.f32, ndim=2)):
            C, J = w.shape[0], w.shape[1]
            scale = ti.sqrt(2.0 / ti.cast(J, ti.f32))
            for p, c in ti.ndrange(pos.shape[0], C):
                acc = 0.0
                for j in range(J):
                    acc += w[c, j] * ti.cos(pos[p, 0] * z[c, j, 0] + pos[p, 1] * z[c, j, 1] + b[c, j])
                out[p, c] = acc * scale

        _K = evaluate
    return _K


def evaluate(pos, feats, backend):
    z, b, w = feats
    if backend == "numpy":
        return evaluate_numpy(pos, z, b, w)
    out = np.zeros((pos.shape[0], w.shape[0]), np.float32)
    _kernel()(np.ascontiguousarray(pos, np.float32), z, b, w, out)
    return out
