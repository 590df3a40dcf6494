"""ALGORITHMS.md §6: the statistics that define a correct warper."""
import numpy as np
import pytest

import core2d
from core2d import grid

from .helpers import affine_flow, assert_white, corr, maps, rotation

H, W, C = 64, 64, 4
WHITE_METHODS = ("particle", "particle/jacobian", "grid", "upsample", "nearest", "fixed", "resample")
MAPS = maps(H, W)


def make(method, **kw):
    """'particle/jacobian' is the particle method with the Jacobian footprint."""
    name, _, footprint = method.partition("/")
    return core2d.NoiseWarper(H, W, channels=C, method=name, footprint=footprint or "unit", **kw)


@pytest.mark.parametrize("method", WHITE_METHODS)
@pytest.mark.parametrize("name", sorted(MAPS))
def test_every_frame_is_white(method, name):
    w = make(method, seed=3, backend="taichi")
    assert_white(w.noise, f"{method} initial")
    for t in range(2):
        y = w.step(MAPS[name])
        assert_white(y, f"{method} {name} step {t + 1}")


@pytest.mark.parametrize("method", ["particle", "particle/jacobian", "grid"])
def test_zero_flow_is_bit_exact(method):
    for backend in ("taichi", "numpy"):
        w = make(method, seed=1, backend=backend)
        x = w.noise.copy()
        for _ in range(3):
            y = w.step(np.zeros((H, W, 2), np.float32))
        assert np.array_equal(x, y), backend


@pytest.mark.parametrize("method", ["particle", "particle/jacobian", "grid", "nearest", "upsample"])
def test_integer_translation_is_an_exact_shift(method):
    w = make(method, seed=2, backend="taichi")
    x = w.noise.copy()
    flow = np.zeros((H, W, 2), np.float32)
    flow[..., 0], flow[..., 1] = -3, -2                     # content moves 3 right, 2 down
    y = w.step(flow)
    if method == "upsample":
        np.testing.assert_allclose(y[2:, 3:], x[:-2, :-3], atol=2e-5)
    else:
        assert np.array_equal(y[2:, 3:], x[:-2, :-3])
    strip = np.concatenate([y[:2].reshape(-1, C), y[2:, :3].reshape(-1, C)])
    assert abs(strip.mean()) < 4 / np.sqrt(strip.size) and abs(strip.var() - 1) < 4 * np.sqrt(2 / strip.size)
    # fresh: uncorrelated with the noise that left the frame and with the old content at that place
    assert abs(corr(y[:2], x[:2])) < 4 / np.sqrt(y[:2].size)
    assert abs(corr(y[2:, :3], x[2:, :3])) < 4 / np.sqrt(y[2:, :3].size)


@pytest.mark.parametrize("method", ["particle", "grid"])
def test_fractional_translation_correlations(method):
    Hs = Ws = 96
    flow = np.tile(np.array([0.3, 0.7], np.float32), (Hs, Ws, 1))
    w = core2d.NoiseWarper(Hs, Ws, channels=C, method=method, seed=4, backend="taichi")
    x = w.noise.copy()
    y = w.step(flow)
    inner = y[:-1, :-1]
    expect = {(0, 0): 0.21, (0, 1): 0.09, (1, 0): 0.49, (1, 1): 0.21}   # footprint at (j+0.3, i+0.7)
    tol = 4 / np.sqrt(inner.size)
    for (di, dj), rho in expect.items():
        r = corr(inner, x[di:Hs - 1 + di, dj:Ws - 1 + dj])
        assert abs(r - rho) < tol, f"cell ({di},{dj}): {r:.3f} vs {rho}"
    assert abs(corr(inner, x[:-1, 1:]) - 0.09) < tol


def _clip_area(poly, cx, cy):
    """Independent check: Sutherland-Hodgman clip of a convex polygon by a unit cell, shoelace area."""
    def clip(pts, inside, cross):
        out = []
        for k in range(len(pts)):
            a, b = pts[k - 1], pts[k]
            if inside(b):
                if not inside(a):
                    out.append(cross(a, b))
                out.append(b)
            elif inside(a):
                out.append(cross(a, b))
        return out

    def at_x(x0):
        return lambda a, b: (x0, a[1] + (b[1] - a[1]) * (x0 - a[0]) / (b[0] - a[0]))

    def at_y(y0):
        return lambda a, b: (a[0] + (b[0] - a[0]) * (y0 - a[1]) / (b[1] - a[1]), y0)

    pts = [tuple(map(float, p)) for p in poly]
    for inside, cross in ((lambda p: p[0] >= cx, at_x(cx)), (lambda p: p[0] <= cx + 1, at_x(cx + 1)),
                          (lambda p: p[1] >= cy, at_y(cy)), (lambda p: p[1] <= cy + 1, at_y(cy + 1))):
        pts = clip(pts, inside, cross)
        if not pts:
            return 0.0
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    return 0.5 * abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


@pytest.mark.parametrize("flow", [rotation(24, 24, 17), affine_flow(24, 24, [[0.4, 0.1], [-0.2, 1.7]]),
                                  affine_flow(24, 24, np.eye(2) * 3.3, (0.25, -0.6))])
def test_grid_overlaps_are_exact_polygon_areas(flow):
    src, dst, A, v_out, bad = grid.requests(flow)
    P, _ = grid.quads(grid.corner_positions(flow), flow)
    Pf = P.reshape(-1, 4, 2)
    rs = np.random.RandomState(0)
    for k in rs.choice(len(src), 300, replace=False):
        c, p = src[k], dst[k]
        assert abs(A[k] - _clip_area(Pf[p], c % 24, c // 24)) < 2e-5
    # and the overlaps of a polygon inside the frame add up to its area
    inside = (Pf.min(1) >= 0).all(1) & (Pf[..., 0].max(1) <= 24) & (Pf[..., 1].max(1) <= 24)
    tot = np.bincount(dst, weights=A, minlength=24 * 24)
    np.testing.assert_allclose(tot[inside], grid.shoelace(Pf[inside]), atol=1e-4)


@pytest.mark.parametrize("A_map", [rotation(96, 96, 30), affine_flow(96, 96, np.eye(2) * 0.6)])
def test_grid_correlation_is_overlap_over_sqrt_area(A_map):
    """corr(y_p, x_c) = |R_p ∩ cell_c| / sqrt(|R_p|) for injective maps (binned by prediction)."""
    Hs = Ws = 96
    w = core2d.NoiseWarper(Hs, Ws, channels=8, method="grid", seed=5, backend="taichi")
    x = w.noise.reshape(-1, 8).astype(np.float64)
    y = w.step(A_map).reshape(-1, 8).astype(np.float64)
    src, dst, A, v_out, bad = grid.requests(A_map)
    P, _ = grid.quads(grid.corner_positions(A_map), A_map)
    area = grid.shoelace(P.reshape(-1, 4, 2))
    keep = v_out[dst] == 0                                   # polygons fully inside the frame
    rho = A[keep] / np.sqrt(area[dst[keep]])
    prod = (y[dst[keep]] * x[src[keep]]).mean(1)
    bins = np.digitize(rho, [0.1, 0.3, 0.5, 0.7, 0.9])
    for b in np.unique(bins):
        m = bins == b
        if m.sum() < 200:
            continue
        n = m.sum() * 8
        assert abs(prod[m].mean() - rho[m].mean()) < 4 / np.sqrt(n) + 1e-3, (b, prod[m].mean(), rho[m].mean())


def test_degradation_correlation_scalar_and_mask():
    flow = rotation(H, W, 5)
    ref = core2d.NoiseWarper(H, W, channels=C, seed=9, backend="taichi")
    for alpha in (0.25, 0.6):
        d = core2d.NoiseWarper(H, W, channels=C, seed=9, backend="taichi", degrade=alpha)
        y0, y1 = ref.step(flow), d.step(flow)
        assert_white(y1, f"degraded {alpha}")
        expect = (1 - alpha) / np.sqrt((1 - alpha) ** 2 + alpha ** 2)
        assert abs(corr(y0, y1) - expect) < 4 / np.sqrt(y0.size)
        ref = core2d.NoiseWarper(H, W, channels=C, seed=9, backend="taichi")
    mask = np.zeros((H, W), np.float32)
    mask[:, W // 2:] = 1.0                                   # right half: all fresh
    d = core2d.NoiseWarper(H, W, channels=C, seed=9, backend="taichi", degrade=mask)
    y0, y1 = ref.step(flow), d.step(flow)
    assert np.array_equal(y0[:, :W // 2], y1[:, :W // 2])
    assert abs(corr(y0[:, W // 2:], y1[:, W // 2:])) < 4 / np.sqrt(y0[:, W // 2:].size)


@pytest.mark.parametrize("method", ["particle", "grid"])
def test_pooled_output_is_white(method):
    w = core2d.NoiseWarper(128, 128, channels=C, method=method, seed=6, backend="taichi",
                           supersample=2, latent_factor=4)
    assert w.noise.shape == (32, 32, C)
    for name in ("rotate10", "swirl", "zoom_in8"):
        y = w.step(maps(128, 128)[name])
        assert_white(y, f"{method} pooled {name}")


def test_supersampling_improves_long_range_coherence():
    """Frame 40 against frame 0 at the true shift (12, 28) px of a (0.3, 0.7) px/frame translation."""
    Hs = Ws = 72
    flow = np.tile(np.array([-0.3, -0.7], np.float32), (Hs, Ws, 1))  # content moves (+0.3, +0.7)
    r = {}
    for s in (1, 2, 4):
        w = core2d.NoiseWarper(Hs, Ws, channels=C, seed=11, backend="taichi", supersample=s)
        x = w.noise.copy()
        for _ in range(40):
            y = w.step(flow)
        assert_white(y, f"supersample {s} frame 40")
        r[s] = corr(y[28:, 12:], x[:-28, :-12])
    assert r[1] < r[2] < r[4], r
    assert r[4] > 0.15, r


def test_gp_is_the_field_at_the_source_positions():
    from core2d import gp

    Hs, Ws = 48, 56
    w = core2d.NoiseWarper(Hs, Ws, channels=2, method="gp", seed=3, backend="taichi", gp_features=1500)
    flow = np.tile(np.array([2.25, -1.5], np.float32), (Hs, Ws, 1))
    y = w.step(flow)
    ii, jj = np.mgrid[0:Hs, 0:Ws].astype(np.float32)
    pos = np.stack([jj + 0.5 + 2.25, ii + 0.5 - 1.5], -1).reshape(-1, 2)
    direct = gp.evaluate_numpy(pos, *w._features).reshape(Hs, Ws, 2)
    np.testing.assert_allclose(y, direct, atol=2e-3)
    # spatial correlation matches the kernel of these features: Σ w² cos(z·d) / Σ w²
    z, b, wt = w._features
    big = core2d.NoiseWarper(128, 128, channels=2, method="gp", seed=3, backend="taichi", gp_features=1500)
    n = big.noise.astype(np.float64)
    for c in range(2):
        kern = np.sum(wt[c] ** 2 * np.cos(z[c][:, 0])) / np.sum(wt[c] ** 2)
        emp = np.mean(n[:, :-1, c] * n[:, 1:, c]) / np.mean(n[..., c] ** 2)
        assert abs(emp - kern) < 0.06, (emp, kern)


def test_bilinear_blurs():
    w = core2d.NoiseWarper(H, W, channels=C, method="bilinear", seed=3, backend="taichi")
    y = w.step(np.tile(np.array([0.5, 0.5], np.float32), (H, W, 1)))
    assert abs(y.var() - 0.25) < 0.05        # four weights of 1/4: variance 4/16


def test_jacobian_footprint_integrates_what_the_pixel_covers():
    """Aligned ×8 minification: each pixel's box is exactly 8×8 cells, so it gets their ∫-pool."""
    w = make("particle/jacobian", seed=1, backend="taichi")
    unit = make("particle", seed=1, backend="taichi")
    x = w.noise.astype(np.float64)
    zoom = affine_flow(H, W, np.eye(2) * 8)
    y, yu = w.step(zoom), unit.step(zoom)
    blocks = x.reshape(H // 8, 8, W // 8, 8, C).sum((1, 3)) / 8
    inner = (slice(H // 2 - 4, H // 2 + 4), slice(W // 2 - 4, W // 2 + 4))
    np.testing.assert_allclose(y[inner], blocks, atol=1e-5)
    assert corr(yu[inner], blocks) < 0.5               # the unit square samples one cell of 64


@pytest.mark.parametrize("method", tuple(m for m in core2d.METHODS if m != "flowmap") + ("particle/jacobian",))
def test_numpy_reference_and_taichi_kernel_agree(method):
    # flowmap's agreement test is in test_flowmap.py
    Hs, Ws = 40, 48
    flows = [rotation(Hs, Ws, 7), maps(Hs, Ws)["random"], maps(Hs, Ws)["zoom_out8"]]
    method, _, footprint = method.partition("/")
    kw = dict(channels=3, method=method, seed=12, gp_features=300, supersample=1, footprint=footprint or "unit")
    a = core2d.NoiseWarper(Hs, Ws, backend="numpy", **kw)
    b = core2d.NoiseWarper(Hs, Ws, backend="taichi", **kw)
    for f in flows:
        np.testing.assert_allclose(a.step(f), b.step(f), atol=2e-4, err_msg=method)


def test_forward_flow_is_inverted_not_negated():
    from core2d import invert_flow

    # a pure translation: inversion is negation away from the border
    fwd = np.tile(np.array([3.0, 0.0], np.float32), (H, W, 1))
    back = invert_flow(fwd)
    np.testing.assert_allclose(back[:, 3:], -fwd[:, 3:], atol=1e-5)
    # a rotation: the inverse of the forward map, not minus the forward flow at the same place
    fwd = rotation(H, W, 8)                 # treated as forward map p -> c + R(p - c)
    back = invert_flow(fwd)
    exact = rotation(H, W, -8)
    inner = (slice(12, -12), slice(12, -12))
    assert np.abs(back[inner] - exact[inner]).max() < 0.05
    assert np.abs(-fwd[inner] - exact[inner]).max() > 0.1  # negation would be wrong by this much
    # +3 px to the right, given as a forward flow, moves the noise 3 px to the right
    w = core2d.NoiseWarper(H, W, channels=C, seed=0, backend="taichi")
    x = w.noise.copy()
    y = w.step(np.tile(np.array([3.0, 0.0], np.float32), (H, W, 1)), direction="forward")
    assert np.array_equal(y[:, 3:], x[:, :-3])


def test_forward_holes_fill_or_fresh():
    from core2d import invert_flow

    fwd = np.zeros((H, W, 2), np.float32)
    fwd[:, W // 2:, 0] = 6.0                 # right half moves right: a 6 px hole opens
    filled = invert_flow(fwd, holes="fill")
    fresh = invert_flow(fwd, holes="fresh")
    hole = (slice(None), slice(W // 2, W // 2 + 5))
    assert np.isfinite(filled).all() and np.abs(filled[hole]).max() <= 6.0
    assert (np.abs(fresh[hole]) > 1e5).all()
    w = core2d.NoiseWarper(H, W, channels=C, seed=0, backend="taichi", holes="fresh")
    assert_white(w.step(fwd, direction="forward"), "forward with holes")
