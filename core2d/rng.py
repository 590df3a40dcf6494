"""Counter-based Gaussian RNG shared by every warper, 2D and 3D, NumPy and Taichi.

A draw is a pure function of its key (seed, frame, stream, a, b, pair): no state, so any
thread may compute any draw in any order and the result is the same bytes. Both backends
run the same uint32 integer hash and the same float32 Box-Muller transform, so the Taichi
kernels and the NumPy references consume one stream and agree to float tolerance.

`pair` indexes channel pairs: Box-Muller yields two normals, used for channels 2k and 2k+1.
Its log and sin/cos are short polynomials written out here (not libm): the same float32
operations on both backends, and ~5× faster than libm calls in the kernels. Their errors
(< 3e-7 absolute) are far below the 24-bit resolution of the uniforms.
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


_LN2 = np.float32(np.log(2.0))
_LOG_C = [np.float32(1.0 / k) for k in (11, 9, 7, 5, 3)]
_SIN_C = [np.float32(v) for v in (1 / 362880, -1 / 5040, 1 / 120, -1 / 6)]
_COS_C = [np.float32(v) for v in (1 / 40320, -1 / 720, 1 / 24, -1 / 2)]


def _log(u):
    """ln u for float32 u > 0: exponent from the bits, atanh series for the mantissa in [1, 2)."""
    bits = u.view(np.int32)
    e = ((bits >> 23) & 0xFF) - 127
    m = ((bits & 0x7FFFFF) | 0x3F800000).view(np.float32)
    t = (m - np.float32(1)) / (m + np.float32(1))
    t2 = t * t
    p = _LOG_C[0]
    for c in _LOG_C[1:]:
        p = p * t2 + c
    p = p * t2 + np.float32(1)
    return np.float32(2) * t * p + e.astype(np.float32) * _LN2


def _sincos_turns(v):
    """(cos, sin) of 2π v for float32 v: quarter-turn reduction, then Taylor on [-π/4, π/4]."""
    q = np.floor(np.float32(4) * v + np.float32(0.5))
    x = (v - q * np.float32(0.25)) * _TWO_PI
    x2 = x * x
    s = _SIN_C[0]
    for c in _SIN_C[1:]:
        s = s * x2 + c
    s = x * (s * x2 + np.float32(1))
    k = _COS_C[0]
    for c in _COS_C[1:]:
        k = k * x2 + c
    k = k * x2 + np.float32(1)
    quad = q.astype(np.int32) & 3
    cos = np.where(quad == 0, k, np.where(quad == 1, -s, np.where(quad == 2, -k, s)))
    sin = np.where(quad == 0, s, np.where(quad == 1, k, np.where(quad == 2, -s, -k)))
    return cos, sin


def gauss_pair(seed: int, frame: int, stream: int, a, b, pair):
    """Two independent N(0,1) float32 arrays for the key (Box-Muller on two hashes)."""
    h1 = hash_key(seed, frame, stream, a, b, pair)
    with np.errstate(over="ignore"):
        h2 = _mix(h1 ^ np.uint32(_GOLD))
    u1 = ((h1 >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * _U24
    u2 = ((h2 >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * _U24
    r = np.sqrt(np.float32(-2.0) * _log(np.atleast_1d(u1))).reshape(u1.shape)
    cos, sin = _sincos_turns(u2)
    return r * cos, r * sin


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
    def ti_key(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32) -> ti.u32:
        """The hash up to (a, b): shared by all channel pairs of one draw site."""
        h = mix(seed ^ (stream * ti.u32(_GOLD)))
        h = mix(h ^ frame)
        h = mix(h ^ a)
        return mix(h ^ b)

    @ti.func
    def ti_hash(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32, pair: ti.u32) -> ti.u32:
        return mix(ti_key(seed, frame, stream, a, b) ^ pair)

    @ti.func
    def ti_log(u):
        bits = ti.bit_cast(u, ti.i32)
        e = ((bits >> 23) & 0xFF) - 127
        m = ti.bit_cast((bits & 0x7FFFFF) | 0x3F800000, ti.f32)
        t = (m - 1.0) / (m + 1.0)
        t2 = t * t
        p = ti.f32(_LOG_C[0])
        for k in ti.static(range(1, len(_LOG_C))):
            p = p * t2 + ti.f32(_LOG_C[k])
        p = p * t2 + 1.0
        return 2.0 * t * p + ti.cast(e, ti.f32) * ti.f32(_LN2)

    @ti.func
    def ti_sincos_turns(v):
        q = ti.floor(4.0 * v + 0.5)
        x = (v - q * 0.25) * ti.f32(_TWO_PI)
        x2 = x * x
        s = ti.f32(_SIN_C[0])
        for k in ti.static(range(1, len(_SIN_C))):
            s = s * x2 + ti.f32(_SIN_C[k])
        s = x * (s * x2 + 1.0)
        c = ti.f32(_COS_C[0])
        for k in ti.static(range(1, len(_COS_C))):
            c = c * x2 + ti.f32(_COS_C[k])
        c = c * x2 + 1.0
        quad = ti.cast(q, ti.i32) & 3
        # branch-free quarter-turn rotation (random quadrants would defeat branch prediction)
        swap = (quad & 1) == 1
        cc = ti.select(swap, s, c)
        ss = ti.select(swap, c, s)
        cc = ti.select((quad == 1) | (quad == 2), -cc, cc)
        ss = ti.select(quad >= 2, -ss, ss)
        return ti.Vector([cc, ss], ti.f32)

    @ti.func
    def ti_gauss_at(key: ti.u32, pair: ti.u32):
        """Normals 2·pair, 2·pair+1 of the draw site `key` (from ti_key)."""
        h1 = mix(key ^ pair)
        h2 = mix(h1 ^ ti.u32(_GOLD))
        u1 = (ti.cast(h1 >> ti.u32(8), ti.f32) + 0.5) * (1.0 / 16777216.0)
        u2 = (ti.cast(h2 >> ti.u32(8), ti.f32) + 0.5) * (1.0 / 16777216.0)
        r = ti.sqrt(-2.0 * ti_log(u1))
        return r * ti_sincos_turns(u2)

    @ti.func
    def ti_gauss_pair(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32, pair: ti.u32):
        return ti_gauss_at(ti_key(seed, frame, stream, a, b), pair)

    @ti.func
    def ti_uniform(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32, pair: ti.u32) -> ti.f32:
        h = ti_hash(seed, frame, stream, a, b, pair)
        return (ti.cast(h >> ti.u32(8), ti.f32) + 0.5) * (1.0 / 16777216.0)

    _TI_FUNCS = (ti_hash, ti_gauss_pair, ti_uniform)
    _TI_KEYED[:] = [ti_key, ti_gauss_at]
    return _TI_FUNCS


def taichi_keyed():
    """(ti_key, ti_gauss_at): the same draws as ti_gauss_pair, with the per-site hash hoisted."""
    taichi_funcs()
    return tuple(_TI_KEYED)


_TI_FUNCS = None
_TI_KEYED = []
