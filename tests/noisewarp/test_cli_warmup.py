"""`noisewarp warmup` fills the kernel cache, so a later process compiles nothing."""
import os
import subprocess
import sys

import core2d
import noise3d
from noisewarp.cli import main
from noisewarp.warmup import METHODS_2D, METHODS_3D

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_STEP = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
import core2d
w = core2d.NoiseWarper(20, 24, channels=16, seed=3, backend="taichi")
w.step(np.full((20, 24, 2), 0.4, np.float32))
print("ok")
"""


_FLOWMAP = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
import core2d, noise3d
from noise3d.nearest import SampleGrid
w = core2d.NoiseWarper(20, 24, channels=16, seed=3, backend="taichi", method="flowmap")
w.step(np.full((20, 24, 2), 0.4, np.float32), revealed=np.eye(20, 24, dtype=bool))
v = noise3d.VolumeWarper((5, 6, 7), channels=3, seed=3, backend="taichi", method="flowmap")
v.step(np.full((5, 6, 7, 3), 0.4, np.float32))
SampleGrid(np.random.default_rng(0).random((50, 3))).query(np.zeros((4, 3)), k=8)
print("ok")
"""


def _warm_then_step(tmp_path, methods, volume, step):
    """Run `noisewarp warmup` into an empty cache, then `step` in a new process: the cache's files
    before and after (a kernel the warm-up missed is compiled and cached by the second process)."""
    cache = tmp_path / "cache"
    env = dict(os.environ, NOISEWARP_TI_CACHE=str(cache), NOISEWARP_TI_ARCH="cpu", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-m", "noisewarp.cli", "warmup", "--methods", methods,
                          "--volume", volume], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(cache) in res.stderr and all(m in res.stderr for m in (methods + "," + volume).split(",") if m)
    cached = {f for _, _, fs in os.walk(cache) for f in fs}
    assert cached
    res = subprocess.run([sys.executable, "-c", step.format(root=ROOT)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return cached, {f for _, _, fs in os.walk(cache) for f in fs}


def test_warmup_fills_the_cache_for_any_channel_count(tmp_path):
    # a 16-channel warper in a new process finds every kernel it needs in the cache
    before, after = _warm_then_step(tmp_path, "particle", "", _STEP)
    assert after == before


def test_warmup_compiles_the_flow_map(tmp_path):
    """2D and 3D flow maps (revealed pixels, re-anchoring) and the mesh-motion search: a later
    process compiles nothing."""
    before, after = _warm_then_step(tmp_path, "flowmap", "flowmap", _FLOWMAP)
    assert after == before


def test_warmup_lists_every_method_with_kernels():
    """'fixed' and 'resample' run no kernels; every other method is warmed up by default."""
    assert set(core2d.METHODS) - {"fixed", "resample"} <= set(METHODS_2D)
    assert set(METHODS_3D) == set(noise3d.METHODS)


def test_warmup_refuses_an_unknown_method(capsys):
    assert main(["warmup", "--methods", "particle,bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus" in err[0] and err[0].startswith("noisewarp: error: ")
