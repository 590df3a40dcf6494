"""Voxel motion fields from meshes that move (same topology at both times).

Inside a closed mesh (winding number ≠ 0, from ray crossings along Z) the displacement is a
blend of axis rays: along each axis the ray through the voxel centre leaves the solid at two
surface points, the displacements there (barycentric on the hit triangles) are interpolated
linearly, and the three axes are blended with weights 1/(t⁻ t⁺). Linear interpolation of an
affine field is exact, so an affine motion of the mesh (translation, rotation, scale, shear)
is reproduced exactly: a rigidly rotated box gives the rigid flow inside it. Unlike a fit to
the nearest surface patch, the rays see the surface on every side, so non-affine motion
(a twist) is followed closely too.

Outside, within `band` voxels, a moving-least-squares local affine fit: `d(x) = t` where
(t, G) minimise `Σ_j w_j |t + G (s_j − x) − d_j|²` over the nearest surface samples s_j
(vertices plus points spread over large triangles), also exact for affine motion; a few
far-apart "anchor" samples with a tiny weight keep the 4×4 system non-singular where the
nearest samples are coplanar. It fades to the background with a smoothstep of the distance.
Several meshes: inside wins; overlapping bands average.
"""
import warnings

import numpy as np

from core2d.ops import check_int, check_number

from .vdb import _placement

_EPS_ANCHOR = 1e-4


def _as_meshes(mesh, what):
    """Normalise one mesh / (vertices, faces) / list of them to a list of (V [n, 3] float64, F or None)."""
    if isinstance(mesh, (list, tuple)) and len(mesh) == 2 and not _is_mesh_like(mesh[0]):
        items = [mesh]          # a (vertices, faces) pair
    elif isinstance(mesh, (list, tuple)):
        items = list(mesh)
    else:
        items = [mesh]
    out = []
    for m in items:
        if hasattr(m, "vertices") and hasattr(m, "faces"):
            V, F = np.asarray(m.vertices), np.asarray(m.faces)
        elif isinstance(m, (list, tuple)) and len(m) == 2:
            V, F = np.asarray(m[0]), np.asarray(m[1])
        else:
            V, F = np.asarray(m), None
        if V.dtype.kind not in "fiu":
            raise ValueError(f"{what}: vertices must be numbers; got dtype {V.dtype}")
        if F is not None and F.size and F.dtype.kind not in "iu":
            raise ValueError(f"{what}: face indices must be integers; got dtype {F.dtype}")
        V, F = V.astype(np.float64), (None if F is None else F.astype(np.int64))
        if V.ndim != 2 or V.shape[1] != 3:
            raise ValueError(f"{what}: vertices must be [n, 3]; got shape {V.shape}")
        if not np.isfinite(V).all():
            raise ValueError(f"{what}: vertices contain NaN/inf")
        if F is not None and (F.ndim != 2 or F.shape[1] != 3):
            raise ValueError(f"{what}: faces must be triangles [m, 3]; got shape {F.shape}")
        out.append((V, F))
    return out


def _is_mesh_like(m):
    return (hasattr(m, "vertices") and hasattr(m, "faces")) or (
        isinstance(m, (list, tuple)) and len(m) == 2 and np.ndim(m[0]) == 2)


def _grid_params(shape, origin, voxel_size):
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 3:
        raise ValueError(f"shape must be three positive integers (X, Y, Z); got {shape!r}")
    shape = tuple(check_int("each size of shape", n) for n in shape)
    vs, origin = _placement(voxel_size, origin)
    return shape, origin, vs


def surface_samples(P, D, F, spacing=1.0):
    """Vertices plus barycentric grid points on triangles longer than `spacing` (voxel units).

    Returns (points [S, 3], displacements [S, 3]); displacement is interpolated linearly, so an
    affine vertex motion stays exactly affine on the samples.
    """
    pts, dis = [P], [D]
    if F is None or len(F) == 0:
        return P, D
    A, B, C = P[F[:, 0]], P[F[:, 1]], P[F[:, 2]]
    L = np.maximum.reduce([np.linalg.norm(B - A, axis=1), np.linalg.norm(C - B, axis=1),
                           np.linalg.norm(A - C, axis=1)])
    n = np.minimum(np.ceil(L / spacing), 256).astype(np.int64)
    for level in np.unique(n[n >= 2]):
        tris = F[n == level]
        a, b = np.meshgrid(np.arange(level + 1), np.arange(level + 1), indexing="ij")
        keep = (a + b <= level)
        a, b = a[keep], b[keep]
        c = level - a - b
        corner = ((a == level) | (b == level) | (c == level))
        bary = np.stack([a, b, c], 1)[~corner].astype(np.float64) / level  # [k, 3]
        for src, dst in ((P, pts), (D, dis)):
            dst.append(np.einsum("kv,tvd->tkd", bary, src[tris]).reshape(-1, 3))
    return np.concatenate(pts), np.concatenate(dis)


_RAY_OFFSET = (3.1e-6, 2.7e-6)


def _ray_hits(P, F, shape, offset=_RAY_OFFSET):
    """Crossings of the rays along the last axis (one per column of voxel centres) with the triangles.

    P: vertices in voxel units, axes already permuted so the rays run along axis 2. Rays are
    shifted by a tiny offset so they do not run exactly through edges. Returns the columns
    (ci, cj), the crossing coordinate z, the triangle index, its barycentrics [h, 3] and the
    sign of the triangle's projected area (+1 where the ray leaves an outward-facing mesh).
    """
    X, Y, _ = shape
    A, B, C = P[F[:, 0]], P[F[:, 1]], P[F[:, 2]]
    area2 = (B[:, 0] - A[:, 0]) * (C[:, 1] - A[:, 1]) - (B[:, 1] - A[:, 1]) * (C[:, 0] - A[:, 0])
    tri = np.flatnonzero(area2 != 0)
    A, B, C, area2 = A[tri], B[tri], C[tri], area2[tri]
    ox, oy = offset
    lo = np.minimum(np.minimum(A, B), C)
    hi = np.maximum(np.maximum(A, B), C)
    i0 = np.clip(np.ceil(lo[:, 0] - 0.5 - ox), 0, X).astype(np.int64)
    i1 = np.clip(np.floor(hi[:, 0] - 0.5 - ox), -1, X - 1).astype(np.int64)
    j0 = np.clip(np.ceil(lo[:, 1] - 0.5 - oy), 0, Y).astype(np.int64)
    j1 = np.clip(np.floor(hi[:, 1] - 0.5 - oy), -1, Y - 1).astype(np.int64)
    nx = np.maximum(i1 - i0 + 1, 0)
    ny = np.maximum(j1 - j0 + 1, 0)
    count = nx * ny
    total = int(count.sum())
    t = np.repeat(np.arange(len(count)), count)
    local = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    ci = i0[t] + local // np.maximum(ny[t], 1)
    cj = j0[t] + local % np.maximum(ny[t], 1)
    px = ci + 0.5 + ox
    py = cj + 0.5 + oy
    a, b, c = A[t], B[t], C[t]
    la = ((b[:, 0] - px) * (c[:, 1] - py) - (b[:, 1] - py) * (c[:, 0] - px)) / area2[t]
    lb = ((c[:, 0] - px) * (a[:, 1] - py) - (c[:, 1] - py) * (a[:, 0] - px)) / area2[t]
    lc = 1.0 - la - lb
    hit = (la >= 0) & (lb >= 0) & (lc >= 0)
    zc = la * a[:, 2] + lb * b[:, 2] + lc * c[:, 2]
    return (ci[hit], cj[hit], zc[hit], tri[t[hit]], np.stack([la, lb, lc], 1)[hit],
            np.sign(area2[t[hit]]).astype(np.int32))


def open_edges(F):
    """How many edges are not shared by exactly two triangles (0: the mesh bounds a solid)."""
    e = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e[:, 0].astype(np.int64) * (int(F.max()) + 1) + e[:, 1], return_counts=True)
    return int((counts != 2).sum()) if len(counts) else 1


def is_closed(F):
    """Every edge shared by exactly two triangles: the mesh bounds a solid (open sheets get
    only the band around their surface, no inside)."""
    return open_edges(F) == 0


def winding_numbers(P, F, shape):
    """Winding number of every voxel centre w.r.t. the triangle mesh (P in voxel units).

    Rays go up +Z from each centre; each crossing above the centre counts the sign of the
    triangle's projected area.
    """
    X, Y, Z = shape
    ci, cj, zc, _, _, sign = _ray_hits(P, F, shape)
    acc = np.zeros((X, Y, Z + 1), np.int32)
    kk = np.clip(np.ceil(zc - 0.5), 0, Z).astype(np.int64)
    np.add.at(acc, (ci, cj, kk), sign)
    cs = np.cumsum(acc, axis=2)
    return cs[:, :, Z:Z + 1] - cs[:, :, :Z]


def ray_interpolation(P, D, F, shape, ids, vs=(1.0, 1.0, 1.0)):
    """Displacement at inside voxels `ids` (flat indices) blended from axis-aligned rays.

    Along each axis the ray through the voxel centre leaves the solid at two surface points
    (the nearest crossings below and above); linear interpolation of their displacements
    (barycentric on the hit triangles) is exact for affine motion, and so is any blend of the
    three axes. Weights 1 / (t⁻ t⁺) (world distances to the two crossings) favour the axis with
    the nearest surface and make the field meet the surface displacement at the surface.
    Returns (displacement [n, 3], valid [n]); invalid where no axis has crossings on both sides.
    """
    ids = np.asarray(ids)
    n = len(ids)
    num = np.zeros((n, 3))
    den = np.zeros(n)
    idx = np.unravel_index(ids, shape)
    for axis in range(3):
        perm = [a for a in range(3) if a != axis] + [axis]
        pshape = tuple(shape[a] for a in perm)
        ci, cj, zc, tri, bary, _ = _ray_hits(P[:, perm], F, pshape)
        if len(zc) == 0:
            continue
        L = pshape[2]
        col = ci * pshape[1] + cj
        order = np.lexsort((zc, col))
        col, zc = col[order], zc[order]
        disp = np.einsum("hv,hvd->hd", bary[order], D[F[tri[order]]])
        ncol = pshape[0] * pshape[1]
        per_col = np.bincount(col, minlength=ncol)
        start = np.concatenate([[0], np.cumsum(per_col)[:-1]])
        kk = np.clip(np.ceil(zc - 0.5), 0, L).astype(np.int64)
        hist = np.zeros((ncol, L + 1), np.int32)
        np.add.at(hist, (col, kk), 1)
        below = np.cumsum(hist, axis=1)[:, :L]                  # crossings under each centre
        vc = idx[perm[0]] * pshape[1] + idx[perm[1]]            # the voxels' columns
        k = idx[axis]
        nb = below[vc, k]
        ok = (nb >= 1) & (nb < per_col[vc])
        lo_i = np.minimum(start[vc] + np.maximum(nb - 1, 0), len(zc) - 1)
        hi_i = np.minimum(start[vc] + nb, len(zc) - 1)
        pos = k + 0.5
        tm = np.maximum(pos - zc[lo_i], 1e-9) * vs[axis]
        tp = np.maximum(zc[hi_i] - pos, 1e-9) * vs[axis]
        d_axis = (tp[:, None] * disp[lo_i] + tm[:, None] * disp[hi_i]) / (tm + tp)[:, None]
        w = np.where(ok, 1.0 / (tm * tp), 0.0)
        num += w[:, None] * d_axis
        den += w
    valid = den > 0
    out = np.zeros((n, 3))
    out[valid] = num[valid] / den[valid, None]
    return out, valid


def _anchors(S, count=8):
    """Far-apart samples (farthest-point order from the centroid's farthest sample)."""
    if len(S) <= count:
        return np.arange(len(S))
    chosen = [int(np.argmax(((S - S.mean(0)) ** 2).sum(1)))]
    d = ((S - S[chosen[0]]) ** 2).sum(1)
    for _ in range(count - 1):
        nxt = int(np.argmax(d))
        chosen.append(nxt)
        d = np.minimum(d, ((S - S[nxt]) ** 2).sum(1))
    return np.array(chosen)


def _subsample(S, DS, cell):
    """One sample per cube of side `cell` (voxels): a coarser sample set for far-away queries."""
    if cell <= 1:
        return S, DS
    key = np.floor(S / cell).astype(np.int64)
    key -= key.min(0)
    span = key.max(0) + 1
    flat = (key[:, 0] * span[1] + key[:, 1]) * span[2] + key[:, 2]
    _, first = np.unique(flat, return_index=True)
    first.sort()
    return S[first], DS[first]


def local_affine_fit(points, S, DS, tree, k=16, anchors=None, chunk=32768):
    """Moving-least-squares affine fit of displacements DS at samples S, evaluated at `points`.

    Returns (displacement [Q, 3], distance to the nearest sample [Q]). Weights
    w = (1 − (r/R)²)² / (r² + 1), R just beyond the k-th neighbour, so the field is continuous
    within one sample set. `anchors` (indices into S, or points [a, 3] with displacements) get a
    weight 1e-4 of the total, which only matters where the neighbours are coplanar.
    """
    Q = len(points)
    out = np.zeros((Q, 3), np.float64)
    dist0 = np.zeros(Q, np.float64)
    kk = int(min(k + 1, len(S)))
    if anchors is None:
        anchors = _anchors(S)
        SA, DA = S[anchors], DS[anchors]
    else:
        SA, DA = anchors
    na = len(SA)
    for s in range(0, Q, chunk):
        x = points[s:s + chunk]
        q = len(x)
        r, idx = tree.query(x, k=kk, workers=-1)
        r = r.reshape(q, kk)
        idx = idx.reshape(q, kk)
        dist0[s:s + chunk] = r[:, 0]
        R = r[:, -1:] * 1.0001 + 1e-6
        if kk > 1 and kk == k + 1:
            r, idx = r[:, :-1], idx[:, :-1]
        w = (1.0 - (r / R) ** 2) ** 2 / (r * r + 1.0)
        wa = np.broadcast_to((_EPS_ANCHOR * w.sum(1) / na)[:, None], (q, na))
        # positions relative to x and displacements, component-major: [3, q, n]
        ww = np.concatenate([w, wa], 1)
        u = [np.concatenate([S[idx, a] - x[:, a:a + 1], np.broadcast_to(SA[:, a] - x[:, a:a + 1], (q, na))], 1)
             for a in range(3)]
        d = [np.concatenate([DS[idx, c], np.broadcast_to(DA[:, c], (q, na))], 1) for c in range(3)]
        wu = [ww * u[a] for a in range(3)]
        M = np.empty((q, 4, 4))
        rhs = np.empty((q, 4, 3))
        M[:, 0, 0] = ww.sum(1)
        for a in range(3):
            M[:, 0, a + 1] = M[:, a + 1, 0] = wu[a].sum(1)
            for b in range(a, 3):
                M[:, a + 1, b + 1] = M[:, b + 1, a + 1] = (wu[a] * u[b]).sum(1)
        for c in range(3):
            rhs[:, 0, c] = (ww * d[c]).sum(1)
            for a in range(3):
                rhs[:, a + 1, c] = (wu[a] * d[c]).sum(1)
        tr = M[:, 1, 1] + M[:, 2, 2] + M[:, 3, 3]
        M[:, 1:, 1:] += (1e-12 * tr + 1e-30)[:, None, None] * np.eye(3)
        out[s:s + chunk] = _translation_part(M, rhs)
    return out, dist0


def _translation_part(M, rhs):
    """First row of M⁻¹ rhs for 4×4 normal matrices M = [[m, bᵀ], [b, C]] (the fitted t).

    Schur complement: t = (r0 − gᵀR) / (m − gᵀb) with g = C⁻¹b; the 3×3 solve by cofactors
    is several times faster than batched LAPACK on millions of tiny systems.
    """
    m, b, C = M[:, 0, 0], M[:, 1:, 0], M[:, 1:, 1:]
    r0, R = rhs[:, 0, :], rhs[:, 1:, :]
    c00 = C[:, 1, 1] * C[:, 2, 2] - C[:, 1, 2] * C[:, 2, 1]
    c01 = C[:, 0, 2] * C[:, 2, 1] - C[:, 0, 1] * C[:, 2, 2]
    c02 = C[:, 0, 1] * C[:, 1, 2] - C[:, 0, 2] * C[:, 1, 1]
    c11 = C[:, 0, 0] * C[:, 2, 2] - C[:, 0, 2] * C[:, 2, 0]
    c12 = C[:, 0, 2] * C[:, 1, 0] - C[:, 0, 0] * C[:, 1, 2]
    c22 = C[:, 0, 0] * C[:, 1, 1] - C[:, 0, 1] * C[:, 1, 0]
    det = C[:, 0, 0] * c00 + C[:, 1, 0] * c01 + C[:, 2, 0] * c02
    inv_det = 1.0 / det
    # C is symmetric, so its adjugate is too
    g0 = (c00 * b[:, 0] + c01 * b[:, 1] + c02 * b[:, 2]) * inv_det
    g1 = (c01 * b[:, 0] + c11 * b[:, 1] + c12 * b[:, 2]) * inv_det
    g2 = (c02 * b[:, 0] + c12 * b[:, 1] + c22 * b[:, 2]) * inv_det
    num = r0 - (g0[:, None] * R[:, 0] + g1[:, None] * R[:, 1] + g2[:, None] * R[:, 2])
    den = m - (g0 * b[:, 0] + g1 * b[:, 1] + g2 * b[:, 2])
    return num / den[:, None]


def _smoothstep_falloff(d, band):
    t = np.clip(1 - d / band, 0, 1)
    return t * t * (3.0 - 2.0 * t)


def _lattice(n, stride):
    """Indices of the coarse lattice along one axis: every stride-th voxel plus the last one."""
    return np.unique(np.concatenate([np.arange(0, n, stride), [n - 1]]))


def _interp_axis(values, coords, n, axis):
    """Linear interpolation along `axis` from lattice `coords` to every index 0..n-1."""
    pos = np.arange(n, dtype=np.float64)
    j = np.clip(np.searchsorted(coords, pos, side="right") - 1, 0, max(len(coords) - 2, 0))
    if len(coords) == 1:
        return np.take(values, np.zeros(n, np.int64), axis=axis)
    c0, c1 = coords[j], coords[j + 1]
    t = ((pos - c0) / (c1 - c0)).astype(values.dtype)
    shape = [1] * values.ndim
    shape[axis] = -1
    t = t.reshape(shape)
    return np.take(values, j, axis=axis) * (1 - t) + np.take(values, j + 1, axis=axis) * t


def _band_fit(S, DS, anchors, inside, shape, lat, lpts, stride, band, k, spacing):
    """The local affine fit near the surface, on the stride lattice, interpolated to every voxel.

    Returns (displacement [X, Y, Z, 3], distance to the surface samples [X, Y, Z]; 1e9 where
    not computed). Far from the surface the fit uses a coarser sample set (spacing ∝ distance),
    which keeps the neighbour search cheap.
    """
    from .nearest import SampleGrid, capped_edt

    lshape = tuple(len(c) for c in lat)
    # distance (voxels) from each lattice point to the nearest surface-sample cell: an EDT on
    # the lattice grid, used to pick the points to fit and their sample level
    cell = np.floor(S / stride).astype(np.int64)
    cshape = tuple(-(-n // stride) for n in shape)
    reach = ((cell >= -(band + 2) / stride - 1) & (cell < np.array(cshape) + (band + 2) / stride + 1)).all(1)
    if not reach.any():
        return np.zeros(shape + (3,), np.float32), np.full(shape, 1e9, np.float32)
    occ = np.zeros(cshape, bool)
    cc = np.clip(cell[reach], 0, np.array(cshape) - 1)
    occ[cc[:, 0], cc[:, 1], cc[:, 2]] = True
    # lattice points needed: those bracketing a voxel of the band outside the surface (inside
    # voxels take the ray blend, so only a thin inner layer of the lattice is used); farther
    # distances are never looked at, so the transform stops there (inf beyond)
    far = band + 2.0 * stride + 2.0
    dist_c = capped_edt(occ, far / stride) * stride
    li = np.minimum(lpts // stride, np.array(cshape) - 1)
    dl = dist_c[li[:, 0], li[:, 1], li[:, 2]]
    lin = inside[lpts[:, 0], lpts[:, 1], lpts[:, 2]]
    need = dl <= np.where(lin, 2.0 * stride + 2.0, far)
    ids = np.flatnonzero(need)
    pts = lpts[ids] + 0.5
    level = np.clip(np.floor(np.log2(np.maximum(dl[ids], 1.0) / 4.0)) + 1, 0, 6).astype(int)
    disp_l = np.zeros((len(lpts), 3))
    dist_l = np.full(len(lpts), 1e9)
    for lv in np.unique(level):
        Sl, DSl = _subsample(S, DS, 2.0 ** lv * spacing)
        sel = level == lv
        d, d0 = local_affine_fit(pts[sel], Sl, DSl, SampleGrid(Sl), k=k, anchors=anchors)
        disp_l[ids[sel]] = d
        dist_l[ids[sel]] = d0
    # back to every voxel (trilinear, exact for affine fields)
    disp = disp_l.reshape(lshape + (3,)).astype(np.float32)
    dist = dist_l.reshape(lshape).astype(np.float32)
    for ax in range(3):
        disp = _interp_axis(disp, lat[ax], shape[ax], ax)
        dist = _interp_axis(dist, lat[ax], shape[ax], ax)
    return disp, dist


def mesh_motion_field(mesh_a, mesh_b, shape, origin, voxel_size, band=3.0, background=None,
                      k=16, spacing=1.0, stride=None, return_weight=False):
    """Forward flow [X, Y, Z, 3] (voxels) moving the volume with mesh_a → mesh_b.

    mesh_a, mesh_b: trimesh objects, (vertices, faces) pairs, or lists of them (several meshes;
    mesh_b may give vertices only). World units; voxel (i, j, k) covers
    origin + [i, i+1]×[j, j+1]×[k, k+1]·voxel_size. band: distance in voxels over which the
    field fades to `background` (a flow in voxels: 3-vector or [X, Y, Z, 3], default 0).
    Inside a closed mesh: the blend of axis rays (ray_interpolation); outside: the local affine
    fit from nearby surface samples (local_affine_fit, k neighbours, samples every `spacing`
    voxels), evaluated every `stride` voxels and interpolated trilinearly (exact for affine
    motion; default 2 from 64 voxels up, else 1). Both reproduce affine motion exactly.
    Swap the meshes (mesh_motion_field(mesh_b, mesh_a, ...)) to get the backward flow on the
    second frame's grid, which is what VolumeWarper.step uses by default.
    """
    from .nearest import SampleGrid

    shape, origin, vs = _grid_params(shape, origin, voxel_size)
    band = check_number("band (voxels)", band, positive=False)
    k = check_int("k (neighbours)", k)
    spacing = check_number("spacing (voxels)", spacing)
    stride = check_int("stride", stride if stride is not None else 2 if max(shape) >= 64 else 1)
    A = _as_meshes(mesh_a, "mesh_a")
    B = _as_meshes(mesh_b, "mesh_b")
    if len(A) != len(B):
        raise ValueError(f"mesh_a has {len(A)} mesh(es) but mesh_b has {len(B)}")
    for m, ((Va, Fa), (Vb, Fb)) in enumerate(zip(A, B)):
        if Va.shape[0] != Vb.shape[0]:
            raise ValueError(f"mesh {m}: mesh_a has {Va.shape[0]} vertices but mesh_b has "
                             f"{Vb.shape[0]}; the meshes must share one topology")
        if Fa is not None and Fb is not None and not np.array_equal(Fa, Fb):
            raise ValueError(f"mesh {m}: mesh_a and mesh_b have different faces; the meshes "
                             "must share one topology")
        if Fa is not None and len(Fa) and (Fa.min() < 0 or Fa.max() >= len(Va)):
            raise ValueError(f"mesh {m}: face indices out of range for {len(Va)} vertices")
    if background is None:
        bg = np.zeros(3)
    else:
        bg = np.asarray(background, np.float64)
        if bg.shape not in ((3,), shape + (3,)) or not np.isfinite(bg).all():
            raise ValueError(f"background must be a finite 3-vector or {shape + (3,)} flow in voxels")

    lat = [_lattice(n, stride) for n in shape]
    lpts = np.stack(np.meshgrid(*lat, indexing="ij"), -1).reshape(-1, 3)
    num = np.zeros(shape + (3,), np.float32)
    wsum = np.zeros(shape, np.float32)
    inside_any = np.zeros(shape, bool)
    meshes = []
    for m, ((Va, Fa), (Vb, _)) in enumerate(zip(A, B)):
        P = (Va - origin) / vs
        D = (Vb - Va) / vs
        inside = np.zeros(shape, bool)
        n_open = open_edges(Fa) if Fa is not None and len(Fa) else 0
        if Fa is not None and len(Fa) and not n_open:
            inside = winding_numbers(P, Fa, shape) != 0
        elif n_open:
            warnings.warn(f"mesh {m} is not closed ({n_open} edge(s) not shared by exactly two triangles): "
                          f"it has no inside, so its motion reaches only {band:g} voxels from its surface and "
                          "fades to the background beyond; close the mesh to move its interior", stacklevel=2)
        meshes.append((P, D, Fa, inside))
        inside_any |= inside

    for P, D, Fa, inside in meshes:
        S, DS = surface_samples(P, D, Fa, spacing)
        if len(S) == 0:
            continue
        anchors = _anchors(S)
        SA, DA = S[anchors], DS[anchors]
        disp, dist = _band_fit(S, DS, (SA, DA), inside, shape, lat, lpts, stride, band, k, spacing)
        # inside a closed mesh: blend of axis rays (exact for affine motion, follows the surface)
        ins_ids = np.flatnonzero(inside)
        if len(ins_ids):
            d_in, valid = ray_interpolation(P, D, Fa, shape, ins_ids, vs)
            if not valid.all():   # no crossing pair on any axis (degenerate rays): the local fit
                bad = ins_ids[~valid]
                pts_bad = np.stack(np.unravel_index(bad, shape), 1) + 0.5
                d_in[~valid] = local_affine_fit(pts_bad, S, DS, SampleGrid(S), k=k, anchors=(SA, DA))[0]
            disp.reshape(-1, 3)[ins_ids] = d_in
        f = _smoothstep_falloff(dist, np.float32(band)) if band > 0 else np.zeros(shape, np.float32)
        f[inside] = 1.0
        f[inside_any & ~inside] = 0.0    # inside another mesh: that one wins
        num += f[..., None] * disp
        wsum += f
    over = wsum > 1.0
    if over.any():
        num[over] /= wsum[over][:, None]
        wsum[over] = 1.0
    if bg.ndim > 1 or bg.any():
        num += (1.0 - wsum)[..., None] * bg.astype(np.float32)
    if return_weight:
        return num, wsum
    return num


def grid_for_meshes(meshes, resolution, padding=None, band=3.0):
    """(shape, origin, voxel_size) of a cubic-voxel domain around all meshes (world units).

    resolution: voxels along the longest side; padding: world units added on every side
    (default: band voxels + 1).
    """
    pts = np.concatenate([V for ms in meshes for V, _ in _as_meshes(ms, "mesh")])
    lo, hi = pts.min(0), pts.max(0)
    ext = np.maximum(hi - lo, 1e-9)
    resolution = int(resolution)
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2; got {resolution}")
    pad_vox = (band + 1.0) if padding is None else None
    if pad_vox is not None:
        vs = ext.max() / max(resolution - 2 * pad_vox, 1)
        pad = pad_vox * vs
    else:
        pad = float(padding)
        vs = (ext.max() + 2 * pad) / resolution
    size = ext + 2 * pad
    shape = tuple(int(max(1, min(resolution, np.ceil(s / vs - 1e-9)))) for s in size)
    centre = (lo + hi) / 2
    origin = centre - np.array(shape) * vs / 2
    return shape, origin, float(vs)
