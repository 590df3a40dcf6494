"""3D flow-map noise (VolumeWarper(method="flowmap")): core2d.flowmap for voxels.

Every frame integrates one reference white-noise field over each voxel's preimage through the
composed map, so frames are exactly white and the noise does not diffuse (core2d.flowmap explains
the idea). In 3D:

- Reference field: an octree. Level-0 cells are the voxels of the frame a region starts in (its
  anchor), N(0, 1); the 8 children of a cell are x/8 + (sqrt|n|/8) Σ_m H_m(c) ν_m with the 7
  non-constant rows of the 8×8 Hadamard matrix, H_m(c) = (-1)^popcount(m & c): they sum to their
  parent, have variance = volume and are independent. Draws are keyed by (seed, anchor, level, i,
  j, k) (rng.VOLUME), so any cell is reproducible on demand.
- Composed map: each voxel keeps its 8 corners in its anchor's volume. A step carries them back
  along the backward flow as core2d.flowmap.compose does for pixels: the voxels around a vertex
  that move together share the corner (core2d.flowmap.links, .sources), trilinear patches with
  first-order extrapolation beyond them.
- Integration: a voxel's preimage is the hexahedron of its corners, cut into the six Freudenthal
  tetrahedra (neighbours cut a shared face along the same diagonal). The reference's cells at level
  `depth` are assigned by their centres, each to one voxel only (the lowest index where preimages
  overlap), and a voxel is the sum of its cells over the square root of their volume: white
  whatever the map, as every cell has one owner. Exact polyhedral overlaps (what the 2D warper
  computes with Green's theorem) are not attempted here, so motion moves the noise in quanta of
  8^-depth voxel: slow motion changes a frame in steps.
- New reference regions: revealed voxels (the `revealed` mask), degenerate preimages and, with the
  `reanchor` rule, over-distorted ones, which keep their 2×2×2 sub-cell integrals.
"""
import itertools
import sys

import numpy as np

from core2d import flowmap as flat
from core2d import grid, rng

DEPTH = 1            # reference cells of 1/2 voxel assigned by their centres
MAX_DEPTH = 2        # the kernel keeps a voxel's 8^depth cell values in registers (and depth >= KEEP)
KEEP = 1             # re-anchoring keeps 2×2×2 sub-cells of each voxel
REANCHOR = flat.REANCHOR
FAR = flat.FAR
MAX_SPAN = grid.MAX_SPAN
MIN_VOLUME = 1e-6
CORNERS = np.array([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], np.int64)   # corner c = 4dx + 2dy + dz
HADAMARD = np.array([[(-1) ** bin(m & c).count("1") for c in range(8)] for m in range(1, 8)], np.float32)


def _tets():
    """The six Freudenthal tetrahedra of the unit cube (corner indices), each ordered to have a
    positive volume: paths 000 -> 111 along the axes in every order."""
    out = []
    for order in itertools.permutations((4, 2, 1)):
        t = [0, order[0], order[0] | order[1], 7]
        p = CORNERS[t].astype(np.float64)
        if np.linalg.det(p[1:] - p[0]) < 0:
            t[1], t[2] = t[2], t[1]
        out.append(t)
    return np.array(out, np.int64)


TETS = _tets()


# ----------------------------------------------------------------------------- state
class VolumeMap:
    """M_{0<-t} of an [X, Y, Z] grid: corners [X, Y, Z, 8, 3] float64 in each voxel's anchor
    volume, anchor [X, Y, Z] int64, stored {anchor: (sorted voxel indices, sub-cells [n, 8, C])},
    the last backward flow [X, Y, Z, 3] and the frame `noise` [X, Y, Z, C] float32."""

    def __init__(self, corners, anchor, stored, noise, flow, jac):
        self.corners, self.anchor, self.stored, self.noise, self.flow = corners, anchor, stored, noise, flow
        self.jac = jac

    @classmethod
    def start(cls, shape, seed, channels, depth=DEPTH, backend="numpy"):
        """Frame 0: each voxel is its own level-0 cell of the region anchored at frame 0."""
        corners = identity_corners(shape)
        n = int(np.prod(shape))
        values = integrate_numpy if backend == "numpy" else integrate_taichi
        noise = values(corners.reshape(-1, 8, 3), np.ones(n), np.zeros(n, np.int64), np.stack([np.arange(n), 0 * np.arange(n)], -1),
                       {}, shape, seed, 0, channels, depth)[0]
        return cls(corners, np.zeros(shape, np.int64), {}, noise.reshape(tuple(shape) + (channels,)),
                   np.zeros(tuple(shape) + (3,), np.float32), np.broadcast_to(np.eye(3), tuple(shape) + (3, 3)).copy())

    def arrays(self) -> dict:
        ids = np.array(sorted(self.stored), np.int64)
        C = self.noise.shape[-1]
        return {"flowmap_corners": self.corners, "flowmap_anchor": self.anchor, "flowmap_flow": self.flow,
                "flowmap_jacobian": self.jac,
                "flowmap_stored_ids": ids,
                "flowmap_stored_count": np.array([len(self.stored[a][0]) for a in ids], np.int64),
                "flowmap_stored_voxels": (np.concatenate([self.stored[a][0] for a in ids]) if len(ids)
                                          else np.zeros(0, np.int64)),
                "flowmap_stored_values": (np.concatenate([self.stored[a][1] for a in ids]) if len(ids)
                                          else np.zeros((0, 8, C), np.float32))}

    @classmethod
    def from_arrays(cls, d, noise):
        shape, C = noise.shape[:3], noise.shape[3]
        corners, anchor = np.asarray(d["flowmap_corners"], np.float64), np.asarray(d["flowmap_anchor"], np.int64)
        flow, jac = np.asarray(d["flowmap_flow"], np.float32), np.asarray(d["flowmap_jacobian"], np.float64)
        if (corners.shape != shape + (8, 3) or anchor.shape != shape or flow.shape != shape + (3,)
                or jac.shape != shape + (3, 3)):
            raise ValueError(f"saved volume map has shapes {corners.shape}, {anchor.shape}, {flow.shape}, {jac.shape}; "
                             f"expected {shape + (8, 3)}, {shape}, {shape + (3,)}, {shape + (3, 3)}")
        stored, at = {}, 0
        vox, vals = np.asarray(d["flowmap_stored_voxels"], np.int64), np.asarray(d["flowmap_stored_values"], np.float32)
        for a, n in zip(np.asarray(d["flowmap_stored_ids"]).tolist(), np.asarray(d["flowmap_stored_count"]).tolist()):
            stored[int(a)] = (vox[at:at + n], vals[at:at + n])
            at += n
        return cls(corners.copy(), anchor.copy(), stored, np.asarray(noise, np.float32).copy(), flow.copy(), jac.copy())


def identity_corners(shape):
    idx = np.indices(shape).transpose(1, 2, 3, 0).astype(np.float64)
    return idx[:, :, :, None, :] + CORNERS[None, None, None].astype(np.float64)


# ----------------------------------------------------------------------------- reference field
def _gauss(seed, planes, level, i, j, k, m, channels):
    """Normals [n, C] of draw m of cell (i, j, k) at `level` (rng.VOLUME: m = 0 the level-0 value,
    1..7 the Hadamard normals)."""
    P = (channels + 1) // 2
    planes, i, j, k = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, np.int64)) for v in (planes, i, j, k)))
    out = np.empty((len(i), channels), np.float32)
    for pr in range(P):
        pair = ((8 * k + m) * P + pr) & 0xFFFFFFFF
        g0, g1 = rng.gauss_pair(seed, planes & 0xFFFFFFFF, rng.VOLUME + level, i.astype(np.uint32),
                                j.astype(np.uint32), pair.astype(np.uint32))
        out[:, 2 * pr] = g0
        if 2 * pr + 1 < channels:
            out[:, 2 * pr + 1] = g1
    return out


def _rows(table, query):
    """Row of each query row [m, w] in `table` [n, w] (int64 rows, every query present)."""
    t = np.ascontiguousarray(table).view(np.dtype((np.void, table.dtype.itemsize * table.shape[1]))).ravel()
    q = np.ascontiguousarray(query).view(t.dtype).ravel()
    order = np.argsort(t)
    return order[np.searchsorted(t[order], q)]


def cell_values(seed, planes, cells, depth, stored, shape, channels):
    """Values [n, C] of reference cells at level `depth` >= KEEP (cells [n, 3] integer indices at
    that level): top-down through the octree from the level-0 draws; below a re-anchored voxel,
    from its stored level-KEEP sub-cells."""
    n = len(cells)
    if n == 0:
        return np.zeros((0, channels), np.float32)
    X, Y, Z = shape
    key = np.concatenate([planes[:, None], cells], 1).astype(np.int64)
    nodes = [np.unique(np.concatenate([key[:, :1], key[:, 1:] >> (depth - level)], 1), axis=0)
             for level in range(depth + 1)]
    u = nodes[0]
    vals = _gauss(seed, u[:, 0], 0, u[:, 1], u[:, 2], u[:, 3], 0, channels)
    for level in range(1, depth + 1):
        u, pu = nodes[level], nodes[level - 1]
        p = _rows(pu, np.concatenate([u[:, :1], u[:, 1:] >> 1], 1))
        child = (u[:, 1] & 1) * 4 + (u[:, 2] & 1) * 2 + (u[:, 3] & 1)
        nu = np.stack([_gauss(seed, pu[p, 0], level - 1, pu[p, 1], pu[p, 2], pu[p, 3], m, channels)
                       for m in range(1, 8)], 1)                          # [n, 7, C]
        sd = np.float32(2.0 ** (-1.5 * (level - 1)) / 8)                  # sqrt|parent| / 8
        vals = vals[p] / np.float32(8) + sd * np.einsum("nm,nmc->nc", HADAMARD[:, child].T, nu)
        if level == KEEP:                                # re-anchored voxels: their stored sub-cells
            root = u[:, 1:] >> KEEP
            idx = (root[:, 0] * Y + root[:, 1]) * Z + root[:, 2]
            inside = np.all((root >= 0) & (root < np.array([X, Y, Z])), 1)
            for a, (vox, sub) in stored.items():
                at = np.minimum(np.searchsorted(vox, idx), len(vox) - 1)
                s = np.nonzero(inside & (u[:, 0] == a) & (vox[at] == idx))[0]
                vals[s] = sub[at[s], child[s]]
    return vals[_rows(nodes[depth], key)]


# ----------------------------------------------------------------------------- composed map
def patch(c, f):
    """M at local coordinates f [..., 3] of a voxel with corners c [..., 8, 3]: trilinear inside
    the voxel, first-order beyond it (exact at the corners, affine maps exact everywhere)."""
    g = np.clip(f, 0, 1)

    def lerp(a, b, t):
        return (1 - t[..., None]) * a + t[..., None] * b

    def tri(v):                          # v[..., 8, 3] at g
        z = [lerp(v[..., 2 * q, :], v[..., 2 * q + 1, :], g[..., 2]) for q in range(4)]   # (dx, dy) = q
        y = [lerp(z[2 * q], z[2 * q + 1], g[..., 1]) for q in range(2)]
        return lerp(y[0], y[1], g[..., 0])

    out = tri(c)
    for axis, bit in enumerate((4, 2, 1)):
        lo = [q for q in range(8) if not q & bit]
        diff = np.stack([c[..., q | bit, :] - c[..., q, :] for q in lo], -2)     # along the axis, 4 of them
        full = np.zeros_like(c)
        for n, q in enumerate(lo):
            full[..., q, :] = diff[..., n, :]
            full[..., q | bit, :] = diff[..., n, :]
        out = out + (f[..., axis] - g[..., axis])[..., None] * tri(full)
    return out


def compose(vm, flow, new, frame):
    """(corners, anchor) at the new frame from M_{0<-t-1} and the backward flow [X, Y, Z, 3]:
    core2d.flowmap.compose with voxels (8 around a vertex, 12 links between them)."""
    shape = flow.shape[:3]
    f64 = flow.astype(np.float64)
    src = flat.sources(vm.flow, flow, axes=(0, 1, 2))
    plane = np.where(new, frame, vm.anchor[src])
    F = grid.pad_linear(f64, axes=(0, 1, 2))
    P, N = np.pad(plane, 1, mode="edge"), np.pad(new, 1, mode="edge")
    Q = [np.pad(v, 1, mode="edge") for v in src]
    L = [flat.links(F, P, N, axis) for axis in range(3)]
    real = np.pad(np.ones(shape, bool), 1)
    v = np.indices(tuple(n + 1 for n in shape))
    pos = [tuple(v[a] + CORNERS[m, a] for a in range(3)) for m in range(8)]   # member m of each vertex, padded
    edges = []
    for m in range(8):
        for axis, bit in enumerate((4, 2, 1)):
            if not m & bit:
                idx = tuple(v[a] + (0 if a == axis else CORNERS[m, a]) for a in range(3))
                edges.append((m, m | bit, L[axis][idx]))
    label = [np.full(v[0].shape, m) for m in range(8)]
    for _ in range(4):                                   # components of the cube graph
        for a, b, e in edges:
            mn = np.where(e, np.minimum(label[a], label[b]), label[a])
            label[a] = mn
            label[b] = np.where(e, mn, label[b])
    value, moved = [], []
    for k in range(8):
        member = [label[m] == label[k] for m in range(8)]
        count = sum(m.astype(np.float64) for m in member)
        d = sum(np.where(member[m][..., None], F[pos[m]], 0.0) for m in range(8)) / count[..., None]
        s = np.stack([v[a] + d[..., a] for a in range(3)], -1)
        qs = [Q[a][pos[k]] for a in range(3)]          # fallback: the first real member's source
        first = np.zeros(v[0].shape, bool)
        for m in range(8):
            ok = member[m] & real[pos[m]]
            take = ok & ~first
            qs = [np.where(take, Q[a][pos[m]], qs[a]) for a in range(3)]
            first |= ok
        qs, inside = flat.corner_patch(vm.flow, vm.anchor, [s[..., a] for a in range(3)], d, P[pos[k]], qs)
        q = tuple(qs)
        inner = patch(vm.corners[q], s - np.stack(qs, -1))
        value.append(flat.extend(vm.corners[q], vm.jac[q], s - (np.stack(qs, -1) + 0.5), inside, inner))
        moved.append(d)
    X, Y, Z = shape
    corners, dc = np.empty(tuple(shape) + (8, 3)), np.empty(tuple(shape) + (8, 3))
    for c in range(8):                                   # voxel corner c sits at vertex voxel + c, as member 7 - c
        dx, dy, dz = CORNERS[c]
        corners[..., c, :] = value[7 - c][dx:dx + X, dy:dy + Y, dz:dz + Z]
        dc[..., c, :] = moved[7 - c][dx:dx + X, dy:dy + Y, dz:dz + Z]
    corners = np.where(new[..., None, None], identity_corners(shape), corners)
    # the Jacobian, carried: the source's times the step's (from this voxel's corner displacements)
    G = np.stack([dc[..., CORNERS[:, a] == 1, :].mean(-2) - dc[..., CORNERS[:, a] == 0, :].mean(-2) + np.eye(3)[a]
                  for a in range(3)], -1)
    jac = np.where(new[..., None, None], np.eye(3), vm.jac[src] @ G)
    return corners, plane, jac


def hexahedra(corners):
    """Per hexahedron [n, 8, 3]: orientation sign (+1, or -1 when mirrored), volume, stretch
    (longest edge³ / volume) and validity (finite, its six tetrahedra of one orientation, volume
    above MIN_VOLUME, span within MAX_SPAN)."""
    c = corners.reshape(-1, 8, 3)
    p = c[:, TETS]                                                   # [n, 6, 4, 3]
    vol = np.linalg.det(p[:, :, 1:] - p[:, :, :1]) / 6
    sign = np.where(vol.sum(1) < 0, -1.0, 1.0)
    volume = np.abs(vol.sum(1))
    edges = [(q, q | b) for q in range(8) for b in (4, 2, 1) if not q & b]
    longest = np.max([np.linalg.norm(c[:, b] - c[:, a], axis=-1) for a, b in edges], 0)
    span = (c.max(1) - c.min(1)).max(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        valid = (np.isfinite(volume) & np.isfinite(span) & np.all(vol * sign[:, None] > 0, 1)
                 & (volume > MIN_VOLUME) & (span <= MAX_SPAN))
        stretch = np.where(valid, longest ** 3 / np.maximum(volume, MIN_VOLUME), np.inf)
    return sign, volume, stretch, valid


def subhexahedra(corners):
    """The 2×2×2 sub-voxel hexahedra of each voxel [n, 8, 8, 3] (sub-cell s = 4sx + 2sy + sz)."""
    c = corners.reshape(-1, 8, 3)
    t = np.array([0.0, 0.5, 1.0])
    g = np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)          # 27 points
    V = patch(c[:, None], np.broadcast_to(g, (len(c), 27, 3))).reshape(len(c), 3, 3, 3, 3)
    out = np.empty((len(c), 8, 8, 3))
    for s in range(8):
        sx, sy, sz = CORNERS[s]
        for k in range(8):
            dx, dy, dz = CORNERS[k]
            out[:, s, k] = V[:, sx + dx, sy + dy, sz + dz]
    return out


# ----------------------------------------------------------------------------- integration
def owners(hexes, sign, planes, depth):
    """(cells [m, 3] at level `depth`, their plane, owner): every cell whose centre lies in a
    hexahedron, given to the lowest-index hexahedron that contains it."""
    h = 2.0 ** -depth
    lo = np.floor(hexes.min(1) / h).astype(np.int64)
    hi = np.maximum(np.ceil(hexes.max(1) / h).astype(np.int64) - 1, lo)
    span = hi - lo + 1
    n = span.prod(1)
    dst = np.repeat(np.arange(len(hexes)), n)                   # every cell of every bounding box
    k = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    sz = span[dst]
    cell = lo[dst] + np.stack([k // (sz[:, 1] * sz[:, 2]), (k // sz[:, 2]) % sz[:, 1], k % sz[:, 2]], 1)
    inside = _contains(hexes[dst], sign[dst], (cell + 0.5) * h)
    cell, dst = cell[inside], dst[inside]
    pl = planes[dst]
    order = np.lexsort((dst, cell[:, 2], cell[:, 1], cell[:, 0], pl))
    cell, dst, pl = cell[order], dst[order], pl[order]
    first = np.r_[True, np.any(np.diff(np.concatenate([pl[:, None], cell], 1), axis=0) != 0, 1)]
    return cell[first], pl[first], dst[first]


def _det3(a, b, c):
    """Determinant of rows a, b, c [n, 3], by cofactors (the same operations as the kernel)."""
    return (a[:, 0] * (b[:, 1] * c[:, 2] - b[:, 2] * c[:, 1]) - a[:, 1] * (b[:, 0] * c[:, 2] - b[:, 2] * c[:, 0])
            + a[:, 2] * (b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0]))


def _contains(hexes, sign, x):
    """Whether points x [n, 3] lie in (or on) hexahedra [n, 8, 3]: in one of their six tetrahedra,
    by the signs of the four sub-volumes (float64, relative to the hexahedron's first corner)."""
    o = hexes[:, :1]
    c, x = hexes - o, x - o[:, 0]
    inside = np.zeros(len(x), bool)
    for t in TETS:
        p = c[:, t]
        ok = np.ones(len(x), bool)
        for r in range(4):
            q = p.copy()
            q[:, r] = x
            ok &= sign * _det3(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0], q[:, 3] - q[:, 0]) >= 0
        inside |= ok
    return inside


def integrate_numpy(hexes, sign, planes, keys, stored, shape, seed, frame, channels, depth):
    """Unit-variance values [n, C] of hexahedra [n, 8, 3] in their planes: the sum of the cells
    they own over the square root of their volume; fresh noise (keyed by `keys`) for one that owns
    none. Returns (values, cells owned per hexahedron)."""
    n = len(hexes)
    cells, pl, owner = owners(hexes, sign, planes, depth)
    x = cell_values(seed, pl, cells, depth, stored, shape, channels)
    acc = np.zeros((n, channels), np.float64)
    np.add.at(acc, owner, x)
    count = np.bincount(owner, minlength=n).astype(np.float64)
    out = (acc / np.sqrt(np.maximum(count, 1) * 8.0 ** -depth)[:, None]).astype(np.float32)
    empty = count == 0
    if empty.any():
        out[empty] = rng.gauss(seed, frame, rng.FRESH, keys[empty, 0], keys[empty, 1], channels)
    return out, count


def integrate_taichi(*args):
    from . import _flowmap_kernels

    return _flowmap_kernels.integrate(sys.modules[__name__], *args)


# ----------------------------------------------------------------------------- one step
def step(vm, flow, revealed, seed, frame, depth=DEPTH, reanchor=REANCHOR, backend="numpy"):
    """The next VolumeMap (with its noise) and stats, for the backward flow [X, Y, Z, 3]."""
    shape, C = vm.noise.shape[:3], vm.noise.shape[3]
    flow = np.asarray(flow, np.float32)
    far = np.abs(flow).max(-1) >= FAR
    new = far if revealed is None else (far | revealed)
    flow = np.where(far[..., None], np.float32(0), flow)
    corners, anchor, jac = compose(vm, flow, new, frame)
    sign, volume, stretch, valid = hexahedra(corners)
    valid = valid.reshape(shape)
    degenerate = ~valid & ~new
    fresh = new | degenerate
    distorted = np.zeros(shape, bool)
    if reanchor:
        distorted = (((volume > reanchor) | (volume < 1 / reanchor) | (stretch > reanchor)).reshape(shape) & ~fresh)
    plain = ~fresh & ~distorted
    vox, rvox, fvox = (np.nonzero(m.ravel())[0] for m in (plain, distorted, fresh))
    sub = subhexahedra(corners.reshape(-1, 8, 3)[rvox]).reshape(-1, 8, 3)
    ssign, _, _, svalid = hexahedra(sub)
    hexes = np.concatenate([corners.reshape(-1, 8, 3)[vox], sub[svalid],
                            identity_corners(shape).reshape(-1, 8, 3)[fvox]])
    signs = np.concatenate([sign[vox], ssign[svalid], np.ones(len(fvox))])
    planes = np.concatenate([anchor.ravel()[vox], np.repeat(anchor.ravel()[rvox], 8)[svalid],
                             np.full(len(fvox), frame, np.int64)])
    keys = np.concatenate([np.stack([vox, 0 * vox], -1),
                           np.stack([np.repeat(rvox, 8), np.tile(np.arange(1, 9), len(rvox))], -1)[svalid],
                           np.stack([fvox, 0 * fvox], -1)]).astype(np.int64)
    values = integrate_numpy if backend == "numpy" else integrate_taichi
    value, count = values(hexes, signs, planes, keys, vm.stored, shape, seed, frame, C, depth)
    ns = int(svalid.sum())
    noise = np.empty(tuple(shape) + (C,), np.float32)
    flatn = noise.reshape(-1, C)
    flatn[vox] = value[:len(vox)]
    flatn[fvox] = value[len(vox) + ns:]
    stored = dict(vm.stored)
    if len(rvox):            # re-anchored: sub-cell integrals of the old reference, each of variance 1/8
        subv = np.empty((len(rvox) * 8, C), np.float32)
        subv[svalid] = value[len(vox):len(vox) + ns]
        bad = np.nonzero(~svalid)[0]
        subv[bad] = rng.gauss(seed, frame, rng.FRESH, rvox[bad // 8], 1 + bad % 8, C)
        subv = (subv / np.float32(np.sqrt(8))).reshape(len(rvox), 8, C)
        flatn[rvox] = subv.sum(1, dtype=np.float32)
        stored[frame] = (rvox.astype(np.int64), subv)
    start = fresh | distorted
    anchor = np.where(start, frame, anchor)
    corners = np.where(start[..., None, None], identity_corners(shape), corners)
    jac = np.where(start[..., None, None], np.eye(3), jac)
    live = set(np.unique(anchor).tolist())
    stored = {a: v for a, v in stored.items() if a in live}
    stats = {"anchors_started": int(start.sum()), "revealed_voxels": int(new.sum()),
             "reanchored_voxels": int(distorted.sum()), "fresh_volume": float(fresh.sum()),
             "degenerate_voxels": int(degenerate.sum()), "empty_voxels": int((count[:len(vox)] == 0).sum()),
             "anchors": len(live), "stored_voxels": int(sum(len(v[0]) for v in stored.values()))}
    return VolumeMap(corners, anchor, stored, noise, flow, jac), stats
