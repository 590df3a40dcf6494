"""Small exact operations on white noise, for any number of spatial axes (2D images, 3D volumes)."""
import numpy as np

from . import rng


def pool(noise: np.ndarray, factor: int) -> np.ndarray:
    """∫-pooling: sum each factor^d block and divide by sqrt(block size).

    The sum of b i.i.d. N(0,1) over sqrt(b) is N(0,1), so pooled white noise is white again
    (this is how latent-resolution noise is made). noise: [*spatial, C]; every spatial size
    must be divisible by factor.
    """
    factor = check_int("pooling factor", factor)
    if factor == 1:
        return noise
    spatial = noise.shape[:-1]
    for n in spatial:
        if n % factor:
            raise ValueError(f"cannot ∫-pool shape {noise.shape[:-1]} by {factor}: "
                             f"every size must be divisible by {factor}")
    shape = []
    for n in spatial:
        shape += [n // factor, factor]
    blocks = noise.reshape(shape + [noise.shape[-1]])
    axes = tuple(range(1, 2 * len(spatial), 2))
    out = blocks.sum(axis=axes, dtype=np.float64) / np.sqrt(float(factor) ** len(spatial))
    return out.astype(np.float32)


def upsample_flow(flow: np.ndarray, factor: int) -> np.ndarray:
    """Flow on a factor× finer grid: linear interpolation at the fine cell centres, values × factor.

    Works for [*spatial, D] flows with D = number of spatial axes (2D or 3D).
    """
    factor = check_int("upsampling factor", factor)
    flow = np.asarray(flow)
    if flow.ndim < 2 or flow.shape[-1] != flow.ndim - 1:
        raise ValueError(f"flow must be [*spatial, D] with D spatial axes; got shape {flow.shape}")
    if factor == 1:
        return flow
    out = flow.astype(np.float32)
    for axis in range(flow.ndim - 1):
        n = out.shape[axis]
        fine = (np.arange(n * factor, dtype=np.float64) + 0.5) / factor - 0.5
        fine = np.clip(fine, 0, n - 1)
        i0 = np.floor(fine).astype(np.int64)
        i1 = np.minimum(i0 + 1, n - 1)
        t = (fine - i0).astype(np.float32)
        shape = [1] * out.ndim
        shape[axis] = -1
        t = t.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - t) + np.take(out, i1, axis=axis) * t
    return (out * np.float32(factor)).astype(np.float32)


def degrade(noise: np.ndarray, alpha, seed: int, frame: int, backend: str = "numpy") -> np.ndarray:
    """Mix in fresh noise: ((1-α) y + α ε) / sqrt((1-α)² + α²), still N(0,1).

    alpha: a scalar or an array broadcastable to noise's spatial shape (a per-pixel mask).
    Correlation with the input is (1-α)/sqrt((1-α)² + α²). ε is keyed by (seed, frame, pixel);
    backend "taichi" draws it in a kernel (the same ε).
    """
    alpha = np.asarray(alpha)
    if alpha.dtype.kind not in "fiu":
        raise ValueError(f"degradation α must be a number or a numeric mask, got {alpha!r}"[:200])
    alpha = alpha.astype(np.float32)
    for name, v in (("seed", seed), ("frame", frame)):
        if check_int(name, v, low=0) >= 2 ** 32:
            raise ValueError(f"{name} must be below 2**32, got {v!r}")
    if alpha.ndim and alpha.shape != noise.shape[:-1]:
        raise ValueError(f"degradation mask has shape {alpha.shape}, expected {noise.shape[:-1]} "
                         "(the output's spatial shape)")
    if not np.all(np.isfinite(alpha)) or np.any(alpha < 0) or np.any(alpha > 1):
        raise ValueError("degradation α must be finite and within [0, 1]")
    if alpha.ndim == 0 and float(alpha) == 0.0:
        return noise
    n = int(np.prod(noise.shape[:-1]))
    eps = rng.gauss_sites(seed, frame, rng.DEGRADE, np.arange(n), noise.shape[-1], backend).reshape(noise.shape)
    a = alpha[..., None] if alpha.ndim else alpha
    return (((1 - a) * noise + a * eps) / np.sqrt((1 - a) ** 2 + a ** 2)).astype(np.float32)


def check_int(name, v, low=1) -> int:
    """v as a Python int ≥ low; ValueError for anything else (floats, strings, bools, arrays)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)


def check_number(name, v, positive=True) -> float:
    """v as a finite float (> 0 when positive, else ≥ 0); ValueError for strings, bools, NaN/inf."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
            or (v <= 0 if positive else v < 0):
        raise ValueError(f"{name} must be a finite {'positive' if positive else 'non-negative'} number, got {v!r}")
    return float(v)


def check_flow(flow, spatial_shape, frame=None, name="flow") -> np.ndarray:
    """Validate a flow [*spatial, D] (D = len(spatial_shape)); return it as C-contiguous float32.

    Raises ValueError naming the frame, the expected shape, and how many pixels are NaN/inf.
    """
    where = f" at frame {frame}" if frame is not None else ""
    expected = tuple(spatial_shape) + (len(spatial_shape),)
    if not isinstance(flow, np.ndarray):
        try:
            flow = np.asarray(flow)
        except Exception:
            raise ValueError(f"{name}{where} must be an array of shape {expected}") from None
    if flow.dtype.kind not in "fiu":
        raise ValueError(f"{name}{where} has dtype {flow.dtype}; expected a float array of shape {expected}")
    if tuple(flow.shape) != expected:
        raise ValueError(f"{name}{where} has shape {tuple(flow.shape)}; expected {expected}")
    unit = "pixel" if len(spatial_shape) == 2 else "voxel" if len(spatial_shape) == 3 else "cell"
    if flow.dtype.itemsize > 4 and flow.dtype.kind == "f":   # finite but beyond float32 is not NaN/inf
        with np.errstate(invalid="ignore"):
            big = (np.abs(flow) > np.finfo(np.float32).max).any(axis=-1)
        if big.any():
            first = tuple(int(v) for v in np.argwhere(big)[0])
            raise ValueError(f"{name}{where} has {int(big.sum())} {unit}(s) with values beyond the float32 "
                             f"range ±3.4e38 (first at index {first})")
    with np.errstate(over="ignore"):
        flow = np.ascontiguousarray(flow, np.float32)
    if np.isfinite(flow.sum(dtype=np.float64)):   # one fast reduction; NaN/inf would propagate
        return flow
    bad = ~np.isfinite(flow).all(axis=-1)
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{name}{where} has {int(bad.sum())} {unit}(s) with NaN/inf values "
                         f"(first at index {first})")
    return flow


WHITE_X = 30.0   # a true white state is refused with probability below 4·e^-30 (~4e-13)


def check_white(x, name="state", upper_only=False):
    """Refuse an array that cannot be i.i.d. N(0,1) samples: NaN/inf, not float, or a mean or
    mean square beyond the tails that N such samples cross with probability e^-WHITE_X.

    Exact bounds for any N: the mean is N(0, 1/N), so |mean| ≤ sqrt(2x/N) (Gaussian tail);
    N · mean square is χ²_N, so it lies in [1 - 2 sqrt(x/N), 1 + 2 sqrt(x/N) + 2x/N]
    (Laurent & Massart 2000). upper_only: only the upper mean-square bound (states whose
    variance may shrink, like the bilinear baseline's; it holds for any covariance ≤ I).
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{name} has dtype {x.dtype}; expected float noise")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN/inf values")
    n = x.size
    if n == 0:
        return
    v = x.astype(np.float64).ravel()
    mean, m2 = float(v.mean()), float(np.dot(v, v) / n)
    q = WHITE_X / n
    hi = 1 + 2 * np.sqrt(q) + 2 * q
    if m2 > hi:
        raise ValueError(f"{name} has mean square {m2:.4g} over {n} values; white noise stays below {hi:.4g}")
    if upper_only:
        return
    lo = 1 - 2 * np.sqrt(q)
    if m2 < lo or abs(mean) > np.sqrt(2 * q):
        raise ValueError(f"{name} has mean {mean:.4g} and mean square {m2:.4g} over {n} values; white noise "
                         f"keeps |mean| ≤ {np.sqrt(2 * q):.4g} and mean square ≥ {lo:.4g}")
