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
