"""Velocity grids as voxel flows (fluid caches, simulation output).

A velocity grid v (world units per second, or voxels per frame) sampled at a frame gives the
displacement v·dt. Fluid solvers advect semi-Lagrangian style: the value at a voxel of the new
frame comes from x − v(x)·dt, which is exactly the backward flow the warper consumes, with v
taken at the new frame. `velocity_to_flow(..., direction="backward")` returns that.
"""
import numpy as np


def resample_field(field, src_voxel_size, src_origin, shape, voxel_size, origin):
    """Trilinear resampling of a cell-centred field [x, y, z, D] onto another grid (zero outside)."""
    from scipy import ndimage

    field = np.asarray(field, np.float32)
    svs = np.broadcast_to(np.asarray(src_voxel_size, np.float64), (3,))
    sorg = np.broadcast_to(np.asarray(src_origin, np.float64), (3,))
    vs = np.broadcast_to(np.asarray(voxel_size, np.float64), (3,))
    org = np.broadcast_to(np.asarray(origin, np.float64), (3,))
    shape = tuple(int(n) for n in shape)
    if field.shape[:3] == shape and np.allclose(svs, vs) and np.allclose(sorg, org):
        return field
    # target centres in source index coordinates (source centre i at index i)
    axes = [((np.arange(n) + 0.5) * vs[a] + org[a] - sorg[a]) / svs[a] - 0.5 for a, n in enumerate(shape)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), 0)
    out = np.empty(shape + field.shape[3:], np.float32)
    for d in range(field.shape[3]):
        out[..., d] = ndimage.map_coordinates(field[..., d], coords, order=1, mode="constant", cval=0.0)
    return out


def velocity_to_flow(velocity, dt=1.0, voxel_size=1.0, direction="forward"):
    """Velocity [X, Y, Z, 3] (world units / s, on this grid) → flow in voxels over one step dt.

    direction "forward": +v·dt/voxel_size (where each voxel goes); "backward": −v·dt/voxel_size
    (semi-Lagrangian backtrace, use the velocity of the new frame).
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward'; got {direction!r}")
    v = np.asarray(velocity, np.float32)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"velocity must be [X, Y, Z, 3]; got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("velocity contains NaN/inf values")
    dt = float(dt)
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"time step must be a positive number; got {dt}")
    vs = np.broadcast_to(np.asarray(voxel_size, np.float32), (3,))
    flow = v * np.float32(dt) / vs
    return np.ascontiguousarray(-flow if direction == "backward" else flow, np.float32)
