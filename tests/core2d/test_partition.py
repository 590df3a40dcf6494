"""The bridge split itself (ALGORITHMS.md §2): each piece has variance = its area, the pieces of a
cell sum to the cell (less the unrequested leftover), pieces are independent of each other and of
other cells' pieces."""
import numpy as np
import pytest
from scipy import stats

from core2d import partition

from .helpers import Z

N, C = 12000, 2                                    # cells, channels: N·C samples per piece rank
W5 = np.array([0.1, 0.3, 0.2, 0.15, 0.25], np.float32)


FORMS = [partition.split_requests, partition.split_requests_zero_sum]   # 2D sequential, 3D order-free


def _split(x, weights, floor, split=partition.split_requests):
    """Every cell requested by len(weights) requests, the lists interleaved across cells (as a
    warp's are), each request its own destination, so y is the pieces themselves."""
    k = len(weights)
    src = np.repeat(np.arange(N), k).reshape(N, k).T.ravel()          # request r: cell r % N
    w = np.repeat(weights, N).astype(np.float32)
    dst = np.arange(N * k)
    y, a = split(x, src, dst, w, N * k, seed=5, frame=3, floor=floor)
    return y.reshape(k, N, C).astype(np.float64), a.reshape(k, N)


@pytest.mark.parametrize("split", FORMS)
@pytest.mark.parametrize("scale, floor", [(0.8, 0.0), (1.6, 1.0), (0.7, 1.0)])
def test_pieces_have_their_area_as_variance_and_are_independent(scale, floor, split):
    x = np.random.RandomState(1).randn(N, C).astype(np.float32)
    y, a = _split(x, W5 * scale, floor, split)
    T = W5.sum() * scale
    area = W5 * scale / max(T, floor)
    assert np.allclose(a, area[:, None], rtol=1e-6)
    n = N * C
    for j, aj in enumerate(area):
        z = y[j] / np.sqrt(aj)                     # N(0, 1) if the piece's variance is its area
        assert abs(z.var() - 1) < Z * np.sqrt(2.0 / n), f"piece {j}: variance/area {z.var():.4f}"
        assert stats.kstest(z.ravel(), "norm").pvalue > 1e-4
        assert abs(np.mean(z * x) - np.sqrt(aj)) < Z / np.sqrt(n)      # cov(piece, x) = area
        for i in range(j):                         # Brownian increments: independent
            r = np.mean(z * y[i] / np.sqrt(area[i]))
            assert abs(r) < Z / np.sqrt(n), f"pieces {i},{j}: correlation {r:.4f}"
    total = y.sum(0)
    if T >= floor:                                 # the whole cell is used: pieces sum to it
        assert np.allclose(total, x, atol=2e-5)
    else:                                          # a leftover of 1 - T stays: Σ pieces ~ N(0, T)
        assert abs(total.var() - T) < Z * T * np.sqrt(2.0 / n)
        assert abs(np.mean(total * x) - T) < Z / np.sqrt(n)


@pytest.mark.parametrize("split", FORMS)
def test_cells_draw_independent_normals(split):
    """With x = 0 every piece is RNG output: pieces of different cells (same or other rank) and
    channels must be uncorrelated, and a rerun gives the same bytes."""
    x = np.zeros((N, C), np.float32)
    y, _ = _split(x, W5, 0.0, split)
    assert np.array_equal(y, _split(x, W5, 0.0, split)[0])
    z = y / np.sqrt(W5 / W5.sum())[:, None, None]
    n = (N - 1) * C
    for i, j in ((0, 0), (1, 1), (0, 3), (2, 1)):
        r = np.mean(z[i, 1:] * z[j, :-1])          # cell c's piece i against cell c-1's piece j
        assert abs(r) < Z / np.sqrt(n), f"ranks {i},{j} of neighbouring cells: correlation {r:.4f}"
    r = np.mean(z[:, :, 0] * z[:, :, 1])
    assert abs(r) < Z / np.sqrt(N * len(W5)), f"channels: correlation {r:.4f}"
