"""Partition building and the Brownian-bridge split: the math every ∫-noise warper shares.

A warp is a list of *requests* (source cell c, destination p, weight w): destination p wants
the part of cell c's white-noise integral of size w. A cell is split among its requesters
in proportion to their weights, `a = w / max(T_c, floor)` with `T_c = Σ w` over the cell's
requests; `floor = 0` divides the whole cell among requesters (particle variant, nearest),
`floor = 1` keeps exact areas and leaves an unrequested leftover `1 - T_c` (grid variant).

Two forms of the bridge (ALGORITHMS.md §2), two RNG streams, each with its NumPy reference:
- sequential (`split_requests`, Taichi `split_gather`, the 2D warpers): each cell walks its
  requests in list order (sorted by destination: a property of the data, not of the threads)
  and draws piece j given the pieces before it, so a cell of k requests costs k - 1 normals
  (k with a leftover), keyed by (cell, rank). One thread per cell; the cell-major kernel
  materialises the requests in slots, listed per cell (fixed slots, or a counting sort when a
  cell has more requests than slots), at the cost of R·C floats of scratch for R requests.
- order-free zero-sum (`split_requests_zero_sum`, Taichi `taichi_funcs`, the 3D warper):
  `piece = a x + z - a S`, `z = sqrt(a) n`, `S = Σ z` over all the cell's pieces and its
  leftover, one normal per piece keyed by (cell, destination). `T_c` and `Σ sqrt(w) n` are
  accumulated with integer atomics in a first pass over destinations, the pieces taken in a
  second: nothing materialised (8 requests per voxel would make the cell-major scratch several
  GB at 256³), each normal drawn twice.
Remaining areas and `T_c` are exact 2**32 fixed-point integer sums, so neither result depends
on the thread count. Both loop over channels at run time, so one compiled kernel serves every
channel count.
Scratch arrays belong to a `Workspace`, which the warper owns.
"""
import sys

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

    The sequential bridge (ALGORITHMS.md §2): each cell walks its requests in list order and
    draws piece j given the pieces before it, so a cell of k requests costs k - 1 normals (the
    last piece is what is left), k when an unrequested leftover remains. The order is a property
    of the data (the request list is sorted by destination), so the result does not depend on
    who computes it. Remaining areas are exact 2**32 fixed-point integers (`quantize`): before
    piece j the cell has R_j of R_0 left, piece j takes q_j, and given the sum s of the pieces
    before it, piece j = f (x - s) + sqrt(f R_{j+1} / R_0) n_j with f = q_j / R_j
    (n_j ~ N(0, 1) keyed by (cell, j)); R_0 = max(T_c, floor) with T_c = Σ q.

    x: [N_cells, C] float32 noise. src, dst: int arrays of request cells / destinations,
    sorted by destination (the summation order the Taichi kernels use). w: float32 weights > 0.
    """
    x = np.asarray(x, np.float32)
    n_cells, channels = x.shape
    w = np.asarray(w, np.float32)
    src = np.asarray(src, np.int64)
    qw = quantize(w)
    T = np.zeros(n_cells, np.int64)
    np.add.at(T, src, qw)
    R0 = np.maximum(T, quantize(floor))             # the cell's whole, in fixed point
    den = np.maximum(T.astype(np.float32) * INV_SCALE, np.float32(floor))
    a = w / den[src]                                # area fraction of each piece

    order = np.argsort(src, kind="stable")          # cell by cell, each cell's requests in list order
    s, qs = src[order], qw[order]
    first = np.searchsorted(s, s)                   # where each request's cell starts
    rank = np.arange(s.size) - first
    taken = np.cumsum(qs)
    before = R0[s] - (taken - qs - (taken[first] - qs[first]))   # R_j
    after = before - qs                                          # R_{j+1}
    draw = after > 0                                # the last piece of a cell without leftover: no draw
    f = np.where(before > 0, qs.astype(np.float32) / np.maximum(before, 1).astype(np.float32), np.float32(0))
    inv0 = np.float32(1) / np.maximum(R0, 1).astype(np.float32)
    sd = np.sqrt(f * (after.astype(np.float32) * inv0[s]))
    n = np.zeros((s.size, channels), np.float32)
    n[draw] = rng.gauss(seed, frame, rng.PIECE, s[draw], rank[draw], channels)

    piece_s = np.empty((s.size, channels), np.float32)
    sums = np.zeros((n_cells, channels), np.float32)   # the pieces taken so far, per cell
    by_rank = np.argsort(rank, kind="stable")
    pos = 0
    for k in np.bincount(rank) if s.size else []:    # piece j of every cell at once
        rows = by_rank[pos:pos + k]
        pos += k
        c = s[rows]
        rest = x[c] - sums[c]
        v = np.where(draw[rows, None], f[rows, None] * rest + sd[rows, None] * n[rows], rest)
        v[before[rows] <= 0] = 0                     # nothing left (weights below 2**-32)
        piece_s[rows] = v
        sums[c] += v

    piece = np.empty_like(piece_s)
    piece[order] = piece_s
    y = np.zeros((n_dst, channels), np.float32)
    np.add.at(y, dst, piece)
    asum = np.zeros(n_dst, np.float32)
    np.add.at(asum, dst, a)
    return y, asum


def split_requests_zero_sum(x, src, dst, w, n_dst, seed, frame, floor):
    """The same law in the order-free zero-sum form: piece = a x + z - a S, z = sqrt(a) n over
    every piece and the leftover, S = Σ z. One normal per piece (keyed by (cell, destination))
    and none depends on another, so a kernel can take each piece on its own in a second pass
    over destinations (the 3D warper: nothing materialised per request). Returns as
    `split_requests`."""
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


# ----------------------------------------------------------------------------- scratch memory
class Workspace:
    """Scratch arrays of the Taichi path, owned by one warper and released with it.

    Arrays are reused between steps (a fresh full-frame array costs its page faults every
    frame) and grow by 5/4 when a step needs more. `trim(rows)` drops any array longer than
    `rows`: the steps call it so that one hostile frame (millions of requests) does not leave
    its scratch behind for the rest of the warper's life. Not shared between threads.
    """

    def __init__(self):
        self._arrays = {}
        self._states = []
        self._outputs = []
        self._free = None

    def get(self, name, shape, dtype):
        """An array of this shape (contents undefined), reused when one is big enough."""
        shape = tuple(int(v) for v in shape)
        a = self._arrays.get(name)
        if a is None or a.shape[1:] != shape[1:] or a.dtype != np.dtype(dtype) or a.shape[0] < shape[0]:
            grow = a is not None and a.shape[1:] == shape[1:] and a.dtype == np.dtype(dtype)
            rows = max(shape[0], a.shape[0] * 5 // 4) if grow else shape[0]
            self._arrays[name] = a = None                # let the old one go before allocating
            a = self._arrays[name] = np.empty((rows,) + shape[1:], dtype)
        return a[:shape[0]]                          # leading rows of a C-contiguous array: contiguous

    def zeros(self, name, shape, dtype):
        a = self.get(name, shape, dtype)
        a.fill(0)
        return a

    def other(self, x, shape, dtype=np.float32):
        """An output array of this shape that does not share memory with x: two buffers used in
        turn, so a step writes the new state beside the old one without allocating."""
        shape = tuple(int(v) for v in shape)
        for a in self._states:
            if a.shape == shape and a.dtype == np.dtype(dtype) and not np.may_share_memory(a, x):
                return a
        self._states = [a for a in self._states if a.shape == shape and a.dtype == np.dtype(dtype)][:1]
        a = np.empty(shape, dtype)
        self._states.append(a)
        return a

    def output(self, y, dtype):
        """A copy of y, of dtype, for the caller to keep: written into the memory of an earlier
        output when nobody holds that one any more (a fresh 130 MB array costs ~0.1 s of page
        faults a frame here), else into a new array. An array a caller still references (itself,
        a view of it, a memoryview) is never written again; two outputs are recycled at most."""
        dtype = np.dtype(dtype)
        for a in self._outputs:                      # references now: the list, `a`, getrefcount's
            if a.shape == y.shape and a.dtype == dtype and sys.getrefcount(a) == self._free:
                np.copyto(a, y, casting="unsafe")
                return a
        a = y.astype(dtype)
        self._outputs = [b for b in self._outputs if b.shape == y.shape and b.dtype == dtype][-1:] + [a]
        self._free = sys.getrefcount(a)              # the same three references, counted the same way
        return a

    def trim(self, rows):
        for name, a in list(self._arrays.items()):
            if a.shape[0] > rows:
                del self._arrays[name]

    @property
    def nbytes(self):
        return sum(a.nbytes for a in [*self._arrays.values(), *self._states, *self._outputs])


# ----------------------------------------------------------------------------- Taichi side
_TI = None
_TI_PIECE = []  # (bridge_piece, q): shared by both strategies


def taichi_funcs():
    """Taichi versions of the two passes: `request` (pass 1, atomics) and `take` / `finish` (pass 2).

    Draw sites are keyed from `rng.site_base(seed, frame, stream)` passed by the caller (one
    base per stream: PIECE, LEFTOVER, FRESH); channels are a run-time loop over pairs.
    """
    global _TI
    if _TI is not None:
        return _TI
    import taichi as ti

    site_key, gauss_at = rng.taichi_sites()

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
    def request(T: ti.template(), U: ti.template(), c, p, w, piece_base, channels):
        """Pass 1: add request (c -> p, weight w) to T_c and U_c = Σ sqrt(w) n."""
        ti.atomic_add(T[c], q(w))
        sw = ti.sqrt(w)
        key = site_key(piece_base, c, p)
        for k in range((channels + 1) // 2):
            g = gauss_at(key, ti.cast(k, ti.u32))
            ti.atomic_add(U[c, 2 * k], q(sw * g[0]))
            if 2 * k + 1 < channels:
                ti.atomic_add(U[c, 2 * k + 1], q(sw * g[1]))

    @ti.func
    def take(x: ti.template(), T: ti.template(), U: ti.template(), y: ti.template(), c, p, w, floor,
             piece_base, left_base, channels):
        """Pass 2: add the piece of cell c for destination p to y[p]; return its area fraction a."""
        Tc = ti.cast(T[c], ti.f32) * (1.0 / SCALE)
        den = ti.max(Tc, floor)
        a = w / den
        a0 = ti.max(1.0 - Tc / den, 0.0)
        rs = 1.0 / ti.sqrt(den)
        sa = ti.sqrt(a)
        sa0 = ti.sqrt(a0)
        key = site_key(piece_base, c, p)
        lkey = site_key(left_base, c, 0)
        for k in range((channels + 1) // 2):
            g = gauss_at(key, ti.cast(k, ti.u32))
            g0 = ti.Vector([0.0, 0.0], ti.f32)
            if a0 > 0:
                g0 = gauss_at(lkey, ti.cast(k, ti.u32))
            for e in ti.static(range(2)):            # the two channels of a pair, not all channels
                ch = 2 * k + e
                if ch < channels:
                    S = ti.cast(U[c, ch], ti.f32) * (1.0 / SCALE) * rs
                    if a0 > 0:
                        S = S + sa0 * g0[e]
                    y[p, ch] = y[p, ch] + bridge_piece(a, sa, x[c, ch], g[e], S)  # p is this thread's
        return a

    @ti.func
    def finish_one(y: ti.template(), p, asum, v_out, fresh_base, channels):
        """Fresh noise for the area v_out outside the frame, then unit variance (fresh N(0,1) if
        nothing was received). Same operations as `finish`."""
        tot = asum + v_out
        if v_out > 0 or tot <= 0:
            sv = ti.sqrt(v_out)
            st = ti.sqrt(tot)
            key = site_key(fresh_base, p, 0)
            for k in range((channels + 1) // 2):
                f = gauss_at(key, ti.cast(k, ti.u32))
                for e in ti.static(range(2)):
                    ch = 2 * k + e
                    if ch < channels:
                        if tot > 0:
                            y[p, ch] = (y[p, ch] + sv * f[e]) / st
                        else:
                            y[p, ch] = f[e]
        elif tot != 1.0:
            st = ti.sqrt(tot)
            for ch in range(channels):
                y[p, ch] = y[p, ch] / st

    _TI = (request, take, finish_one)
    _TI_PIECE[:] = [bridge_piece, q]
    return _TI


def bases(seed, frame):
    """(PIECE, LEFTOVER, FRESH) site bases of one step, as the kernels take them."""
    return tuple(np.uint32(rng.site_base(seed, frame, s)) for s in (rng.PIECE, rng.LEFTOVER, rng.FRESH))


# ------------------------------------------------------------------ Taichi: cell-major split
PARTICLE, GENERAL = 0, 1   # request slots: 4 per destination (r = 4p + corner), or grouped by dst_start
G = 4                      # channels per group: the kernels loop over groups at run time
K_SLOTS = 9                # requests listed per cell in fixed slots (3×3: magnification up to 1.5×);
                           # a frame with a fuller cell (a zoom in, a fold) is counting-sorted instead
_TS = None


def _split_kernels():
    """Kernels of the cell-major split. Channels are a run-time loop over groups of G channels: one
    compiled kernel serves every channel count (unrolled, 16 channels took minutes to compile)."""
    global _TS
    if _TS is not None:
        return _TS
    import taichi as ti

    taichi_funcs()
    q = _TI_PIECE[1]
    site_key, gauss_at = rng.taichi_sites()
    gauss4_at = rng.taichi_groups()[1]
    mix = rng._build().mix
    nd = ti.types.ndarray
    vec = ti.types.vector(G, ti.f32)

    @ti.kernel
    def fill(cell: nd(dtype=ti.i32, ndim=1), w: nd(dtype=ti.f32, ndim=1), start: nd(dtype=ti.i32, ndim=1),
             cursor: nd(dtype=ti.i32, ndim=1), by_cell: nd(dtype=ti.i32, ndim=1), W: ti.i32, mode: ti.template()):
        """Counting sort of the requests by cell: cell[r], or for PARTICLE the cell of corner r % 4
        from the pixel's corner-(0, 0) cell cell[r // 4] in a frame W cells wide. Serial, so each
        cell's list is in request order (the bridge's order); used only when a cell has more
        requests than the fixed slots."""
        ti.loop_config(serialize=True)
        for r in range(w.shape[0]):
            if w[r] > 0:
                c = 0
                if ti.static(mode == PARTICLE):
                    k = r & 3
                    c = cell[r >> 2] + (k >> 1) * W + (k & 1)
                else:
                    c = cell[r]
                by_cell[start[c] + cursor[c]] = r
                cursor[c] += 1

    @ti.kernel
    def split(x: nd(dtype=ti.f32, ndim=2), w: nd(dtype=ti.f32, ndim=1), piece: nd(dtype=vec, ndim=1),
              n: nd(dtype=ti.i32, ndim=1), start: nd(dtype=ti.i32, ndim=1), by_cell: nd(dtype=ti.i32, ndim=1),
              K: ti.i32, piece_base: ti.u32, floor: ti.f32, floor_q: ti.i64):
        """One thread per cell: its requests in order (fixed slots are filled in any order, so
        they are sorted first), T_c (exact fixed point), then the sequential bridge of
        `split_requests`, channels in groups of G: piece j = f (x - s) + sqrt(f R_{j+1} / R_0) n_j,
        the last piece the rest. w[r] becomes the area fraction a = w / max(T_c, floor). The
        cell's requests are by_cell[c K : c K + n[c]] (fixed slots) or by_cell[start[c] :
        start[c + 1]] (K = 0). piece[r ng + gi]: request r's channel group gi (scratch)."""
        C = x.shape[1]
        ng = (C + G - 1) // G
        for c in range(x.shape[0]):
            base, cnt = c * K, 0
            if K > 0:
                cnt = n[c]
                for i in range(1, cnt):              # insertion sort of the (<= K) slots
                    v = by_cell[base + i]
                    k = i
                    while k > 0:
                        u = by_cell[base + k - 1]
                        if u <= v:
                            break
                        by_cell[base + k] = u
                        k -= 1
                    by_cell[base + k] = v
            else:
                base = start[c]
                cnt = start[c + 1] - base
            if cnt > 0:
                T = ti.i64(0)
                for i in range(base, base + cnt):
                    T += q(w[by_cell[i]])
                R0 = ti.max(T, floor_q)
                den = ti.max(ti.cast(T, ti.f32) * (1.0 / SCALE), floor)
                inv0 = 1.0 / ti.cast(ti.max(R0, 1), ti.f32)
                kc = mix(piece_base ^ ti.cast(c, ti.u32))   # site_key(piece_base, c, i) = mix(kc ^ i)
                for gi in range(ng):                 # groups of G channels: a run-time loop
                    g0 = gi * G
                    xc = ti.Vector.zero(ti.f32, G)
                    for e in ti.static(range(G)):
                        xc[e] = x[c, ti.min(g0 + e, C - 1)]
                    s = ti.Vector.zero(ti.f32, G)    # the pieces taken so far
                    Rb = R0
                    for i in range(cnt):
                        r = by_cell[base + i]
                        wr = w[r]
                        qr = q(wr)
                        Ra = Rb - qr
                        v = xc - s                   # the last piece: the rest
                        if Rb <= 0:                  # nothing left (weights below 2**-32)
                            v = ti.Vector.zero(ti.f32, G)
                        elif Ra > 0:
                            f = ti.cast(qr, ti.f32) / ti.cast(Rb, ti.f32)
                            sd = ti.sqrt(f * (ti.cast(Ra, ti.f32) * inv0))
                            v = f * v + sd * gauss4_at(mix(kc ^ ti.cast(i, ti.u32)), gi)
                        s += v
                        piece[r * ng + gi] = v
                        if gi == ng - 1:
                            w[r] = wr / den
                        Rb = Ra

    @ti.kernel
    def gather(piece: nd(dtype=vec, ndim=1), a: nd(dtype=ti.f32, ndim=1), v_out: nd(dtype=ti.f32, ndim=1),
               y: nd(dtype=ti.f32, ndim=2), dst_start: nd(dtype=ti.i32, ndim=1), fresh_base: ti.u32,
               mode: ti.template()):
        """Each destination: its pieces summed in request order (a request with a <= 0 is an
        empty slot), then fresh noise for the area outside the frame and unit variance (`finish`)."""
        C = y.shape[1]
        for p in range(y.shape[0]):
            r0, r1 = 4 * p, 4 * p + 4
            if ti.static(mode == GENERAL):
                r0, r1 = dst_start[p], dst_start[p + 1]
            asum, tot, st = 0.0, 0.0, 0.0
            ng = (C + G - 1) // G
            for gi in range(ng):                     # groups of G channels: a run-time loop
                g0 = gi * G
                acc = ti.Vector.zero(ti.f32, G)
                for r in range(r0, r1):
                    ar = a[r]
                    if ar > 0:
                        if gi == 0:
                            asum += ar
                        acc += piece[r * ng + gi]
                if gi == 0:
                    tot = asum + v_out[p]
                    st = ti.sqrt(tot)
                vo = v_out[p]
                if vo > 0 or tot <= 0:                # fresh noise for v_out (or all of it)
                    sv = ti.sqrt(vo)
                    fkey = site_key(fresh_base, p, 0)
                    for h in range(G // 2):
                        f = gauss_at(fkey, ti.cast(gi * (G // 2) + h, ti.u32))
                        for e in ti.static(range(2)):
                            if tot > 0:
                                acc[2 * h + e] = (acc[2 * h + e] + sv * f[e]) / st
                            else:
                                acc[2 * h + e] = f[e]
                elif tot != 1.0:
                    acc = acc / st
                for e in ti.static(range(G)):
                    if g0 + e < C:
                        y[p, g0 + e] = acc[e]

    _TS = (fill, split, gather)
    return _TS


_NONE = {}


def _none(dtype):
    """A one-element placeholder for kernel arguments a mode does not use."""
    if dtype not in _NONE:
        _NONE[dtype] = np.zeros(1, dtype)
    return _NONE[dtype]


def split_gather(x, w, v_out, seed, frame, floor, work, out, n, overflow, cell, mode, W=0, dst_start=None):
    """Cell-major split then per-destination gather (the Taichi form of `split_requests` + `finish`).

    x [n_cells, C]; w [R] float32 request weights (0 or less: an empty slot), overwritten by the
    area fractions; v_out [n_dst]. Slots: mode PARTICLE, 4 per destination (r = 4p + corner);
    GENERAL, destination p's are dst_start[p]:dst_start[p+1] in summation order. The caller has listed each cell's requests in fixed slots `work['split.list']`
    [n_cells·K_SLOTS] with n [n_cells] requests per cell; overflow: a cell had more, so they are
    counting-sorted instead, using `cell` (GENERAL: cell[r]; PARTICLE: each pixel's corner-(0, 0)
    cell in a frame W wide).
    Writes y [n_dst, C] into `out` and returns it.
    """
    fill, split, gather = _split_kernels()
    n_cells, C = x.shape
    R = w.shape[0]
    i32 = np.int32
    K, start, by_cell = K_SLOTS, _none(i32), work.get("split.list", (n_cells * K_SLOTS,), i32)
    if overflow:
        K = 0
        start = work.get("split.start", (n_cells + 1,), i32)
        start[0] = 0
        np.cumsum(n, out=start[1:])
        by_cell = work.get("split.sorted", (max(int(start[-1]), 1),), i32)
        fill(cell, w, start, work.zeros("split.cursor", (n_cells,), i32), by_cell, W, mode)
    piece = work.get("split.pieces", (R, -(-C // G) * G), np.float32)   # channels padded to groups
    piece = piece.reshape(-1, G)                     # a view: row r ng + gi is request r's group gi
    pb, lb, fb = bases(seed, frame)
    split(x, w, piece, n, start, by_cell, K, pb, float(floor), int(quantize(floor)))
    gather(piece, w, v_out, out, _none(i32) if dst_start is None else dst_start, fb, mode)
    return out
