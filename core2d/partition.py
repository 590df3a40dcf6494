"""Partition building and the Brownian-bridge split: the math every ∫-noise warper shares.

A warp is a list of *requests* (source cell c, destination p, weight w): destination p wants
the part of cell c's white-noise integral of size w. A cell is split among its requesters
in proportion to their weights, `a = w / max(T_c, floor)` with `T_c = Σ w` over the cell's
requests; `floor = 0` divides the whole cell among requesters (particle variant, nearest),
`floor = 1` keeps exact areas and leaves an unrequested leftover `1 - T_c` (grid variant).

Pieces are drawn with the order-free zero-sum form of the bridge (ALGORITHMS.md §2):
`piece = a x + z - a S`, `z = sqrt(a) n`, `S = Σ z` over all the cell's pieces and its
leftover. `T_c` and `Σ sqrt(w) n` are accumulated in one pass with 2**32 fixed-point integer
sums, which are exact and order-free, so results do not depend on thread count.

Every function works on flat indices (cells and destinations numbered 0..N-1, noise as
[N, C]), so the 2D and 3D warpers share it unchanged.

Two Taichi strategies compute the same stream (both agree with `split_requests`):
- `split_taichi` (cell-major): requests are materialised and counting-sorted by cell, each
  normal is drawn once; fastest, but needs R·C floats of scratch for R requests. The 2D
  warpers use it.
- `taichi_funcs` (two passes over destinations with integer atomics): nothing materialised,
  each normal drawn twice; the 3D warper uses it, where 8 requests per voxel would make the
  scratch of the cell-major form several GB at 256³.
"""
import numpy as np

from . import rng

SCALE = 4294967296.0  # 2**32 fixed point
INV_SCALE = np.float32(1.0 / SCALE)


def quantize(v) -> np.ndarray:
    """Float -> int64 fixed point, rounding half away from zero (cheap in a kernel: add, truncate)."""
    x = np.asarray(v, np.float64) * SCALE
    return (x + np.copysign(0.5, x)).astype(np.int64)


def split_requests(x, src, dst, w, n_dst, seed, frame, floor):
    """Bridge-split cells among requests; return (sum of pieces per destination [n_dst, C], Σa per destination).

    x: [N_cells, C] float32 noise. src, dst: int arrays of request cells / destinations,
    sorted by destination (the summation order the Taichi kernels use). w: float32 weights > 0.
    """
    x = np.asarray(x, np.float32)
    n_cells, channels = x.shape
    w = np.asarray(w, np.float32)
    T = np.zeros(n_cells, np.int64)
    np.add.at(T, src, quantize(w))
    n = rng.gauss(seed, frame, rng.PIECE, src, dst, channels)
    sw = np.sqrt(w)
    U = np.zeros((n_cells, channels), np.int64)
    np.add.at(U, src, quantize(sw[:, None] * n))

    Tc = T[src].astype(np.float32) * INV_SCALE
    den = np.maximum(Tc, np.float32(floor))
    a = w / den
    a0 = np.maximum(np.float32(1.0) - Tc / den, np.float32(0.0))
    S = U[src].astype(np.float32) * INV_SCALE * (np.float32(1.0) / np.sqrt(den))[:, None]
    if floor > 0:
        S = S + np.sqrt(a0)[:, None] * rng.gauss(seed, frame, rng.LEFTOVER, src, 0, channels)
    a_ = a[:, None]
    piece = a_ * x[src] + np.sqrt(a_) * n - a_ * S
    piece = np.where(a_ >= 1.0, x[src], piece)  # the whole cell: the bridge is degenerate, piece = x

    y = np.zeros((n_dst, channels), np.float32)
    np.add.at(y, dst, piece)
    asum = np.zeros(n_dst, np.float32)
    np.add.at(asum, dst, a)
    return y, asum


def finish(y, asum, v_out, seed, frame):
    """Add fresh noise of variance v_out (area outside the frame), normalise to unit variance.

    A destination that received nothing at all gets fresh N(0,1).
    """
    n_dst, channels = y.shape
    f = rng.gauss(seed, frame, rng.FRESH, np.arange(n_dst), 0, channels)
    v_out = np.asarray(v_out, np.float32)
    tot = (asum + v_out)[:, None]
    safe = np.where(tot > 0, tot, np.float32(1.0))
    out = (y + np.sqrt(v_out)[:, None] * f) / np.sqrt(safe)
    return np.where(tot > 0, out, f).astype(np.float32)


# ----------------------------------------------------------------------------- Taichi side
_TI = None
_TI_PIECE = []  # (bridge_piece, q): shared by both strategies


def taichi_funcs():
    """Taichi versions of the two passes: `request` (pass 1, atomics) and `take` / `finish` (pass 2)."""
    global _TI
    if _TI is not None:
        return _TI
    import taichi as ti

    _, gauss_pair, _ = rng.taichi_funcs()

    @ti.func
    def q(v):
        x = ti.cast(v, ti.f64) * SCALE
        return ti.cast(x + ti.select(x >= 0, 0.5, -0.5), ti.i64)

    @ti.func
    def bridge_piece(a, sa, xc, n, S):
        """a x + sqrt(a) n - a S; the whole cell (a >= 1) is x itself (the bridge is degenerate)."""
        v = a * xc + sa * n - a * S
        if a >= 1.0:
            v = xc
        return v

    @ti.func
    def request(T: ti.template(), U: ti.template(), c, p, w, seed, frame, channels):
        """Pass 1: add request (c -> p, weight w) to T_c and U_c = Σ sqrt(w) n."""
        ti.atomic_add(T[c], q(w))
        sw = ti.sqrt(w)
        for k in range((channels + 1) // 2):
            g = gauss_pair(seed, frame, ti.u32(rng.PIECE), ti.cast(c, ti.u32), ti.cast(p, ti.u32),
                           ti.cast(k, ti.u32))
            ti.atomic_add(U[c, 2 * k], q(sw * g[0]))
            if 2 * k + 1 < channels:
                ti.atomic_add(U[c, 2 * k + 1], q(sw * g[1]))

    @ti.func
    def take(x: ti.template(), T: ti.template(), U: ti.template(), y: ti.template(), c, p, w, floor, seed, frame, channels):
        """Pass 2: add the piece of cell c for destination p to y[p]; return its area fraction a."""
        Tc = ti.cast(T[c], ti.f32) * (1.0 / SCALE)
        den = ti.max(Tc, floor)
        a = w / den
        a0 = ti.max(1.0 - Tc / den, 0.0)
        rs = 1.0 / ti.sqrt(den)
        sa = ti.sqrt(a)
        sa0 = ti.sqrt(a0)
        for k in range((channels + 1) // 2):
            g = gauss_pair(seed, frame, ti.u32(rng.PIECE), ti.cast(c, ti.u32), ti.cast(p, ti.u32),
                           ti.cast(k, ti.u32))
            g0 = ti.Vector([0.0, 0.0], ti.f32)
            if a0 > 0:
                g0 = gauss_pair(seed, frame, ti.u32(rng.LEFTOVER), ti.cast(c, ti.u32), ti.u32(0),
                                ti.cast(k, ti.u32))
            for e in ti.static(range(2)):
                ch = 2 * k + e
                if ch < channels:
                    S = ti.cast(U[c, ch], ti.f32) * (1.0 / SCALE) * rs
                    if a0 > 0:
                        S = S + sa0 * g0[e]
                    y[p, ch] += bridge_piece(a, sa, x[c, ch], g[e], S)
        return a

    @ti.func
    def finish_one(y: ti.template(), p, asum, v_out, seed, frame, channels):
        tot = asum + v_out
        sv = ti.sqrt(v_out)
        if v_out == 0 and tot > 0:  # nothing fresh to add: just normalise
            if tot != 1.0:
                st = ti.sqrt(tot)
                for ch in range(channels):
                    y[p, ch] = y[p, ch] / st
        for k in range((channels + 1) // 2 if v_out > 0 or tot <= 0 else 0):
            f = gauss_pair(seed, frame, ti.u32(rng.FRESH), ti.cast(p, ti.u32), ti.u32(0), ti.cast(k, ti.u32))
            for e in ti.static(range(2)):
                ch = 2 * k + e
                if ch < channels:
                    if tot > 0:
                        y[p, ch] = (y[p, ch] + sv * f[e]) / ti.sqrt(tot)
                    else:
                        y[p, ch] = f[e]

    _TI = (request, take, finish_one)
    _TI_PIECE[:] = [bridge_piece, q]
    return _TI


# ------------------------------------------------------------------ Taichi: cell-major split
_TS = None


def _split_kernels():
    """Kernels of `split_taichi`: counting sort of requests by cell, one thread per cell, gather."""
    global _TS
    if _TS is not None:
        return _TS
    import taichi as ti

    taichi_funcs()
    bridge_piece, q = _TI_PIECE
    nd = ti.types.ndarray

    @ti.kernel
    def count(src: nd(dtype=ti.i32, ndim=1), n: nd(dtype=ti.i32, ndim=1)):
        for r in range(src.shape[0]):
            if src[r] >= 0:
                ti.atomic_add(n[src[r]], 1)

    @ti.kernel
    def fill(src: nd(dtype=ti.i32, ndim=1), start: nd(dtype=ti.i32, ndim=1), cursor: nd(dtype=ti.i32, ndim=1),
             by_cell: nd(dtype=ti.i32, ndim=1)):
        for r in range(src.shape[0]):
            c = src[r]
            if c >= 0:
                by_cell[start[c] + ti.atomic_add(cursor[c], 1)] = r

    key_of, gauss_at = rng.taichi_keyed()

    @ti.kernel
    def split(x: nd(dtype=ti.f32, ndim=2), w: nd(dtype=ti.f32, ndim=1), dst: nd(dtype=ti.i32, ndim=1),
              start: nd(dtype=ti.i32, ndim=1), by_cell: nd(dtype=ti.i32, ndim=1), piece: nd(dtype=ti.f32, ndim=2),
              area: nd(dtype=ti.f32, ndim=1), seed: ti.u32, frame: ti.u32, floor: ti.f32, C: ti.template()):
        P = ti.static((C + 1) // 2)
        for c in range(x.shape[0]):
            s0, s1 = start[c], start[c + 1]
            whole = False
            if s1 - s0 == 1:                          # one requester taking all of the cell
                r = by_cell[s0]                       # (static regions): piece = x, no draws
                Tc = ti.cast(q(w[r]), ti.f32) * (1.0 / SCALE)
                a = w[r] / ti.max(Tc, floor)
                if a >= 1.0:
                    whole = True
                    area[r] = a
                    for ch in ti.static(range(C)):
                        piece[r, ch] = x[c, ch]
            if s1 > s0 and not whole:
                T = ti.i64(0)
                U = ti.Vector.zero(ti.i64, 2 * P)
                for t in range(s0, s1):               # T_c and the bridge's Σ sqrt(w) n: exact fixed point
                    r = by_cell[t]
                    T += q(w[r])
                    sw = ti.sqrt(w[r])
                    key = key_of(seed, frame, ti.u32(rng.PIECE), ti.cast(c, ti.u32), ti.cast(dst[r], ti.u32))
                    for k in ti.static(range(P)):
                        g = gauss_at(key, ti.u32(k))
                        for e in ti.static(range(2)):
                            if ti.static(2 * k + e < C):
                                U[2 * k + e] += q(sw * g[e])
                                piece[r, 2 * k + e] = g[e]
                Tc = ti.cast(T, ti.f32) * (1.0 / SCALE)
                den = ti.max(Tc, floor)
                a0 = ti.max(1.0 - Tc / den, 0.0)
                rs = 1.0 / ti.sqrt(den)
                S = ti.Vector.zero(ti.f32, 2 * P)
                for ch in ti.static(range(C)):
                    S[ch] = ti.cast(U[ch], ti.f32) * (1.0 / SCALE) * rs
                if a0 > 0:
                    sa0 = ti.sqrt(a0)
                    lkey = key_of(seed, frame, ti.u32(rng.LEFTOVER), ti.cast(c, ti.u32), ti.u32(0))
                    for k in ti.static(range(P)):
                        g0 = gauss_at(lkey, ti.u32(k))
                        for e in ti.static(range(2)):
                            S[2 * k + e] += sa0 * g0[e]
                for t in range(s0, s1):               # pieces: a x + sqrt(a) n - a S
                    r = by_cell[t]
                    a = w[r] / den
                    sa = ti.sqrt(a)
                    area[r] = a
                    for ch in ti.static(range(C)):
                        piece[r, ch] = bridge_piece(a, sa, x[c, ch], piece[r, ch], S[ch])

    @ti.kernel
    def gather(src: nd(dtype=ti.i32, ndim=1), dst_start: nd(dtype=ti.i32, ndim=1), piece: nd(dtype=ti.f32, ndim=2),
               area: nd(dtype=ti.f32, ndim=1), v_out: nd(dtype=ti.f32, ndim=1), y: nd(dtype=ti.f32, ndim=2),
               seed: ti.u32, frame: ti.u32, C: ti.template()):
        """Each destination: its pieces summed in order, fresh noise for v_out, unit variance."""
        P = ti.static((C + 1) // 2)
        for p in range(y.shape[0]):
            acc = ti.Vector.zero(ti.f32, 2 * P)
            asum = 0.0
            for r in range(dst_start[p], dst_start[p + 1]):
                if src[r] >= 0:
                    asum += area[r]
                    for ch in ti.static(range(C)):
                        acc[ch] += piece[r, ch]
            vo = v_out[p]
            tot = asum + vo
            if vo > 0 or tot <= 0:
                key = key_of(seed, frame, ti.u32(rng.FRESH), ti.cast(p, ti.u32), ti.u32(0))
                sv = ti.sqrt(vo)
                for k in ti.static(range(P)):
                    f = gauss_at(key, ti.u32(k))
                    for e in ti.static(range(2)):
                        if tot > 0:
                            acc[2 * k + e] = (acc[2 * k + e] + sv * f[e]) / ti.sqrt(tot)
                        else:
                            acc[2 * k + e] = f[e]
            elif tot != 1.0:
                st = ti.sqrt(tot)
                for ch in ti.static(range(C)):
                    acc[ch] = acc[ch] / st
            for ch in ti.static(range(C)):
                y[p, ch] = acc[ch]

    _TS = (count, fill, split, gather)
    return _TS


_BUFFERS = {}


def scratch(name, shape, dtype):
    """A reusable scratch array (contents undefined): per-step allocations of tens of MB would
    otherwise cost page faults every frame. Not shared between threads."""
    shape = tuple(int(v) for v in shape)
    a = _BUFFERS.get(name)
    if a is None or a.shape[1:] != shape[1:] or a.dtype != np.dtype(dtype) or a.shape[0] < shape[0]:
        rows = shape[0] if a is None or a.shape[1:] != shape[1:] else max(shape[0], a.shape[0] * 5 // 4)
        a = _BUFFERS[name] = np.empty((rows,) + shape[1:], dtype)
    return a[:shape[0]]                         # leading rows of a C-contiguous array: contiguous


def split_taichi(x, src, w, dst, dst_start, v_out, seed, frame, floor, counts=None):
    """Taichi version of `split_requests` + `finish`, on materialised requests.

    src [R] int32 cell of each request (-1: an unused slot), w [R] float32, dst [R] int32 its
    destination; requests are grouped by destination: those of p are dst_start[p]:dst_start[p+1]
    in summation order. Requests are sorted by cell with a counting sort, then one thread per
    cell computes T_c, S_c and every piece of the cell (each normal is drawn once, no float
    atomics); a last pass sums each destination's pieces in order. Returns y [n_dst, C].
    `counts`: the number of requests of each cell, when the caller counted them already.
    """
    count, fill, split, gather = _split_kernels()
    n_cells, C = x.shape
    n = counts
    if n is None:
        n = scratch("split.n", (n_cells,), np.int32)
        n.fill(0)
        count(src, n)
    start = scratch("split.start", (n_cells + 1,), np.int32)
    start[0] = 0
    np.cumsum(n, out=start[1:])
    by_cell = scratch("split.by_cell", (max(int(start[-1]), 1),), np.int32)
    n.fill(0)                                   # reused as the per-cell cursor
    fill(src, start, n, by_cell)
    piece = scratch("split.piece", (src.shape[0], C), np.float32)
    area = scratch("split.area", (src.shape[0],), np.float32)
    split(x, w, dst, start, by_cell, piece, area, seed, frame, float(floor), C)
    y = np.empty((v_out.shape[0], C), np.float32)
    gather(src, dst_start, piece, area, v_out, y, seed, frame, C)
    return y
