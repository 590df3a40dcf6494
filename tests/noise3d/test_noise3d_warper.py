"""VolumeWarper: whiteness under hard maps, exact transport facts, bad input, determinism, parity."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import noise3d
from . import vol_helpers as H

SHAPE = (24, 24, 24)
METHODS = ["particle", "supersample"]

MAPS = {
    "rotation": lambda s: H.rotation_flow(s, 25, (1, 2, 3)),
    "swirl": lambda s: H.swirl_flow(s, 2.5),
    "fold": H.fold_flow,
    "collapse": H.collapse_flow,
    "zoom_in_x4": lambda s: H.zoom_flow(s, 4.0),
    "zoom_out_x4": lambda s: H.zoom_flow(s, 0.25),
    "all_out": lambda s: np.full(s + (3,), 1e6, np.float32),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(MAPS))
def test_white_under_motion(method, name):
    v = noise3d.VolumeWarper(SHAPE, channels=2, method=method, seed=7)
    H.assert_white(v.noise, "initial")
    flow = MAPS[name](SHAPE)
    for _ in range(2):
        y = v.step(flow)
    assert y.dtype == np.float32 and y.shape == SHAPE + (2,)
    H.assert_white(y, f"{method}/{name}")


@pytest.mark.parametrize("backend", ["numpy", "taichi"])
@pytest.mark.parametrize("method", METHODS)
def test_zero_flow_is_bit_exact(method, backend):
    v = noise3d.VolumeWarper((10, 12, 9), channels=3, method=method, seed=1, backend=backend)
    x0 = v.noise.copy()
    s0 = v.state.copy()
    for _ in range(3):
        v.step(np.zeros((10, 12, 9, 3), np.float32))
    assert np.array_equal(v.state, s0)
    assert np.array_equal(v.noise, x0)


@pytest.mark.parametrize("backend", ["numpy", "taichi"])
def test_integer_shift_is_exact_with_fresh_noise_where_uncovered(backend):
    shape = (20, 18, 16)
    s = np.array([2, -3, 1])
    v = noise3d.VolumeWarper(shape, channels=2, method="particle", seed=3, backend=backend)
    x = v.noise.copy()
    # content moves by +s: the backward flow is -s
    y = v.step(np.broadcast_to(-s.astype(np.float32), shape + (3,)))
    src = H.grid(shape).astype(int) - s
    inside = ((src >= 0) & (src < np.array(shape))).all(-1)
    si = src[inside]
    assert np.array_equal(y[inside], x[si[:, 0], si[:, 1], si[:, 2]])
    fresh = y[~inside]
    n = fresh.size
    assert abs(fresh.mean()) < H.Z / np.sqrt(n) and abs(fresh.var() - 1) < H.Z * np.sqrt(2 / n)
    # fresh noise is independent of the old frame at the same place
    r = np.corrcoef(fresh.ravel(), x[~inside].ravel())[0, 1]
    assert abs(r) < H.Z / np.sqrt(n)


@pytest.mark.parametrize("method", METHODS)
def test_fractional_translation_correlation_is_the_overlap(method):
    shape = SHAPE
    u = np.float32([0.3, 0.6, 0.2])
    v = noise3d.VolumeWarper(shape, channels=2, method=method, seed=11)
    x = v.noise.copy()
    y = v.step(np.broadcast_to(u, shape + (3,)))
    # the unit cube at p + u overlaps cell p + (0, 1, 0) by 0.7·0.6·0.8 = 0.336 (the largest)
    # and cell p by 0.7·0.4·0.8 = 0.224
    a = y[1:-2, 1:-2, 1:-2]
    n = a.size
    for off, expect in (((0, 1, 0), 0.336), ((0, 0, 0), 0.224), ((1, 1, 1), 0.3 * 0.6 * 0.2)):
        b = x[1 + off[0]:shape[0] - 2 + off[0], 1 + off[1]:shape[1] - 2 + off[1], 1 + off[2]:shape[2] - 2 + off[2]]
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r - expect) < H.Z * (1 - expect ** 2) / np.sqrt(n), (method, off, r, expect)


def test_supersample_keeps_coherence_longer():
    """10 steps of a sub-voxel translation: supersampling diffuses the noise less (ALGORITHMS §5)."""
    shape = SHAPE
    f = np.broadcast_to(np.float32([-0.3, -0.6, -0.2]), shape + (3,))
    corr = {}
    for method in METHODS:
        v = noise3d.VolumeWarper(shape, channels=2, method=method, seed=2)
        x0 = v.noise.copy()
        for _ in range(10):
            v.step(f)
        a, b = x0[:-3, :-6, :-2], v.noise[3:, 6:, 2:]
        corr[method] = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    n = x0[:-3, :-6, :-2].size
    # the two estimates are independent, each with standard error ~1/sqrt(n)
    assert corr["supersample"] - corr["particle"] > H.Z * np.sqrt(2.0 / n), corr


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("method", METHODS)
def test_bad_flow_raises_and_keeps_state(method, bad):
    v = noise3d.VolumeWarper((8, 9, 10), channels=1, method=method, seed=0)
    v.step(np.full((8, 9, 10, 3), 0.25, np.float32))
    before, frame = v.state.copy(), v.frame
    flow = np.zeros((8, 9, 10, 3), np.float32)
    flow[3, 4, 5, 1] = bad
    flow[0, 0, 0, 2] = bad
    with pytest.raises(ValueError, match="NaN/inf"):
        v.step(flow)
    with pytest.raises(ValueError, match="shape"):
        v.step(np.zeros((8, 9, 3), np.float32))
    with pytest.raises(ValueError, match="direction"):
        v.step(np.zeros((8, 9, 10, 3), np.float32), direction="sideways")
    assert np.array_equal(v.state, before) and v.frame == frame


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="shape"):
        noise3d.VolumeWarper((8, 8))
    with pytest.raises(ValueError, match="method"):
        noise3d.VolumeWarper((8, 8, 8), method="voronoi")
    with pytest.raises(ValueError, match="backend"):
        noise3d.VolumeWarper((8, 8, 8), backend="opengl")
    with pytest.raises(ValueError, match="channels"):
        noise3d.VolumeWarper((8, 8, 8), channels=0)
    with pytest.raises(ValueError, match="seed"):
        noise3d.VolumeWarper((8, 8, 8), seed=-1)


def test_forward_flow_is_inverted():
    """direction='forward' goes through core2d.invert_flow: a forward shift of +s equals a backward -s."""
    shape = (16, 16, 16)
    s = np.float32([2, 1, -1])
    a = noise3d.VolumeWarper(shape, channels=1, seed=5)
    b = noise3d.VolumeWarper(shape, channels=1, seed=5)
    ya = a.step(np.broadcast_to(s, shape + (3,)), direction="forward")
    yb = b.step(np.broadcast_to(-s, shape + (3,)))
    core = (slice(3, -3),) * 3
    assert np.array_equal(ya[core], yb[core])
    rot = H.rotation_flow(shape, -15)   # forward flow of a rotation by +15° is the backward of -15°
    H.assert_white(a.step(rot, direction="forward"), "forward rotation")


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("method", METHODS)
def test_numpy_reference_and_taichi_agree(method, channels):
    shape = (14, 12, 10)
    rs = np.random.default_rng(0)
    flow = (H.rotation_flow(shape, 30, (1, 1, 0)) + rs.normal(0, 0.7, shape + (3,))).astype(np.float32)
    flow[:3] += 40.0  # a slab that leaves the volume
    a = noise3d.VolumeWarper(shape, channels=channels, method=method, seed=9, backend="numpy")
    b = noise3d.VolumeWarper(shape, channels=channels, method=method, seed=9, backend="taichi")
    assert np.array_equal(a.state, b.state)
    for _ in range(3):
        ya, yb = a.step(flow), b.step(flow)
        np.testing.assert_allclose(ya, yb, rtol=0, atol=2e-5)


_SCRIPT = r"""
import hashlib, sys, numpy as np
sys.path.insert(0, {root!r})
import noise3d
from tests.noise3d import vol_helpers as H
shape = (16, 16, 16)
out = hashlib.sha256()
for method in ("particle", "supersample"):
    v = noise3d.VolumeWarper(shape, channels=3, method=method, seed=123, backend="taichi")
    for f in (H.rotation_flow(shape, 20, (1, 0, 1)), H.fold_flow(shape), H.collapse_flow(shape)):
        out.update(v.step(f).tobytes())
print(out.hexdigest())
"""


def test_same_bytes_whatever_the_thread_count(tmp_path):
    script = tmp_path / "det.py"
    script.write_text(_SCRIPT.format(root=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(H.__file__))))))
    digests = []
    for threads in ("1", "2"):
        env = dict(os.environ, NOISEWARP_THREADS=threads, NOISEWARP_TI_ARCH="cpu")
        res = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        digests.append(res.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1] and len(digests[0]) == 64


def test_reruns_are_bit_identical_and_seeds_differ():
    shape = (12, 12, 12)
    f = H.swirl_flow(shape)
    outs = []
    for seed in (4, 4, 5):
        v = noise3d.VolumeWarper(shape, channels=2, seed=seed)
        outs.append(hashlib.sha256(v.step(f).tobytes()).hexdigest())
    assert outs[0] == outs[1] != outs[2]


def test_sequence_helper():
    shape = (8, 8, 8)
    flows = np.stack([H.rotation_flow(shape, 10)] * 3)
    seq = noise3d.warp_volume_sequence(flows, channels=2, seed=1)
    assert seq.shape == (4,) + shape + (2,)
    v = noise3d.VolumeWarper(shape, channels=2, seed=1)
    for t in range(3):
        v.step(flows[t])
    assert np.array_equal(seq[-1], v.noise)
