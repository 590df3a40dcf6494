"""Hostile input for the 2D library (issue 12): shared warpers, huge flows, bad files and options."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import core2d

from .helpers import rotation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A fresh process (Taichi compiles a kernel the first time it is launched): three threads make
# their first steps at the same moment, a 3D and a 2D warper among them; then each result is
# compared with the same step made alone.
_FIRST_STEPS = r"""
import sys, threading
import numpy as np
import core2d, noise3d
shape = (6, 5, 4)
flow3 = np.full(shape + (3,), 0.3, np.float32)
flow2 = np.full((12, 10, 2), 0.4, np.float32)
def make():
    return [noise3d.VolumeWarper(shape, 2, seed=1, backend="taichi"),
            noise3d.VolumeWarper(shape, 2, method="supersample", seed=2, backend="taichi"),
            core2d.NoiseWarper(12, 10, channels=4, seed=3, backend="taichi")]
ws, go, out, errors = make(), threading.Barrier(3), [None] * 3, []
def run(k):
    go.wait()
    try:
        out[k] = np.array(ws[k].step(flow2 if k == 2 else flow3))
    except BaseException as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not errors, errors
for k, w in enumerate(make()):
    assert np.array_equal(out[k], w.step(flow2 if k == 2 else flow3)), k
print("ok")
"""


def test_first_steps_on_three_threads_at_once():
    env = dict(os.environ, NOISEWARP_TI_ARCH="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for attempt in range(2):
        r = subprocess.run([sys.executable, "-c", _FIRST_STEPS], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


@pytest.mark.parametrize("backend", ["numpy", "taichi"])
def test_a_warper_shared_by_threads_serialises_its_steps(backend):
    """Every step of the same flow gives the same next frame whatever the order, so 2×K steps
    from two threads must end exactly where 2×K steps from one thread end."""
    H, W, K = 24, 28, 12
    f = rotation(H, W, 3)
    shared = core2d.NoiseWarper(H, W, channels=4, method="particle", seed=5, backend=backend)
    go = threading.Barrier(2)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)          # switch threads as often as possible
    try:
        def run():
            go.wait()
            for _ in range(K):
                shared.step(f)
        threads = [threading.Thread(target=run) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        sys.setswitchinterval(old)
    alone = core2d.NoiseWarper(H, W, channels=4, method="particle", seed=5, backend=backend)
    for _ in range(2 * K):
        alone.step(f)
    assert shared.frame == 2 * K
    assert np.array_equal(shared.noise, alone.noise)


# Huge but finite flows: every footprint leaves the frame, so the frame is fresh white noise.
# Before the bounding boxes were clamped, int64 overflow made every pixel scan the whole frame
# (days at 512²); the child process's timeout turns such a regression into a failure.
_HUGE = r"""
import numpy as np, core2d
H = W = 96
rs = np.random.default_rng(0)
for mag in (1e19, 3.0e38):
    f = (mag * rs.choice([-1.0, 1.0], size=(H, W, 2))).astype(np.float32)
    for method, opt in (("grid", {}), ("upsample", {}), ("particle", {"footprint": "jacobian"})):
        w = core2d.NoiseWarper(H, W, 4, method, seed=1, backend="numpy", **opt)
        x0 = w.noise.copy()
        y = w.step(f)
        assert np.isfinite(y).all(), (method, mag)
        assert abs(np.mean(y * x0)) < 4.5 / np.sqrt(y.size), (method, mag)
        assert abs(y.var() - 1) < 4.5 * np.sqrt(2 / y.size), (method, mag, y.var())
print("ok")
"""


def test_huge_finite_flows_stay_linear_in_the_numpy_paths():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _HUGE], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


@pytest.mark.parametrize("method,opt", [("grid", {}), ("upsample", {}), ("particle", {"footprint": "jacobian"})])
@pytest.mark.parametrize("mag", [1e19, -1e19, 3.0e38])
def test_huge_finite_flows_agree_across_backends(method, opt, mag):
    H, W = 12, 14
    f = np.full((H, W, 2), mag, np.float32)
    f[::2, :, 0] *= -1
    a = core2d.NoiseWarper(H, W, 4, method, seed=2, backend="numpy", **opt)
    b = core2d.NoiseWarper(H, W, 4, method, seed=2, backend="taichi", **opt)
    ya, yb = a.step(f), b.step(f)
    assert np.isfinite(ya).all() and np.allclose(ya, yb, atol=1e-5)
    fresh = core2d.NoiseWarper(H, W, 4, "resample", seed=2, backend="numpy").step(f)
    assert np.allclose(ya, fresh, atol=1e-5)          # all footprints outside: exactly the fresh draws


def _kernel_lag1(w):
    """Lag-1 correlation of the GP field of warper w: Σ w² cos(z_x) / Σ w² (channel 0)."""
    z, _, wt = w._features
    return float(np.sum(wt[0] ** 2 * np.cos(z[0][:, 0])) / np.sum(wt[0] ** 2))


@pytest.mark.parametrize("backend", ["numpy", "taichi"])
@pytest.mark.parametrize("mag", [1e9, 3.0e8, -7.5e12, 3.4e38])
def test_gp_stays_a_gp_sample_under_huge_finite_flows(backend, mag):
    """A GP frame is the field at the source positions: whatever the flow, a unit-variance field
    with the kernel's spatial correlation, never NaN and never constant, and so are later frames."""
    H, W = 40, 48
    w = core2d.NoiseWarper(H, W, channels=2, method="gp", seed=4, backend=backend, gp_features=600)
    f = np.zeros((H, W, 2), np.float32)
    f[..., 0] = mag
    f[..., 1] = 0.25
    for flow in (f, rotation(H, W, 5), np.zeros_like(f)):
        y = w.step(flow).astype(np.float64)
        assert np.isfinite(y).all()
        for c in range(2):
            assert abs(y[..., c].var() - 1) < 0.35, (c, y[..., c].var())
        emp = np.mean(y[:, :-1, 0] * y[:, 1:, 0]) / np.mean(y[..., 0] ** 2)
        assert abs(emp - _kernel_lag1(w)) < 0.15, (emp, _kernel_lag1(w))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1", True, [1.0]])
def test_gp_lengthscale_is_validated(bad):
    with pytest.raises(ValueError, match="gp_lengthscale"):
        core2d.NoiseWarper(8, 8, method="gp", gp_lengthscale=bad, backend="numpy")
