"""Shared test helpers: statistical checks with thresholds derived from the sample size, and maps."""
import os
import subprocess
import sys

import numpy as np
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Z = 4.5  # standard errors: with ~1,500 checks a run, a correct method fails one with probability < 1 %


def assert_white(y, label=""):
    """Per frame: mean 0, variance 1, Gaussian (KS), no lag-1 spatial or cross-channel correlation."""
    y = np.asarray(y, np.float64)
    assert np.all(np.isfinite(y)), f"{label}: non-finite values"
    H, W, C = y.shape
    N = y.size
    assert abs(y.mean()) < Z / np.sqrt(N), f"{label}: mean {y.mean():.4f}"
    assert abs(y.var() - 1) < Z * np.sqrt(2.0 / N), f"{label}: variance {y.var():.4f}"
    p = stats.kstest(y.ravel(), "norm").pvalue
    assert p > 1e-4, f"{label}: KS p-value {p:.2e}"
    for name, a, b in (("horizontal", y[:, :-1], y[:, 1:]), ("vertical", y[:-1], y[1:])):
        r = np.mean(a * b)
        assert abs(r) < Z / np.sqrt(a.size), f"{label}: lag-1 {name} correlation {r:.4f}"
    flat = y.reshape(-1, C)
    for i in range(C):
        for j in range(i + 1, C):
            r = np.mean(flat[:, i] * flat[:, j])
            assert abs(r) < Z / np.sqrt(H * W), f"{label}: channels {i},{j} correlation {r:.4f}"


def corr(a, b):
    """Correlation of two N(0,1) samples (their mean product)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(np.mean(a * b))


def affine_flow(H, W, A, t=(0.0, 0.0)):
    """Backward flow of the map M(p) = c + A (p - c) + t around the frame centre c."""
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    cx, cy = jj + 0.5 - W / 2, ii + 0.5 - H / 2
    A = np.asarray(A, np.float64)
    nx = A[0, 0] * cx + A[0, 1] * cy + t[0]
    ny = A[1, 0] * cx + A[1, 1] * cy + t[1]
    return np.stack([nx - cx, ny - cy], -1).astype(np.float32)


def rotation(H, W, degrees):
    th = np.deg2rad(degrees)
    return affine_flow(H, W, [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])


def maps(H, W):
    """Backward flows: smooth maps and degenerate ones (folds, collapse, ×8 zoom, all out of frame)."""
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    cx, cy = jj + 0.5 - W / 2, ii + 0.5 - H / 2
    r = np.hypot(cx, cy)
    ang = 1.5 * np.exp(-(r / (0.3 * W)) ** 2)
    swirl = np.stack([np.cos(ang) * cx - np.sin(ang) * cy - cx, np.sin(ang) * cx + np.cos(ang) * cy - cy], -1)
    fold = np.stack([np.abs(cx) - cx, np.zeros_like(cy)], -1)                 # both halves read one half
    collapse = np.stack([-cx, -cy], -1)                                       # every pixel reads the centre
    rs = np.random.RandomState(7)
    noisy = rs.randn(H, W, 2) * 2.0                                           # incoherent: folds everywhere
    return {
        "rotate10": rotation(H, W, 10),
        "zoom_in8": affine_flow(H, W, np.eye(2) / 8),
        "zoom_out8": affine_flow(H, W, np.eye(2) * 8),
        "shear": affine_flow(H, W, [[1, 0.6], [0, 1]]),
        "swirl": swirl.astype(np.float32),
        "fold": fold.astype(np.float32),
        "mirror": affine_flow(H, W, [[-1, 0], [0, 1]]),
        "collapse": collapse.astype(np.float32),
        "out_of_frame": np.full((H, W, 2), 1000.0, np.float32),
        "random": noisy.astype(np.float32),
    }


class Motion:
    """A backward map g (frame t -> frame t-1, points [..., 2] in px) whose t-fold composition is
    known in closed form, so 'perfect transport' can be computed exactly for any pair of frames."""

    def __init__(self, H, W, kind, rate):
        self.H, self.W, self.kind, self.rate = H, W, kind, rate
        self.c = np.array([W / 2, H / 2])

    def back(self, X, t):
        """Points X of frame t+... mapped back t frames (g applied t times)."""
        X = np.asarray(X, np.float64)
        d = X - self.c
        if self.kind == "translate":
            return X - t * np.asarray(self.rate, np.float64)
        if self.kind in ("rotate", "swirl"):
            ang = -np.deg2rad(self.rate) * t
            if self.kind == "swirl":                     # rotation by an angle that falls off with radius
                r = np.hypot(d[..., 0], d[..., 1])
                ang = ang * np.exp(-(r / (0.35 * self.W)) ** 2)
            cs, sn = np.cos(ang), np.sin(ang)
            return self.c + np.stack([cs * d[..., 0] - sn * d[..., 1], sn * d[..., 0] + cs * d[..., 1]], -1)
        if self.kind == "zoom":                          # rate > 1: content grows (zoom in)
            return self.c + d / self.rate ** t
        raise ValueError(self.kind)

    def flow(self):
        """The backward flow of one frame [H, W, 2] at the pixel centres."""
        ii, jj = np.mgrid[0:self.H, 0:self.W].astype(np.float64)
        X = np.stack([jj + 0.5, ii + 0.5], -1)
        return (self.back(X, 1) - X).astype(np.float32)

    def transport(self, t, t0, k=8):
        """Perfect transport from frame t0 to frame t: for each pixel p of frame t, the pixel q of
        frame t0 holding the preimage of p's centre, and corr(y_p, y_q) = |R_p ∩ q| / sqrt|R_p|,
        R_p the preimage of p's square (its boundary mapped at k points a side: exact overlaps for
        affine maps). Pixels whose q is outside the frame get q = -1."""
        from core2d import grid

        H, W = self.H, self.W
        ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
        u = np.arange(k) / k
        side = [np.stack([u, 0 * u], -1), np.stack([1 + 0 * u, u], -1), np.stack([1 - u, 1 + 0 * u], -1),
                np.stack([0 * u, 1 - u], -1)]
        ring = np.concatenate(side)                                                  # [4k, 2] around the square
        R = self.back(np.stack([jj, ii], -1)[:, :, None, :] + ring, t - t0)           # [H, W, 4k, 2]
        cen = np.floor(self.back(np.stack([jj + 0.5, ii + 0.5], -1), t - t0)).astype(np.int64)
        local = (R - cen[:, :, None, :]).reshape(H * W, 4 * k, 2).astype(np.float32)
        z = np.zeros(H * W, np.float32)
        overlap = grid.cell_overlap(local, z, z).reshape(H, W)
        x, y = R[..., 0] - R[..., :1, 0], R[..., 1] - R[..., :1, 1]
        area = np.abs(0.5 * (x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y).sum(-1))
        ok = (cen[..., 0] >= 0) & (cen[..., 0] < W) & (cen[..., 1] >= 0) & (cen[..., 1] < H)
        q = np.where(ok, cen[..., 1] * W + cen[..., 0], -1)
        return q, overlap / np.sqrt(area)


def transport_ratio(y_t, y_t0, q, perfect):
    """corr(y_t[p], y_t0[q(p)]) over pixels with q in frame, and its ratio to perfect transport."""
    C = y_t.shape[-1]
    ok = (q >= 0).ravel()
    a = np.asarray(y_t, np.float64).reshape(-1, C)[ok]
    b = np.asarray(y_t0, np.float64).reshape(-1, C)[q.ravel()[ok]]
    r = float(np.mean(a * b))
    return r, r / float(perfect.ravel()[ok].mean()), int(ok.sum()) * C


def run_script(script, threads, timeout=600):
    """The last line `script` prints, run in a fresh process with `threads` Taichi threads on the
    CPU; {root} and {tests} in the script are the repository and tests/core2d (for `helpers`)."""
    env = dict(os.environ, NOISEWARP_THREADS=str(threads), NOISEWARP_TI_ARCH="cpu")
    code = script.format(root=ROOT, tests=os.path.join(ROOT, "tests", "core2d"))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1]
