"""`noisewarp warmup` fills the kernel cache, so a later process compiles nothing."""
import os
import subprocess
import sys

from noisewarp.cli import main

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


def test_warmup_fills_the_cache_for_any_channel_count(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, NOISEWARP_TI_CACHE=str(cache), NOISEWARP_TI_ARCH="cpu", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-m", "noisewarp.cli", "warmup", "--methods", "particle",
                          "--volume", ""], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "particle" in res.stderr and str(cache) in res.stderr
    cached = {f for _, _, fs in os.walk(cache) for f in fs}
    assert cached
    # a 16-channel warper in a new process finds every kernel it needs in the cache
    res = subprocess.run([sys.executable, "-c", _STEP.format(root=ROOT)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert {f for _, _, fs in os.walk(cache) for f in fs} == cached


def test_warmup_refuses_an_unknown_method(capsys):
    assert main(["warmup", "--methods", "particle,bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus" in err[0] and err[0].startswith("noisewarp: error: ")
