"""`noisewarp warmup`: compile every Taichi kernel once, into the on-disk kernel cache.

A fresh machine (a new user, a CI run, a Ray worker, a Blender session with an empty cache)
otherwise pays the compilation on its first frame. The kernels do not depend on the channel
count, the frame size or the seed, so one warm-up serves every later job on this machine and
architecture (CPU and CUDA are cached separately).
"""
import sys
import time

import numpy as np

METHODS_2D = ("particle", "grid", "nearest", "upsample", "bilinear", "gp", "jacobian", "flowmap")
METHODS_3D = ("particle", "supersample", "flowmap")


def warmup(methods=METHODS_2D, volume=METHODS_3D, log=None):
    """Step a tiny warper of each method through maps that take every code path (a rotation,
    with a revealed strip, then a zoom in that overflows the fixed request slots and makes
    'flowmap' re-anchor), and with any volume method the mesh-motion neighbour search.
    Returns {name: seconds}."""
    import core2d
    import noise3d
    from core2d import _taichi
    from noise3d.nearest import SampleGrid

    arch = _taichi.init()
    if log:
        print(f"noisewarp: compiling for {arch} into {_taichi.cache_dir()}", file=log)
    times = {}

    def timed(name, fn):
        t = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t
        if log:
            print(f"  {name:18s} {times[name]:6.1f} s", file=log, flush=True)

    H, W = 12, 16
    ii, jj = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy = jj + 0.5 - W / 2, ii + 0.5 - H / 2
    th = np.deg2rad(5.0)
    rotate = np.stack([np.cos(th) * cx - np.sin(th) * cy - cx, np.sin(th) * cx + np.cos(th) * cy - cy],
                      -1).astype(np.float32)
    zoom_in = np.stack([cx / 3 - cx, cy / 3 - cy], -1).astype(np.float32)   # flowmap: areas 1/9 re-anchor
    strip = np.zeros((H, W), bool)
    strip[:, 0] = True

    def flat(name):
        method, footprint = ("particle", "jacobian") if name == "jacobian" else (name, "unit")
        w = core2d.NoiseWarper(H, W, channels=4, method=method, seed=0, backend="taichi", footprint=footprint,
                               gp_features=16)
        w.step(rotate, revealed=strip)          # every method: fresh noise for revealed pixels
        w.step(zoom_in)

    X, Y, Z = 4, 5, 6
    c = np.stack(np.meshgrid(*(np.arange(n) + 0.5 - n / 2 for n in (X, Y, Z)), indexing="ij"), -1)
    shrink = (c / 2 - c).astype(np.float32)                                 # flowmap: volumes 1/8 re-anchor
    side = np.zeros((X, Y, Z), bool)
    side[0] = True

    def volumetric(name):
        v = noise3d.VolumeWarper((X, Y, Z), channels=4, method=name, seed=0, backend="taichi", factor=2)
        v.step(np.full((X, Y, Z, 3), 0.3, np.float32), revealed=side)
        if name == "flowmap":
            v.step(shrink)

    for name in methods:
        timed(name, lambda: flat(name))
    for name in volume:
        timed(f"volume {name}", lambda: volumetric(name))
    if volume:
        timed("volume mesh motion", lambda: SampleGrid(np.eye(3)).query(np.zeros((1, 3)), k=2))
    return times


def register(subparsers):
    p = subparsers.add_parser(
        "warmup", help="compile the kernels once (the first frame of a fresh install otherwise waits)",
        description="Compile every Taichi kernel into the kernel cache (NOISEWARP_TI_CACHE, default "
                    "~/.cache/noisewarp/taichi). One warm-up serves every channel count and frame size.")
    p.add_argument("--methods", default=",".join(METHODS_2D),
                   help=f"2D methods to compile (default: all: {','.join(METHODS_2D)})")
    p.add_argument("--volume", default=",".join(METHODS_3D),
                   help="volume methods to compile, with the mesh-motion search (default: all; empty: none)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_warmup)


def cmd_warmup(args):
    methods = [m for m in args.methods.split(",") if m]
    volume = [m for m in args.volume.split(",") if m]
    for m in methods:
        if m not in METHODS_2D:
            raise ValueError(f"--methods: unknown method {m!r}; expected some of {', '.join(METHODS_2D)}")
    for m in volume:
        if m not in METHODS_3D:
            raise ValueError(f"--volume: unknown method {m!r}; expected some of {', '.join(METHODS_3D)}")
    t = time.perf_counter()
    warmup(methods, volume, log=None if args.quiet else sys.stderr)
    if not args.quiet:
        print(f"noisewarp: kernels compiled in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 0
