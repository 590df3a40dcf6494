"""Taichi kernels of core2d.flowmap: the same steps as its NumPy reference, on the same RNG stream.

- `compose`: one thread per pixel computes its four new corners exactly like flowmap.compose
  (padded flow, links, vertex groups, source patch, tangent extrapolation), in float64.
- `count` / `fill`: each destination quad's level-0 requests (exact overlaps), counted into a
  dense table of the cells of each anchor plane's bounding box.
- `cells`: one thread per cell, its requests sorted by destination; it decides everything about
  the cell from all of them at once (fold, stored values, quadtree refinement by a stackless
  depth-first walk, Hadamard terms, bridges) and writes each request's sum of pieces and claimed
  area. Requests belong to one cell, so nothing is shared between threads and no float atomics
  are used: the bytes do not depend on the thread count.
- `gather`: each destination sums its requests in order.
Channels are looped at run time (one compile for any channel count).
"""
import taichi as ti

from . import grid, rng


@ti.func
def stored_lookup(st_ids: ti.template(), st_off: ti.template(), st_keys: ti.template(), plane, key):
    """Row of `key` among the stored (re-anchored) sub-cells of `plane`, or -1: the rows of plane
    st_ids[a] are st_off[a]..st_off[a+1], sorted by key (binary search). Shared by the 2D and 3D
    flow-map kernels."""
    row = -1
    for a in range(st_ids.shape[0]):
        if st_ids[a] == plane:
            lo, hi = st_off[a], st_off[a + 1]
            while lo < hi:
                mid = (lo + hi) // 2
                if st_keys[mid] < key:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < st_off[a + 1] and st_keys[lo] == key:
                row = lo
    return row


def build(F):
    """The kernels, with the thresholds and levels of core2d.flowmap F (passed in: no import cycle)."""
    key_of, gauss_at = rng.taichi_keyed()
    edge_integral, = grid.taichi_funcs()
    nd = ti.types.ndarray
    H0, H1, H2 = ([int(v) for v in F.HADAMARD[k]] for k in range(3))

    # ------------------------------------------------------------------ composed map
    @ti.func
    def corner_at(corners: ti.template(), qi, qj, k):
        return ti.Vector([corners[qi, qj, k, 0], corners[qi, qj, k, 1]], ti.f64)

    @ti.kernel
    def compose(Fp: nd(dtype=ti.f64, ndim=3), Qi: nd(dtype=ti.i64, ndim=2), Qj: nd(dtype=ti.i64, ndim=2),
                lh: nd(dtype=ti.i32, ndim=2), lv: nd(dtype=ti.i32, ndim=2), anchor: nd(dtype=ti.i64, ndim=2),
                Pl: nd(dtype=ti.i64, ndim=2), prev: nd(dtype=ti.f32, ndim=3), new: nd(dtype=ti.i32, ndim=2),
                corners: nd(dtype=ti.f64, ndim=4), jac: nd(dtype=ti.f64, ndim=4), out: nd(dtype=ti.f64, ndim=4),
                jac_out: nd(dtype=ti.f64, ndim=4)):
        """flowmap.compose after flowmap.groundwork (padded coordinates: pixel (i, j) at (i+1, j+1))."""
        H, W = anchor.shape[0], anchor.shape[1]
        for i, j in ti.ndrange(H, W):
            dk = ti.Matrix.zero(ti.f64, 4, 2)      # each corner's displacement, for the Jacobian
            for k in range(4):                   # this pixel's corner k: its vertex and its place there
                vi, vj, me = i, j, 2
                if k == 1:
                    vi, vj, me = i, j + 1, 3
                elif k == 2:
                    vi, vj, me = i + 1, j + 1, 0
                elif k == 3:
                    vi, vj, me = i + 1, j, 1
                if new[i, j] != 0:
                    out[i, j, k, 0] = ti.cast(vj, ti.f64)
                    out[i, j, k, 1] = ti.cast(vi, ti.f64)
                else:
                    # the four pixels around the vertex (padded), cycle order TL, TR, BR, BL
                    pi = ti.Vector([vi, vi, vi + 1, vi + 1])
                    pj = ti.Vector([vj, vj + 1, vj + 1, vj])
                    e = ti.Vector([lh[vi, vj], lv[vi, vj + 1], lh[vi + 1, vj], lv[vi, vj]])
                    lab = ti.Vector([0, 1, 2, 3])
                    for _ in ti.static(range(3)):
                        for ed in ti.static(range(4)):
                            if e[ed] != 0:
                                m = ti.min(lab[ed], lab[(ed + 1) % 4])
                                lab[ed] = m
                                lab[(ed + 1) % 4] = m
                    mine = lab[0]
                    for m in ti.static(range(4)):
                        if me == m:
                            mine = lab[m]
                    d = ti.Vector([0.0, 0.0], ti.f64)
                    count = 0.0
                    for m in ti.static(range(4)):
                        if lab[m] == mine:
                            d += ti.Vector([Fp[pi[m], pj[m], 0], Fp[pi[m], pj[m], 1]], ti.f64)
                            count += 1.0
                    d = d / count
                    sx = ti.cast(vj, ti.f64) + d[0]
                    sy = ti.cast(vi, ti.f64) + d[1]
                    qi, qj = ti.i64(0), ti.i64(0)
                    first = False
                    for m in ti.static(range(4)):     # fallback: the first real member's source
                        real = pi[m] >= 1 and pi[m] <= H and pj[m] >= 1 and pj[m] <= W
                        if lab[m] == mine and real and not first:
                            qi, qj, first = Qi[pi[m], pj[m]], Qj[pi[m], pj[m]], True
                    # flowmap.corner_patch
                    plane = Pl[vi + (me >> 1), vj + (((me + 1) >> 1) & 1)]
                    tol = F.DISCONTINUITY + 0.5 * ti.max(ti.abs(d[0]), ti.abs(d[1]))
                    c0i = ti.min(ti.max(ti.cast(ti.floor(sy), ti.i64), 0), H - 1)
                    c0j = ti.min(ti.max(ti.cast(ti.floor(sx), ti.i64), 0), W - 1)
                    bi, bj, bd, found = c0i, c0j, ti.f64(0.0), False
                    for k9 in range(9):                # the pixel holding s first, then its neighbours
                        o = 4
                        if k9 > 0:
                            o = k9 - 1 if k9 <= 4 else k9
                        ci = ti.min(ti.max(c0i + o // 3 - 1, 0), H - 1)
                        cj = ti.min(ti.max(c0j + o % 3 - 1, 0), W - 1)
                        dist = ti.max(ti.max(ti.cast(ci, ti.f64) - sy, sy - ti.cast(ci + 1, ti.f64)), 0.0)
                        dist = 0.0 + dist + ti.max(ti.max(ti.cast(cj, ti.f64) - sx, sx - ti.cast(cj + 1, ti.f64)), 0.0)
                        like = anchor[ci, cj] == plane and ti.max(ti.abs(ti.cast(prev[ci, cj, 0], ti.f64) - d[0]),
                                                                 ti.abs(ti.cast(prev[ci, cj, 1], ti.f64) - d[1])) <= tol
                        if like and (not found or dist < bd):
                            bi, bj, bd, found = ci, cj, dist, True
                    inside = False
                    if found:
                        qi, qj = bi, bj
                    if sy >= ti.cast(qi, ti.f64) and sy <= ti.cast(qi + 1, ti.f64) and \
                            sx >= ti.cast(qj, ti.f64) and sx <= ti.cast(qj + 1, ti.f64):
                        inside = True
                    gx = sx - ti.cast(qj, ti.f64)
                    gy = sy - ti.cast(qi, ti.f64)
                    tl, tr = corner_at(corners, qi, qj, 0), corner_at(corners, qi, qj, 1)
                    br, bl = corner_at(corners, qi, qj, 2), corner_at(corners, qi, qj, 3)
                    top = (1 - gx) * tl + gx * tr                   # flowmap.patch
                    bottom = (1 - gx) * bl + gx * br
                    v = (1 - gy) * top + gy * bottom
                    beyond = (gx - ti.min(ti.max(gx, 0.0), 1.0)) * (gy - ti.min(ti.max(gy, 0.0), 1.0))
                    v = v - beyond * (((br - tr) - bl) + tl)
                    if not inside:                     # flowmap.extend: from the centre, carried Jacobian
                        c = (((tl + tr) + br) + bl) / 4
                        ex = sx - (ti.cast(qj, ti.f64) + 0.5)
                        ey = sy - (ti.cast(qi, ti.f64) + 0.5)
                        for a in ti.static(range(2)):
                            v[a] = c[a] + (jac[qi, qj, a, 0] * ex + jac[qi, qj, a, 1] * ey)
                    out[i, j, k, 0] = v[0]
                    out[i, j, k, 1] = v[1]
                    dk[k, 0], dk[k, 1] = d[0], d[1]
            # the Jacobian, carried: the source's times the step's (flowmap.compose)
            qi, qj = Qi[i + 1, j + 1], Qj[i + 1, j + 1]
            G = ti.Matrix.zero(ti.f64, 2, 2)       # columns ∂s/∂x, ∂s/∂y
            for a in ti.static(range(2)):
                G[a, 0] = (dk[1, a] + dk[2, a]) / 2 - (dk[0, a] + dk[3, a]) / 2
                G[a, 1] = (dk[3, a] + dk[2, a]) / 2 - (dk[0, a] + dk[1, a]) / 2
            G[0, 0] += 1.0
            G[1, 1] += 1.0
            for a in ti.static(range(2)):
                for b in ti.static(range(2)):
                    jac_out[i, j, a, b] = jac[qi, qj, a, 0] * G[0, b] + jac[qi, qj, a, 1] * G[1, b]
                    if new[i, j] != 0:
                        jac_out[i, j, a, b] = 1.0 if a == b else 0.0

    # ------------------------------------------------------------------ requests
    @ti.func
    def green(L: ti.template(), t, s, ox, oy):
        """flowmap.node_fraction of the quad whose cell-local float32 corners are L[t]: scaled by s,
        shifted by (ox, oy); 0 when it lies beside the node."""
        lox, loy, hix, hiy = ti.f32(1e30), ti.f32(1e30), ti.f32(-1e30), ti.f32(-1e30)
        for e in range(4):
            x, y = L[t, e, 0] * s - ox, L[t, e, 1] * s - oy
            lox, hix = ti.min(lox, x), ti.max(hix, x)
            loy, hiy = ti.min(loy, y), ti.max(hiy, y)
        total = ti.f32(0.0)
        if not (lox >= 1 or loy >= 1 or hix <= 0 or hiy <= 0):
            for e in range(4):
                n = (e + 1) % 4
                total += edge_integral(L[t, e, 0] * s - ox, L[t, e, 1] * s - oy, L[t, n, 0] * s - ox, L[t, n, 1] * s - oy)
        return total

    @ti.func
    def bbox(P: ti.template(), d):
        mnx = ti.min(ti.min(P[d, 0, 0], P[d, 1, 0]), ti.min(P[d, 2, 0], P[d, 3, 0]))
        mxx = ti.max(ti.max(P[d, 0, 0], P[d, 1, 0]), ti.max(P[d, 2, 0], P[d, 3, 0]))
        mny = ti.min(ti.min(P[d, 0, 1], P[d, 1, 1]), ti.min(P[d, 2, 1], P[d, 3, 1]))
        mxy = ti.max(ti.max(P[d, 0, 1], P[d, 1, 1]), ti.max(P[d, 2, 1], P[d, 3, 1]))
        j0 = ti.cast(ti.floor(mnx), ti.i32)
        i0 = ti.cast(ti.floor(mny), ti.i32)
        j1 = ti.max(ti.cast(ti.ceil(mxx), ti.i32) - 1, j0)
        i1 = ti.max(ti.cast(ti.ceil(mxy), ti.i32) - 1, i0)
        return i0, i1, j0, j1

    @ti.kernel
    def count(P: nd(dtype=ti.f64, ndim=3), n: nd(dtype=ti.i32, ndim=1)):
        for d in range(P.shape[0]):
            i0, i1, j0, j1 = bbox(P, d)
            n[d] = (i1 - i0 + 1) * (j1 - j0 + 1)

    @ti.kernel
    def fill(P: nd(dtype=ti.f64, ndim=3), start: nd(dtype=ti.i32, ndim=1), slot: nd(dtype=ti.i32, ndim=1),
             tb: nd(dtype=ti.i64, ndim=2), rdst: nd(dtype=ti.i32, ndim=1), rci: nd(dtype=ti.i32, ndim=1), rcj: nd(dtype=ti.i32, ndim=1),
             rA: nd(dtype=ti.f32, ndim=1), rtab: nd(dtype=ti.i64, ndim=1), ncell: nd(dtype=ti.i32, ndim=1),
             rL: nd(dtype=ti.f32, ndim=3), dense: ti.i32):
        """Level-0 overlaps of each quad's bounding-box cells; each request's cell in the dense table
        of its plane's bounding box (tb[slot] = base, row0, col0, columns), counted; -1: no overlap.
        dense = 0: the caller numbers the cells (rtab 0 marks a request)."""
        for d in range(P.shape[0]):
            i0, i1, j0, j1 = bbox(P, d)
            r = start[d]
            s = slot[d]
            for ci in range(i0, i1 + 1):
                for cj in range(j0, j1 + 1):
                    for e in range(4):           # the quad in the cell's coordinates (kept for the cell pass)
                        rL[r, e, 0] = ti.cast(P[d, e, 0] - ti.cast(cj, ti.f64), ti.f32)
                        rL[r, e, 1] = ti.cast(P[d, e, 1] - ti.cast(ci, ti.f64), ti.f32)
                    A = green(rL, r, ti.f32(1.0), ti.f32(0.0), ti.f32(0.0))
                    rdst[r], rci[r], rcj[r], rA[r] = d, ci, cj, A
                    rtab[r] = -1
                    if A > 0:
                        rtab[r] = 0
                        if dense != 0:
                            t = tb[s, 0] + (ti.cast(ci, ti.i64) - tb[s, 1]) * tb[s, 3] + (ti.cast(cj, ti.i64) - tb[s, 2])
                            rtab[r] = t
                            ti.atomic_add(ncell[t], 1)
                    r += 1

    @ti.kernel
    def by_cell(rtab: nd(dtype=ti.i64, ndim=1), start: nd(dtype=ti.i64, ndim=1), cursor: nd(dtype=ti.i32, ndim=1),
                rdst: nd(dtype=ti.i32, ndim=1), rA: nd(dtype=ti.f32, ndim=1), rL: nd(dtype=ti.f32, ndim=3),
                lst: nd(dtype=ti.i32, ndim=1), ldst: nd(dtype=ti.i32, ndim=1), lA: nd(dtype=ti.f32, ndim=1),
                lL: nd(dtype=ti.f32, ndim=3)):
        """Requests listed cell by cell (list position t), with their destination, overlap and
        cell-local quad, so that a cell's pass reads contiguous memory."""
        for r in range(rtab.shape[0]):
            c = rtab[r]
            if c >= 0:
                t = start[c] + ti.atomic_add(cursor[c], 1)
                lst[t], ldst[t], lA[t] = r, rdst[r], rA[r]
                for e in range(4):
                    lL[t, e, 0] = rL[r, e, 0]
                    lL[t, e, 1] = rL[r, e, 1]

    # ------------------------------------------------------------------ one cell
    @ti.func
    def stored_row(st_ids: ti.template(), st_off: ti.template(), st_pix: ti.template(), plane, ci, cj, H, W):
        """Row of cell (ci, cj) of `plane` among the stored sub-cells, or -1 (binary search)."""
        row = -1
        if ci >= 0 and ci < H and cj >= 0 and cj < W:
            row = stored_lookup(st_ids, st_off, st_pix, plane, ci * W + cj)
        return row

    @ti.func
    def bridge(s0, s1, fr: ti.template(), ldst: ti.template(), where: ti.template(), acc: ti.template(),
               plane, level, gi, gj, den, seed, C, D):
        """flowmap._bridge for the parties of one leaf (list positions s0..s1, fractions fr[:, level]/den,
        in order), with flowmap.orientation: adds sqrt|leaf| (b(s_k) - b(s_{k-1})) to each party's sum."""
        NP = (C + 1) // 2
        h = ti.pow(ti.f32(2.0), -ti.cast(level, ti.f32))
        first, last, n = -1, -1, 0
        for t in range(s0, s1):
            if fr[t, level] > 0:
                if first < 0:
                    first = t
                last = t
                n += 1
        o = 2
        if n == 2:
            a, b = ldst[first], ldst[last]
            o = 1
            if ti.abs(where[b, 0] - where[a, 0]) >= ti.abs(where[b, 1] - where[a, 1]):
                o = 0
        pl = ti.cast(plane, ti.u32)
        stream = ti.cast(16 * o + level, ti.u32)
        wkey = key_of(seed, pl, ti.u32(rng.BRIDGE) + stream, ti.cast(gi, ti.u32), ti.cast(gj, ti.u32))
        fkey = key_of(seed, pl, ti.u32(rng.BRIDGE_FILL) + stream, ti.cast(gi, ti.u32), ti.cast(gj, ti.u32))
        for pr in range(NP):
            s = ti.f32(0.0)
            prev_s = ti.f32(0.0)
            prev_b = ti.Vector([0.0, 0.0], ti.f32)
            prev_node = -1
            for t in range(s0, s1):
                f = fr[t, level]
                if f > 0:
                    s = s + f / den
                    if t == last and s >= ti.f32(F.COVERED):   # a covered leaf: no leftover but rounding
                        s = ti.f32(1.0)
                    lo, hi = ti.f32(0.0), ti.f32(1.0)
                    blo = ti.Vector([0.0, 0.0], ti.f32)
                    bhi = ti.Vector([0.0, 0.0], ti.f32)
                    node = 1
                    b = ti.Vector([0.0, 0.0], ti.f32)
                    if s < 1:                           # b(1) = 0 needs no walk
                        for _ in range(D):              # midpoint displacement down to the point's interval
                            mid = ti.f32(0.5) * (lo + hi)
                            nu = gauss_at(wkey, ti.cast(node * NP + pr, ti.u32))
                            bm = ti.f32(0.5) * (blo + bhi) + ti.sqrt(ti.f32(0.25) * (hi - lo)) * nu
                            if s >= mid:
                                lo, blo = mid, bm
                                node = 2 * node + 1
                            else:
                                hi, bhi = mid, bm
                                node = 2 * node
                        left_s, left_b = lo, blo
                        if node == prev_node:       # the previous point shares the interval
                            left_s, left_b = prev_s, prev_b
                        span = hi - left_s
                        b = left_b
                        if span > 0:
                            fill = gauss_at(fkey, (((ti.cast(ldst[t], ti.u32) << ti.cast(D + 1, ti.u32)) + ti.cast(node, ti.u32))
                                                   * ti.cast(NP, ti.u32) + ti.cast(pr, ti.u32)))
                            tt = (s - left_s) / span
                            sd = ti.sqrt(ti.max((s - left_s) * (hi - s) / span, ti.f32(0.0)))
                            b = left_b + tt * (bhi - left_b) + sd * fill
                    piece = h * (b - prev_b)
                    for e in ti.static(range(2)):
                        if 2 * pr + e < C:
                            acc[t, 2 * pr + e] += piece[e]
                    prev_s, prev_b, prev_node = s, b, node

    @ti.kernel
    def cells(dplane: nd(dtype=ti.i64, ndim=1), rci: nd(dtype=ti.i32, ndim=1),
              rcj: nd(dtype=ti.i32, ndim=1), start: nd(dtype=ti.i64, ndim=1), lst: nd(dtype=ti.i32, ndim=1),
              ldst: nd(dtype=ti.i32, ndim=1), lA: nd(dtype=ti.f32, ndim=1), lL: nd(dtype=ti.f32, ndim=3),
              pos: nd(dtype=ti.i32, ndim=1),
              st_ids: nd(dtype=ti.i64, ndim=1), st_off: nd(dtype=ti.i32, ndim=1), st_pix: nd(dtype=ti.i32, ndim=1),
              st_val: nd(dtype=ti.f32, ndim=3), acc: nd(dtype=ti.f32, ndim=2), claim: nd(dtype=ti.f32, ndim=1),
              miss: nd(dtype=ti.f32, ndim=1), fold: nd(dtype=ti.i32, ndim=1), fr: nd(dtype=ti.f32, ndim=2), kid: nd(dtype=ti.f32, ndim=3),
              coef: nd(dtype=ti.f32, ndim=2), where: nd(dtype=ti.f32, ndim=2), seed: ti.u32, depth: ti.i32,
              H: ti.i32, W: ti.i32):
        C = acc.shape[1]
        NP = (C + 1) // 2
        K = 1 << F.KEEP
        D = ti.max(2, F.BRIDGE_RESOLUTION - depth)          # flowmap.bridge_levels
        for c in range(start.shape[0] - 1):
            s0, s1 = ti.cast(start[c], ti.i32), ti.cast(start[c + 1], ti.i32)
            if s1 > s0:
                for t in range(s0 + 1, s1):                 # requests by destination (insertion sort)
                    u = t
                    while u > s0 and ldst[u - 1] > ldst[u]:
                        lst[u - 1], lst[u] = lst[u], lst[u - 1]
                        ldst[u - 1], ldst[u] = ldst[u], ldst[u - 1]
                        lA[u - 1], lA[u] = lA[u], lA[u - 1]
                        for e in range(4):
                            for k in range(2):
                                lL[u - 1, e, k], lL[u, e, k] = lL[u, e, k], lL[u - 1, e, k]
                        u -= 1
                for t in range(s0, s1):
                    pos[lst[t]] = t
                r0 = lst[s0]
                ci, cj = rci[r0], rcj[r0]
                plane = dplane[ldst[s0]]
                pl = ti.cast(plane, ti.u32)
                row = stored_row(st_ids, st_off, st_pix, plane, ci, cj, H, W)
                T = ti.f32(0.0)
                for t in range(s0, s1):
                    T += lA[t]
                flat = T > ti.f32(F.FOLD)        # a fold: flat shares of the level-0 value, one bridge
                # stackless depth-first walk over the nodes (level, code: base-4 digits 2·di + dj)
                level, code = 0, 0
                done = False
                while not done:
                    oi, oj = 0, 0
                    for l in range(level):
                        dig = (code >> (2 * (level - 1 - l))) & 3
                        oi = 2 * oi + (dig >> 1)
                        oj = 2 * oj + (dig & 1)
                    Tn = ti.f32(0.0)
                    cnt = 0
                    fone = ti.f32(0.0)
                    for t in range(s0, s1):          # fractions of the parties that reach this node
                        f = lA[t]
                        if level > 0:
                            f = ti.f32(0.0)
                            if fr[t, level - 1] > 0:
                                f = kid[t, level - 1, code & 3]
                        fr[t, level] = f
                        if f > 0:
                            Tn += f
                            cnt += 1
                            fone = f
                    descend, restart = False, False
                    if not flat and Tn > ti.f32(F.FOLD):   # quads overlap inside the cell: start again, flat
                        flat, restart = True, True
                    elif cnt > 0:
                        gi = ci * (1 << level) + oi
                        gj = cj * (1 << level) + oj
                        if level == 0 and flat:              # flowmap.allocate: priority order, largest first
                            before = ti.f32(0.0)
                            for t in range(s0, s1):
                                coef[t, 0] = 0.0             # not yet allocated
                            for _ in range(s0, s1):
                                best = -1
                                for t in range(s0, s1):
                                    if coef[t, 0] == 0.0:
                                        if best < 0 or lA[t] > lA[best] or (lA[t] == lA[best] and ldst[t] < ldst[best]):
                                            best = t
                                coef[best, 0] = 1.0
                                a = ti.min(lA[best], ti.max(ti.f32(1.0) - before, ti.f32(0.0)))
                                before += lA[best]
                                fr[best, 0] = a
                                miss[best] = lA[best] - a
                        if level == 0:                       # the level-0 value (a share of it if flat)
                            for t in range(s0, s1):
                                claim[t] = fr[t, 0]
                                fold[t] = ti.cast(flat, ti.i32)
                            if row < 0:
                                key = key_of(seed, pl, ti.u32(rng.REFERENCE), ti.cast(ci, ti.u32), ti.cast(cj, ti.u32))
                                for pr in range(NP):
                                    x = gauss_at(key, ti.cast(pr, ti.u32))
                                    for t in range(s0, s1):
                                        for e in ti.static(range(2)):
                                            if 2 * pr + e < C:
                                                acc[t, 2 * pr + e] += claim[t] * x[e]
                            elif flat:
                                for ch in range(C):
                                    x = ti.f32(0.0)
                                    for q in range(K * K):
                                        x += st_val[row, q, ch]
                                    for t in range(s0, s1):
                                        acc[t, ch] += claim[t] * x
                        if level == F.KEEP and row >= 0 and not flat:    # stored sub-cells
                            for t in range(s0, s1):
                                if fr[t, level] > 0:
                                    for ch in range(C):
                                        acc[t, ch] += fr[t, level] * st_val[row, oi * K + oj, ch]
                        opened = cnt > 1 or fone < ti.f32(F.WHOLE) or (row >= 0 and level < F.KEEP)
                        deep = depth
                        if row >= 0:
                            deep = ti.max(depth, F.KEEP)
                        split = opened and not flat and level < deep
                        if split:
                            for t in range(s0, s1):          # the children's fractions
                                if fr[t, level] > 0:
                                    for ch in range(4):      # child 2·di + dj
                                        kid[t, level, ch] = green(lL, t, ti.cast(2 << level, ti.f32),
                                                                  ti.cast(2 * oj + (ch & 1), ti.f32),
                                                                  ti.cast(2 * oi + (ch >> 1), ti.f32))
                            if row < 0 or level >= F.KEEP:  # the Hadamard terms that split this node
                                sig = ti.pow(ti.f32(2.0), -ti.cast(level, ti.f32)) / 4
                                for t in range(s0, s1):
                                    if fr[t, level] > 0:
                                        c0, c1, c2 = ti.f32(0.0), ti.f32(0.0), ti.f32(0.0)
                                        for ch in range(4):  # HADAMARD rows as signs
                                            kv = kid[t, level, ch]
                                            s1x = ti.cast(1 - 2 * (ch & 1), ti.f32)
                                            s2x = ti.cast(1 - 2 * (ch >> 1), ti.f32)
                                            c0 += s1x * kv
                                            c1 += s2x * kv
                                            c2 += s1x * s2x * kv
                                        coef[t, 0], coef[t, 1], coef[t, 2] = sig * c0, sig * c1, sig * c2
                                key = key_of(seed, pl, ti.u32(rng.CHILDREN) + ti.cast(level, ti.u32), ti.cast(gi, ti.u32),
                                             ti.cast(gj, ti.u32))
                                for pr in range(NP):
                                    for k in range(3):
                                        nk = gauss_at(key, ti.cast(3 * pr + k, ti.u32))
                                        for t in range(s0, s1):
                                            if fr[t, level] > 0:
                                                for e in ti.static(range(2)):
                                                    if 2 * pr + e < C:
                                                        acc[t, 2 * pr + e] += coef[t, k] * nk[e]
                            descend = True
                        elif opened:                         # a leaf shared or partly covered: its bridge
                            den = ti.max(Tn, ti.f32(1.0))
                            if flat:
                                den = ti.f32(1.0)            # allocated shares sum to 1 at most
                            bridge(s0, s1, fr, ldst, where, acc, plane, level, gi, gj, den, seed, C, D)
                    if restart:
                        for t in range(s0, s1):
                            for ch in range(C):
                                acc[t, ch] = 0.0
                            fr[t, 0] = lA[t]
                        level, code = 0, 0
                    elif descend:
                        level += 1
                        code = code * 4
                    else:                                    # next sibling, or up
                        while level > 0 and (code & 3) == 3:
                            code = code >> 2
                            level -= 1
                        if level == 0:
                            done = True
                        else:
                            code += 1

    @ti.kernel
    def gather(rstart: nd(dtype=ti.i32, ndim=1), rtab: nd(dtype=ti.i64, ndim=1), pos: nd(dtype=ti.i32, ndim=1),
               acc: nd(dtype=ti.f32, ndim=2), claim: nd(dtype=ti.f32, ndim=1), miss: nd(dtype=ti.f32, ndim=1),
               fold: nd(dtype=ti.i32, ndim=1), key: nd(dtype=ti.i64, ndim=2), value: nd(dtype=ti.f32, ndim=2),
               dfold: nd(dtype=ti.i32, ndim=1), seed: ti.u32, frame: ti.u32):
        """Each destination: its requests' sums in request order, fresh noise for the area it lost
        to folds, normalised by the area."""
        C = acc.shape[1]
        for d in range(value.shape[0]):
            total, lost = ti.f32(0.0), ti.f32(0.0)
            any_fold = 0
            for r in range(rstart[d], rstart[d + 1]):
                if rtab[r] >= 0:
                    total += claim[pos[r]]
                    lost += miss[pos[r]]
                    any_fold = ti.max(any_fold, fold[pos[r]])
            dfold[d] = any_fold
            inv = 1.0 / ti.sqrt(ti.max(total + lost, ti.f32(1e-30)))
            fkey = key_of(seed, frame, ti.u32(rng.FRESH), ti.cast(key[d, 0], ti.u32), ti.cast(key[d, 1], ti.u32))
            sl = ti.sqrt(lost)
            for pr in range((C + 1) // 2):
                f = ti.Vector([0.0, 0.0], ti.f32)
                if lost > 0:
                    f = gauss_at(fkey, ti.cast(pr, ti.u32))
                for e in ti.static(range(2)):
                    ch = 2 * pr + e
                    if ch < C:
                        v = ti.f32(0.0)
                        for r in range(rstart[d], rstart[d + 1]):
                            if rtab[r] >= 0:
                                v += acc[pos[r], ch]
                        value[d, ch] = (v + sl * f[e]) * inv

    return compose, count, fill, by_cell, cells, gather
