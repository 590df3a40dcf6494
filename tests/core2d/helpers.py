"""Shared test helpers: statistical checks with thresholds derived from the sample size, and maps."""
import numpy as np
from scipy import stats

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
