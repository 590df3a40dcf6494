"""Chang et al. 2024 ("How I Warped Your Noise"): conditional k×k upsampling, then rasterisation.

Each cell is refined into k² sub-pixels `u_i = x/k² + z_i - mean(z)`, `z_i ~ N(0, 1/k²)` (they
sum to x and are i.i.d. N(0, 1/k²)); pixel p sums the sub-pixels whose centres fall inside its
warped polygon R_p (the grid variant's quad) and divides by sqrt(count/k²). The grid variant
is its k → ∞ limit; cost grows with k². Sub-pixels are regenerated from the counter RNG, so
only a k²·H·W ownership map is stored. Where polygons overlap (folds, collapse), a sub-pixel
belongs to the lowest-numbered pixel whose polygon holds its centre (an order-free atomic
min), so no sub-pixel is used twice and the frame stays white; the others get fresh noise.
"""
import numpy as np

from . import grid, partition, rng


def _subpixels(seed, frame, cells, sub, k, channels):
    """z_i / (the 1/k scale applied) for sub-pixel `sub` of `cells`: N(0, 1/k²)."""
    return rng.gauss(seed, frame, rng.SUBPIXEL, cells, sub, channels) / np.float32(k)


def _zbar(seed, frame, n_cells, k, channels):
    cells = np.arange(n_cells)
    acc = np.zeros((n_cells, channels), np.float32)
    for s in range(k * k):
        acc += _subpixels(seed, frame, cells, s, k, channels)
    return acc / np.float32(k * k)


def _inside(P, px, py):
    """Crossing-number point-in-polygon test for quads P [N, 4, 2] and points [N]."""
    inside = np.zeros(px.shape, bool)
    for e in range(4):
        xa, ya = P[:, e, 0], P[:, e, 1]
        xb, yb = P[:, (e + 1) % 4, 0], P[:, (e + 1) % 4, 1]
        crosses = (ya > py) != (yb > py)
        dy = np.where(yb != ya, yb - ya, np.float32(1))
        xint = xa + (py - ya) / dy * (xb - xa)
        inside ^= crosses & (px < xint)
    return inside


def step_numpy(x, flow, seed, frame, k=4, max_span=grid.MAX_SPAN):
    H, W, C = x.shape
    xf = x.reshape(-1, C)
    P, bad = grid.quads(grid.corner_positions(flow), flow, max_span)
    Pf = P.reshape(-1, 4, 2)
    zbar = _zbar(seed, frame, H * W, k, C)
    edge = np.array([W * k + 1, H * k + 1], np.float32)         # sub-pixel bbox, clamped to the frame
    lo = np.floor(np.clip(Pf.min(axis=1) * k, -1, edge)).astype(np.int64)   # (before int64 can overflow)
    hi = np.ceil(np.clip(Pf.max(axis=1) * k, -1, edge)).astype(np.int64) - 1
    x0, y0 = np.maximum(lo[:, 0], 0), np.maximum(lo[:, 1], 0)
    x1, y1 = np.minimum(hi[:, 0], W * k - 1), np.minimum(hi[:, 1], H * k - 1)
    acc = np.zeros((H * W, C), np.float32)
    count = np.zeros(H * W, np.int64)
    owner = np.full(H * W * k * k, H * W, np.int64)
    ny, nx = int(max(0, (y1 - y0).max() + 1)), int(max(0, (x1 - x0).max() + 1))
    for sweep in ("own", "gather"):
        for oy in range(ny):
            for ox in range(nx):
                sy, sx = y0 + oy, x0 + ox
                sel = np.nonzero((sy <= y1) & (sx <= x1))[0]
                if sel.size == 0:
                    continue
                sy, sx = sy[sel], sx[sel]
                inside = _inside(Pf[sel], (sx.astype(np.float32) + np.float32(0.5)) / np.float32(k),
                                 (sy.astype(np.float32) + np.float32(0.5)) / np.float32(k))
                sel, sy, sx = sel[inside], sy[inside], sx[inside]
                g = sy * (W * k) + sx
                if sweep == "own":
                    np.minimum.at(owner, g, sel)
                    continue
                mine = owner[g] == sel
                sel, sy, sx = sel[mine], sy[mine], sx[mine]
                c = (sy // k) * W + (sx // k)
                sub = (sy % k) * k + (sx % k)
                u = xf[c] / np.float32(k * k) + _subpixels(seed, frame, c, sub, k, C) - zbar[c]
                acc[sel] += u                   # each pixel at most once per offset: no collisions
                count[sel] += 1
    cnt = (count.astype(np.float32) / np.float32(k * k))
    v_out = np.maximum(grid.outside_area(Pf, H, W) - cnt, np.float32(0))
    fresh = rng.gauss(seed, frame, rng.FRESH, np.arange(H * W), 0, C)
    tot = (cnt + v_out)[:, None]
    y = np.where(tot > 0, (acc + np.sqrt(v_out)[:, None] * fresh) / np.sqrt(np.where(tot > 0, tot, 1)), fresh)
    return y.astype(np.float32).reshape(H, W, C), {"fallback_pixels": int(bad.sum()),
                                                   "fresh_pixels": int(np.sum(tot <= 0))}


_K = None


def _kernels():
    global _K
    if _K is not None:
        return _K
    import taichi as ti

    site_key, gauss_at = rng.taichi_sites()
    nd = ti.types.ndarray

    @ti.kernel
    def zbar_kernel(zb: nd(dtype=ti.f32, ndim=2), k: ti.i32, sub_base: ti.u32):
        C = zb.shape[1]
        for c in range(zb.shape[0]):
            for pr in range((C + 1) // 2):
                acc = ti.Vector([0.0, 0.0], ti.f32)
                for s in range(k * k):
                    acc += gauss_at(site_key(sub_base, c, s), ti.cast(pr, ti.u32)) / ti.cast(k, ti.f32)
                for e in ti.static(range(2)):
                    if 2 * pr + e < C:
                        zb[c, 2 * pr + e] = acc[e] / ti.cast(k * k, ti.f32)

    @ti.func
    def inside(P: ti.template(), p, px, py):
        res = False
        for e in ti.static(range(4)):
            xa, ya = P[p, e, 0], P[p, e, 1]
            xb, yb = P[p, (e + 1) % 4, 0], P[p, (e + 1) % 4, 1]
            if (ya > py) != (yb > py):
                dy = yb - ya
                if px < xa + (py - ya) / dy * (xb - xa):
                    res = not res
        return res

    @ti.func
    def sub_bbox(P: ti.template(), p, H, W, k):
        kf = ti.cast(k, ti.f32)
        mnx = ti.min(ti.min(P[p, 0, 0], P[p, 1, 0]), ti.min(P[p, 2, 0], P[p, 3, 0]))
        mxx = ti.max(ti.max(P[p, 0, 0], P[p, 1, 0]), ti.max(P[p, 2, 0], P[p, 3, 0]))
        mny = ti.min(ti.min(P[p, 0, 1], P[p, 1, 1]), ti.min(P[p, 2, 1], P[p, 3, 1]))
        mxy = ti.max(ti.max(P[p, 0, 1], P[p, 1, 1]), ti.max(P[p, 2, 1], P[p, 3, 1]))
        ex, ey = ti.cast(W * k + 1, ti.f32), ti.cast(H * k + 1, ti.f32)   # clamped before the cast
        x0 = ti.max(ti.cast(ti.floor(ti.min(ti.max(mnx * kf, -1.0), ex)), ti.i32), 0)
        x1 = ti.min(ti.cast(ti.ceil(ti.min(ti.max(mxx * kf, -1.0), ex)), ti.i32) - 1, W * k - 1)
        y0 = ti.max(ti.cast(ti.floor(ti.min(ti.max(mny * kf, -1.0), ey)), ti.i32), 0)
        y1 = ti.min(ti.cast(ti.ceil(ti.min(ti.max(mxy * kf, -1.0), ey)), ti.i32) - 1, H * k - 1)
        return x0, x1, y0, y1

    @ti.kernel
    def own(P: nd(dtype=ti.f32, ndim=3), owner: nd(dtype=ti.i32, ndim=1), H: ti.i32, W: ti.i32, k: ti.i32):
        kf = ti.cast(k, ti.f32)
        for p in range(H * W):
            x0, x1, y0, y1 = sub_bbox(P, p, H, W, k)
            for sy in range(y0, y1 + 1):
                for sx in range(x0, x1 + 1):
                    if inside(P, p, (ti.cast(sx, ti.f32) + 0.5) / kf, (ti.cast(sy, ti.f32) + 0.5) / kf):
                        ti.atomic_min(owner[sy * W * k + sx], p)

    @ti.kernel
    def gather(x: nd(dtype=ti.f32, ndim=2), P: nd(dtype=ti.f32, ndim=3), area: nd(dtype=ti.f32, ndim=1),
               zb: nd(dtype=ti.f32, ndim=2), owner: nd(dtype=ti.i32, ndim=1), y: nd(dtype=ti.f32, ndim=2),
               H: ti.i32, W: ti.i32, k: ti.i32, sub_base: ti.u32, fresh_base: ti.u32):
        C = x.shape[1]
        kf = ti.cast(k, ti.f32)
        for p in range(H * W):
            for ch in range(C):
                y[p, ch] = 0.0
            x0, x1, y0, y1 = sub_bbox(P, p, H, W, k)
            count = 0
            for sy in range(y0, y1 + 1):
                for sx in range(x0, x1 + 1):
                    if owner[sy * W * k + sx] == p and inside(P, p, (ti.cast(sx, ti.f32) + 0.5) / kf,
                                                             (ti.cast(sy, ti.f32) + 0.5) / kf):
                        c = (sy // k) * W + (sx // k)
                        key = site_key(sub_base, c, (sy % k) * k + (sx % k))
                        count += 1
                        for pr in range((C + 1) // 2):
                            g = gauss_at(key, ti.cast(pr, ti.u32))
                            for e in ti.static(range(2)):
                                ch = 2 * pr + e
                                if ch < C:
                                    y[p, ch] = y[p, ch] + (x[c, ch] / ti.cast(k * k, ti.f32) + g[e] / kf - zb[c, ch])
            cnt = ti.cast(count, ti.f32) / ti.cast(k * k, ti.f32)
            v_out = ti.max(area[p] - cnt, 0.0)
            tot = cnt + v_out
            fkey = site_key(fresh_base, p, 0)
            for pr in range((C + 1) // 2):
                f = gauss_at(fkey, ti.cast(pr, ti.u32))
                for e in ti.static(range(2)):
                    ch = 2 * pr + e
                    if ch < C:
                        if tot > 0:
                            y[p, ch] = (y[p, ch] + ti.sqrt(v_out) * f[e]) / ti.sqrt(tot)
                        else:
                            y[p, ch] = f[e]

    _K = (zbar_kernel, own, gather)
    return _K


def step_taichi(x, flow, seed, frame, k=4, max_span=grid.MAX_SPAN, work=None):
    H, W, C = x.shape
    P, bad = grid.quads(grid.corner_positions(flow), flow, max_span)
    Pf = np.ascontiguousarray(P.reshape(-1, 4, 2))
    area = np.ascontiguousarray(grid.outside_area(Pf, H, W))
    zbar_kernel, own, gather = _kernels()
    sub_base, fresh_base = (np.uint32(rng.site_base(seed, frame, s)) for s in (rng.SUBPIXEL, rng.FRESH))
    mine = work is None
    work = partition.Workspace() if mine else work
    zb = work.get("upsample.zbar", (H * W, C), np.float32)
    zbar_kernel(zb, k, sub_base)
    owner = work.get("upsample.owner", (H * W * k * k,), np.int32)
    owner.fill(H * W)
    own(Pf, owner, H, W, k)
    y = np.empty(x.shape, np.float32) if mine else work.other(x, x.shape)
    gather(np.ascontiguousarray(x.reshape(-1, C)), Pf, area, zb, owner, y.reshape(H * W, C), H, W, k, sub_base,
           fresh_base)
    count = np.bincount(owner[owner < H * W], minlength=H * W)        # sub-pixels each pixel gathered
    fresh = int(np.count_nonzero((count == 0) & (area <= 0)))         # as step_numpy: nothing at all
    return y, {"fallback_pixels": int(bad.sum()), "fresh_pixels": fresh}
