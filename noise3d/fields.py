"""Velocity grids as voxel flows (fluid caches, simulation output).

A velocity grid v (world units per second, or voxels per frame) sampled at a frame gives the
displacement v·dt. Fluid solvers advect semi-Lagrangian style: the value at a voxel of the new
frame comes from x − v(x)·dt, which is exactly the backward flow the warper consumes, with v
taken at the new frame. `velocity_to_flow(..., direction="backward")` returns that.
"""
import numpy as np


def trilinear(values, coords):
    """values [X, Y, Z, ...] sampled at index coordinates coords [3, N] (cell i's centre at
    i), linearly along each axis, in float64: [N, ...]; 0 where a coordinate lies outside
    [0, n − 1]. The same values as scipy.ndimage.map_coordinates(order=1, mode="constant",
    cval=0) per component, without SciPy (the Blender extension does not ship it)."""
    v = np.asarray(values)
    c = np.asarray(coords, np.float64)
    nx, ny, nz = v.shape[:3]
    flat = v.reshape((nx * ny * nz,) + v.shape[3:])
    inside = np.ones(c.shape[1], bool)
    lo, step, w = [], [], []
    for a, n in enumerate((nx, ny, nz)):
        inside &= (c[a] >= 0) & (c[a] <= n - 1)
        i0 = np.clip(np.floor(c[a]), 0, max(n - 2, 0)).astype(np.int64)
        t = np.clip(c[a] - i0, 0.0, 1.0)
        lo.append(i0)
        step.append(np.minimum(i0 + 1, n - 1) - i0)
        w.append((1.0 - t, t))
    base = (lo[0] * ny + lo[1]) * nz + lo[2]
    up = (step[0] * ny * nz, step[1] * nz, step[2])
    out = np.zeros(c.shape[1:] + v.shape[3:])
    for b0 in (0, 1):
        for b1 in (0, 1):
            w01 = w[0][b0] * w[1][b1]
            for b2 in (0, 1):
                weight = w01 * w[2][b2]
                g = flat[base + b0 * up[0] + b1 * up[1] + b2 * up[2]]
                out += (weight.reshape(weight.shape + (1,) * (g.ndim - 1))) * g
    out[~inside] = 0.0
    return out


def resample_field(field, src_voxel_size, src_origin, shape, voxel_size, origin):
    """Trilinear resampling of a cell-centred field [x, y, z, D] onto another grid (zero outside)."""
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
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, -1)
    return trilinear(field, coords).reshape(shape + field.shape[3:]).astype(np.float32)


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


def staggered_to_centred(velocity):
    """MAC (face) velocities [X, Y, Z, 3] → cell centres: component a of cell i is the mean of
    its two faces i and i+1 along a (Mantaflow/OpenVDB "staggered": face i is cell i's low face).
    The last cell along each axis keeps its low face (its high face lies outside the grid)."""
    v = np.asarray(velocity, np.float32)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"velocity must be [X, Y, Z, 3]; got shape {v.shape}")
    c = v.copy()
    for a in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[a], hi[a] = slice(0, -1), slice(1, None)
        c[tuple(lo) + (a,)] = 0.5 * (v[tuple(lo) + (a,)] + v[tuple(hi) + (a,)])
    return c


def index_velocity_flow(velocity, index_to_world, dt, shape, origin, voxel_size):
    """Backward flow (voxels) on an axis-aligned grid from a velocity stored in index units.

    velocity [X, Y, Z, 3]: cells per unit time along the grid's own axes, centred (Mantaflow's
    units once `staggered_to_centred`); index_to_world: 4×4 affine map of index coordinates
    (cell i's centre at i) to world space, so rotated, scaled or moving grids work; dt: time per
    frame. A target voxel centre x samples v trilinearly at its index coordinates; the step
    v·dt goes through the map's linear part, and its negative, in target voxels, is the
    backtrace the warper consumes. Outside the velocity grid nothing moves.
    """
    v = np.asarray(velocity, np.float32)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"velocity must be [X, Y, Z, 3]; got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("velocity contains NaN/inf values")
    m = np.asarray(index_to_world, np.float64)
    if m.shape != (4, 4) or not np.isfinite(m).all() or abs(np.linalg.det(m[:3, :3])) < 1e-300:
        raise ValueError("index_to_world must be an invertible 4x4 affine matrix")
    shape = tuple(int(n) for n in shape)
    vs = np.broadcast_to(np.asarray(voxel_size, np.float64), (3,))
    org = np.broadcast_to(np.asarray(origin, np.float64), (3,))
    inv = np.linalg.inv(m)
    lin = m[:3, :3] * float(dt) / vs[:, None]   # index step -> target voxels
    # target voxel (i, j, k) in velocity index coordinates: idx0 + i·e0 + j·e1 + k·e2
    idx0 = inv[:3, :3] @ (org + 0.5 * vs) + inv[:3, 3]
    e = inv[:3, :3] * vs[None, :]
    if shape == v.shape[:3] and np.allclose(idx0, 0, atol=1e-6) and np.allclose(e, np.eye(3), atol=1e-6):
        disp = v.reshape(-1, 3).astype(np.float64) @ lin.T   # the same grid: no resampling
    else:
        axes = [(np.arange(n) + 0.5) * vs[a] + org[a] for a, n in enumerate(shape)]
        world = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        idx = world @ inv[:3, :3].T + inv[:3, 3]
        step = trilinear(v, idx.T).astype(np.float32)   # the velocity's precision
        disp = step @ lin.T
    return np.ascontiguousarray(-disp.reshape(shape + (3,)), np.float32)
