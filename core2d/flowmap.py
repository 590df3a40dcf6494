"""Flow-map noise: every frame integrates one reference white-noise field over each pixel's
preimage, so frames are exactly white and the noise never forgets where it was.

Frame-to-frame warpers build frame t from frame t-1's pixel values, so sub-pixel structure is
re-sampled every frame and lost (ALGORITHMS.md §5). Here the noise is defined once and only
ever integrated:

- Reference field. A reference region starts in some frame, its *anchor*; its level-0 cells are
  that frame's pixels, N(0, 1) keyed by (seed, anchor, i, j), on an unbounded plane (content
  entering the frame finds noise already defined there). The four children of a level-l cell
  are its value split by a Hadamard pattern: x/4 + (sqrt|n|/4) Σ_k H_k ν_k with three normals ν
  keyed by (seed, anchor, l, i, j), so children sum to their parent, have variance = area and are
  independent: any cell at any level is reproducible and consistent with every coarser one.
- Composed map M_{0<-t}. Each pixel keeps its four corners in its anchor's plane. A step carries
  them back along the backward flow, M_t(v) = M_{t-1}(v + B_t(v)), M_{t-1} evaluated in the pixel
  the corner came from (`sources`; bilinear inside it, beyond it along the pixel's carried
  Jacobian: `extend`). The pixels around a
  vertex that move together share one corner, bit for bit, so their preimages tile the plane;
  across a motion discontinuity or an anchor seam (`links`) they keep separate corners, so a
  static background keeps its noise bit for bit next to a moving object.
- Integration. Pixel p is y_p = W(R_p) / sqrt|R_p| over its preimage quad R_p. Each level-0 cell
  is partitioned among the quads that cover it, with everything about the cell decided from all
  of them at once: nodes covered by one quad go to it whole; nodes crossed by edges are refined
  down to `depth` levels with exact Green's-theorem areas (core2d.grid); a leaf shared by several
  quads is split by increments of one Brownian bridge per leaf, the quads taking consecutive
  intervals of lengths equal to their area fractions in pixel order (a split along x and one
  along y use independent bridges: `orientation`). Disjoint pieces of
  independent cells make every frame exactly i.i.d. N(0, 1); exact areas make each frame move by
  exactly the right amount however slow the motion; and a bridge realised by keyed midpoint
  displacement makes a piece change like a Brownian sheet when its edge moves (the frame neither
  freezes nor flickers).
- Folds. Where quads overlap (a cell's areas sum past 1), the cell is shared in priority order
  (largest overlap first, each taking what is left of it, `allocate`) by one bridge; a quad that
  lost area adds fresh noise of the variance it lost. A static pixel keeps its cell whole when a
  neighbour's preimage spills onto it.
- New reference regions. Revealed pixels (content not visible before: the `revealed` mask, or a
  backward flow of FAR or more), pixels whose preimage degenerated (collapse, bow-tie) and pixels
  whose preimage is too distorted (the `reanchor` rule: area outside [1/r, r] px² or elongation
  above r; zoom-out would otherwise grow the work per pixel without bound) start a new region
  keyed by the current frame. Re-anchored pixels keep their 4×4 sub-cell integrals of the old
  reference as the new region's values at level KEEP = 2, so re-anchoring costs little coherence.

Everything is arrays: a FlowMap holds the corners [H, W, 4, 2] (float64, x then y, corners in
the order top-left, top-right, bottom-right, bottom-left), the anchor of each pixel and the
stored sub-cells; `step_numpy` returns the next FlowMap and its noise frame.
"""
import itertools
import sys

import numpy as np

from . import grid, rng

DEPTH = 2             # default finest quadtree level along preimage edges (leaves of 1/4 px)
MAX_DEPTH = 6         # the streams leave room for 16 levels; deeper is pointless work
KEEP = 2              # re-anchoring keeps 2^KEEP × 2^KEEP sub-cells of each pixel
BRIDGE_RESOLUTION = 5  # leaf bridges resolve edge moves of 2^-5 px (finer: linear + one keyed fill)
REANCHOR = 4.0        # default re-anchoring threshold r
DISCONTINUITY = 0.1   # px: adjacent flows that differ by more, and by twice their neighbours' steps, split a corner
FAR = 1e5             # px: a backward flow this long points at nothing (core2d.flow.OUTSIDE): new content
MIN_AREA = grid.MIN_AREA
MAX_SPAN = grid.MAX_SPAN
# thresholds on float32 areas, as float32 (the kernels compare in float32 too)
WHOLE = np.float32(1 - 1e-6)   # one quad covering this much of a node takes it whole
COVERED = np.float32(1 - 1e-5)  # quads covering this much of a leaf cover it: the last interval ends at 1
FOLD = np.float32(1 + 1e-4)    # quads covering a node more than this: a fold
# Hadamard rows without the constant one: child (di, dj) is column 2·di + dj
HADAMARD = np.array([[1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], np.float32)
_CHILDREN = ((0, 0), (0, 1), (1, 0), (1, 1))


# ----------------------------------------------------------------------------- state
class FlowMap:
    """M_{0<-t} for an [H, W] grid: corners [H, W, 4, 2] float64 in each pixel's anchor plane,
    anchor [H, W] int64, stored {anchor: (sorted pixel indices, sub-cell values [n, 4^KEEP, C])},
    the last backward flow [H, W, 2] (which content moved how), each pixel's Jacobian jac
    [H, W, 2, 2] (∂M/∂x, ∂M/∂y as columns: carried, to extend the map beyond a patch) and the
    frame `noise` [H, W, C]."""

    def __init__(self, corners, anchor, stored, noise, flow, jac):
        self.corners, self.anchor, self.stored, self.noise, self.flow = corners, anchor, stored, noise, flow
        self.jac = jac

    @classmethod
    def start(cls, H, W, seed, channels, backend="numpy"):
        """Frame 0: every pixel is its own level-0 cell of the region anchored at frame 0 (drawn by
        the backend that will draw it again every frame the pixel stays still)."""
        corners = identity_corners(H, W)
        pix = np.arange(H * W)
        dest = Destinations(corners.reshape(-1, 4, 2), np.zeros(H * W, np.int64), _centres(pix, W).astype(np.float32),
                            np.stack([pix, 0 * pix], -1))
        values = _values_numpy if backend == "numpy" else _values_taichi
        noise = values(dest, {}, (H, W), seed, 0, channels, 0)[0].reshape(H, W, channels)
        return cls(corners, np.zeros((H, W), np.int64), {}, noise, np.zeros((H, W, 2), np.float32),
                   np.broadcast_to(np.eye(2), (H, W, 2, 2)).copy())

    def arrays(self) -> dict:
        """Plain arrays (for np.savez): corners, anchors, stored sub-cells."""
        ids = np.array(sorted(self.stored), np.int64)
        pix = [self.stored[a][0] for a in ids]
        vals = [self.stored[a][1] for a in ids]
        C = self.noise.shape[-1]
        return {"flowmap_corners": self.corners, "flowmap_anchor": self.anchor, "flowmap_flow": self.flow,
                "flowmap_jacobian": self.jac,
                "flowmap_stored_ids": ids,
                "flowmap_stored_count": np.array([len(p) for p in pix], np.int64),
                "flowmap_stored_pixels": np.concatenate(pix) if pix else np.zeros(0, np.int64),
                "flowmap_stored_values": (np.concatenate(vals) if vals else np.zeros((0, 1, C), np.float32))}

    @classmethod
    def from_arrays(cls, d, noise):
        H, W, C = noise.shape
        corners = np.asarray(d["flowmap_corners"], np.float64)
        anchor = np.asarray(d["flowmap_anchor"], np.int64)
        if corners.shape != (H, W, 4, 2) or anchor.shape != (H, W):
            raise ValueError(f"saved flow map has shapes {corners.shape}, {anchor.shape}; "
                             f"expected {(H, W, 4, 2)}, {(H, W)}")
        ids, counts = np.asarray(d["flowmap_stored_ids"]), np.asarray(d["flowmap_stored_count"])
        pix, vals = np.asarray(d["flowmap_stored_pixels"]), np.asarray(d["flowmap_stored_values"], np.float32)
        stored, at = {}, 0
        for a, n in zip(ids.tolist(), counts.tolist()):
            stored[int(a)] = (pix[at:at + n].astype(np.int64), vals[at:at + n])
            at += n
        flow, jac = np.asarray(d["flowmap_flow"], np.float32), np.asarray(d["flowmap_jacobian"], np.float64)
        if flow.shape != (H, W, 2) or jac.shape != (H, W, 2, 2):
            raise ValueError(f"saved flow map has a flow of shape {flow.shape} and Jacobians of shape {jac.shape}; "
                             f"expected {(H, W, 2)}, {(H, W, 2, 2)}")
        return cls(corners.copy(), anchor.copy(), stored, np.asarray(noise, np.float32).copy(), flow.copy(),
                   jac.copy())


def _centres(pix, W):
    i, j = np.divmod(pix, W)
    return np.stack([j + 0.5, i + 0.5], -1)


def identity_corners(H, W):
    """Each pixel's own square: corners (x, y) top-left, top-right, bottom-right, bottom-left."""
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([np.stack([jj, ii], -1), np.stack([jj + 1, ii], -1),
                     np.stack([jj + 1, ii + 1], -1), np.stack([jj, ii + 1], -1)], axis=2)


# ----------------------------------------------------------------------------- reference field
def _gauss(seed, planes, stream, a, b, pair0, pair_step, channels):
    """N(0,1) [n, C] keyed by (seed, plane, stream, a, b, pair0 + pr·pair_step) for channel pair pr;
    planes, a, b, pair0 broadcast to [n]."""
    planes, a, b, pair0 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, np.int64)) for v in (planes, a, b, pair0)))
    out = np.empty((len(a), channels), np.float32)
    for pr in range((channels + 1) // 2):
        g0, g1 = rng.gauss_pair(seed, planes & 0xFFFFFFFF, stream, a.astype(np.uint32), b.astype(np.uint32),
                                (pair0 + pr * pair_step).astype(np.uint32))
        out[:, 2 * pr] = g0
        if 2 * pr + 1 < channels:
            out[:, 2 * pr + 1] = g1
    return out


def reference_cells(seed, anchor, i, j, channels):
    """Level-0 cell values of the region anchored at `anchor` (i, j: any integers)."""
    return _gauss(seed, anchor, rng.REFERENCE, i, j, 0, 1, channels)


def _hadamard_normals(seed, planes, level, gi, gj, channels):
    """The three normals [n, 3, C] that split level-`level` nodes (gi, gj) into their children."""
    return np.stack([_gauss(seed, planes, rng.CHILDREN + level, gi, gj, k, 3, channels) for k in range(3)], 1)


# ----------------------------------------------------------------------------- composed map
def patch(c, fx, fy):
    """M at local coordinates (fx, fy) of a pixel with corners c [..., 4, 2]: bilinear inside the
    pixel, first-order (tangent) beyond it, so affine maps are exact everywhere and far points
    do not grow quadratically. Exact at the corners: (fx, fy) in {0, 1} returns a corner bit for bit."""
    fx, fy = fx[..., None], fy[..., None]
    tl, tr, br, bl = c[..., 0, :], c[..., 1, :], c[..., 2, :], c[..., 3, :]
    top = (1 - fx) * tl + fx * tr
    bottom = (1 - fx) * bl + fx * br
    out = (1 - fy) * top + fy * bottom
    beyond = (fx - np.clip(fx, 0, 1)) * (fy - np.clip(fy, 0, 1))
    return out - beyond * (((br - tr) - bl) + tl)


def links(F, plane, new, axis):
    """Whether adjacent (padded) pixels along `axis` move together: same anchor, both new or both
    not, and no flow discontinuity (a step above DISCONTINUITY and above twice the steps beside it)."""
    d = np.diff(F, axis=axis)
    J = np.abs(d).max(-1)
    n = J.shape[axis]
    prev = np.take(J, np.r_[0, np.arange(n - 1)], axis=axis)
    nxt = np.take(J, np.r_[np.arange(1, n), n - 1], axis=axis)
    context = np.maximum(np.where(np.arange(n).reshape([-1 if k == axis else 1 for k in range(J.ndim)]) > 0, prev, 0),
                         np.where(np.arange(n).reshape([-1 if k == axis else 1 for k in range(J.ndim)]) < n - 1, nxt, 0))
    disc = (J > DISCONTINUITY) & (J > 2 * context)
    same = (np.diff(plane, axis=axis) == 0) & (np.diff(new.astype(np.int8), axis=axis) == 0)
    return same & ~disc


def corner_patch(previous, anchor, s, d, plane, fallback):
    """The pixel whose patch of the previous map evaluates a corner's source s (index per array
    axis; s per array axis, d the group's flow, plane its anchor), and whether s lies in it: the
    pixel holding s if it moved alike (same anchor, last flow within DISCONTINUITY + half of d),
    else the nearest of its neighbours that moved alike, else `fallback` (a group member's
    source). Interpolating in a pixel of another motion would take the wrong content's map."""
    shape = anchor.shape
    n = len(shape)
    d = np.asarray(d, np.float64)
    prev = previous.astype(np.float64)
    tol = DISCONTINUITY + 0.5 * np.abs(d).max(-1)

    def alike(c):
        return (anchor[tuple(c)] == plane) & (np.abs(prev[tuple(c)] - d).max(-1) <= tol)

    def dist(c):
        return sum(np.maximum(np.maximum(c[a] - s[a], s[a] - (c[a] + 1)), 0) for a in range(n))

    c0 = [np.clip(np.floor(s[a]), 0, shape[a] - 1).astype(np.int64) for a in range(n)]
    best, bestd = [v.copy() for v in c0], np.where(alike(c0), dist(c0), np.inf)
    for off in itertools.product((-1, 0, 1), repeat=n):
        if any(off):
            c = [np.clip(c0[a] + o, 0, shape[a] - 1) for a, o in enumerate(off)]
            dc = dist(c)
            take = alike(c) & (dc < bestd)
            bestd = np.where(take, dc, bestd)
            best = [np.where(take, c[a], best[a]) for a in range(n)]
    found = np.isfinite(bestd)
    q = [np.where(found, best[a], fallback[a]) for a in range(n)]
    return q, dist(q) == 0


def extend(corners, jac, ds, inside, value):
    """Beyond the chosen patch (at the frame's or a region's edge), the previous map continued
    from the patch's centre along its carried Jacobian: M(c) + J ds, ds = s - c (components x, y
    [, z]); where s is inside, the patch's own `value`. Extrapolating the bilinear patch instead
    differences corners that were themselves extrapolated the frame before, and amplified their
    rounding errors every frame where content flows in (the frame's edge, a moving object's
    leading edge: 70 frames of a steady pan, 20 of a zoom out); the Jacobian is carried, not
    re-derived, so nothing grows. corners [..., V, D] and jac [..., D, D] of the chosen patch."""
    out = corners.mean(-2) + (jac @ ds[..., None])[..., 0]
    return np.where(inside[..., None], value, out)


def sources(previous, flow, axes=(1, 0)):
    """Each pixel's (or voxel's) source in the previous frame: the one holding the source of its
    centre (clamped to the grid), unless it moved unlike this one (its last flow differs by more
    than DISCONTINUITY + half of this flow): then the nearest neighbour (3×3 or 3×3×3) that moved
    alike. At a moving object's leading edge the source point can fall into a pixel labelled
    background whose other part was object; the background's map there would paste background
    noise onto the object. flow [*grid, D]; component k moves along array axis axes[k] ((dx, dy)
    for images, (x, y, z) for volumes). Returns the source's index along each array axis."""
    shape = flow.shape[:-1]
    f64 = flow.astype(np.float64)
    grids = np.indices(shape)
    s = [None] * len(shape)
    for k, ax in enumerate(axes):
        s[ax] = grids[ax] + 0.5 + f64[..., k]
    q = [np.clip(np.floor(s[ax]), 0, shape[ax] - 1).astype(np.int64) for ax in range(len(shape))]
    tol = DISCONTINUITY + 0.5 * np.abs(f64).max(-1)
    prev = previous.astype(np.float64)
    unlike = np.abs(prev[tuple(q)] - f64).max(-1) > tol
    if not unlike.any():                                # the common case: content moved as before
        return tuple(q)
    at = np.nonzero(unlike)                             # search the neighbours of the others only
    s_, q_, f_, tol_ = [v[at] for v in s], [v[at] for v in q], f64[at], tol[at]
    best_q = [v.copy() for v in q_]
    best = np.full(len(tol_), np.inf)                   # distance from the source point to the candidate
    for off in itertools.product((-1, 0, 1), repeat=len(shape)):
        if not any(off):
            continue
        c = [np.clip(q_[ax] + o, 0, shape[ax] - 1) for ax, o in enumerate(off)]
        d = sum(np.maximum(np.maximum(c[ax] - s_[ax], s_[ax] - (c[ax] + 1)), 0) for ax in range(len(shape)))
        take = (np.abs(prev[tuple(c)] - f_).max(-1) <= tol_) & (d < best)
        best = np.where(take, d, best)
        best_q = [np.where(take, c[ax], best_q[ax]) for ax in range(len(shape))]
    for ax in range(len(shape)):
        q[ax][at] = best_q[ax]
    return tuple(q)


def groundwork(fm, flow, new, frame):
    """What every corner of the new map needs, in padded coordinates (pixel (i, j) at (i+1, j+1)):
    the new anchors [H, W], the linearly extrapolated flow F [H+2, W+2, 2] (float64), each
    pixel's source pixel Qi, Qj [H+2, W+2] (edge-padded) and the links lh [H+2, W+1] ((a, b) with
    (a, b+1)) and lv [H+1, W+2] ((a, b) with (a+1, b))."""
    H, W = flow.shape[:2]
    f64 = flow.astype(np.float64)
    qi, qj = sources(fm.flow, flow)
    plane = np.where(new, frame, fm.anchor[qi, qj])
    F = grid.pad_linear(f64)
    P = np.pad(plane, 1, mode="edge")
    N = np.pad(new, 1, mode="edge")
    Qi, Qj = np.pad(qi, 1, mode="edge"), np.pad(qj, 1, mode="edge")
    return plane, F, Qi, Qj, links(F, P, N, 1), links(F, P, N, 0)


def compose(fm, flow, new, frame):
    """(corners, anchor, Jacobian) at the new frame from M_{0<-t-1} and the backward flow [H, W, 2].

    Each vertex's pixels are grouped by `links`; a group's corner is the previous map at
    v + (the group's mean flow), evaluated in the source pixel (of a group member's centre) that
    contains that point, else in the first member's. Members compute it identically, so it is
    shared bit for bit. `new` pixels get their own square in the plane anchored at `frame`.
    """
    H, W = flow.shape[:2]
    plane, F, Qi, Qj, lh, lv = groundwork(fm, flow, new, frame)
    real = np.pad(np.ones((H, W), bool), 1)
    Pl = np.pad(plane, 1, mode="edge")
    # the four pixels around vertex (vi, vj) in cycle order TL, TR, BR, BL (padded coordinates)
    vi, vj = np.mgrid[0:H + 1, 0:W + 1]
    pos = [(vi, vj), (vi, vj + 1), (vi + 1, vj + 1), (vi + 1, vj)]
    edges = [lh[vi, vj], lv[vi, vj + 1], lh[vi + 1, vj], lv[vi, vj]]   # TL-TR, TR-BR, BR-BL, BL-TL
    label = [np.full(vi.shape, k) for k in range(4)]
    for _ in range(3):                                                # components of a 4-cycle
        for e, (a, b) in enumerate(((0, 1), (1, 2), (2, 3), (3, 0))):
            m = np.where(edges[e], np.minimum(label[a], label[b]), label[a])
            label[a] = m
            label[b] = np.where(edges[e], m, label[b])
    vx, vy = vj.astype(np.float64), vi.astype(np.float64)
    value, moved = [], []
    for k in range(4):                  # the corner seen from the pixel at position k
        member = [label[m] == label[k] for m in range(4)]
        count = sum(m.astype(np.float64) for m in member)
        d = sum(np.where(member[m][..., None], F[pos[m]], 0.0) for m in range(4)) / count[..., None]
        sx, sy = vx + d[..., 0], vy + d[..., 1]
        qi_c, qj_c = Qi[pos[k]], Qj[pos[k]]         # fallback: the first real member's source
        first = np.zeros(vi.shape, bool)
        for m in range(4):
            ok = member[m] & real[pos[m]]
            take_first = ok & ~first
            qi_c = np.where(take_first, Qi[pos[m]], qi_c)
            qj_c = np.where(take_first, Qj[pos[m]], qj_c)
            first |= ok
        (qi_c, qj_c), inside = corner_patch(fm.flow, fm.anchor, [sy, sx], d, Pl[pos[k]], [qi_c, qj_c])
        v = patch(fm.corners[qi_c, qj_c], sx - qj_c, sy - qi_c)
        ds = np.stack([sx - (qj_c + 0.5), sy - (qi_c + 0.5)], -1)
        value.append(extend(fm.corners[qi_c, qj_c], fm.jac[qi_c, qj_c], ds, inside, v))
        moved.append(d)
    # pixel (i, j): its TL corner is vertex (i, j) where it sits at BR (k=2), TR is (i, j+1) at BL (3),
    # BR is (i+1, j+1) at TL (0), BL is (i+1, j) at TR (1)
    def per_pixel(v):
        return np.stack([v[2][:-1, :-1], v[3][:-1, 1:], v[0][1:, 1:], v[1][1:, :-1]], axis=2)

    corners = np.where(new[..., None, None], identity_corners(H, W), per_pixel(value))
    # the Jacobian, carried: the source's times the step's (from this pixel's corner displacements)
    dc = per_pixel(moved)
    gx = (dc[:, :, 1] + dc[:, :, 2]) / 2 - (dc[:, :, 0] + dc[:, :, 3]) / 2
    gy = (dc[:, :, 3] + dc[:, :, 2]) / 2 - (dc[:, :, 0] + dc[:, :, 1]) / 2
    G = np.stack([gx + np.array([1.0, 0.0]), gy + np.array([0.0, 1.0])], -1)          # columns ∂s/∂x, ∂s/∂y
    jac = fm.jac[Qi[1:-1, 1:-1], Qj[1:-1, 1:-1]] @ G
    jac = np.where(new[..., None, None], np.eye(2), jac)
    return corners, plane, jac


def preimages(corners):
    """Oriented quads [n, 4, 2], their area, elongation (perimeter² / 16·area) and validity
    (finite, not self-intersecting, area above MIN_AREA, span within MAX_SPAN)."""
    P = np.ascontiguousarray(corners, np.float64).reshape(-1, 4, 2)
    area = _shoelace64(P)
    P = np.where((area < 0)[:, None, None], P[:, ::-1], P)
    area = np.abs(area)
    x, y = [P[:, e, 0] for e in range(4)], [P[:, e, 1] for e in range(4)]
    dx, dy = [x[(e + 1) % 4] - x[e] for e in range(4)], [y[(e + 1) % 4] - y[e] for e in range(4)]
    reflex = sum((dx[e] * dy[(e + 1) % 4] - dy[e] * dx[(e + 1) % 4] < 0).astype(np.int8) for e in range(4))
    perimeter = sum(np.sqrt(dx[e] ** 2 + dy[e] ** 2) for e in range(4))
    span = np.maximum(np.maximum.reduce(x) - np.minimum.reduce(x), np.maximum.reduce(y) - np.minimum.reduce(y))
    with np.errstate(invalid="ignore", over="ignore"):
        valid = np.isfinite(area) & np.isfinite(span) & (reflex <= 1) & (area > MIN_AREA) & (span <= MAX_SPAN)
        elongation = np.where(valid, perimeter ** 2 / (16 * np.maximum(area, MIN_AREA)), np.inf)
    return P, area, elongation, valid


def _shoelace64(P):
    x = [P[..., e, 0] - P[..., 0, 0] for e in range(4)]
    y = [P[..., e, 1] - P[..., 0, 1] for e in range(4)]
    return 0.5 * sum(x[e] * y[(e + 1) % 4] - x[(e + 1) % 4] * y[e] for e in range(4))


def subquads(corners, K):
    """The K×K sub-pixel quads of each pixel [n, K², 4, 2] (points of its bilinear patch, so the
    sub-quads along an edge shared with a neighbour use points of that edge)."""
    c = corners.reshape(-1, 4, 2)
    t = np.arange(K + 1, dtype=np.float64) / K
    fy, fx = np.meshgrid(t, t, indexing="ij")
    V = patch(c[:, None, None], np.broadcast_to(fx, (len(c), K + 1, K + 1)),
              np.broadcast_to(fy, (len(c), K + 1, K + 1)))          # [n, K+1, K+1, 2]
    Q = np.stack([V[:, :-1, :-1], V[:, :-1, 1:], V[:, 1:, 1:], V[:, 1:, :-1]], axis=3)
    return Q.reshape(len(c), K * K, 4, 2)


# ----------------------------------------------------------------------------- integration
def node_fraction(P, ci, cj, level, oi, oj):
    """|quad ∩ node| / |node| for node (oi, oj) at `level` of level-0 cell (ci, cj): quads P
    [n, 4, 2] float64 are moved to their cell (float64, then float32: small numbers), then to the
    node's unit square (power-of-two scaling: exact), then core2d.grid's Green-integral overlap;
    a quad beside the node is 0 exactly."""
    local = (P - np.stack([cj, ci], -1)[:, None, :]).astype(np.float32)
    local = local * np.float32(2 ** level) - np.stack([oj, oi], -1)[:, None, :].astype(np.float32)
    z = np.zeros(len(P), np.float32)
    lo, hi = local.min(1), local.max(1)
    away = (lo >= 1).any(-1) | (hi <= 0).any(-1)
    return np.where(away, np.float32(0), grid.cell_overlap(local, z, z))


def requests(P, plane):
    """Level-0 requests of quads P [n, 4, 2] in their planes: (dst, plane, ci, cj, A) for every
    cell of each quad's bounding box it overlaps, sorted by (plane, ci, cj, dst)."""
    lo = np.floor(P.min(1)).astype(np.int64)
    hi = np.maximum(np.ceil(P.max(1)).astype(np.int64) - 1, lo)
    ny, nx = (hi - lo + 1)[:, 1], (hi - lo + 1)[:, 0]
    out = []
    for oy in range(int(ny.max(initial=0))):
        for ox in range(int(nx.max(initial=0))):
            dst = np.nonzero((oy < ny) & (ox < nx))[0]
            ci, cj = lo[dst, 1] + oy, lo[dst, 0] + ox
            A = node_fraction(P[dst], ci, cj, 0, np.zeros_like(ci), np.zeros_like(cj))
            keep = A > 0
            out.append((dst[keep], ci[keep], cj[keep], A[keep]))
    dst, ci, cj, A = (np.concatenate(v) for v in zip(*out)) if out else (np.zeros(0, np.int64),) * 4
    pl = plane[dst]
    order = np.lexsort((dst, cj, ci, pl))
    return dst[order], pl[order], ci[order], cj[order], A[order].astype(np.float32)


def _segments(*keys):
    """Segment id of each row of rows sorted by keys, and the segment starts."""
    n = len(keys[0])
    change = np.zeros(n, bool)
    if n:
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
    starts = np.nonzero(change)[0]
    return np.cumsum(change) - 1, starts


def _segment_sum(v, seg, nseg):
    out = np.zeros((nseg,) + v.shape[1:], np.float32)
    np.add.at(out, seg, v)
    return out


class _Cells:
    """The level-0 cells the requests touch, with whether each is stored (re-anchored) and folded."""

    def __init__(self, dst, plane, ci, cj, A, stored, shape):
        self.seg, self.starts = _segments(plane, ci, cj)
        n = len(self.starts)
        self.plane, self.ci, self.cj = plane[self.starts], ci[self.starts], cj[self.starts]
        self.T = _segment_sum(A, self.seg, n)
        self.fold = self.T > FOLD
        self.stored_row = np.full(n, -1, np.int64)      # row in stored[plane][1], or -1
        H, W = shape
        for a, (pix, _) in stored.items():
            sel = np.nonzero((self.plane == a) & (self.ci >= 0) & (self.ci < H) & (self.cj >= 0) & (self.cj < W))[0]
            if sel.size:
                idx = self.ci[sel] * W + self.cj[sel]
                at = np.minimum(np.searchsorted(pix, idx), len(pix) - 1)
                hit = pix[at] == idx
                self.stored_row[sel[hit]] = at[hit]

    def values(self, cells, seed, stored, channels):
        """Level-0 values of `cells`: the sum of the stored sub-cells, or the reference draw."""
        x = reference_cells(seed, self.plane[cells], self.ci[cells], self.cj[cells], channels)
        for a, (_, vals) in stored.items():
            sel = np.nonzero((self.stored_row[cells] >= 0) & (self.plane[cells] == a))[0]
            if sel.size:
                x[sel] = vals[self.stored_row[cells[sel]]].sum(1, dtype=np.float32)
        return x


def _tree(P, req, cells, depth):
    """Level by level: the nodes each request's quad covers inside its cell (non-fold cells).

    Nodes covered by one quad are whole; other nodes are split into their children down to
    `depth`, then they are leaves (stored cells: always down to KEEP, where their values are).
    Returns per level l a dict of entry arrays (request r, node oi, oj,
    fraction f, split, leaf, and the children fractions of split entries) and the cells found
    folded below level 0 (quads overlapping inside a cell whose areas do not sum past 1).
    """
    dst, ci, cj = req
    stored = cells.stored_row >= 0
    r = np.nonzero(~cells.fold[cells.seg])[0]
    zero = np.zeros(len(r), np.int64)
    f = node_fraction(P[dst[r]], ci[r], cj[r], 0, zero, zero)
    levels, folded = [], np.zeros(len(cells.plane), bool)
    oi, oj = zero, zero
    for level in range(max(depth, KEEP) + 1):
        c = cells.seg[r]
        order = np.lexsort((dst[r], oj, oi, c))
        r, oi, oj, f, c = r[order], oi[order], oj[order], f[order], c[order]
        node, starts = _segments(c, oi, oj)
        count = np.diff(np.r_[starts, len(r)])[node]
        T = _segment_sum(f, node, len(starts))[node]
        folded[c[T > FOLD]] = True
        whole = (count == 1) & (f >= WHOLE)
        opened = ~whole | (stored[c] & (level < KEEP))
        split = opened & (level < np.where(stored[c], max(depth, KEEP), depth))
        levels.append(dict(r=r, oi=oi, oj=oj, f=f, node=node, split=split, leaf=opened & ~split))
        o = np.nonzero(split)[0]
        if o.size == 0:
            break
        kids = np.stack([node_fraction(P[dst[r[o]]], ci[r[o]], cj[r[o]], level + 1, 2 * oi[o] + di, 2 * oj[o] + dj)
                         for di, dj in _CHILDREN], 1)
        levels[-1]["children"] = (o, kids)
        keep = kids > 0
        rows, which = np.nonzero(keep)
        r = r[o][rows]
        oi = 2 * oi[o][rows] + np.array([d[0] for d in _CHILDREN])[which]
        oj = 2 * oj[o][rows] + np.array([d[1] for d in _CHILDREN])[which]
        f = kids[rows, which]
    return levels, folded


def orientation(seg, where):
    """Which bridge a leaf uses: 0 for two quads side by side (the edge between them is closer to
    vertical), 1 for two quads one above the other, 2 otherwise. A split along x and one along y
    then use independent bridges, as the strips they cut overlap only by the product of their
    fractions (one bridge for both would correlate them wrongly when an edge turns a corner).
    Rows are parties of leaves (segments seg) with their destinations' positions `where` [n, 2]."""
    n = len(seg)
    if n == 0:
        return np.zeros(0, np.int64)
    first = np.r_[True, seg[1:] != seg[:-1]]
    last = np.r_[seg[1:] != seg[:-1], True]
    a = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    b = np.minimum.accumulate(np.where(last, np.arange(n), n)[::-1])[::-1]
    d = np.abs(where[b] - where[a])
    return np.where(b - a == 1, np.where(d[:, 0] >= d[:, 1], 0, 1), 2)


def bridge_levels(depth):
    """Dyadic levels of a leaf's bridge: enough to resolve 2^-BRIDGE_RESOLUTION px of edge motion
    (slower motion would change the frame too little), at least 2."""
    return max(2, BRIDGE_RESOLUTION - depth)


def _bridge(seed, plane, level, gi, gj, party, seg, a, o, channels, D):
    """Random parts of bridge pieces. Rows are the parties of leaves (segments `seg`, parties in
    pixel order) with area fractions a (Σ ≤ 1 per leaf; a sum of COVERED or more is 1: the
    leaf is covered) and the leaf's orientation o; leaf cells have side 2^-level. Party k
    takes the interval [s_{k-1}, s_k] of the leaf's Brownian bridge b (s_k = cumulative fractions),
    i.e. sqrt|leaf| (b(s_k) - b(s_{k-1})): b at dyadic points by midpoint displacement keyed by the
    leaf and o down to D levels, inside the finest interval linear plus a fill keyed by the party
    and the interval (several points in one interval are conditioned in order), b(1) = 0 (the
    leftover is the rest)."""
    n = len(a)
    P = (channels + 1) // 2
    first = np.r_[True, seg[1:] != seg[:-1]] if n else np.zeros(0, bool)
    last = np.r_[seg[1:] != seg[:-1], True] if n else np.zeros(0, bool)
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    s = a.astype(np.float32).copy()
    for k in range(1, int(rank.max(initial=0)) + 1):       # cumulative, in order, in float32 (as the kernel)
        i = np.nonzero(rank == k)[0]
        s[i] = s[i - 1] + a[i]
    s[last & (s >= COVERED)] = 1                     # a covered leaf: no leftover but rounding
    lo, hi = np.zeros(n, np.float32), np.ones(n, np.float32)
    blo, bhi = np.zeros((n, channels), np.float32), np.zeros((n, channels), np.float32)
    node = np.ones(n, np.int64)
    walk = s < 1                                            # b(1) = 0 needs no walk
    for _ in range(D):
        mid = np.float32(0.5) * (lo + hi)
        nu = np.zeros((n, channels), np.float32)
        for k in range(3):
            sel = walk & (o == k)
            nu[sel] = _gauss(seed, plane[sel], rng.BRIDGE + 16 * k + level, gi[sel], gj[sel], node[sel] * P, 1,
                             channels)
        bm = np.float32(0.5) * (blo + bhi) + np.sqrt(np.float32(0.25) * (hi - lo))[:, None] * nu
        right = s >= mid
        lo, blo = np.where(right, mid, lo), np.where(right[:, None], bm, blo)
        hi, bhi = np.where(right, hi, mid), np.where(right[:, None], bhi, bm)
        node = 2 * node + right
    # the fill normal is keyed by the party and the interval: the same point moving across
    # intervals gets independent fills, two points in one interval too
    fill = np.zeros((n, channels), np.float32)
    for k in range(3):
        sel = walk & (o == k)
        fill[sel] = _gauss(seed, plane[sel], rng.BRIDGE_FILL + 16 * k + level, gi[sel], gj[sel],
                           ((party[sel] << (D + 1)) + node[sel]) * P & 0xFFFFFFFF, 1, channels)
    # points sharing a finest interval are conditioned in order: the previous one is the left end
    run = first | np.r_[True, node[1:] != node[:-1]] if n else first
    rank = np.arange(n) - np.maximum.accumulate(np.where(run, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    b = np.zeros((n, channels), np.float32)
    for k in range(int(rank.max(initial=-1)) + 1):
        i = np.nonzero(rank == k)[0]
        left_s, left_b = (lo[i], blo[i]) if k == 0 else (s[i - 1], b[i - 1])
        span = hi[i] - left_s
        ok = (span > 0)[:, None]
        safe = np.where(span > 0, span, np.float32(1))
        t = ((s[i] - left_s) / safe)[:, None]
        sd = np.sqrt(np.maximum((s[i] - left_s) * (hi[i] - s[i]) / safe, np.float32(0)))[:, None]
        b[i] = np.where(ok, left_b + t * (bhi[i] - left_b) + sd * fill[i], left_b)
        b[i[s[i] >= 1]] = 0                               # b(1) = 0: the bridge ends at the cell's value
    prev = np.zeros_like(b)
    prev[~first] = b[np.nonzero(~first)[0] - 1]
    return np.float32(2.0 ** -level) * (b - prev)


def allocate(seg, A, dst):
    """Shares of a folded cell: its quads in priority order (largest overlap first, then pixel
    order) take their whole overlap while the cell lasts, a = min(A, 1 - the overlaps before).
    A static pixel that covers a cell keeps it whole when a neighbour's preimage spills onto it."""
    n = len(A)
    order = np.lexsort((dst, -A, seg))
    As, sg = A[order].astype(np.float32), seg[order]
    first = np.r_[True, sg[1:] != sg[:-1]] if n else np.zeros(0, bool)
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, np.int64)
    before = np.zeros(n, np.float32)
    for k in range(1, int(rank.max(initial=0)) + 1):       # float32, in priority order (as the kernel)
        i = np.nonzero(rank == k)[0]
        before[i] = before[i - 1] + As[i - 1]
    a = np.empty(n, np.float32)
    a[order] = np.minimum(As, np.maximum(np.float32(1) - before, np.float32(0)))
    return a


def integrate(P, plane, where, stored, shape, seed, channels, depth):
    """Integrate the reference fields over quads P [n, 4, 2] (valid, positively oriented) in their
    planes (`where` [n, 2]: their positions in the frame, for `orientation`): returns (sum of
    pieces [n, C], claimed area [n], area lost to folds [n], whether each quad touches a fold,
    requests)."""
    n = len(P)
    dst, pl, ci, cj, A = requests(P, plane)
    cells = _Cells(dst, pl, ci, cj, A, stored, shape)
    acc = np.zeros((n, channels), np.float64)
    claimed, missing = np.zeros(n, np.float64), np.zeros(n, np.float64)
    while True:                                           # folds found below level 0 make their cell flat
        levels, folded = _tree(P, (dst, ci, cj), cells, depth)
        if not folded.any():
            break
        cells.fold |= folded
    stored_cell = cells.stored_row >= 0
    # folded cells: `allocate`d shares of the level-0 value, split by a level-0 bridge
    rf = np.nonzero(cells.fold[cells.seg])[0]
    if rf.size:
        c = cells.seg[rf]
        a = allocate(c, A[rf], dst[rf])
        x = cells.values(c, seed, stored, channels)
        np.add.at(acc, dst[rf], a[:, None] * x)
        np.add.at(claimed, dst[rf], a)
        np.add.at(missing, dst[rf], A[rf] - a)
        k = a > 0
        rk = rf[k]
        o = orientation(c[k], where[dst[rk]])
        np.add.at(acc, dst[rk], _bridge(seed, pl[rk], 0, ci[rk], cj[rk], dst[rk], c[k], a[k], o, channels,
                                        bridge_levels(depth)))
    # other cells: the level-0 value, Hadamard terms of refined nodes, stored sub-cells, bridges
    K = 2 ** KEEP
    for level, e in enumerate(levels):
        r, c = e["r"], cells.seg[e["r"]]
        if level == 0:
            plain = ~stored_cell[c]
            x = cells.values(c[plain], seed, stored, channels)
            np.add.at(acc, dst[r[plain]], e["f"][plain, None] * x)
            np.add.at(claimed, dst[r], e["f"])
        if level == KEEP:
            for a, (_, vals) in stored.items():
                s = np.nonzero(stored_cell[c] & (cells.plane[c] == a))[0]
                v = vals[cells.stored_row[c[s]], e["oi"][s] * K + e["oj"][s]]
                np.add.at(acc, dst[r[s]], e["f"][s, None] * v)
        gi, gj = ci[r] * 2 ** level + e["oi"], cj[r] * 2 ** level + e["oj"]
        if "children" in e:
            o, kids = e["children"]
            h = ~stored_cell[c[o]] | (level >= KEEP)
            o, kids = o[h], kids[h]
            if o.size:
                nu = _hadamard_normals(seed, pl[r[o]], level, gi[o], gj[o], channels)     # [m, 3, C]
                coef = np.float32(2.0 ** -level / 4) * (kids @ HADAMARD.T)              # [m, 3]
                np.add.at(acc, dst[r[o]], np.einsum("mk,mkc->mc", coef, nu))
        if e["leaf"].any():
            leaf = np.nonzero(e["leaf"])[0]
            if leaf.size:
                node = e["node"][leaf]
                T = _segment_sum(e["f"][leaf], node, node.max() + 1)[node]
                a = e["f"][leaf] / np.maximum(T, np.float32(1))
                o = orientation(node, where[dst[r[leaf]]])
                piece = _bridge(seed, pl[r[leaf]], level, gi[leaf], gj[leaf], dst[r[leaf]], node, a, o, channels,
                                bridge_levels(depth))
                np.add.at(acc, dst[r[leaf]], piece)
    fold = np.zeros(n, bool)
    fold[dst[cells.fold[cells.seg]]] = True
    return acc, claimed, missing, fold, len(dst)


# ----------------------------------------------------------------------------- one step
def step_numpy(fm, flow, revealed, seed, frame, depth=DEPTH, reanchor=REANCHOR):
    """Reference: the next FlowMap (with its noise frame) and stats, for the backward flow
    [H, W, 2] and a bool mask of revealed pixels (or None)."""
    return _step(fm, flow, revealed, seed, frame, depth, reanchor, compose, _values_numpy)


def step_taichi(fm, flow, revealed, seed, frame, depth=DEPTH, reanchor=REANCHOR):
    """The same step with the Taichi kernels (same RNG stream; agrees with `step_numpy` to float
    tolerance; the bytes do not depend on the thread count)."""
    _kernels()
    return _step(fm, flow, revealed, seed, frame, depth, reanchor, _compose_taichi, _values_taichi)


class Destinations:
    """The quads a frame integrates: P [n, 4, 2] (valid, positively oriented) in their anchor
    planes [n], their positions in the frame `where` [n, 2] (for `orientation`) and the keys
    [n, 2] of the fresh noise that replaces area lost to folds."""

    def __init__(self, P, plane, where, key):
        self.P, self.plane, self.where, self.key = P, plane, where, key


def _values_numpy(dest, stored, shape, seed, frame, channels, depth):
    """Unit-variance values [n, C] of the destinations: their pieces, plus fresh noise for the
    area they lost to folds, over the square root of the area."""
    acc, claimed, missing, fold, nreq = integrate(dest.P, dest.plane, dest.where, stored, shape, seed, channels, depth)
    fresh = np.zeros_like(acc)
    m = missing > 0
    fresh[m] = _gauss(seed, frame, rng.FRESH, dest.key[m, 0], dest.key[m, 1], 0, 1, channels)
    value = (acc + np.sqrt(missing)[:, None] * fresh) / np.sqrt(np.maximum(claimed + missing, 1e-30))[:, None]
    return value.astype(np.float32), fold, nreq


def _step(fm, flow, revealed, seed, frame, depth, reanchor, compose_fn, values_fn):
    H, W, C = fm.noise.shape
    flow = np.asarray(flow, np.float32)
    far = np.abs(flow).max(-1) >= FAR
    new = far if revealed is None else (far | revealed)
    corners, anchor, jac = compose_fn(fm, np.ascontiguousarray(np.where(far[..., None], 0, flow), np.float32), new,
                                      frame)
    P, area, elongation, valid = preimages(corners)
    valid = valid.reshape(H, W)
    degenerate = ~valid & ~new
    fresh = new | degenerate
    distorted = np.zeros((H, W), bool)
    if reanchor:
        distorted = (((area > reanchor) | (area < 1 / reanchor) | (elongation > reanchor)).reshape(H, W)
                     & ~fresh)
    plain = ~fresh & ~distorted
    K = 2 ** KEEP
    # destinations: plain pixels' quads, the K² sub-quads of re-anchored pixels (both in their old
    # planes), and the revealed/degenerate pixels' own squares: level-0 cells of the plane that starts now
    pix, rpix, fpix = (np.nonzero(m.ravel())[0] for m in (plain, distorted, fresh))
    Q, _, _, qvalid = preimages(subquads(corners[distorted], K))       # [m·K², 4, 2]
    sub = (np.arange(K, dtype=np.float32) + np.float32(0.5)) / np.float32(K)
    sy, sx = np.meshgrid(sub, sub, indexing="ij")
    ii, jj = np.divmod(rpix, W)
    dest = Destinations(
        np.concatenate([P[pix], Q[qvalid], identity_corners(H, W).reshape(-1, 4, 2)[fpix]]),
        np.concatenate([anchor.ravel()[pix], np.repeat(anchor.ravel()[rpix], K * K)[qvalid],
                        np.full(len(fpix), frame, np.int64)]),
        np.concatenate([_centres(pix, W), np.stack([jj[:, None] + sx.ravel(), ii[:, None] + sy.ravel()],
                                                   -1).reshape(-1, 2)[qvalid], _centres(fpix, W)]).astype(np.float32),
        np.concatenate([np.stack([pix, 0 * pix], -1),    # fresh-noise keys: (pixel, 0) or (pixel, 1 + sub-cell)
                        np.stack([np.repeat(rpix, K * K), np.tile(np.arange(1, K * K + 1), len(rpix))], -1)[qvalid],
                        np.stack([fpix, 0 * fpix], -1)]).astype(np.int64))
    value, fold, nreq = values_fn(dest, fm.stored, (H, W), seed, frame, C, depth)
    nq = int(qvalid.sum())
    noise = np.empty((H, W, C), np.float32)
    noise.reshape(-1, C)[pix] = value[:len(pix)]
    noise.reshape(-1, C)[fpix] = value[len(pix) + nq:]
    folded = np.zeros(H * W, bool)
    folded[pix] = fold[:len(pix)]
    stored = dict(fm.stored)
    if distorted.any():      # re-anchored: sub-cell integrals of the old reference, each of variance 1/K²
        sub = np.empty((len(rpix) * K * K, C), np.float32)
        sub[qvalid] = value[len(pix):len(pix) + nq]
        bad = np.nonzero(~qvalid)[0]
        sub[bad] = rng.gauss(seed, frame, rng.FRESH, rpix[bad // (K * K)], 1 + bad % (K * K), C)
        sub = (sub / np.float32(K)).reshape(len(rpix), K * K, C)
        noise.reshape(-1, C)[rpix] = sub.sum(1, dtype=np.float32)
        stored[frame] = (rpix.astype(np.int64), sub)
        owner = np.repeat(np.arange(len(rpix)), K * K)[qvalid]
        folded[rpix] = np.bincount(owner, weights=fold[len(pix):len(pix) + nq], minlength=len(rpix)) > 0
    start = fresh | distorted
    anchor = np.where(start, frame, anchor)
    corners = np.where(start[..., None, None], identity_corners(H, W), corners)
    jac = np.where(start[..., None, None], np.eye(2), jac)
    live = set(np.unique(anchor).tolist())
    stored = {a: v for a, v in stored.items() if a in live}
    stats = {"anchors_started": int(start.sum()), "revealed_pixels": int(new.sum()),
             "reanchored_pixels": int(distorted.sum()), "fresh_area": float(fresh.sum()),
             "degenerate_pixels": int(degenerate.sum()), "fold_pixels": int(folded.sum()),
             "anchors": len(live), "stored_pixels": int(sum(len(v[0]) for v in stored.values())),
             "requests_per_pixel": nreq / max(H * W, 1)}
    return FlowMap(corners, anchor, stored, noise, np.where(far[..., None], np.float32(0), flow), jac), stats


# ----------------------------------------------------------------------------- Taichi side
_K = None
TABLE_SLACK = 16     # a plane's dense cell table may hold this many cells per request before cells are numbered by sorting


def _kernels():
    global _K
    if _K is None:
        from . import _flowmap_kernels, _taichi

        _taichi.init()
        _K = _flowmap_kernels.build(sys.modules[__name__])
    return _K


def _compose_taichi(fm, flow, new, frame):
    H, W = flow.shape[:2]
    plane, F, Qi, Qj, lh, lv = groundwork(fm, flow, new, frame)
    corners, jac = np.empty((H, W, 4, 2), np.float64), np.empty((H, W, 2, 2), np.float64)
    c = np.ascontiguousarray
    _kernels()[0](c(F), c(Qi, np.int64), c(Qj, np.int64), c(lh, np.int32), c(lv, np.int32),
                  c(fm.anchor, np.int64), c(np.pad(plane, 1, mode="edge"), np.int64), c(fm.flow, np.float32),
                  c(new, np.int32), c(fm.corners, np.float64), c(fm.jac, np.float64), corners, jac)
    return corners, plane, jac


def plane_boxes(lo, hi, planes):
    """The cells each reference plane's requests reach, for the kernels' dense cell tables: plane
    ids (sorted), each request's plane slot, and each plane's first cell and box size [n_planes, D],
    from the requests' cell bounds lo, hi [n, D] (inclusive). Shared with noise3d's flow map."""
    ids, slot = np.unique(planes, return_inverse=True)
    first = np.full((len(ids), lo.shape[1]), np.iinfo(np.int64).max)
    last = np.full((len(ids), lo.shape[1]), np.iinfo(np.int64).min)
    np.minimum.at(first, slot, lo)
    np.maximum.at(last, slot, hi)
    return ids, slot.astype(np.int32), first, last - first + 1


def stored_table(stored, empty_values, key_dtype):
    """The stored (re-anchored) sub-cells as the kernels' `stored_lookup` reads them: plane ids
    (sorted), each plane's row offsets, the rows' cell keys and values (`empty_values`, one dummy
    row, when nothing is stored). Shared with noise3d's flow map."""
    ids = np.array(sorted(stored), np.int64)
    off = np.zeros(len(ids) + 1, np.int32)
    off[1:] = np.cumsum([len(stored[a][0]) for a in ids])
    if not len(ids):
        return ids, off, np.zeros(1, key_dtype), empty_values
    keys = np.concatenate([stored[a][0] for a in ids]).astype(key_dtype)
    return ids, off, keys, np.ascontiguousarray(np.concatenate([stored[a][1] for a in ids]), np.float32)


def _values_taichi(dest, stored, shape, seed, frame, channels, depth):
    """`integrate` + normalisation on the Taichi kernels: requests, a table of each plane's cells,
    one thread per cell, then each destination gathers its requests."""
    _, count, fill, by_cell, cells, gather = _kernels()
    P, plane, where = dest.P, dest.plane, dest.where
    n, C, K = len(P), channels, 2 ** KEEP
    value = np.zeros((n, C), np.float32)
    if n == 0:
        return value, np.zeros(0, bool), 0
    P = np.ascontiguousarray(P, np.float64)
    nslots = np.empty(n, np.int32)
    count(P, nslots)
    rstart = np.zeros(n + 1, np.int32)
    np.cumsum(nslots, out=rstart[1:])
    R = int(rstart[-1])
    lo = np.floor(np.minimum.reduce([P[:, e] for e in range(4)])).astype(np.int64)
    hi = np.maximum(np.ceil(np.maximum.reduce([P[:, e] for e in range(4)])).astype(np.int64) - 1, lo)
    _, slot, first, size = plane_boxes(lo, hi, plane)
    size = size[:, ::-1]                                 # rows, columns of each plane's table
    tb = np.stack([np.cumsum(size.prod(1)) - size.prod(1), first[:, 1], first[:, 0], size[:, 1]], 1).astype(np.int64)
    base = int(size.prod(1).sum())
    dense = base <= max(TABLE_SLACK * R, 1 << 20)
    ncell = np.zeros(base if dense else 1, np.int32)
    rdst, rci, rcj = (np.empty(R, np.int32) for _ in range(3))
    rA, rtab, rL = np.empty(R, np.float32), np.empty(R, np.int64), np.empty((R, 4, 2), np.float32)
    fill(P, rstart, slot, tb, rdst, rci, rcj, rA, rtab, ncell, rL, int(dense))
    if not dense:                       # far-apart regions of one plane: number the used cells by sorting
        ok = np.nonzero(rtab >= 0)[0]
        keys = np.stack([slot[rdst[ok]], rci[ok], rcj[ok]], 1)
        _, ids = np.unique(keys, axis=0, return_inverse=True)
        rtab[ok] = ids.ravel()
        ncell = np.bincount(ids.ravel(), minlength=1).astype(np.int32)
    start = np.zeros(len(ncell) + 1, np.int64)
    np.cumsum(ncell, out=start[1:])
    M = max(int(start[-1]), 1)                  # requests that overlap: list positions, cell by cell
    lst, ldst, lA, lL = np.empty(M, np.int32), np.empty(M, np.int32), np.empty(M, np.float32), np.empty((M, 4, 2), np.float32)
    by_cell(rtab, start, np.zeros(len(ncell), np.int32), rdst, rA, rL, lst, ldst, lA, lL)
    ids, st_off, st_pix, st_val = stored_table(stored, np.zeros((1, K * K, C), np.float32), np.int32)
    L = max(depth, KEEP)
    acc, claim, fold = np.zeros((M, C), np.float32), np.zeros(M, np.float32), np.zeros(M, np.int32)
    miss = np.zeros(M, np.float32)
    fr, kid, coef = np.empty((M, L + 1), np.float32), np.empty((M, max(L, 1), 4), np.float32), np.empty((M, 3), np.float32)
    pos = np.zeros(R, np.int32)
    H, W = shape
    cells(np.ascontiguousarray(plane, np.int64), rci, rcj, start, lst, ldst, lA, lL, pos, ids, st_off, st_pix, st_val,
          acc, claim, miss, fold, fr, kid, coef, np.ascontiguousarray(where, np.float32), np.uint32(seed), int(depth),
          int(H), int(W))
    dfold = np.empty(n, np.int32)
    gather(rstart, rtab, pos, acc, claim, miss, fold, np.ascontiguousarray(dest.key, np.int64), value, dfold,
           np.uint32(seed), np.uint32(frame))
    return value, dfold > 0, int((rtab >= 0).sum())
