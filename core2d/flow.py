"""Forward flow -> backward map, by splatting (works for 2D images and 3D volumes).

Most flow estimators give the forward flow F on the old grid; the warpers need the backward
flow B on the new grid. Negating F (what peers do) evaluates the motion at the wrong place
whenever it varies in space. Here each old cell centre is splatted to p + F(p) with
multilinear weights, carrying the displacement -F(p); a new cell's B is the weighted mean
of what landed on it:
- overlaps (several old cells land on one new cell: occlusion, contraction) average their
  displacements; without depth there is no way to tell which is in front;
- holes (nothing lands: disocclusion, expansion) are filled, by default with the
  displacement of the nearest cell that received something (`holes="fill"`); with
  `holes="fresh"` they point far outside the frame, so those pixels get fresh noise (the
  content is new there).
"""
import numpy as np

from .ops import check_flow

MIN_WEIGHT = 1e-3
OUTSIDE = 1e6  # a backward displacement this large leaves the frame: fresh noise


def invert_flow(forward: np.ndarray, holes: str = "fill") -> np.ndarray:
    """Backward flow [*spatial, D] on the new grid from a forward flow [*spatial, D] on the old grid."""
    if holes not in ("fill", "fresh"):
        raise ValueError(f"holes must be 'fill' or 'fresh', got {holes!r}")
    forward = np.asarray(forward)
    spatial = forward.shape[:-1]
    D = forward.shape[-1] if forward.ndim else 0
    if forward.ndim < 2 or D != len(spatial):
        raise ValueError(f"flow of shape {forward.shape}: the last axis must have {len(spatial)} components")
    forward = check_flow(forward, spatial, name="forward flow")     # finite float32, or ValueError
    n = int(np.prod(spatial))
    grids = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in spatial], indexing="ij")
    # component k of the flow moves along axis k of the array, except in 2D images where the
    # flow is (dx, dy) = (axis 1, axis 0)
    axis_of = [1, 0] if D == 2 else list(range(D))
    target = [None] * D
    for k in range(D):    # (clamped just outside the grid: beyond it nothing lands, and no int overflow)
        ax = axis_of[k]
        target[ax] = np.clip(grids[ax] + forward[..., k], -2, spatial[ax] + 1)
    base = [np.floor(t) for t in target]
    frac = [t - b for t, b in zip(target, base)]
    wsum = np.zeros(n)
    vsum = np.zeros((D, n))
    for corner in range(2 ** D):
        idx = np.zeros(spatial, np.int64)
        w = np.ones(spatial)
        ok = np.ones(spatial, bool)
        for ax in range(D):
            bit = (corner >> ax) & 1
            i = base[ax].astype(np.int64) + bit
            ok &= (i >= 0) & (i < spatial[ax])
            w = w * (frac[ax] if bit else 1 - frac[ax])
            idx = idx * spatial[ax] + np.clip(i, 0, spatial[ax] - 1)
        w = np.where(ok, w, 0.0).ravel()
        flat = idx.ravel()
        wsum += np.bincount(flat, weights=w, minlength=n)
        for k in range(D):
            vsum[k] += np.bincount(flat, weights=w * -forward[..., k].ravel(), minlength=n)
    have = wsum > MIN_WEIGHT
    back = np.zeros((n, D), np.float32)
    back[have] = (vsum[:, have] / wsum[have]).T
    if not have.all():
        if holes == "fresh" or not have.any():
            back[~have] = OUTSIDE
        else:
            from scipy import ndimage

            _, nearest = ndimage.distance_transform_edt(~have.reshape(spatial), return_indices=True)
            src = np.ravel_multi_index(tuple(nearest), spatial)
            back[~have] = back[src.ravel()[~have]]
    return back.reshape(spatial + (D,))
