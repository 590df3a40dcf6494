"""Taichi kernels of noise3d.flowmap.integrate_numpy (the same cells, owners and draws).

Each hexahedron requests the level-0 cells of its bounding box; the requests are listed cell by
cell (a dense table of each anchor's bounding box, as core2d's flow-map kernels); one thread per
cell gives each of its 8^depth sub-cells to the lowest-index requester that contains the
sub-cell's centre, computes the sub-cells' values top-down through the octree (registers, one
channel pair at a time) and adds them to the owner's request; each hexahedron then gathers its
requests in order. No float atomics: the bytes do not depend on the thread count.
"""
import numpy as np
import taichi as ti

from core2d import _taichi, rng
from core2d._flowmap_kernels import stored_lookup
from core2d.flowmap import plane_boxes, stored_table

_K = None


def _kernels():
    global _K
    if _K is not None:
        return _K
    _taichi.init()
    key_of, gauss_at = rng.taichi_keyed()
    nd = ti.types.ndarray

    @ti.func
    def bbox(P: ti.template(), d):
        lo = ti.Vector([P[d, 0, 0], P[d, 0, 1], P[d, 0, 2]], ti.f64)
        hi = lo
        for c in range(1, 8):
            for a in ti.static(range(3)):
                lo[a] = ti.min(lo[a], P[d, c, a])
                hi[a] = ti.max(hi[a], P[d, c, a])
        return lo, hi

    @ti.kernel
    def count(P: nd(dtype=ti.f64, ndim=3), n: nd(dtype=ti.i32, ndim=1)):
        for d in range(P.shape[0]):
            lo, hi = bbox(P, d)
            m = 1
            for a in ti.static(range(3)):
                i0 = ti.cast(ti.floor(lo[a]), ti.i32)
                i1 = ti.max(ti.cast(ti.ceil(hi[a]), ti.i32) - 1, i0)
                m *= i1 - i0 + 1
            n[d] = m

    @ti.kernel
    def fill(P: nd(dtype=ti.f64, ndim=3), start: nd(dtype=ti.i32, ndim=1), slot: nd(dtype=ti.i32, ndim=1),
             tb: nd(dtype=ti.i64, ndim=2), rdst: nd(dtype=ti.i32, ndim=1), rcell: nd(dtype=ti.i32, ndim=2),
             rtab: nd(dtype=ti.i64, ndim=1), ncell: nd(dtype=ti.i32, ndim=1)):
        """Every level-0 cell of each hexahedron's bounding box, counted into its plane's table
        (tb[slot] = base, origin x, y, z, sizes y, z)."""
        for d in range(P.shape[0]):
            lo, hi = bbox(P, d)
            i0 = ti.Vector([0, 0, 0])
            i1 = ti.Vector([0, 0, 0])
            for a in ti.static(range(3)):
                i0[a] = ti.cast(ti.floor(lo[a]), ti.i32)
                i1[a] = ti.max(ti.cast(ti.ceil(hi[a]), ti.i32) - 1, i0[a])
            r = start[d]
            s = slot[d]
            for x in range(i0[0], i1[0] + 1):
                for y in range(i0[1], i1[1] + 1):
                    for z in range(i0[2], i1[2] + 1):
                        rdst[r] = d
                        rcell[r, 0], rcell[r, 1], rcell[r, 2] = x, y, z
                        t = tb[s, 0] + ((ti.cast(x, ti.i64) - tb[s, 1]) * tb[s, 4] + (ti.cast(y, ti.i64) - tb[s, 2])) \
                            * tb[s, 5] + (ti.cast(z, ti.i64) - tb[s, 3])
                        rtab[r] = t
                        ti.atomic_add(ncell[t], 1)
                        r += 1

    @ti.kernel
    def by_cell(rtab: nd(dtype=ti.i64, ndim=1), start: nd(dtype=ti.i64, ndim=1), cursor: nd(dtype=ti.i32, ndim=1),
                rdst: nd(dtype=ti.i32, ndim=1), lst: nd(dtype=ti.i32, ndim=1), ldst: nd(dtype=ti.i32, ndim=1)):
        for r in range(rtab.shape[0]):
            c = rtab[r]
            t = start[c] + ti.atomic_add(cursor[c], 1)
            lst[t], ldst[t] = r, rdst[r]

    @ti.func
    def hadamard(m, q):
        """Entry (m, q) of the 8×8 Hadamard matrix (Sylvester order): the sign normal m of a
        cell's split gives child q."""
        b = m & q
        return 1.0 - 2.0 * ti.cast(((b >> 2) ^ (b >> 1) ^ b) & 1, ti.f32)

    @ti.func
    def det3(ax, ay, az, bx, by, bz, cx, cy, cz):
        return ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx)

    @ti.func
    def contains(P: ti.template(), tets: ti.template(), d, sgn, x):
        """noise3d.flowmap._contains: x in one of the six tetrahedra (float64, relative to corner 0;
        run-time loops keep the kernel small to compile)."""
        o = ti.Vector([P[d, 0, 0], P[d, 0, 1], P[d, 0, 2]], ti.f64)
        inside = False
        for t in range(6):
            if not inside:
                ok = True
                for r in range(4):
                    q = ti.Matrix.zero(ti.f64, 4, 3)
                    for v in range(4):
                        for a in ti.static(range(3)):
                            q[v, a] = P[d, tets[t, v], a] - o[a]
                            if v == r:
                                q[v, a] = x[a] - o[a]
                    dv = det3(q[1, 0] - q[0, 0], q[1, 1] - q[0, 1], q[1, 2] - q[0, 2],
                              q[2, 0] - q[0, 0], q[2, 1] - q[0, 1], q[2, 2] - q[0, 2],
                              q[3, 0] - q[0, 0], q[3, 1] - q[0, 1], q[3, 2] - q[0, 2])
                    if sgn * dv < 0:
                        ok = False
                inside = ok
        return inside

    @ti.func
    def draw(seed, plane, level, i, j, k, m, NP, pr):
        pair = (ti.cast(8 * k + m, ti.u32) * ti.cast(NP, ti.u32)) + ti.cast(pr, ti.u32)
        key = key_of(seed, ti.cast(plane, ti.u32), ti.u32(rng.VOLUME) + ti.cast(level, ti.u32), ti.cast(i, ti.u32),
                     ti.cast(j, ti.u32))
        return gauss_at(key, pair)

    @ti.kernel
    def cells(P: nd(dtype=ti.f64, ndim=3), sign: nd(dtype=ti.f64, ndim=1), tets: nd(dtype=ti.i32, ndim=2),
              dplane: nd(dtype=ti.i64, ndim=1),
              rcell: nd(dtype=ti.i32, ndim=2), start: nd(dtype=ti.i64, ndim=1), lst: nd(dtype=ti.i32, ndim=1),
              ldst: nd(dtype=ti.i32, ndim=1), pos: nd(dtype=ti.i32, ndim=1),
              st_ids: nd(dtype=ti.i64, ndim=1), st_off: nd(dtype=ti.i32, ndim=1), st_vox: nd(dtype=ti.i64, ndim=1),
              st_val: nd(dtype=ti.f32, ndim=3), acc: nd(dtype=ti.f32, ndim=2), cnt: nd(dtype=ti.i32, ndim=1),
              seed: ti.u32, depth: ti.i32, X: ti.i32, Y: ti.i32, Z: ti.i32):
        C = acc.shape[1]
        NP = (C + 1) // 2
        n_sub = 1 << (3 * depth)
        h = ti.pow(2.0, -ti.cast(depth, ti.f64))
        for c in range(start.shape[0] - 1):
            s0, s1 = ti.cast(start[c], ti.i32), ti.cast(start[c + 1], ti.i32)
            if s1 > s0:
                for t in range(s0 + 1, s1):                 # requests by hexahedron (insertion sort)
                    u = t
                    while u > s0 and ldst[u - 1] > ldst[u]:
                        lst[u - 1], lst[u] = lst[u], lst[u - 1]
                        ldst[u - 1], ldst[u] = ldst[u], ldst[u - 1]
                        u -= 1
                for t in range(s0, s1):
                    pos[lst[t]] = t
                r0 = lst[s0]
                ci, cj, ck = rcell[r0, 0], rcell[r0, 1], rcell[r0, 2]
                plane = dplane[ldst[s0]]
                row = -1                                    # stored (re-anchored) voxel: its row
                if ci >= 0 and ci < X and cj >= 0 and cj < Y and ck >= 0 and ck < Z:
                    row = stored_lookup(st_ids, st_off, st_vox, plane, (ti.cast(ci, ti.i64) * Y + cj) * Z + ck)
                owner = ti.Vector([-1] * 64, ti.i32)        # each sub-cell's owner (list position)
                for f in range(n_sub):
                    fi, fj, fk = 0, 0, 0
                    for l in range(depth):                  # sub-cell f: base-8 digits 4dx + 2dy + dz
                        dig = (f >> (3 * (depth - 1 - l))) & 7
                        fi, fj, fk = 2 * fi + (dig >> 2), 2 * fj + ((dig >> 1) & 1), 2 * fk + (dig & 1)
                    x = ti.Vector([(ti.cast(ci, ti.f64) + (ti.cast(fi, ti.f64) + 0.5) * h),
                                   (ti.cast(cj, ti.f64) + (ti.cast(fj, ti.f64) + 0.5) * h),
                                   (ti.cast(ck, ti.f64) + (ti.cast(fk, ti.f64) + 0.5) * h)], ti.f64)
                    for t in range(s0, s1):
                        if owner[f] < 0:
                            if contains(P, tets, ldst[t], sign[ldst[t]], x):
                                owner[f] = t
                for f in range(n_sub):
                    if owner[f] >= 0:
                        cnt[owner[f]] += 1
                for pr in range(NP):                        # the sub-cells' values, top-down
                    v1 = ti.Matrix.zero(ti.f32, 8, 2)
                    v2 = ti.Matrix.zero(ti.f32, 64, 2)
                    x0 = draw(seed, plane, 0, ci, cj, ck, 0, NP, pr)
                    for q in range(8):
                        for e in ti.static(range(2)):
                            v1[q, e] = x0[e] / 8
                    for m in range(1, 8):
                        nu = draw(seed, plane, 0, ci, cj, ck, m, NP, pr)
                        for q in range(8):
                            sg = hadamard(m, q)
                            for e in ti.static(range(2)):
                                v1[q, e] += sg * nu[e] / 8              # sqrt|cell| / 8, |cell| = 1
                    if row >= 0:
                        for q in range(8):
                            for e in ti.static(range(2)):
                                if 2 * pr + e < C:
                                    v1[q, e] = st_val[row, q, 2 * pr + e]
                    if depth == 2:
                        for p in range(8):
                            for q in range(8):
                                for e in ti.static(range(2)):
                                    v2[8 * p + q, e] = v1[p, e] / 8
                            pi, pj, pk = 2 * ci + (p >> 2), 2 * cj + ((p >> 1) & 1), 2 * ck + (p & 1)
                            for m in range(1, 8):
                                nu = draw(seed, plane, 1, pi, pj, pk, m, NP, pr)
                                for q in range(8):
                                    sg = hadamard(m, q)
                                    for e in ti.static(range(2)):
                                        v2[8 * p + q, e] += sg * nu[e] * ti.f32(2.0 ** -1.5 / 8)
                    for f in range(n_sub):
                        if owner[f] >= 0:
                            for e in ti.static(range(2)):
                                if 2 * pr + e < C:
                                    val = v1[f, e]
                                    if depth == 2:
                                        val = v2[f, e]
                                    acc[owner[f], 2 * pr + e] += val

    @ti.kernel
    def gather(rstart: nd(dtype=ti.i32, ndim=1), pos: nd(dtype=ti.i32, ndim=1), acc: nd(dtype=ti.f32, ndim=2),
               cnt: nd(dtype=ti.i32, ndim=1), key: nd(dtype=ti.i64, ndim=2), value: nd(dtype=ti.f32, ndim=2),
               count: nd(dtype=ti.i32, ndim=1), seed: ti.u32, frame: ti.u32, depth: ti.i32):
        C = acc.shape[1]
        for d in range(value.shape[0]):
            n = 0
            for r in range(rstart[d], rstart[d + 1]):
                n += cnt[pos[r]]
            count[d] = n
            if n > 0:
                inv = 1.0 / ti.sqrt(ti.cast(n, ti.f32) * ti.pow(ti.f32(8.0), -ti.cast(depth, ti.f32)))
                for ch in range(C):
                    v = ti.f32(0.0)
                    for r in range(rstart[d], rstart[d + 1]):
                        v += acc[pos[r], ch]
                    value[d, ch] = v * inv
            else:
                fkey = key_of(seed, frame, ti.u32(rng.FRESH), ti.cast(key[d, 0], ti.u32), ti.cast(key[d, 1], ti.u32))
                for pr in range((C + 1) // 2):
                    f = gauss_at(fkey, ti.cast(pr, ti.u32))
                    for e in ti.static(range(2)):
                        if 2 * pr + e < C:
                            value[d, 2 * pr + e] = f[e]

    _K = (count, fill, by_cell, cells, gather)
    return _K


TABLE_SLACK = 16


def integrate(F, hexes, sign, planes, keys, stored, shape, seed, frame, channels, depth):
    """noise3d.flowmap.integrate_numpy on the kernels (F: noise3d.flowmap, passed in: no import cycle)."""
    count, fill, by_cell, cells, gather = _kernels()
    n, C = len(hexes), channels
    value = np.zeros((n, C), np.float32)
    if n == 0:
        return value, np.zeros(0)
    P = np.ascontiguousarray(hexes, np.float64)
    nslots = np.empty(n, np.int32)
    count(P, nslots)
    rstart = np.zeros(n + 1, np.int32)
    np.cumsum(nslots, out=rstart[1:])
    R = int(rstart[-1])
    planes = np.asarray(planes, np.int64)
    lo = np.floor(P.min(1)).astype(np.int64)
    hi = np.maximum(np.ceil(P.max(1)).astype(np.int64) - 1, lo)
    _, slot, first, size = plane_boxes(lo, hi, planes)
    vol = size.prod(1)
    tb = np.concatenate([(np.cumsum(vol) - vol)[:, None], first, size[:, 1:]], 1).astype(np.int64)
    base = int(vol.sum())
    if base > max(TABLE_SLACK * R, 1 << 22):
        raise ValueError(f"the preimages of one anchor span {base} cells: too far apart for the volume flow map")
    ncell = np.zeros(base, np.int32)
    rdst, rcell, rtab = np.empty(R, np.int32), np.empty((R, 3), np.int32), np.empty(R, np.int64)
    fill(P, rstart, slot, tb, rdst, rcell, rtab, ncell)
    start = np.zeros(base + 1, np.int64)
    np.cumsum(ncell, out=start[1:])
    lst, ldst = np.empty(R, np.int32), np.empty(R, np.int32)
    by_cell(rtab, start, np.zeros(base, np.int32), rdst, lst, ldst)
    sids, st_off, st_vox, st_val = stored_table(stored, np.zeros((1, 8, C), np.float32), np.int64)
    acc, cnt, pos = np.zeros((R, C), np.float32), np.zeros(R, np.int32), np.zeros(R, np.int32)
    X, Y, Z = shape
    cells(P, np.ascontiguousarray(sign, np.float64), np.ascontiguousarray(F.TETS, np.int32), planes, rcell, start, lst, ldst, pos, sids, st_off, st_vox,
          st_val, acc, cnt, np.uint32(seed), int(depth), int(X), int(Y), int(Z))
    counts = np.empty(n, np.int32)
    gather(rstart, pos, acc, cnt, np.ascontiguousarray(keys, np.int64), value, counts, np.uint32(seed),
           np.uint32(frame), int(depth))
    return value, counts
