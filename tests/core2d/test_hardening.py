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


# ---------------------------------------------------------------------------- saved states (5)
def _saved(tmp_path, method="particle", steps=2, **kw):
    w = core2d.NoiseWarper(16, 20, channels=4, method=method, seed=7, backend="numpy", gp_features=64, **kw)
    for _ in range(steps):
        w.step(rotation(16, 20, 3))
    w.save(tmp_path / "state.npz")
    return w, dict(np.load(tmp_path / "state.npz"))


def _write(tmp_path, d, name="bad.npz"):
    np.savez(tmp_path / name, **d)
    return tmp_path / name


def test_a_refused_state_changes_nothing(tmp_path):
    w, d = _saved(tmp_path)
    before = (w.frame, w.noise.copy(), w.state_dict()["state"].copy(), w.degrade)
    for bad in (dict(d, degrade=np.float32(2.0)), dict(d, state=d["state"] * np.float32(np.nan)),
                dict(d, config=d["config"].item().replace('"frame": 2', '"frame": -1'))):
        with pytest.raises(ValueError):
            w.load_state_dict(bad)
        assert w.frame == before[0] and np.array_equal(w.noise, before[1])
        assert np.array_equal(w.state_dict()["state"], before[2]) and w.degrade == before[3]


def test_every_damaged_file_is_one_clear_value_error(tmp_path):
    _, d = _saved(tmp_path)
    raw = open(tmp_path / "state.npz", "rb").read()
    files = {"truncated.npz": raw[: len(raw) // 2], "empty.npz": b"", "junk.npz": b"PK\x03\x04" + bytes(200),
             "text.npz": b"hello"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    paths = [tmp_path / n for n in files]
    paths.append(_write(tmp_path, {k: v for k, v in d.items() if k != "config"}, "noconfig.npz"))
    paths.append(_write(tmp_path, {k: v for k, v in d.items() if k != "state"}, "nostate.npz"))
    paths.append(_write(tmp_path, dict(d, config=np.array("{not json")), "notjson.npz"))
    paths.append(_write(tmp_path, dict(d, config=np.array("[1, 2]")), "list.npz"))
    cfg = d["config"].item()
    paths.append(_write(tmp_path, dict(d, config=np.array(cfg[:-1] + ', "colour": 3}')), "extra.npz"))
    paths.append(_write(tmp_path, dict(d, config=np.array(cfg.replace('"seed": 7', '"seed": "7"'))), "seedstr.npz"))
    for p in paths:
        with pytest.raises(ValueError, match=str(p.name)):
            core2d.NoiseWarper.load(p)


@pytest.mark.parametrize("frame", ["-1", "2.5", "true", '"3"', "null"])
def test_bad_saved_frames_are_refused(tmp_path, frame):
    _, d = _saved(tmp_path)
    p = _write(tmp_path, dict(d, config=np.array(d["config"].item().replace('"frame": 2', f'"frame": {frame}'))))
    with pytest.raises(ValueError, match="frame"):
        core2d.NoiseWarper.load(p)


@pytest.mark.parametrize("change", ["nan", "int", "x100", "x1.5", "shape", "constant"])
def test_impossible_saved_states_are_refused(tmp_path, change):
    """A state is i.i.d. N(0,1): its mean and mean square over N values stay within bounds that
    a true state crosses with probability < e^-30 (checked for any N, below)."""
    _, d = _saved(tmp_path, supersample=2)
    s = d["state"]
    s = {"nan": np.where(np.arange(s.size).reshape(s.shape) == 5, np.nan, s), "int": np.round(s).astype(np.int64),
         "x100": s * 100, "x1.5": s * 1.5, "shape": s[:-2], "constant": np.ones_like(s)}[change]
    with pytest.raises(ValueError, match="state"):
        core2d.NoiseWarper.load(_write(tmp_path, dict(d, state=s)))


@pytest.mark.parametrize("method", core2d.METHODS)
def test_every_method_reloads_its_own_states(tmp_path, method):
    for steps in (0, 3):
        w, _ = _saved(tmp_path, method=method, steps=steps, supersample=2)
        back = core2d.NoiseWarper.load(tmp_path / "state.npz")
        assert back.frame == steps and np.array_equal(back.noise, w.noise)


def test_white_bounds_hold_for_true_noise_of_any_size():
    from core2d.ops import check_white

    rs = np.random.default_rng(0)
    for n in (1, 2, 3, 8, 64, 4096):
        for _ in range(2000 if n < 100 else 50):
            check_white(rs.standard_normal(n).astype(np.float32))
    with pytest.raises(ValueError):
        check_white(np.full(4096, 1.2, np.float32))


# ---------------------------------------------------------------------------- silent conversions (7)
@pytest.mark.parametrize("bad", ["0.5", True, np.array(["0.5"]), None])
def test_degrade_must_be_numeric(bad):
    with pytest.raises(ValueError, match="degradation"):
        core2d.NoiseWarper(8, 8, degrade=bad, backend="numpy")


def test_seeds_use_all_their_bits_or_are_refused():
    from core2d import rng

    keys = {rng.seed_key(s) for s in (0, 1, 2 ** 31, 2 ** 32 - 1)}
    assert len(keys) == 4
    for bad in (2 ** 32, 2 ** 32 + 1, 2 ** 64, -1, 2.0, "3", True):
        with pytest.raises(ValueError, match="seed"):
            rng.seed_key(bad)
        with pytest.raises(ValueError, match="seed"):
            core2d.NoiseWarper(8, 8, seed=bad, backend="numpy")


def test_finite_float64_flow_beyond_float32_is_named_correctly():
    w = core2d.NoiseWarper(8, 8, backend="numpy")
    f = np.zeros((8, 8, 2))
    f[3, 4, 1] = 1e300
    with pytest.raises(ValueError, match=r"beyond the float32 range.*\(3, 4\)"):
        w.step(f)
    f[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        w.step(f)
    assert w.frame == 0


# ---------------------------------------------------------------------------- public helpers (8)
def test_public_helpers_refuse_bad_arguments_clearly():
    x = np.random.default_rng(0).standard_normal((8, 8, 2)).astype(np.float32)
    f = np.zeros((8, 8, 2), np.float32)
    for factor in (0, -2, 2.5, "2", True):
        with pytest.raises(ValueError, match="pooling factor"):
            core2d.pool(x, factor)
        with pytest.raises(ValueError, match="upsampling factor"):
            core2d.upsample_flow(f, factor)
    with pytest.raises(ValueError, match=r"\[\*spatial, D\]"):
        core2d.upsample_flow(np.zeros((8, 8, 3)), 2)
    for args, what in (((0.5, -1, 0), "seed"), ((0.5, 2 ** 32, 0), "seed"), ((0.5, 0, -1), "frame"),
                       ((0.5, 0.5, 0), "seed"), (("0.5", 0, 0), "degradation"), ((1.5, 0, 0), "degradation")):
        with pytest.raises(ValueError, match=what):
            core2d.degrade(x, *args)
    assert core2d.pool(x, 2).shape == (4, 4, 2) and core2d.upsample_flow(f, 2).shape == (16, 16, 2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_invert_flow_refuses_nan_and_inf(bad):
    f = np.zeros((6, 7, 2), np.float32)
    f[2, 3, 0] = bad
    with pytest.raises(ValueError, match=r"NaN/inf.*\(2, 3\)"):
        core2d.invert_flow(f)
    f3 = np.zeros((4, 4, 4, 3), np.float32)
    f3[1, 2, 3, 2] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        core2d.invert_flow(f3)


def test_invert_flow_of_huge_finite_flow_is_all_holes():
    f = np.full((6, 7, 2), 1e30, np.float32)
    b = core2d.invert_flow(f, holes="fresh")
    from core2d.flow import OUTSIDE
    assert np.all(b == OUTSIDE)


# ---------------------------------------------------------------------------- backends report alike (10)
@pytest.mark.parametrize("method,opt", [("particle", {}), ("particle", {"footprint": "jacobian"}), ("nearest", {}),
                                        ("grid", {}), ("upsample", {}), ("bilinear", {}), ("gp", {}),
                                        ("fixed", {}), ("resample", {})])
def test_last_stats_have_the_same_keys_and_counts_on_both_backends(method, opt):
    from .helpers import maps

    H, W = 24, 28
    flows = [maps(H, W)[k] for k in ("fold", "collapse", "out_of_frame", "zoom_out8")]
    flows.append(np.full((H, W, 2), 10.5, np.float32))            # half the frame revealed
    a = core2d.NoiseWarper(H, W, 2, method, seed=9, backend="numpy", gp_features=32, **opt)
    b = core2d.NoiseWarper(H, W, 2, method, seed=9, backend="taichi", gp_features=32, **opt)
    for f in flows:
        a.step(f)
        b.step(f)
        assert a.last_stats == b.last_stats
