"""Does baked noise follow the true motion? ALGORITHMS.md §6 for a translation by (u, v) px:
a pixel's noise correlates with the previous frame's cells under its shifted unit square by
exactly their overlap areas (0.5/0.5 for a 2.5 px shift), and with nothing else."""
import math

import numpy as np


def overlap_table(shift):
    """{offset: overlap} of the unit square (cube) moved back by `shift` (pixels: x right,
    y down; voxels: x, y, z) with the cells at each offset: where a cell's noise came from
    when the content moved by shift."""
    import itertools
    axes = []
    for s in shift:
        o = math.floor(-float(s))
        f = -float(s) - o
        axes.append(((o, 1 - f), (o + 1, f)))
    out = {}
    for combo in itertools.product(*axes):
        w = math.prod(c[1] for c in combo)
        if w > 0:
            key = tuple(c[0] for c in combo)
            out[key] = out.get(key, 0.0) + w
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


def particle_correlations(flow):
    """The correlations ALGORITHMS.md §3 predicts for the particle warper under a backward
    flow [H, W, 2]: pixel p's unit square centred at M(p) = p + flow(p) overlaps cells c with
    bilinear weights w; each cell is shared among its requests (a = w / T_c, T_c = the sum of
    the weights on c), so corr(y_p, x_c) = a_pc / sqrt(sum_c a_pc). Returns (pixel index,
    cell index, rho) arrays; pixels whose square leaves the frame are left out."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    mx, my = xs + 0.5 + flow[..., 0], ys + 0.5 + flow[..., 1]
    x0, y0 = np.floor(mx - 0.5).astype(int), np.floor(my - 0.5).astype(int)
    fx, fy = mx - 0.5 - x0, my - 0.5 - y0
    pix, cell, weight = [], [], []
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cy, cx = y0 + dy, x0 + dx
            ok = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
            pix.append(np.where(ok, ys * w + xs, -1).ravel())
            cell.append(np.where(ok, cy * w + cx, 0).ravel())
            weight.append(np.where(ok, wx * wy, 0.0).ravel())
    pix, cell, weight = (np.stack(a, 1) for a in (pix, cell, weight))
    total = np.zeros(h * w)
    np.add.at(total, cell.ravel(), weight.ravel())
    a = weight / np.maximum(total[cell], 1e-12)
    inside = (pix >= 0).all(1) & (x0.ravel() >= 0) & (y0.ravel() >= 0)
    rho = a / np.sqrt(a.sum(1, keepdims=True))
    keep = inside[:, None] & (weight > 0)
    return pix[keep], cell[keep], rho[keep]


def assert_follows_flow(noise, flows, masks):
    """The noise follows the backward flows {t: [H, W, 2]} (frame t against t - 1) on the
    pixels of masks {t: [H, W] bool}: the slope of y_p x_c on the predicted correlations
    (particle_correlations) is 1 (|error| < 5 standard errors, counted as if the products
    were independent), where the noise at a wrong motion gives a slope near 0."""
    noise = noise if noise.ndim == 4 else noise[..., None]
    num = den = var = 0.0
    for t, flow in flows.items():
        pix, cell, rho = particle_correlations(flow)
        sel = masks[t].ravel()[pix]
        pix, cell, rho = pix[sel], cell[sel], rho[sel]
        y = noise[t].reshape(-1, noise.shape[-1])[pix]
        x = noise[t - 1].reshape(-1, noise.shape[-1])[cell]
        num += float((rho[:, None] * y * x).sum())
        den += float((rho ** 2).sum()) * noise.shape[-1]
        var += float((rho ** 2 * (1 + rho ** 2)).sum()) * noise.shape[-1]
    slope, se = num / den, math.sqrt(var) / den
    assert abs(slope - 1) < 5 * se, (slope, se)
    return slope, se


def assert_follows_volume(noise, regions, shift, extra=((0, 0, 0),)):
    """Volumes [T, X, Y, Z, C]: in each of `regions` [(t, (x indices, y indices, z indices))],
    moved by `shift` voxels since t - 1, the correlations with the previous frame's voxels are
    their overlaps (|error| < 4/sqrt(N), pooled), ~0 at the `extra` offsets."""
    noise = noise if noise.ndim == 5 else noise[..., None]
    table = overlap_table(shift)
    report = []
    for offset in list(table) + [o for o in extra if o not in table]:
        a, b = [], []
        for t, region in regions:
            idx = [np.asarray(r) for r in region]
            a.append(noise[t][np.ix_(*idx)].ravel())
            b.append(noise[t - 1][np.ix_(*[i + o for i, o in zip(idx, offset)])].ravel())
        a, b = np.concatenate(a), np.concatenate(b)
        r = float(np.corrcoef(a, b)[0, 1])
        expected = table.get(offset, 0.0)
        report.append((offset, round(r, 3), round(expected, 3)))
        assert abs(r - expected) < 4 / math.sqrt(a.size), (shift, report)
    return report
