"""Particle variant (Deng et al. 2025) and the whitened nearest baseline.

Particle: new pixel p is a unit square whose lower-left corner is p + B(p) in the previous
frame; its overlaps with the <= 4 cells under it are the bilinear weights. Nearest: p asks for
the whole of the one cell under the centre of that square (Go-with-the-Flow-style transport,
but with the cell split by the bridge among all who ask for it, so the frame stays white).
Both partition with floor 0: every requested cell is divided entirely among its requesters.
"""
import numpy as np

from . import partition, rng

_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (di, dj), the fixed summation order


def _footprint(flow, nearest):
    """Lower-left cell index and fractional offsets of each pixel's footprint (float32 math)."""
    H, W = flow.shape[:2]
    jj = np.arange(W, dtype=np.float32)[None, :]
    ii = np.arange(H, dtype=np.float32)[:, None]
    cx = np.clip(jj + flow[..., 0], np.float32(-2.0), np.float32(W + 1))
    cy = np.clip(ii + flow[..., 1], np.float32(-2.0), np.float32(H + 1))
    if nearest:
        cx = cx + np.float32(0.5)
        cy = cy + np.float32(0.5)
    j0 = np.floor(cx)
    i0 = np.floor(cy)
    # a footprint wholly inside the frame has no outside part (never a rounding residue of 1 - Σw)
    inside = (cx >= 0) & (cx <= W - 1) & (cy >= 0) & (cy <= H - 1)
    return i0.astype(np.int64), j0.astype(np.int64), cy - i0, cx - j0, inside


def requests(flow, nearest=False):
    """(src, dst, w, v_out): the requests of every pixel, sorted by destination then corner."""
    H, W = flow.shape[:2]
    i0, j0, fy, fx, inside = _footprint(flow, nearest)
    one = np.float32(1.0)
    cells, weights = [], []
    for di, dj in _CORNERS:
        ci, cj = i0 + di, j0 + dj
        if nearest:
            w = np.full((H, W), one if (di, dj) == (0, 0) else 0, np.float32)
        else:
            w = (fy if di else one - fy) * (fx if dj else one - fx)
        ok = (ci >= 0) & (ci < H) & (cj >= 0) & (cj < W) & (w > 0)
        cells.append(np.where(ok, ci * W + cj, -1))
        weights.append(np.where(ok, w, np.float32(0)))
    cells = np.stack(cells, -1).reshape(-1, 4)
    weights = np.stack(weights, -1).reshape(-1, 4).astype(np.float32)
    s = np.zeros(H * W, np.float32)
    for k in range(4):
        s = s + weights[:, k]
    v_out = np.maximum(one - s, np.float32(0))
    if not nearest:
        v_out[inside.ravel()] = 0
    keep = cells >= 0
    dst = np.broadcast_to(np.arange(H * W)[:, None], cells.shape)[keep]
    return cells[keep], dst, weights[keep], v_out


def step_numpy(x, flow, seed, frame, nearest=False):
    """Reference: one warp of x [H, W, C] by the backward flow [H, W, 2]."""
    H, W, C = x.shape
    src, dst, w, v_out = requests(flow, nearest)
    y, asum = partition.split_requests(x.reshape(-1, C), src, dst, w, H * W, seed, frame, floor=0.0)
    y = partition.finish(y, asum, v_out, seed, frame)
    stats = {"fresh_pixels": int(np.sum((asum + v_out) <= 0) + np.sum(v_out >= 1))}
    return y.reshape(H, W, C), stats


# ----------------------------------------------------------------------------- Taichi kernels
_K = None
_CF = None


def _corner_func():
    """ti.funcs shared by the footprint and bilinear kernels: `source` (the footprint's top-left
    cell, the fractional offsets and the clamped source point of pixel (i, j)), `weight` (corner
    (di, dj)'s bilinear weight) and `corner` ((cell index or -1, weight) of that corner)."""
    global _CF
    if _CF is not None:
        return _CF
    import taichi as ti

    @ti.func
    def source(flow: ti.template(), i, j, H, W, nearest: ti.template()):
        cx = ti.min(ti.max(ti.cast(j, ti.f32) + flow[i, j, 0], -2.0), ti.cast(W + 1, ti.f32))
        cy = ti.min(ti.max(ti.cast(i, ti.f32) + flow[i, j, 1], -2.0), ti.cast(H + 1, ti.f32))
        if ti.static(nearest):
            cx = cx + 0.5
            cy = cy + 0.5
        j0 = ti.floor(cx)
        i0 = ti.floor(cy)
        return ti.cast(i0, ti.i32), ti.cast(j0, ti.i32), cx - j0, cy - i0, cx, cy

    @ti.func
    def weight(fx, fy, di: ti.template(), dj: ti.template(), nearest: ti.template()):
        w = 0.0
        if ti.static(nearest):
            w = 1.0 if ti.static(di == 0 and dj == 0) else 0.0
        else:
            wy = fy if ti.static(di == 1) else 1.0 - fy
            wx = fx if ti.static(dj == 1) else 1.0 - fx
            w = wy * wx
        return w

    @ti.func
    def corner(flow: ti.template(), i, j, H, W, di: ti.template(), dj: ti.template(), nearest: ti.template()):
        i0, j0, fx, fy, _, _ = source(flow, i, j, H, W, nearest)
        w = weight(fx, fy, di, dj, nearest)
        ci = i0 + di
        cj = j0 + dj
        c = -1
        if ci >= 0 and ci < H and cj >= 0 and cj < W and w > 0:
            c = ci * W + cj
        return c, w

    _CF = source, weight, corner
    return _CF


def _kernels():
    global _K
    if _K is not None:
        return _K
    import taichi as ti

    nd = ti.types.ndarray
    source, weight, _ = _corner_func()

    @ti.kernel
    def footprints(flow: nd(dtype=ti.f32, ndim=3), w: nd(dtype=ti.f32, ndim=1), cell00: nd(dtype=ti.i32, ndim=1),
                   v_out: nd(dtype=ti.f32, ndim=1), n: nd(dtype=ti.i32, ndim=1), lst: nd(dtype=ti.i32, ndim=1),
                   overflow: nd(dtype=ti.i32, ndim=1), K: ti.i32, nearest: ti.template()):
        """Each pixel: its 4 corner weights in request slots 4p..4p+3 (0: no request), v_out, the
        cell of its corner (0, 0), and each request listed under its cell (K fixed slots a cell;
        a cell with more sets `overflow`). Same float32 operations as `requests`."""
        H, W = flow.shape[0], flow.shape[1]
        for i, j in ti.ndrange(H, W):
            p = i * W + j
            ci0, cj0, fx, fy, cx, cy = source(flow, i, j, H, W, nearest)
            cell00[p] = ci0 * W + cj0
            s = 0.0
            for k in ti.static(range(4)):          # the footprint's 4 corners (not channels)
                wk = weight(fx, fy, _CORNERS[k][0], _CORNERS[k][1], nearest)
                ci, cj = ci0 + _CORNERS[k][0], cj0 + _CORNERS[k][1]
                w[4 * p + k] = 0.0
                if ci >= 0 and ci < H and cj >= 0 and cj < W and wk > 0:
                    w[4 * p + k] = wk
                    s += wk
                    c = ci * W + cj
                    t = ti.atomic_add(n[c], 1)
                    if t < K:
                        lst[c * K + t] = 4 * p + k
                    else:
                        ti.atomic_max(overflow[0], 1)
            v_out[p] = ti.max(1.0 - s, 0.0)
            if ti.static(not nearest):             # a footprint inside the frame has no outside part
                if cx >= 0 and cx <= W - 1 and cy >= 0 and cy <= H - 1:
                    v_out[p] = 0.0

    _K = footprints
    return _K


def step_taichi(x, flow, seed, frame, nearest=False, work=None):
    """Fast path: the same requests and stream as `step_numpy` (4 fixed slots per pixel).

    work: the caller's `partition.Workspace` (scratch, and the buffer the new state is written
    to, used in turn with x's); None: temporary scratch and a new output array.
    """
    H, W, C = x.shape
    N = H * W
    own = work is None
    work = partition.Workspace() if own else work
    w = work.get("particle.w", (4 * N,), np.float32)
    cell00 = work.get("particle.cell00", (N,), np.int32)
    v_out = work.get("particle.v_out", (N,), np.float32)
    n = work.zeros("split.n", (N,), np.int32)
    overflow = work.zeros("split.overflow", (1,), np.int32)
    lst = work.get("split.list", (N * partition.K_SLOTS,), np.int32)
    _kernels()(flow, w, cell00, v_out, n, lst, overflow, partition.K_SLOTS, nearest)
    y = np.empty(x.shape, np.float32) if own else work.other(x, x.shape)
    partition.split_gather(np.ascontiguousarray(x.reshape(-1, C)), w, v_out, seed, frame, 0.0, work,
                           y.reshape(N, C), n, bool(overflow[0]), cell00, partition.PARTICLE, W=W)
    return y, {"fresh_pixels": int(np.count_nonzero(v_out >= 1))}   # as step_numpy


# ----------------------------------------------------------------------------- bilinear baseline
def bilinear_numpy(x, flow, seed, frame):
    """Plain bilinear interpolation at the source position (the blur baseline: variance shrinks).

    The bilinear weights at p + B(p) + 0.5 are exactly the particle footprint's overlaps;
    the part of the footprint outside the frame reads fresh noise.
    """
    H, W, C = x.shape
    src, dst, w, v_out = requests(flow)
    y = np.zeros((H * W, C), np.float32)
    np.add.at(y, dst, w[:, None] * x.reshape(-1, C)[src])
    y += v_out[:, None] * rng.gauss(seed, frame, rng.FRESH, np.arange(H * W), 0, C)
    return y.reshape(H, W, C), {}


_KB = None


def bilinear_taichi(x, flow, seed, frame, work=None):
    global _KB
    H, W, C = x.shape
    if _KB is None:
        import taichi as ti

        site_key, gauss_at = rng.taichi_sites()
        nd = ti.types.ndarray
        corner = _corner_func()[2]

        @ti.kernel
        def interp(x: nd(dtype=ti.f32, ndim=2), flow: nd(dtype=ti.f32, ndim=3), y: nd(dtype=ti.f32, ndim=2),
                   fresh_base: ti.u32):
            H, W = flow.shape[0], flow.shape[1]
            C = x.shape[1]
            for i, j in ti.ndrange(H, W):
                p = i * W + j
                for ch in range(C):
                    y[p, ch] = 0.0
                s = 0.0
                for k in ti.static(range(4)):
                    c, w = corner(flow, i, j, H, W, _CORNERS[k][0], _CORNERS[k][1], False)
                    if c >= 0:
                        s += w
                        for ch in range(C):
                            y[p, ch] = y[p, ch] + w * x[c, ch]
                v = ti.max(1.0 - s, 0.0)
                key = site_key(fresh_base, p, 0)
                for pr in range((C + 1) // 2):
                    f = gauss_at(key, ti.cast(pr, ti.u32))
                    for e in ti.static(range(2)):
                        if 2 * pr + e < C:
                            y[p, 2 * pr + e] = y[p, 2 * pr + e] + v * f[e]

        _KB = interp
    y = np.empty(x.shape, np.float32) if work is None else work.other(x, x.shape)
    _KB(np.ascontiguousarray(x.reshape(-1, C)), flow, y.reshape(H * W, C), np.uint32(rng.site_base(seed, frame, rng.FRESH)))
    return y, {}
