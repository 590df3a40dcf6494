"""Grid variant (Deng et al. 2025): exact overlap areas of warped pixel polygons with the old cells.

Pixel p's preimage R_p is the quadrilateral of the backward map at its four corners (shared
with its neighbours, so the polygons tile without gaps). `A = |R_p ∩ cell_c|` is computed
exactly with a per-edge integral (Green's theorem on vertical slices): each edge contributes
the signed area between it and the cell's bottom, clamped to the cell, so no polygon
clipping is needed and non-convex quads are handled. Cells partition with floor 1: exact
areas are kept, the unrequested leftover of a cell is bridge-sampled too, and only where
polygons overlap (a fold) is the cell divided by its total request.

Degenerate quads (inverted, self-intersecting, near-zero area, or spanning more than
`max_span` cells) fall back to the particle footprint (a unit square at p + B(p)) and are counted.
"""
import numpy as np

from . import partition

MIN_AREA = 1e-6      # below this a quad is degenerate
MIN_PIECE = 0.0       # overlaps must be positive (same rule in both backends)
MAX_SPAN = 64        # cells per axis a polygon may span before it falls back


def pad_linear(a, axes=(0, 1)):
    """a with one more row/column on each side along `axes`, linearly extrapolated (so affine
    fields stay affine)."""
    for axis in axes:
        n = a.shape[axis]
        first = np.take(a, [0], axis=axis)
        last = np.take(a, [n - 1], axis=axis)
        if n >= 2:
            first = 2 * first - np.take(a, [1], axis=axis)
            last = 2 * last - np.take(a, [n - 2], axis=axis)
        a = np.concatenate([first, a, last], axis=axis)
    return a


def corner_positions(flow):
    """Backward map at pixel corners [H+1, W+1, 2] (x, y): flow averaged from the 4 pixel
    centres around each corner, linearly extrapolated at the border, so affine maps are exact."""
    H, W = flow.shape[:2]
    f = pad_linear(flow.astype(np.float32))
    fc = 0.25 * (f[:-1, :-1] + f[1:, :-1] + f[:-1, 1:] + f[1:, 1:])
    ii, jj = np.mgrid[0:H + 1, 0:W + 1].astype(np.float32)
    return np.stack([jj + fc[..., 0], ii + fc[..., 1]], -1).astype(np.float32)


def quads(corners, flow, max_span=MAX_SPAN):
    """Polygons [H, W, 4, 2] with degenerate ones replaced by the particle square; and the mask of those."""
    P = np.stack([corners[:-1, :-1], corners[:-1, 1:], corners[1:, 1:], corners[1:, :-1]], axis=2)
    d = np.roll(P, -1, axis=2) - P                       # edge vectors
    turn = d[..., 0] * np.roll(d, -1, axis=2)[..., 1] - d[..., 1] * np.roll(d, -1, axis=2)[..., 0]
    area = shoelace(P)
    span = P.max(axis=2) - P.min(axis=2)
    bad = ((turn < 0).sum(-1) > 1) | ~(area > MIN_AREA) | (span.max(-1) > max_span)
    H, W = flow.shape[:2]
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float32)
    x0, y0 = jj + flow[..., 0], ii + flow[..., 1]
    square = np.stack([np.stack([x0, y0], -1), np.stack([x0 + 1, y0], -1),
                       np.stack([x0 + 1, y0 + 1], -1), np.stack([x0, y0 + 1], -1)], axis=2)
    return np.where(bad[..., None, None], square, P).astype(np.float32), bad


MIN_SIDE = 1.0 / 64   # a Jacobian footprint never shrinks below this (collapse still takes a share)


def boxes(flow, max_span=MAX_SPAN):
    """Scale-aware particle footprints: axis-aligned boxes centred at p + B(p) + ½ with the local
    Jacobian's area |det J| and the aspect of its bounding box (sides in [MIN_SIDE, max_span]).

    Under ×8 minification a box covers the 8×8 cells the pixel really integrates (the unit
    square would sample one of them); boxes never turn inside out, so folds are harmless.
    Returns (P [H, W, 4, 2], outside area [H·W], count of clamped boxes).
    """
    H, W = flow.shape[:2]
    c = corner_positions(flow).astype(np.float64)
    ex = 0.5 * ((c[:-1, 1:] - c[:-1, :-1]) + (c[1:, 1:] - c[1:, :-1]))    # image of the pixel's x edge
    ey = 0.5 * ((c[1:, :-1] - c[:-1, :-1]) + (c[1:, 1:] - c[:-1, 1:]))    # and of its y edge
    bw = np.abs(ex[..., 0]) + np.abs(ey[..., 0])
    bh = np.abs(ex[..., 1]) + np.abs(ey[..., 1])
    det = np.abs(ex[..., 0] * ey[..., 1] - ex[..., 1] * ey[..., 0])
    scale = np.sqrt(det / np.maximum(bw * bh, 1e-30))
    bw, bh = bw * scale, bh * scale
    bw, bh = np.nan_to_num(bw, nan=np.inf), np.nan_to_num(bh, nan=np.inf)   # inf - inf: unbounded
    clamped = (bw < MIN_SIDE) | (bh < MIN_SIDE) | (bw > max_span) | (bh > max_span)
    bw, bh = np.clip(bw, MIN_SIDE, max_span), np.clip(bh, MIN_SIDE, max_span)
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    mx, my = jj + 0.5 + flow[..., 0], ii + 0.5 + flow[..., 1]
    x0, x1 = (mx - bw / 2).astype(np.float32), (mx + bw / 2).astype(np.float32)
    y0, y1 = (my - bh / 2).astype(np.float32), (my + bh / 2).astype(np.float32)
    P = np.stack([np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x1, y1], -1),
                  np.stack([x0, y1], -1)], axis=2)
    inside = (x0 >= 0) & (y0 >= 0) & (x1 <= W) & (y1 <= H)
    area = np.where(inside, np.float32(0), (x1 - x0) * (y1 - y0)).astype(np.float32).ravel()
    return P, area, int(clamped.sum())


def shoelace(P):
    """Signed area of polygons [..., V, 2], relative to the first vertex (accurate far from the origin)."""
    x = P[..., 0] - P[..., :1, 0]
    y = P[..., 1] - P[..., :1, 1]
    V = P.shape[-2]
    total = np.zeros(P.shape[:-2], np.float32)
    for e in range(V):                      # fixed order, the same as the kernel's
        total = total + (x[..., e] * y[..., (e + 1) % V] - x[..., (e + 1) % V] * y[..., e])
    return np.float32(0.5) * total


def cell_overlap(P, cx, cy):
    """|polygon ∩ [cx, cx+1] × [cy, cy+1]| for polygons P [N, V, 2] (positively oriented)."""
    total = np.zeros(P.shape[0], np.float32)
    V = P.shape[1]
    for e in range(V):
        a, b = P[:, e], P[:, (e + 1) % V]
        # cell-local coordinates: exact subtraction of an integer, then small-magnitude math
        total += _edge_integral(a[:, 0] - cx, a[:, 1] - cy, b[:, 0] - cx, b[:, 1] - cy)
    return total


def _edge_integral(xa, ya, xb, yb):
    """Signed ∫ clamp(y(x), 0, 1) dx over the edge's part above [0, 1] (cell-local coordinates; sign -dx)."""
    one = np.float32(1.0)
    zero = np.float32(0.0)
    u = np.maximum(np.minimum(xa, xb), zero)
    v = np.minimum(np.maximum(xa, xb), one)
    dx = xb - xa
    slope = (yb - ya) / np.where(dx != 0, dx, one)
    safe_slope = np.where(slope != 0, slope, one)
    # x where the edge crosses the cell's bottom and top (clipped to [u, v])
    t1 = np.where(slope != 0, xa - ya / safe_slope, u)
    t2 = np.where(slope != 0, xa + (one - ya) / safe_slope, u)
    t1, t2 = np.clip(np.minimum(t1, t2), u, v), np.clip(np.maximum(t1, t2), u, v)
    total = np.zeros_like(xa)
    for lo, hi in ((u, t1), (t1, t2), (t2, v)):
        mid = np.float32(0.5) * (lo + hi)
        total = total + (hi - lo) * np.clip(ya + slope * (mid - xa), zero, one)
    sign = np.where(dx < 0, one, -one)
    return np.where((dx != 0) & (u < v), sign * total, zero).astype(np.float32)


def outside_area(Pf, H, W):
    """|R_p| for polygons that cross the frame border, 0 for those inside it (so rounding never
    turns into spurious fresh noise); the out-of-frame area is this minus the in-frame overlaps."""
    lo, hi = Pf.min(axis=1), Pf.max(axis=1)
    inside = (lo[:, 0] >= 0) & (lo[:, 1] >= 0) & (hi[:, 0] <= W) & (hi[:, 1] <= H)
    return np.where(inside, np.float32(0), shoelace(Pf).astype(np.float32))


def _bbox(P, H, W):
    # clamped to one cell beyond the frame before the integer conversion: a huge (finite) flow
    # must not overflow int64 into a frame-wide box
    edge = np.array([W + 1, H + 1], np.float32)
    lo = np.floor(np.clip(np.nan_to_num(P.min(axis=2), nan=-1), -1, edge)).astype(np.int64)
    hi = np.ceil(np.clip(np.nan_to_num(P.max(axis=2), nan=-1), -1, edge)).astype(np.int64) - 1
    j0, i0 = np.maximum(lo[..., 0], 0), np.maximum(lo[..., 1], 0)
    j1, i1 = np.minimum(hi[..., 0], W - 1), np.minimum(hi[..., 1], H - 1)
    return i0, i1, j0, j1


def requests(flow, max_span=MAX_SPAN, footprint="quad"):
    """(src, dst, A, v_out, fallback count): exact-overlap requests of each pixel's footprint
    (its warped quad, or its Jacobian box), sorted by destination, then cell row-major."""
    H, W = flow.shape[:2]
    if footprint == "box":
        P, out_area, bad = boxes(flow, max_span)
    else:
        P, bad = quads(corner_positions(flow), flow, max_span)
        out_area = outside_area(P.reshape(-1, 4, 2), H, W)
        bad = int(bad.sum())
    i0, i1, j0, j1 = _bbox(P, H, W)
    Pf = P.reshape(-1, 4, 2)
    srcs, dsts, areas, order = [], [], [], []
    ny = int(max(0, (i1 - i0).max() + 1)) if H * W else 0
    nx = int(max(0, (j1 - j0).max() + 1)) if H * W else 0
    A_in = np.zeros(H * W, np.float32)
    for oy in range(ny):
        for ox in range(nx):
            ci, cj = (i0 + oy).ravel(), (j0 + ox).ravel()
            sel = np.nonzero((ci <= i1.ravel()) & (cj <= j1.ravel()))[0]
            if sel.size == 0:
                continue
            A = cell_overlap(Pf[sel], cj[sel].astype(np.float32), ci[sel].astype(np.float32))
            keep = A > MIN_PIECE
            sel, A = sel[keep], A[keep]
            srcs.append(ci[sel] * W + cj[sel])
            dsts.append(sel)
            areas.append(A)
            order.append(np.full(sel.size, oy * nx + ox))
    if srcs:
        src, dst, A = np.concatenate(srcs), np.concatenate(dsts), np.concatenate(areas)
        idx = np.lexsort((np.concatenate(order), dst))  # destination, then the kernel's row-major cell order
        src, dst, A = src[idx], dst[idx], A[idx]
        np.add.at(A_in, dst, A)
    else:
        src = dst = np.zeros(0, np.int64)
        A = np.zeros(0, np.float32)
    v_out = np.maximum(out_area - A_in, np.float32(0))
    return src, dst, A, v_out, bad


def step_numpy(x, flow, seed, frame, max_span=MAX_SPAN, footprint="quad"):
    """Reference. footprint='quad': the grid variant (floor 1, exact areas and leftovers);
    'box': the particle variant with Jacobian-scaled footprints (floor 0: cells fully divided)."""
    H, W, C = x.shape
    src, dst, A, v_out, bad = requests(flow, max_span, footprint)
    floor = 0.0 if footprint == "box" else 1.0
    y, asum = partition.split_requests(x.reshape(-1, C), src, dst, A, H * W, seed, frame, floor=floor)
    y = partition.finish(y, asum, v_out, seed, frame)
    return y.reshape(H, W, C), {"fallback_pixels": bad}


# ----------------------------------------------------------------------------- Taichi kernels
_K = None
_TF = None


def taichi_funcs():
    """(edge_integral,): the Taichi form of `_edge_integral`, for every kernel that needs exact
    overlaps (the grid variant here, core2d.flowmap)."""
    global _TF
    if _TF is not None:
        return _TF
    import taichi as ti

    @ti.func
    def edge_integral(xa, ya, xb, yb):
        res = 0.0
        dx = xb - xa
        u = ti.max(ti.min(xa, xb), 0.0)
        v = ti.min(ti.max(xa, xb), 1.0)
        if dx != 0 and u < v:
            slope = (yb - ya) / dx
            t1 = u
            t2 = u
            if slope != 0:
                t1 = xa - ya / slope
                t2 = xa + (1.0 - ya) / slope
            lo_t = ti.min(ti.max(ti.min(t1, t2), u), v)
            hi_t = ti.min(ti.max(ti.max(t1, t2), u), v)
            total = 0.0
            m = 0.5 * (u + lo_t)
            total += (lo_t - u) * ti.min(ti.max(ya + slope * (m - xa), 0.0), 1.0)
            m = 0.5 * (lo_t + hi_t)
            total += (hi_t - lo_t) * ti.min(ti.max(ya + slope * (m - xa), 0.0), 1.0)
            m = 0.5 * (hi_t + v)
            total += (v - hi_t) * ti.min(ti.max(ya + slope * (m - xa), 0.0), 1.0)
            res = total if dx < 0 else -total
        return res

    _TF = (edge_integral,)
    return _TF


def _kernels():
    global _K
    if _K is not None:
        return _K
    import taichi as ti

    nd = ti.types.ndarray
    edge_integral, = taichi_funcs()

    @ti.func
    def overlap(P: ti.template(), p, cx, cy):
        total = 0.0
        for e in ti.static(range(4)):
            total += edge_integral(P[p, e, 0] - cx, P[p, e, 1] - cy, P[p, (e + 1) % 4, 0] - cx,
                                    P[p, (e + 1) % 4, 1] - cy)
        return total

    @ti.func
    def bbox(P: ti.template(), p, H, W):
        mnx = ti.min(ti.min(P[p, 0, 0], P[p, 1, 0]), ti.min(P[p, 2, 0], P[p, 3, 0]))
        mxx = ti.max(ti.max(P[p, 0, 0], P[p, 1, 0]), ti.max(P[p, 2, 0], P[p, 3, 0]))
        mny = ti.min(ti.min(P[p, 0, 1], P[p, 1, 1]), ti.min(P[p, 2, 1], P[p, 3, 1]))
        mxy = ti.max(ti.max(P[p, 0, 1], P[p, 1, 1]), ti.max(P[p, 2, 1], P[p, 3, 1]))
        mnx, mxx = ti.min(ti.max(mnx, -1.0), W + 1.0), ti.min(ti.max(mxx, -1.0), W + 1.0)  # as _bbox
        mny, mxy = ti.min(ti.max(mny, -1.0), H + 1.0), ti.min(ti.max(mxy, -1.0), H + 1.0)
        j0 = ti.max(ti.cast(ti.floor(mnx), ti.i32), 0)
        j1 = ti.min(ti.cast(ti.ceil(mxx), ti.i32) - 1, W - 1)
        i0 = ti.max(ti.cast(ti.floor(mny), ti.i32), 0)
        i1 = ti.min(ti.cast(ti.ceil(mxy), ti.i32) - 1, H - 1)
        return i0, i1, j0, j1

    @ti.kernel
    def count(P: nd(dtype=ti.f32, ndim=3), n: nd(dtype=ti.i32, ndim=1), H: ti.i32, W: ti.i32):
        """Slots per pixel: the in-frame cells of its bounding box (no overlap computed yet)."""
        for p in range(H * W):
            i0, i1, j0, j1 = bbox(P, p, H, W)
            n[p] = ti.max(i1 - i0 + 1, 0) * ti.max(j1 - j0 + 1, 0)

    @ti.kernel
    def fill(P: nd(dtype=ti.f32, ndim=3), start: nd(dtype=ti.i32, ndim=1), area: nd(dtype=ti.f32, ndim=1),
             src: nd(dtype=ti.i32, ndim=1), w: nd(dtype=ti.f32, ndim=1), dst: nd(dtype=ti.i32, ndim=1),
             v_out: nd(dtype=ti.f32, ndim=1), n: nd(dtype=ti.i32, ndim=1), lst: nd(dtype=ti.i32, ndim=1),
             overflow: nd(dtype=ti.i32, ndim=1), K: ti.i32, H: ti.i32, W: ti.i32):
        """Exact overlaps of each pixel's bounding-box cells (empty slots: src -1, w <= 0), v_out,
        and each request listed under its cell (K fixed slots a cell; more sets `overflow`)."""
        for p in range(H * W):
            i0, i1, j0, j1 = bbox(P, p, H, W)
            r = start[p]
            a_in = 0.0
            for ci in range(i0, i1 + 1):
                for cj in range(j0, j1 + 1):
                    A = overlap(P, p, ti.cast(cj, ti.f32), ti.cast(ci, ti.f32))
                    src[r] = -1                         # an empty slot: no overlap
                    if A > MIN_PIECE:
                        c = ci * W + cj
                        src[r] = c
                        a_in += A
                        t = ti.atomic_add(n[c], 1)
                        if t < K:
                            lst[c * K + t] = r
                        else:
                            ti.atomic_max(overflow[0], 1)
                    w[r] = A
                    dst[r] = p
                    r += 1
            v_out[p] = ti.max(area[p] - a_in, 0.0)

    @ti.kernel
    def build(corners: nd(dtype=ti.f32, ndim=3), flow: nd(dtype=ti.f32, ndim=3), P: nd(dtype=ti.f32, ndim=3),
              area: nd(dtype=ti.f32, ndim=1), bad: nd(dtype=ti.i32, ndim=1), max_span: ti.f32):
        """`quads` + `outside_area` of the NumPy reference, per pixel."""
        H, W = flow.shape[0], flow.shape[1]
        for i, j in ti.ndrange(H, W):
            p = i * W + j
            q = ti.Matrix([[corners[i, j, 0], corners[i, j, 1]], [corners[i, j + 1, 0], corners[i, j + 1, 1]],
                           [corners[i + 1, j + 1, 0], corners[i + 1, j + 1, 1]],
                           [corners[i + 1, j, 0], corners[i + 1, j, 1]]], ti.f32)
            neg = 0
            a2 = 0.0
            for e in ti.static(range(4)):
                ex, ey = q[e, 0] - q[0, 0], q[e, 1] - q[0, 1]
                fx, fy = q[(e + 1) % 4, 0] - q[0, 0], q[(e + 1) % 4, 1] - q[0, 1]
                a2 += ex * fy - fx * ey
                dx0 = q[(e + 1) % 4, 0] - q[e, 0]
                dy0 = q[(e + 1) % 4, 1] - q[e, 1]
                dx1 = q[(e + 2) % 4, 0] - q[(e + 1) % 4, 0]
                dy1 = q[(e + 2) % 4, 1] - q[(e + 1) % 4, 1]
                if dx0 * dy1 - dy0 * dx1 < 0:
                    neg += 1
            mnx = ti.min(ti.min(q[0, 0], q[1, 0]), ti.min(q[2, 0], q[3, 0]))
            mxx = ti.max(ti.max(q[0, 0], q[1, 0]), ti.max(q[2, 0], q[3, 0]))
            mny = ti.min(ti.min(q[0, 1], q[1, 1]), ti.min(q[2, 1], q[3, 1]))
            mxy = ti.max(ti.max(q[0, 1], q[1, 1]), ti.max(q[2, 1], q[3, 1]))
            b = 0
            if neg > 1 or not (0.5 * a2 > MIN_AREA) or ti.max(mxx - mnx, mxy - mny) > max_span:
                b = 1
                x0 = ti.cast(j, ti.f32) + flow[i, j, 0]
                y0 = ti.cast(i, ti.f32) + flow[i, j, 1]
                q = ti.Matrix([[x0, y0], [x0 + 1, y0], [x0 + 1, y0 + 1], [x0, y0 + 1]], ti.f32)
                mnx, mxx, mny, mxy = x0, x0 + 1, y0, y0 + 1
            bad[p] = b
            a2 = 0.0
            for e in ti.static(range(4)):
                P[p, e, 0] = q[e, 0]
                P[p, e, 1] = q[e, 1]
                ex, ey = q[e, 0] - q[0, 0], q[e, 1] - q[0, 1]
                fx, fy = q[(e + 1) % 4, 0] - q[0, 0], q[(e + 1) % 4, 1] - q[0, 1]
                a2 += ex * fy - fx * ey
            inside = mnx >= 0 and mny >= 0 and mxx <= W and mxy <= H
            area[p] = 0.0 if inside else 0.5 * a2

    _K = (count, fill, build)
    return _K


MAX_SLOTS_KEPT = 16   # request slots per pixel whose scratch a warper keeps between steps


def step_taichi(x, flow, seed, frame, max_span=MAX_SPAN, footprint="quad", work=None):
    """Exact overlaps materialised as requests, one slot per cell of each pixel's bounding box
    (empty slots are skipped), then the shared split: the overlaps are computed once.

    work: the caller's `partition.Workspace` (see particle.step_taichi). A frame that needs more
    than MAX_SLOTS_KEPT slots per pixel (a zoom out beyond ~3×, a hostile map) gives that scratch
    back when the step ends."""
    H, W, C = x.shape
    N = H * W
    count, fill, build = _kernels()
    own = work is None
    work = partition.Workspace() if own else work
    Pf, area = work.get("grid.P", (N, 4, 2), np.float32), work.get("grid.area", (N,), np.float32)
    if footprint == "box":
        P, out_area, n_bad = boxes(flow, max_span)
        Pf[:], area[:] = P.reshape(-1, 4, 2), out_area
    else:
        bad = work.get("grid.bad", (N,), np.int32)
        build(corner_positions(flow), flow, Pf, area, bad, float(max_span))
        n_bad = int(bad.sum())
    slots = work.get("grid.slots", (N,), np.int32)
    count(Pf, slots, H, W)
    start = work.get("grid.start", (N + 1,), np.int32)
    start[0] = 0
    np.cumsum(slots, out=start[1:])
    R = int(start[-1])
    src, dst = work.get("grid.src", (R,), np.int32), work.get("grid.dst", (R,), np.int32)
    w, v_out = work.get("grid.w", (R,), np.float32), work.get("grid.v_out", (N,), np.float32)
    n = work.zeros("split.n", (N,), np.int32)
    overflow = work.zeros("split.overflow", (1,), np.int32)
    lst = work.get("split.list", (N * partition.K_SLOTS,), np.int32)
    fill(Pf, start, area, src, w, dst, v_out, n, lst, overflow, partition.K_SLOTS, H, W)
    floor = 0.0 if footprint == "box" else 1.0
    y = np.empty(x.shape, np.float32) if own else work.other(x, x.shape)
    partition.split_gather(np.ascontiguousarray(x.reshape(-1, C)), w, v_out, seed, frame, floor, work,
                           y.reshape(N, C), n, bool(overflow[0]), src, partition.GENERAL, dst_start=start)
    work.trim(MAX_SLOTS_KEPT * N)
    return y, {"fallback_pixels": n_bad}
