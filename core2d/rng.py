"""Counter-based Gaussian RNG shared by every warper, 2D and 3D, NumPy and Taichi.

A draw is a pure function of its key (seed, frame, stream, a, b, pair): no state, so any
thread may compute any draw in any order and the result is the same bytes. Both backends
run the same uint32 integer hash and the same float32 ziggurat, so the Taichi kernels and
the NumPy references consume one stream and agree to float tolerance.

`pair` indexes channel pairs: a key yields two 32-bit hashes, one normal each, used for
channels 2k and 2k+1. The normal is Marsaglia & Tsang's ziggurat with 128 layers, laid out so
that no bit is used twice (layer: bits 0-6, sign: bit 7, abscissa: bits 8-31); 98.8 % of
draws take the table-lookup fast path, which is ~2× cheaper than Box-Muller in the kernels.
A rejected draw re-hashes its own state, so the sequence stays a function of the key. The
rare tail draws use a log, and the wedge test an exp, written out here: the same float32
operations on both backends (the kernels are compiled without fast-math, so no fused
multiply-adds), hence the same bits.
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
REVEALED = 7   # fresh noise for a pixel a whose content was not visible in the previous frame
# Flow-map reference fields: `frame` is the anchor (the frame a reference region started in),
# a, b the cell's row and column (any integers, taken modulo 2**32), level l < 16.
REFERENCE = 16   # level-0 cell value
CHILDREN = 32    # + l: the three Hadamard normals that split a level-l cell into its children
BRIDGE = 48      # + 16·o + l: midpoints of the Brownian bridge (orientation o < 3) of a level-l leaf
BRIDGE_FILL = 96  # + 16·o + l: a split point inside that bridge's finest interval, keyed by its pixel
VOLUME = 144     # + l: 3D reference cell (i, j, k) of level l: a = i, b = j, pair = (8k + m)·P + channel
                 # pair, m = 0 its level-0 value, 1..7 the Hadamard normals that split it

_M1 = 0x7FEB352D
_M2 = 0x846CA68B
_GOLD = 0x9E3779B9
_U24 = np.float32(1.0 / 16777216.0)


def _mix(h: np.ndarray) -> np.ndarray:
    """lowbias32 finaliser (Wellons): a well-tested bijective 32-bit avalanche."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(_M1)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(_M2)
    h = h ^ (h >> np.uint32(16))
    return h


def seed_key(seed: int) -> int:
    """The 32-bit key of a seed in [0, 2**32): a bijection, so distinct seeds never share noise;
    larger seeds are refused (folding them would make two seeds give identical noise)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    with np.errstate(over="ignore"):
        return int(_mix(np.uint32(seed) + np.uint32(_GOLD)))


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
_INV_LN2 = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)       # ln 2 to 16 bits: k · _LN2_HI is exact for |k| < 2**8
_LN2_LO = np.float32(1.428606765330187e-06)   # the rest of ln 2
_EXP_C = [np.float32(1.0 / f) for f in (720, 120, 24, 6, 2, 1, 1)]   # Taylor series of e^r, |r| <= ln2/2
_NEXT_U = 0x85EBCA6B      # a draw's next uniform: mix(state ^ _NEXT_U)
_RESTART = 0xC2B2AE35     # a rejected draw's next attempt: mix(state ^ _RESTART)
_ZIG_R = 3.442619855899   # start of the tail


def _ziggurat_tables():
    """Marsaglia & Tsang (2000) tables for 128 layers and a 24-bit abscissa."""
    m1 = 2.0 ** 24
    dn = tn = _ZIG_R
    vn = 9.91256303526217e-3
    q = vn / np.exp(-0.5 * dn * dn)
    k, w, f = np.zeros(128), np.zeros(128), np.zeros(128)
    k[0], k[1] = (dn / q) * m1, 0.0
    w[0], w[127] = q / m1, dn / m1
    f[0], f[127] = 1.0, np.exp(-0.5 * dn * dn)
    for i in range(126, 0, -1):
        dn = np.sqrt(-2.0 * np.log(vn / dn + np.exp(-0.5 * dn * dn)))
        k[i + 1] = (dn / tn) * m1
        tn = dn
        f[i], w[i] = np.exp(-0.5 * dn * dn), dn / m1
    return k.astype(np.uint32), w.astype(np.float32), f.astype(np.float32)


_ZK, _ZW, _ZF = _ziggurat_tables()


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


def _exp(y):
    """e^y for float32 y in the ziggurat's wedge (-r²/2 <= y <= 0): y = k ln2 + r, a degree-6
    series for e^r, 2^k from the bits. Written out like `_log` so that both backends compare
    the same float32 number (np.exp and LLVM's expf differ in the last bit now and then)."""
    k = np.floor(y * _INV_LN2 + np.float32(0.5))
    r = (y - k * _LN2_HI) - k * _LN2_LO
    p = _EXP_C[0]
    for c in _EXP_C[1:]:
        p = p * r + c
    return p * ((k.astype(np.int32) + 127) << 23).view(np.float32)


def _uniform24(h):
    return ((h >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * _U24


def _ziggurat(u):
    """N(0,1) float32 from uint32 states u (see the module docstring)."""
    u = np.array(u, np.uint32, copy=True).ravel()
    out = np.empty(u.shape, np.float32)
    todo = np.arange(u.size)
    one, r = np.float32(1), np.float32(_ZIG_R)
    with np.errstate(over="ignore"):
        while todo.size:
            v = u[todo]
            i = (v & np.uint32(127)).astype(np.int64)
            j = v >> np.uint32(8)
            x = j.astype(np.float32) * _ZW[i]
            done = j < _ZK[i]
            res = np.where(done, x, np.float32(0))
            tail = ~done & (i == 0)
            if tail.any():                       # the tail beyond r: loop until it accepts
                t = np.nonzero(tail)[0]
                while t.size:
                    v[t] = _mix(v[t] ^ np.uint32(_NEXT_U))
                    u1 = _uniform24(v[t])
                    v[t] = _mix(v[t] ^ np.uint32(_NEXT_U))
                    u2 = _uniform24(v[t])
                    xx = -_log(u1) / r
                    yy = -_log(u2)
                    ok = yy + yy >= xx * xx
                    res[t[ok]] = r + xx[ok]
                    done[t[ok]] = True
                    t = t[~ok]
            wedge = ~done & (i != 0)
            if wedge.any():                      # between two layers: accept under the density
                t = np.nonzero(wedge)[0]
                v[t] = _mix(v[t] ^ np.uint32(_NEXT_U))
                uf = _uniform24(v[t])
                ok = _ZF[i[t]] + uf * (_ZF[i[t] - 1] - _ZF[i[t]]) < _exp(np.float32(-0.5) * x[t] * x[t])
                res[t[ok]] = x[t[ok]]
                done[t[ok]] = True
            sign = np.where((v >> np.uint32(7)) & np.uint32(1), one, -one)
            out[todo[done]] = (sign * res)[done]
            u[todo] = np.where(done, v, _mix(v ^ np.uint32(_RESTART)))
            todo = todo[~done]
    return out


def gauss_pair(seed: int, frame: int, stream: int, a, b, pair):
    """Two independent N(0,1) float32 arrays for the key (one ziggurat draw per hash)."""
    h1 = hash_key(seed, frame, stream, a, b, pair)
    with np.errstate(over="ignore"):
        h2 = _mix(h1 ^ np.uint32(_GOLD))
    shape = np.shape(h1)
    return _ziggurat(h1).reshape(shape), _ziggurat(h2).reshape(shape)


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


def gauss_sites(seed: int, frame: int, stream: int, sites, channels: int, backend: str = "numpy") -> np.ndarray:
    """`gauss(seed, frame, stream, sites, 0, channels)`: the normals of an integer array of draw
    sites. backend "taichi" draws them in a kernel (same stream): fresh noise for revealed pixels
    and degradation noise are drawn every frame, as many as the frame has pixels."""
    sites = np.asarray(sites)
    if backend != "taichi" or sites.size == 0:
        return gauss(seed, frame, stream, sites, 0, channels)
    global _SITES
    if _SITES is None:
        import taichi as ti

        site_key, gauss_at = taichi_sites()

        @ti.kernel
        def draw(sites: ti.types.ndarray(dtype=ti.u32, ndim=1), out: ti.types.ndarray(dtype=ti.f32, ndim=2),
                 base: ti.u32):
            for s in range(sites.shape[0]):
                key = site_key(base, sites[s], 0)
                C = out.shape[1]
                for pr in range((C + 1) // 2):          # channel pairs: a run-time loop
                    f = gauss_at(key, ti.cast(pr, ti.u32))
                    out[s, 2 * pr] = f[0]
                    if 2 * pr + 1 < C:
                        out[s, 2 * pr + 1] = f[1]

        _SITES = draw
    out = np.empty((sites.size, channels), np.float32)
    _SITES(np.ascontiguousarray(sites.ravel().astype(np.uint32)), out, np.uint32(site_base(seed, frame, stream)))
    return out.reshape(sites.shape + (channels,))


_SITES = None


def uniform(seed: int, frame: int, stream: int, a, b, pair) -> np.ndarray:
    """U(0,1) float32 from the same hash (used to draw random phases)."""
    return _uniform24(hash_key(seed, frame, stream, a, b, pair))


def site_base(seed: int, frame: int, stream: int) -> int:
    """The part of the key shared by every draw of one (seed, frame, stream): computed once per
    kernel launch, so a kernel hashes only (a, b) per draw site (`site_key` on the Taichi side)."""
    u = np.uint32
    with np.errstate(over="ignore"):
        h = _mix(u(seed) ^ u((stream * _GOLD) & 0xFFFFFFFF))
        return int(_mix(h ^ u(frame & 0xFFFFFFFF)))


# ----------------------------------------------------------------------------- Taichi side
def taichi_funcs():
    """(ti_hash, ti_gauss_pair, ti_uniform): the same hash and ziggurat as Taichi functions
    (built lazily: Taichi is optional to import). See `taichi_sites` for the hoisted form."""
    _build()
    return _TI.hash, _TI.gauss_pair, _TI.uniform


def taichi_keyed():
    """(ti_key, ti_gauss_at): the same draws as ti_gauss_pair, with the per-site hash hoisted."""
    _build()
    return _TI.key, _TI.gauss_at


def taichi_sites():
    """(site_key, gauss_at): `site_key(site_base(seed, frame, stream), a, b)` is the site's key
    (two mixes per site instead of four); `gauss_at(key, pair)` its normals 2·pair, 2·pair+1."""
    _build()
    return _TI.site_key, _TI.gauss_at


def taichi_groups():
    """(site_key, gauss4_at): `gauss4_at(key, g)` gives normals 4g .. 4g+3 of the site as one
    4-vector (the stream of `gauss`), for kernels that process channels in groups of four."""
    _build()
    return _TI.site_key, _TI.gauss4_at


def _build():
    global _TI
    if _TI is not None:
        return _TI
    import types

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
    def site_key(base: ti.u32, a, b) -> ti.u32:
        return mix(mix(base ^ ti.cast(a, ti.u32)) ^ ti.cast(b, ti.u32))

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
    def ti_exp(y):
        k = ti.floor(y * ti.f32(_INV_LN2) + 0.5)
        r = (y - k * ti.f32(_LN2_HI)) - k * ti.f32(_LN2_LO)
        p = ti.f32(_EXP_C[0])
        for c in ti.static(range(1, len(_EXP_C))):
            p = p * r + ti.f32(_EXP_C[c])
        return p * ti.bit_cast((ti.cast(k, ti.i32) + 127) << 23, ti.f32)

    K = ti.field(ti.u32, 128)
    Wt = ti.field(ti.f32, 128)
    Ft = ti.field(ti.f32, 128)
    K.from_numpy(_ZK)
    Wt.from_numpy(_ZW)
    Ft.from_numpy(_ZF)

    @ti.func
    def u24(h):
        return (ti.cast(h >> ti.u32(8), ti.f32) + 0.5) * (1.0 / 16777216.0)

    @ti.func
    def ziggurat(u):
        """The whole ziggurat for state u (fast path, wedge, tail, restarts)."""
        res = 0.0
        done = False
        while not done:
            i = ti.cast(u & ti.u32(127), ti.i32)
            j = u >> ti.u32(8)
            x = ti.cast(j, ti.f32) * Wt[i]
            if j < K[i]:
                done = True
                res = x
            elif i == 0:
                while not done:
                    u = mix(u ^ ti.u32(_NEXT_U))
                    u1 = u24(u)
                    u = mix(u ^ ti.u32(_NEXT_U))
                    u2 = u24(u)
                    xx = -ti_log(u1) / ti.f32(_ZIG_R)
                    yy = -ti_log(u2)
                    if yy + yy >= xx * xx:
                        done = True
                        res = ti.f32(_ZIG_R) + xx
            else:
                u = mix(u ^ ti.u32(_NEXT_U))
                if Ft[i] + u24(u) * (Ft[i - 1] - Ft[i]) < ti_exp(-0.5 * x * x):
                    done = True
                    res = x
            if not done:
                u = mix(u ^ ti.u32(_RESTART))
        return ti.select((u >> ti.u32(7)) & ti.u32(1) == ti.u32(1), res, -res)

    @ti.func
    def table(u):
        """The ziggurat's first try: (signed value, accepted). Branch-free; 98.8 % accept."""
        i = ti.cast(u & ti.u32(127), ti.i32)
        j = u >> ti.u32(8)
        x = ti.cast(j, ti.f32) * Wt[i]
        return ti.select((u >> ti.u32(7)) & ti.u32(1) == ti.u32(1), x, -x), ti.cast(j < K[i], ti.i32)

    @ti.func
    def ti_gauss_at(key: ti.u32, pair: ti.u32):
        """Normals 2·pair, 2·pair+1 of the draw site `key`: both take the table path, and the
        rare rejects (2.4 % of pairs) are redone by the whole ziggurat, inlined once."""
        h1 = mix(key ^ pair)
        h2 = mix(h1 ^ ti.u32(_GOLD))
        n1, ok1 = table(h1)
        n2, ok2 = table(h2)
        if (ok1 & ok2) == 0:
            for e in range(2):                   # a run-time loop: one copy of the slow path
                if ti.select(e == 0, ok1, ok2) == 0:
                    v = ziggurat(ti.select(e == 0, h1, h2))
                    if e == 0:
                        n1 = v
                    else:
                        n2 = v
        return ti.Vector([n1, n2], ti.f32)

    @ti.func
    def ti_gauss4_at(key: ti.u32, g):
        """Normals 4g .. 4g+3 of the draw site `key` (pairs 2g, 2g+1: the same values as two
        `gauss_at` calls), as a 4-vector: the four hashes and table lookups are independent
        lanes the compiler can vectorise; the rare rejects (4.7 % of groups) are redone by one
        inlined copy of the whole ziggurat."""
        pr = ti.cast(2 * g, ti.u32)
        ha = mix(key ^ pr)
        hb = mix(key ^ (pr + ti.u32(1)))
        h = ti.Vector([ha, mix(ha ^ ti.u32(_GOLD)), hb, mix(hb ^ ti.u32(_GOLD))], ti.u32)
        n = ti.Vector.zero(ti.f32, 4)
        bad = 0
        for e in ti.static(range(4)):
            v, ok = table(h[e])
            n[e] = v
            bad |= (1 - ok) << e
        while bad != 0:                          # a run-time loop: one copy of the slow path
            e = ti.select(bad & 1 != 0, 0, ti.select(bad & 2 != 0, 1, ti.select(bad & 4 != 0, 2, 3)))
            bad ^= 1 << e                        # the lowest rejected lane (no dynamic indexing)
            v = ziggurat(ti.select(e == 0, h[0], ti.select(e == 1, h[1], ti.select(e == 2, h[2], h[3]))))
            for t in ti.static(range(4)):
                if e == t:
                    n[t] = v
        return n

    @ti.func
    def ti_gauss_pair(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32, pair: ti.u32):
        return ti_gauss_at(ti_key(seed, frame, stream, a, b), pair)

    @ti.func
    def ti_uniform(seed: ti.u32, frame: ti.u32, stream: ti.u32, a: ti.u32, b: ti.u32, pair: ti.u32) -> ti.f32:
        return u24(ti_hash(seed, frame, stream, a, b, pair))

    _TI = types.SimpleNamespace(hash=ti_hash, gauss_pair=ti_gauss_pair, uniform=ti_uniform, key=ti_key,
                                site_key=site_key, gauss_at=ti_gauss_at, gauss4_at=ti_gauss4_at, mix=mix,
                             ziggurat=ziggurat, exp=ti_exp, log=ti_log)
    return _TI


_TI = None
