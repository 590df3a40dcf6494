"""Exact nearest-sample queries without SciPy: the k-d tree and the Euclidean distance
transform the mesh motion field used, so the Blender extension need not ship a 38 MB
library per Python version for two searches.

Both are exact: `SampleGrid.query` returns the true k nearest samples (ties broken by the
smaller sample index) and `capped_edt` the true Euclidean distance wherever it is at most
the cap. The search runs as a Taichi kernel over a grid of cubes; `nearest_numpy` is the
brute-force reference it is tested against (and the fallback without Taichi).
"""
import numpy as np

from core2d import _taichi

_MAX_SPAN = 128        # cubes along the samples' longest extent, at most
_CELL_FRACTION = 0.5   # cube side / median k-th neighbour distance of the probes
_BRUTE_ENTRIES = 1 << 20  # query × sample pairs per block of the brute-force reference
_KERNEL = None


class SampleGrid:
    """Samples binned in a uniform grid of cubes; `query` has cKDTree.query's signature.

    Each query visits the cubes around its own in shells of growing Chebyshev radius,
    keeping its k nearest so far, and stops once the k-th is closer than the nearest face
    of the block searched (nothing outside can be nearer). The cube side is half the
    median k-th neighbour distance of a few queries, measured by brute force.
    """

    def __init__(self, samples):
        self.S = np.ascontiguousarray(samples, np.float64)
        if self.S.ndim != 2 or self.S.shape[1] != 3 or len(self.S) == 0:
            raise ValueError(f"samples must be a non-empty [n, 3] array; got shape {self.S.shape}")
        self.n = len(self.S)

    def query(self, x, k=1, backend="auto", **_):
        """(distances [q, k], indices [q, k]) of the k nearest samples, nearest first (1-D
        arrays for k=1, like cKDTree). backend: 'taichi', 'numpy' (brute force) or 'auto'."""
        x = np.ascontiguousarray(x, np.float64).reshape(-1, 3)
        k = int(k)
        if not 1 <= k <= self.n:
            raise ValueError(f"k must be between 1 and the number of samples ({self.n}); got {k}")
        if backend == "auto":
            backend = "taichi" if _taichi.available() else "numpy"
        if backend not in ("taichi", "numpy"):
            raise ValueError(f"backend must be 'taichi', 'numpy' or 'auto'; got {backend!r}")
        if backend == "numpy" or len(x) == 0:
            d, idx = nearest_numpy(self.S, x, k)
        else:
            idx = self._search_taichi(x, k)
            # distances recomputed here, as the reference computes them, and rows put in
            # (distance, index) order: the kernel's float arithmetic may differ in the last bit
            d = np.sqrt(((self.S[idx] - x[:, None, :]) ** 2).sum(2))
            o = np.lexsort((idx, d), axis=1)
            d, idx = np.take_along_axis(d, o, 1), np.take_along_axis(idx, o, 1)
        if k == 1:
            return d[:, 0], idx[:, 0]
        return d, idx

    def _search_taichi(self, x, k):
        probe = x[np.linspace(0, len(x) - 1, min(32, len(x))).astype(np.int64)]
        cell = _CELL_FRACTION * float(np.median(nearest_numpy(self.S, probe, k)[0][:, -1]))
        extent = float((self.S.max(0) - self.S.min(0)).max())
        cell = max(cell, extent / _MAX_SPAN, 1e-9 * max(extent, 1.0), 1e-300)
        key = np.floor(self.S / cell).astype(np.int64)
        lo = key.min(0)
        span = key.max(0) - lo + 1
        lin = ((key[:, 0] - lo[0]) * span[1] + key[:, 1] - lo[1]) * span[2] + key[:, 2] - lo[2]
        order = np.argsort(lin, kind="stable").astype(np.int32)
        start = np.concatenate([[0], np.cumsum(np.bincount(lin, minlength=int(np.prod(span))))])
        # home cube of each query, relative to the table (may lie outside it)
        home = np.clip(np.floor(x / cell) - lo, -(1 << 30), 1 << 30).astype(np.int32)
        out_d = np.empty((len(x), k), np.float64)
        out_i = np.empty((len(x), k), np.int32)
        with _taichi.LOCK:            # one Taichi launch at a time, with the warpers'
            kernel = _taichi_kernel()
            kernel(self.S, order, start.astype(np.int32), x, home, span.astype(np.int32),
                   lo.astype(np.float64) * cell, cell, k, out_d, out_i)
        return out_i.astype(np.int64)


def nearest_numpy(S, x, k):
    """Brute-force reference: (distances [q, k], indices [q, k]) of the k nearest rows of S,
    ordered by (distance, index)."""
    S = np.asarray(S, np.float64)
    x = np.asarray(x, np.float64).reshape(-1, 3)
    d = np.empty((len(x), k))
    idx = np.empty((len(x), k), np.int64)
    rows = max(1, _BRUTE_ENTRIES // len(S))
    for s in range(0, len(x), rows):
        d2 = ((S[None, :, :] - x[s:s + rows, None, :]) ** 2).sum(2)
        j = np.broadcast_to(np.arange(len(S)), d2.shape)
        if len(S) > k:
            part = np.argpartition(d2, k - 1, axis=1)
            kth = np.take_along_axis(d2, part[:, k - 1:k], 1)
            part = part[:, :k]
            # where the k-th distance ties with a sample left out, the smaller index wins
            tied = np.flatnonzero(np.sum(d2 <= kth, 1) > k)
            part[tied] = np.lexsort((j[tied], d2[tied]), axis=1)[:, :k]
            d2, j = np.take_along_axis(d2, part, 1), np.take_along_axis(j, part, 1)
        o = np.lexsort((j, d2), axis=1)
        d[s:s + rows] = np.sqrt(np.take_along_axis(d2, o, 1))
        idx[s:s + rows] = np.take_along_axis(j, o, 1)
    return d, idx


def _taichi_kernel():
    """Build the search kernel once (after core2d._taichi.init())."""
    global _KERNEL
    if _KERNEL is None:
        _taichi.init()
        _KERNEL = _build_kernel()
    return _KERNEL


def _build_kernel():
    import taichi as ti

    @ti.func
    def before(d2, j, d2_ref, j_ref):
        return d2 < d2_ref or (d2 == d2_ref and j < j_ref)

    @ti.kernel
    def search(S: ti.types.ndarray(), order: ti.types.ndarray(), start: ti.types.ndarray(),
               x: ti.types.ndarray(), home: ti.types.ndarray(), span: ti.types.ndarray(),
               origin: ti.types.ndarray(), cell: ti.f64, k: ti.i32,
               out_d: ti.types.ndarray(), out_i: ti.types.ndarray()):
        for q in range(x.shape[0]):
            h0, h1, h2 = home[q, 0], home[q, 1], home[q, 2]
            found = 0
            r = 0
            while True:
                for a in range(ti.max(h0 - r, 0), ti.min(h0 + r, span[0] - 1) + 1):
                    for b in range(ti.max(h1 - r, 0), ti.min(h1 + r, span[1] - 1) + 1):
                        # cubes on the shell at Chebyshev distance r: a whole row along the
                        # third axis when a or b is on it, else the row's two end cubes
                        row = ti.abs(a - h0) == r or ti.abs(b - h1) == r
                        n_c = 2 * r + 1 if row else 2
                        for t in range(n_c):
                            c = h2 - r + t if row else (h2 - r if t == 0 else h2 + r)
                            if 0 <= c < span[2]:
                                cube = (a * span[1] + b) * span[2] + c
                                for p in range(start[cube], start[cube + 1]):
                                    j = order[p]
                                    e0 = S[j, 0] - x[q, 0]
                                    e1 = S[j, 1] - x[q, 1]
                                    e2 = S[j, 2] - x[q, 2]
                                    d2 = e0 * e0 + e1 * e1 + e2 * e2
                                    if found < k or before(d2, j, out_d[q, k - 1], out_i[q, k - 1]):
                                        pos = ti.min(found, k - 1)
                                        while pos > 0 and before(d2, j, out_d[q, pos - 1],
                                                                 out_i[q, pos - 1]):
                                            out_d[q, pos] = out_d[q, pos - 1]
                                            out_i[q, pos] = out_i[q, pos - 1]
                                            pos -= 1
                                        out_d[q, pos] = d2
                                        out_i[q, pos] = j
                                        found = ti.min(found + 1, k)
                # nearest face of the block searched; the whole table covered ends it too
                reach = ti.min(x[q, 0] - (origin[0] + (h0 - r) * cell),
                               origin[0] + (h0 + r + 1) * cell - x[q, 0])
                covered = h0 - r <= 0 and h0 + r >= span[0] - 1
                for ax in ti.static(range(1, 3)):
                    hh = home[q, ax]
                    reach = ti.min(reach, ti.min(x[q, ax] - (origin[ax] + (hh - r) * cell),
                                                 origin[ax] + (hh + r + 1) * cell - x[q, ax]))
                    covered = covered and hh - r <= 0 and hh + r >= span[ax] - 1
                if covered or (found == k and ti.sqrt(out_d[q, k - 1]) < reach - 1e-9 * cell):
                    break
                r += 1

    return search


def capped_edt(occupied, cap):
    """Euclidean distance (in cells) from every cell to the nearest occupied one, exact where
    it is at most `cap`; larger distances come back as inf.

    The separable squared-distance transform (one axis at a time, each a min over shifts),
    with the shifts limited to ±cap: a nearest cell within `cap` is within `cap` along
    every axis, so nothing it needs is cut off.
    """
    occ = np.asarray(occupied, bool)
    c = int(np.floor(cap))
    f = np.where(occ, 0.0, np.inf)
    for axis in range(occ.ndim):
        g = f.copy()
        n = occ.shape[axis]
        for s in range(1, min(c, n - 1) + 1):
            lo = [slice(None)] * occ.ndim
            hi = [slice(None)] * occ.ndim
            lo[axis], hi[axis] = slice(0, n - s), slice(s, n)
            lo, hi = tuple(lo), tuple(hi)
            np.minimum(g[lo], f[hi] + s * s, out=g[lo])
            np.minimum(g[hi], f[lo] + s * s, out=g[hi])
        f = g
    d = np.sqrt(f)
    d[d > cap] = np.inf
    return d
