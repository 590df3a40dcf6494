"""Supersampling converges to the exact polyhedral overlaps (the justification of the variant).

For a warper built on the bridge split, corr(y_P, x_C) follows from its request weights
alone: a fine piece has covariance a/sqrt(A_p) with its cell (a = w/T_c, A_p = Σ a + v_out),
and pooling averages fine pairs. The exact (grid) answer is the overlap |R_P ∩ cell_C| of the
voxel's preimage with the cell (ALGORITHMS.md §6). Under a rotation about Z the preimage is a
rotated square prism, whose overlaps a polygon clip gives exactly.
"""
import numpy as np
import pytest

from core2d import ops
from noise3d import warper


def clipped_area(poly, lo, hi):
    """Area of a convex polygon clipped to the box [lo, hi] (Sutherland–Hodgman + shoelace)."""
    for axis in (0, 1):
        for bound, sign in ((lo[axis], 1.0), (hi[axis], -1.0)):
            out = []
            for i in range(len(poly)):
                P, Q = poly[i], poly[(i + 1) % len(poly)]
                pin, qin = sign * (P[axis] - bound) >= 0, sign * (Q[axis] - bound) >= 0
                if pin:
                    out.append(P)
                if pin != qin:
                    out.append(P + (bound - P[axis]) / (Q[axis] - P[axis]) * (Q - P))
            poly = out
            if not poly:
                return 0.0
    x, y = np.array(poly).T
    return 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def transfer(flow, shape, s):
    """corr(y_P, x_C) [N, N] of the particle warper run on an s× finer state, pooled."""
    fine = tuple(n * s for n in shape)
    src, dst, w, v_out = warper.particle_requests(ops.upsample_flow(flow, s), fine)
    nf = int(np.prod(fine))
    T = np.bincount(src, w.astype(np.float64), nf)
    a = w / T[src]
    A = np.bincount(dst, a, nf) + v_out
    coarse = lambda idx: np.ravel_multi_index(tuple(i // s for i in np.unravel_index(idx, fine)), shape)
    N = int(np.prod(shape))
    M = np.zeros((N, N))
    np.add.at(M, (coarse(dst), coarse(src)), a / np.sqrt(A[dst]) / s ** 3)
    return M


@pytest.mark.parametrize("degrees", [10, 25])
def test_supersampling_approaches_exact_overlaps_under_rotation(degrees):
    n, shape = 12, (12, 12, 2)
    th = np.deg2rad(degrees)
    c = np.array([n / 2, n / 2])
    p = np.stack(np.meshgrid(*[np.arange(m) + 0.5 for m in shape], indexing="ij"), -1)
    d = p[..., :2] - c
    src = np.stack([np.cos(th) * d[..., 0] + np.sin(th) * d[..., 1],
                    -np.sin(th) * d[..., 0] + np.cos(th) * d[..., 1]], -1) + c
    flow = np.concatenate([src - p[..., :2], np.zeros(shape + (1,))], -1).astype(np.float32)
    rot = lambda v: np.array([np.cos(th) * (v[0] - c[0]) + np.sin(th) * (v[1] - c[1]),
                              -np.sin(th) * (v[0] - c[0]) + np.cos(th) * (v[1] - c[1])]) + c
    err = {}
    for s in (1, 2, 4):
        M = transfer(flow, shape, s)
        total = []
        for i in range(3, n - 3):
            for j in range(3, n - 3):
                pre = [rot(np.array(v, float)) for v in ((i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1))]
                P = np.ravel_multi_index((i, j, 0), shape)
                e = 0.0
                for a in range(i - 3, i + 4):
                    for b in range(j - 3, j + 4):
                        exact = clipped_area(pre, (a, b), (a + 1, b + 1))
                        e += abs(M[P, np.ravel_multi_index((a, b, 0), shape)] - exact)
                total.append(e)
        err[s] = float(np.mean(total))
    # L1 distance of a voxel's correlations from the exact overlaps (which sum to 1)
    assert err[1] > 0.02, err                       # the particle footprint ignores rotation
    assert err[2] < 0.45 * err[1] and err[4] < 0.2 * err[1], err
