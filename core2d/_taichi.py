"""One place that initialises Taichi: CUDA when present, else CPU; never the generic GPU arch.

Taichi's generic GPU arch probes OpenGL first, which segfaults on machines without a GPU
(Mesa), so the CUDA backend is asked for explicitly; Taichi falls back to CPU by itself when
CUDA is absent.
Environment:
  NOISEWARP_TI_ARCH     cuda (default) | cpu
  NOISEWARP_THREADS     CPU thread count (results do not depend on it)
  TI_OFFLINE_CACHE_FILE_PATH / NOISEWARP_TI_CACHE  where compiled kernels are cached
"""
from __future__ import annotations

import contextlib
import os
import threading

_ARCH = None
LOCK = threading.RLock()
"""Held by every Taichi compile and launch of the 2D and 3D warpers (and while they use the
scratch buffers those launches share): Taichi's program state is global, and two threads that
compile at once fail ('Kernels cannot call other kernels'). Re-entrant, so a step holding it
can initialise Taichi."""


def init():
    """Initialise Taichi once (thread-safe); return the arch in use ('cuda' or 'x64'/'arm64')."""
    with LOCK:
        return _init()


def lock(backend):
    """LOCK for the 'taichi' backend, nothing for 'numpy' (NumPy steps may run in parallel)."""
    return LOCK if backend == "taichi" else contextlib.nullcontext()


def _init():
    global _ARCH
    if _ARCH is not None:
        return _ARCH
    import taichi as ti

    # fast_math off: kernels do the float operations the NumPy references do (no fused
    # multiply-adds, no approximate exp/log), so the shared RNG gives the same bits on both
    kwargs = dict(offline_cache=True, offline_cache_file_path=cache_dir(), log_level=ti.ERROR,
                  default_fp=ti.f32, default_ip=ti.i32, random_seed=0, fast_math=False)
    threads = os.environ.get("NOISEWARP_THREADS")
    if threads:
        kwargs["cpu_max_num_threads"] = int(threads)
    want = os.environ.get("NOISEWARP_TI_ARCH", "cuda").lower()
    arch = ti.cpu if want == "cpu" else ti.cuda
    ti.init(arch=arch, **kwargs)
    # Taichi builds its field tree only on the thread that called init; the RNG's ziggurat
    # tables are the only fields, so they are made here and kernels can then be compiled and
    # launched from any thread (the Blender add-on warps on a worker while Cycles renders).
    from . import rng
    rng.taichi_funcs()
    _ARCH = str(ti.lang.impl.current_cfg().arch).split(".")[-1]
    return _ARCH


def cache_dir() -> str:
    """Where compiled kernels are cached (`noisewarp warmup` fills it)."""
    return (os.environ.get("NOISEWARP_TI_CACHE") or os.environ.get("TI_OFFLINE_CACHE_FILE_PATH")
            or os.path.join(os.path.expanduser("~"), ".cache", "noisewarp", "taichi"))


def available() -> bool:
    try:
        import taichi  # noqa: F401
    except Exception:
        return False
    return True
