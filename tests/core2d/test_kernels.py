"""The Taichi path's resources: kernels compiled once whatever the channel count, scratch memory
that belongs to the warper, and one normal stream shared with NumPy."""
import gc
import tracemalloc

import numpy as np
import pytest

import core2d
import noise3d
from core2d import rng

from .helpers import affine_flow, rotation


def _compiled():
    """How many kernel instances Taichi has compiled in this process."""
    from taichi.lang.kernel_impl import Kernel

    return sum(len(k.compiled_kernels) for k in gc.get_objects() if isinstance(k, Kernel))


def test_a_new_channel_count_compiles_no_new_kernel():
    H, W = 12, 16
    flow = rotation(H, W, 5)
    zoom = affine_flow(H, W, np.eye(2) / 3)                  # more requesters than the fixed slots

    def run(C):
        for method in ("particle", "grid", "nearest", "upsample", "bilinear", "gp", "flowmap"):
            w = core2d.NoiseWarper(H, W, channels=C, method=method, seed=1, backend="taichi", gp_features=20)
            w.step(flow)
            w.step(zoom)
        w = core2d.NoiseWarper(H, W, channels=C, seed=1, backend="taichi", footprint="jacobian")
        w.step(flow)
        for method in ("supersample", "flowmap"):
            v = noise3d.VolumeWarper((5, 4, 3), channels=C, method=method, factor=2, backend="taichi")
            v.step(np.full((5, 4, 3, 3), 0.3, np.float32))
        return _compiled()

    before = run(4)
    assert run(16) == before and run(64) == before and run(3) == before


def _folds(H, W, r):
    """Backward map folding the frame r times per axis: smooth, inside the frame, every quad up
    to ~3r cells wide, so the grid method makes ~130 requests a pixel at r = 8."""
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float64)
    mx = W / 2 + (W / 2 - 1) * np.sin(2 * np.pi * r * (jj + 0.5) / W)
    my = H / 2 + (H / 2 - 1) * np.sin(2 * np.pi * r * (ii + 0.5) / H)
    return np.stack([mx - jj - 0.5, my - ii - 0.5], -1).astype(np.float32)


def test_scratch_memory_goes_with_the_warper():
    """A hostile frame needs ~70 MB of scratch at 128²; that memory must not outlive the step
    that needed it, nor the warper (it used to stay in module-level buffers for good)."""
    H = W = 128
    core2d.NoiseWarper(16, 16, method="grid", seed=0, backend="taichi").step(_folds(16, 16, 1))  # compiles
    w = core2d.NoiseWarper(H, W, channels=4, method="grid", seed=0, backend="taichi")
    w.step(rotation(H, W, 3))
    gc.collect()
    tracemalloc.start()
    try:
        w.step(_folds(H, W, 8))
        kept, peak = tracemalloc.get_traced_memory()
        del w
        gc.collect()
        left = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert peak > 40e6                                       # the frame did need the memory
    assert kept < 4e6, f"{kept / 1e6:.0f} MB kept after the hostile step"
    assert left < 1e6, f"{left / 1e6:.0f} MB left after the warper was deleted"


@pytest.mark.parametrize("method", ["particle", "grid"])
def test_steady_steps_allocate_no_channel_sized_scratch(method):
    """Once warm, a step's NumPy allocations (flow-sized temporaries) do not grow with the channel
    count: the R·C-float split scratch is kept by the warper, not re-made each step."""
    H, W = 48, 64
    f = rotation(H, W, 3)
    peaks = []
    for C in (4, 16):
        w = core2d.NoiseWarper(H, W, channels=C, method=method, seed=0, backend="taichi")
        for _ in range(3):
            w.step(f)
        gc.collect()
        tracemalloc.start()
        try:
            for _ in range(2):
                w.step(f)                                    # dropped: its buffer is recycled
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] + H * W * 4, f"{peaks[1] / 1e3:.0f} kB a step at 16 channels, {peaks[0] / 1e3:.0f} at 4"


@pytest.mark.parametrize("stream", [rng.PIECE, rng.FRESH])
def test_taichi_normals_are_the_numpy_stream(stream):
    """2**18 pairs, so the wedge and tail paths of the ziggurat (1.2 % of draws) are exercised; the
    written-out exp and log and kernels without fast-math give the same bits."""
    import taichi as ti

    from core2d import _taichi

    _taichi.init()
    site_key, gauss_at = rng.taichi_sites()
    n = 1 << 17

    @ti.kernel
    def draw(out: ti.types.ndarray(dtype=ti.f32, ndim=2), base: ti.u32):
        for i in range(out.shape[0]):
            g = gauss_at(site_key(base, i, 7), ti.u32(1))
            out[i, 0] = g[0]
            out[i, 1] = g[1]

    out = np.zeros((n, 2), np.float32)
    draw(out, np.uint32(rng.site_base(5, 9, stream)))
    ref = np.stack(rng.gauss_pair(5, 9, stream, np.arange(n), 7, 1), -1)
    np.testing.assert_array_equal(out, ref)                      # the same bits, wedge and tail included
    assert np.mean(np.abs(ref) > rng._ZIG_R) > 0               # the tail was reached


def test_written_out_exp_and_log_give_the_same_bits_on_both_backends():
    """The ziggurat's wedge test compares against exp(-x²/2) and its tail takes logs: np.exp and
    LLVM's expf disagree in the last bit now and then, and fused multiply-adds (fast-math)
    change a series' rounding, which flips a draw about once in 10^7."""
    import taichi as ti

    from core2d import _taichi

    _taichi.init()
    f = rng._build()
    x = np.linspace(0, rng._ZIG_R, 1 << 20, dtype=np.float32)
    y = (np.float32(-0.5) * x * x).astype(np.float32)
    u = np.linspace(2 ** -24, 1, 1 << 20, dtype=np.float32)

    @ti.kernel
    def run(y: ti.types.ndarray(dtype=ti.f32, ndim=1), u: ti.types.ndarray(dtype=ti.f32, ndim=1),
            e: ti.types.ndarray(dtype=ti.f32, ndim=1), lg: ti.types.ndarray(dtype=ti.f32, ndim=1)):
        for i in range(y.shape[0]):
            e[i] = f.exp(y[i])
            lg[i] = f.log(u[i])

    e, lg = np.empty_like(y), np.empty_like(u)
    run(y, u, e, lg)
    np.testing.assert_array_equal(e, rng._exp(y))
    np.testing.assert_array_equal(lg, rng._log(u))
    np.testing.assert_allclose(e, np.exp(y.astype(np.float64)), rtol=5e-7)
    np.testing.assert_allclose(lg, np.log(u.astype(np.float64)), rtol=1e-6, atol=2e-6)


@pytest.mark.parametrize("channels", [1, 3, 16])
def test_site_normals_kernel_is_the_numpy_stream(channels):
    """rng.gauss_sites on Taichi (fresh noise for revealed pixels, degradation noise) draws what
    rng.gauss draws, any channel count, any site numbering."""
    sites = np.random.default_rng(channels).integers(0, 2 ** 32, 40000, dtype=np.uint64).reshape(200, 200)
    ref = rng.gauss(3, 11, rng.REVEALED, sites, 0, channels)
    out = rng.gauss_sites(3, 11, rng.REVEALED, sites, channels, backend="taichi")
    assert out.shape == ref.shape == (200, 200, channels)
    np.testing.assert_array_equal(out, ref)


def test_revealed_and_degraded_frames_agree_across_backends():
    H, W, C = 24, 32, 5
    flow = rotation(H, W, 4)
    revealed = np.zeros((H, W), bool)
    revealed[:, :3] = True
    alpha = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    out = {}
    for backend in ("numpy", "taichi"):
        w = core2d.NoiseWarper(H, W, channels=C, method="particle", seed=4, backend=backend, degrade=alpha)
        out[backend] = [w.step(flow, revealed=revealed) for _ in range(2)]
    for a, b in zip(out["numpy"], out["taichi"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["taichi", "numpy"])
def test_outputs_are_recycled_only_when_nobody_holds_them(backend):
    H, W = 16, 20
    flow = rotation(H, W, 4)
    w = core2d.NoiseWarper(H, W, channels=3, seed=2, backend=backend)
    kept = [w.noise] + [w.step(flow) for _ in range(3)]
    view = w.step(flow)[..., 1]                              # a view keeps its array too
    copies = [k.copy() for k in kept] + [view.copy()]
    addresses = set()
    for _ in range(6):                                       # streaming: each frame dropped after use
        y = w.step(flow)
        addresses.add(y.__array_interface__["data"][0])
        del y
    for k, c in zip(kept + [view], copies):
        assert np.array_equal(k, c)
    assert len({k.__array_interface__["data"][0] for k in kept}) == len(kept)
    assert len(addresses) <= 2                               # two buffers in turn, no allocation
