"""Does baked noise follow the true motion? ALGORITHMS.md §6 for a translation by (u, v) px:
a pixel's noise correlates with the previous frame's cells under its shifted unit square by
exactly their overlap areas (0.5/0.5 for a 2.5 px shift), and with nothing else."""
import math

import numpy as np


def overlap_table(shift):
    """{(dx, dy): overlap} of the unit square moved back by `shift` (x right, y down) with the
    cells at offset (dx, dy): where a pixel's noise came from when the content moved by shift."""
    out = {}
    sx, sy = (-float(s) for s in shift)
    ox, oy = math.floor(sx), math.floor(sy)
    fx, fy = sx - ox, sy - oy
    for dy, wy in ((oy, 1 - fy), (oy + 1, fy)):
        for dx, wx in ((ox, 1 - fx), (ox + 1, fx)):
            if wx * wy > 0:
                out[(dx, dy)] = out.get((dx, dy), 0.0) + wx * wy
    return out


def shifted_correlation(noise, frames, rows, cols, offset):
    """corr(noise[t][p], noise[t-1][p + offset]) pooled over frames t, the window and channels."""
    dx, dy = offset
    a, b = [], []
    for t in frames:
        a.append(noise[t][np.ix_(rows, cols)].ravel())
        b.append(noise[t - 1][np.ix_(rows + dy, cols + dx)].ravel())
    a, b = np.concatenate(a), np.concatenate(b)
    return float(np.corrcoef(a, b)[0, 1]), a.size


def assert_follows(noise, frames, rows, cols, shift, extra=((0, 0),)):
    """The noise [T, H, W, C] on `rows` x `cols` of each frame t in `frames` moved by `shift`
    px since t - 1: correlations at the overlapped cells equal the overlaps (ALGORITHMS.md §6,
    |error| < 4/sqrt(N)), and are ~0 at the `extra` offsets not overlapped."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    noise = noise if noise.ndim == 4 else noise[..., None]
    table = overlap_table(shift)
    report = []
    for offset in list(table) + [o for o in extra if o not in table]:
        r, n = shifted_correlation(noise, frames, rows, cols, offset)
        expected = table.get(offset, 0.0)
        report.append((offset, round(r, 3), round(expected, 3)))
        assert abs(r - expected) < 4 / math.sqrt(n), (shift, report)
    return report
