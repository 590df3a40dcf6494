"""Counter-based Gaussian RNG shared by every warper, 2D and 3D, NumPy and Taichi.

A draw is a pure function of its key (seed, frame, stream, a, b, pair): no state, so any
thread may compute any draw in any order and the result is the same bytes. Both backends
run the same uint32 integer hash and the same float32 Box-Muller transform, so the Taichi
kernels and the NumPy references consume one stream and agree to float tolerance.

`pair` indexes channel pairs: Box-Muller yields two normals, used for channels 2k and 2k+1.
"""


import numpy as np

# Streams: which role a draw plays. Keeping them apart keeps the draws independent.
INIT = 0       # initial noise of frame 0, a = pixel
PIECE = 1      # bridge increment of piece (cell a -> destination b)
LEFTOVER = 2   # the unrequested leftover piece of cell a
FRESH = 3      # fresh noise for destination a (out of frame, or nothing received)
DEGRADE = 4    # degradation noise for output pixel a
SUBPIXEL = 5   # Chang et al. sub-pixel b of cell a
FEATURE = 6    # random Fourier features (GP warping)

_M1 = 0x7FEB352D
_M2 = 0x846CA68B
_GOLD = 0x9E3779B9
_U24 = np.float32(1.0 / 16777216.0)
_TWO_PI = np.float32(2.0 * np.pi)


def _mix(h: np.ndarray) -> np.ndarray:
    """lowbias32 finaliser (Wellons): a well-tested bijective 32-bit avalanche."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(_M1)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(_M2)
    h = h ^ (h >> np.uint32(16))
    return h


def seed_key(seed: int) -> int:
    """Fold a Python int seed of any size into 32 bits (keeps distinct small seeds distinct)."""
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    h = np.uint32(0)
    with np.errstate(over="ignore"):
        while True:
            h = _mix(np.uint32(h ^ np.uint32(seed & 0xFFFFFFFF)) + np.uint32(_GOLD))
            seed >>= 32
            if seed == 0:
                break
    return int(h)


def hash_key(seed: int, frame: int, stream: int, a, b, pair) -> np.ndarray:
    """uint32 hash of the key; a, b, pair broadcast (integer arrays < 2**32)."""
    u = np.uint32
    with np.errstate(over="ignore"):
        h = _mix(u(seed) ^ u((stream * _GOLD) & 0xFFFFFFFF))
        h = _mix(h ^ u(frame & 0xFFFFFFFF))
        h = _mix(h ^ np.asarray(a).astype(np.uint32))
        h = _mix(h ^ np.asarray(b).astype(np.uint32))
        h = _mix(h ^ np.asarray(pair).astype(np.uint32))
    return h


def gauss_pair(seed: int, frame: int, stream: int, a, b, pair):
    """Two independent N(0,1) float32 arrays for the key (Box-Muller on two hashes)."""
    h1 = hash_key(seed, frame, stream, a, b, pair)
    with np.errstate(over="ignore"):
        h2 = _mix(h1 ^ np.uint32(_GOLD))
    u1 = ((h1 >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * _U24
    u2 = ((h2 >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * _U24
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    t = _TWO_PI * u2
    return r * np.cos(t), r * np.sin(t)


def gauss(seed: int, frame: int, stream: int, a, b, channels: int) -> np.ndarray:
    """N(0,1) float32 of shape broadcast(a, b) + (channels,), channel k from pair k // 2."""
    a = np.asarray(a)
    b = np.asarray(b)
    shape = np.broadcast_shapes(a.shape, b.shape)
    out = np.empty(shape + (channels,), np.float32)
    for k in range((channels + 1) // 2):
        n0, n1 = gauss_pair(seed, frame, stream, a, b, k)
        out[..., 2 * k] = n0
        if 2 * k + 1 < channels:
            out[..., 2 * k + 1] = n1
    return out


def uniform(seed: int, frame: int, stream: int, a, b, pair) -> np.ndarray:
    """U(0,1) float32 from the same hash (used to draw random phases)."""
    h = hash_key(seed, frame, stream, a, b, pair)
    return ((h >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * _U24


# ----------------------------------------------------------------------------- Taichi side
def taichi_funcs():
    """The same hash and Box-Muller as Taichi functions (built lazily: Taichi is optional to import)."""
    global _TI_FUNCS
    if _TI_FUNCS is not None:
        return _TI_FUNCS
    import taichi as ti

    @ti.func
    def mix(h):
        h = h ^ (h >> ti.u32(16))
        h = h * ti.u32(_M1)
        h = h ^ (h >> ti.u32(15))
        h = h * ti.u32(_M2)
        h = h ^ (h >> ti.u32(16))
        return h

    @ti.func
    def ti_hash(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32, pair: ti.u32) -> ti.u32:
        h = mix(seed ^ (stream * ti.u32(_GOLD)))
        h = mix(h ^ frame)
        h = mix(h ^ a)
        h = mix(h ^ b)
        h = mix(h ^ pair)
        return h

    @ti.func
    def ti_gauss_pair(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32, pair: ti.u32):
        h1 = ti_hash(seed, frame, stream, a, b, pair)
        h2 = mix(h1 ^ ti.u32(_GOLD))
        u1 = (ti.cast(h1 >> ti.u32(8), ti.f32) + 0.5) * (1.0 / 16777216.0)
        u2 = (ti.cast(h2 >> ti.u32(8), ti.f32) + 0.5) * (1.0 / 16777216.0)
        r = ti.sqrt(-2.0 * ti.log(u1))
        t = ti.f32(2.0 * np.pi) * u2
        return ti.Vector([r * ti.cos(t), r * ti.sin(t)], ti.f32)

    @ti.func
    def ti_uniform(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32, pair: ti.u32) -> ti.f32:
        h = ti_hash(seed, frame, stream, a, b, pair)
        return (ti.cast(h >> ti.u32(8), ti.f32) + 0.5) * (1.0 / 16777216.0)

    _TI_FUNCS = (ti_hash, ti_gauss_pair, ti_uniform)
    return _TI_FUNCS


_TI_FUNCS = None
