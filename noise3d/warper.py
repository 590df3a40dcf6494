"""Volumetric integral noise warping: the particle variant with 8 trilinear corners, and its
supersampled form (particle on an s× finer state, ∫-pooled to the output).

Voxel (i, j, k) is the unit cell [i, i+1]×[j, j+1]×[k, k+1]. A new voxel p is a unit cube whose
lower corner sits at M(p) = p + B(p) in the previous frame (backward flow B, in voxels). Its
overlap with each of the ≤ 8 cells around it is the trilinear weight (product of the 1D
overlaps). Requests (cell, destination, weight) go through core2d.partition, the same
Brownian-bridge split the 2D warpers use, so every frame is exactly i.i.d. N(0,1); the weight
of the cube outside the volume becomes fresh noise.

Requests are ordered destination-major, then by corner (dx, dy, dz) with dz fastest; the
NumPy reference and the Taichi kernels use that same order and the same counter-based RNG,
so they agree to float tolerance and each is bit-reproducible whatever the thread count.
"""
import json
import os
import threading
import zipfile
import zlib

import numpy as np

from core2d import _taichi, ops, partition, rng
from core2d.warper import Serialised

from . import flowmap

METHODS = ("particle", "supersample", "flowmap")
BACKENDS = ("auto", "taichi", "numpy")


def _corners():
    return [((c >> 2) & 1, (c >> 1) & 1, c & 1) for c in range(8)]


def _clamped_positions(flow, shape):
    """Backward-mapped lower corners q = p + B(p) (float32, [N, 3]), clamped to [-2, n+1].

    Clamping only moves cubes that are already entirely outside the volume, so the in-volume
    weights do not change, and huge flows cannot overflow the integer cell indices.
    """
    X, Y, Z = shape
    grid = np.indices(shape, dtype=np.int32).reshape(3, -1).T.astype(np.float32)
    q = grid + flow.reshape(-1, 3)
    hi = np.array([X + 1, Y + 1, Z + 1], np.float32)
    return np.minimum(np.maximum(q, np.float32(-2.0)), hi)


def particle_requests(flow, shape):
    """All (src cell, dst voxel, weight) requests of the trilinear particle footprint, sorted
    destination-major then by corner, and the out-of-volume weight v_out per destination."""
    shape = tuple(int(n) for n in shape)
    N = int(np.prod(shape))
    q = _clamped_positions(np.asarray(flow, np.float32), shape)
    lo = np.floor(q)
    f = q - lo
    lo = lo.astype(np.int64)
    one = np.float32(1.0)
    src = np.empty((N, 8), np.int64)
    w = np.empty((N, 8), np.float32)
    ok = np.empty((N, 8), bool)
    v_out = np.zeros(N, np.float32)
    for c, (dx, dy, dz) in enumerate(_corners()):
        wx = f[:, 0] if dx else one - f[:, 0]
        wy = f[:, 1] if dy else one - f[:, 1]
        wz = f[:, 2] if dz else one - f[:, 2]
        wc = (wx * wy) * wz
        cx, cy, cz = lo[:, 0] + dx, lo[:, 1] + dy, lo[:, 2] + dz
        inside = ((cx >= 0) & (cx < shape[0]) & (cy >= 0) & (cy < shape[1]) & (cz >= 0) & (cz < shape[2]))
        v_out += np.where(inside, np.float32(0.0), wc)
        src[:, c] = (cx * shape[1] + cy) * shape[2] + cz
        w[:, c] = wc
        ok[:, c] = inside & (wc > 0)
    dst = np.broadcast_to(np.arange(N, dtype=np.int64)[:, None], (N, 8))
    return src[ok], dst[ok], w[ok], v_out


def particle_step_numpy(x, flow, seed, frame):
    """NumPy reference of one particle step. x: [X, Y, Z, C] float32, flow: [X, Y, Z, 3] backward."""
    shape = x.shape[:3]
    channels = x.shape[3]
    N = int(np.prod(shape))
    src, dst, w, v_out = particle_requests(flow, shape)
    y, asum = partition.split_requests_zero_sum(x.reshape(N, channels), src, dst, w, N, seed, frame, 0.0)
    return partition.finish(y, asum, v_out, seed, frame).reshape(x.shape)


# ----------------------------------------------------------------------------- Taichi side
_KERNELS = None


def _taichi_kernels():
    """Build the two particle passes once (after core2d._taichi.init())."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    _taichi.init()
    _KERNELS = _build_kernels()
    return _KERNELS


def _build_kernels():
    from . import _kernels

    return _kernels.build()


class _Buffers:
    """Scratch arrays reused between steps (the fixed-point sums T, U)."""

    def __init__(self, n, channels):
        self.T = np.zeros(n, np.int64)
        self.U = np.zeros((n, channels), np.int64)

    def clear(self):
        self.T.fill(0)
        self.U.fill(0)


def particle_step_taichi(x, flow, seed, frame, buffers=None, factor=1):
    """Taichi version of `particle_step_numpy` (same requests, same RNG stream).

    factor s > 1: x is the s× finer state and `flow` the coarse flow; the kernels interpolate
    it like ops.upsample_flow on the fly.
    """
    X, Y, Z, C = x.shape
    N = X * Y * Z
    pass1, pass2 = _taichi_kernels()
    if buffers is None:
        buffers = _Buffers(N, C)
    else:
        buffers.clear()
    xf = np.ascontiguousarray(x.reshape(N, C), np.float32)
    ff = np.ascontiguousarray(flow.reshape(-1, 3), np.float32)
    if ff.shape[0] * factor ** 3 != N:
        raise ValueError(f"flow has {ff.shape[0]} voxels; expected {N // factor ** 3}")
    y = np.empty((N, C), np.float32)            # the new state (pass 2 writes every element)
    pb, lb, fb = partition.bases(seed, frame)
    pass1(ff, buffers.T, buffers.U, X, Y, Z, factor, pb, C)
    pass2(ff, xf, buffers.T, buffers.U, y, X, Y, Z, factor, pb, lb, fb, C)
    return y.reshape(X, Y, Z, C)


# ----------------------------------------------------------------------------- the warper
def _read_only(a):
    v = a.view()
    v.flags.writeable = False
    return v


def _resolve_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "taichi" if _taichi.available() else "numpy"
    return backend


class VolumeWarper(Serialised):
    """Warped white noise on a voxel grid: `noise` is [X, Y, Z, C] float32, i.i.d. N(0,1) every frame.

        v = VolumeWarper((64, 64, 64), channels=4, method="particle", seed=0)
        v.step(flow)                       # backward flow [X, Y, Z, 3] in voxels
        v.step(fwd, direction="forward")   # forward flow, inverted by core2d.invert_flow

    method "particle": the trilinear particle footprint on the output grid.
    method "supersample": the same on a state `factor`× finer per axis (flow upsampled), the
    output being its ∫-pooling. The footprint error of the particle method (it ignores the
    rotation and scale of the preimage) shrinks with the fine cell size, so the result tends to
    the exact polyhedral overlaps, and sub-voxel motion diffuses `factor`× less.
    method "flowmap": every frame integrates one reference field over each voxel's preimage
    through the composed map (noise3d.flowmap): white every frame, no diffusion over time.
    Options `depth` (reference cells of 2^-depth voxel, 1 or 2) and `reanchor` (as 2D);
    `step(..., revealed=mask)` starts new reference regions at revealed voxels (the other
    methods give them fresh noise); `last_stats` reports what the step did.

    Threads: as core2d.NoiseWarper (steps of one warper serialised; Taichi launches of all
    warpers, 2D and 3D, one at a time under core2d._taichi.LOCK).
    """

    def __init__(self, shape, channels=1, method="particle", seed=0, backend="auto", factor=2,
                 noise=None, depth=flowmap.DEPTH, reanchor=flowmap.REANCHOR):
        if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 3:
            raise ValueError(f"shape must be three positive integers (X, Y, Z); got {shape!r}")
        shape = tuple(ops.check_int("each size of shape", n) for n in shape)
        channels = ops.check_int("channels", channels)
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        factor = ops.check_int("supersampling factor", factor)
        if method != "supersample":
            factor = 1
        if np.prod([n * factor for n in shape], dtype=np.float64) >= 2 ** 31:
            raise ValueError(f"volume {shape} × factor {factor} has too many voxels (the kernels "
                             "index cells with 32-bit integers); use a smaller shape or factor")
        if method == "flowmap":
            if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or not 1 <= depth <= flowmap.MAX_DEPTH:
                raise ValueError(f"depth must be 1 or {flowmap.MAX_DEPTH} for the volume flow map; got {depth!r}")
            reanchor = float(reanchor or 0)
            if not (reanchor == 0 or 1 < reanchor < np.inf):
                raise ValueError(f"reanchor must be 0 (never) or a threshold above 1; got {reanchor!r}")
            if noise is not None:
                raise ValueError("method 'flowmap' draws its own reference noise: initial noise cannot be given")
        self.depth, self.reanchor = int(depth), float(reanchor)
        self.last_stats = {}
        self.shape = shape
        self.channels = channels
        self.method = method
        self.factor = factor
        self.backend = _resolve_backend(backend)
        self.seed = rng.seed_key(seed)              # an integer in [0, 2**32), or ValueError
        self._user_seed = int(seed)
        self.frame = 0
        self._lock = threading.RLock()
        self._buffers = None
        fine = tuple(n * factor for n in shape)
        if method == "flowmap":
            with _taichi.lock(self.backend):
                self._state = flowmap.VolumeMap.start(shape, self.seed, channels, self.depth, self.backend)
        elif noise is not None:
            noise = np.asarray(noise, np.float32)
            if noise.shape != fine + (channels,):
                raise ValueError(f"initial noise has shape {noise.shape}; expected {fine + (channels,)}"
                                 + (" (the fine state)" if factor > 1 else ""))
            if not np.isfinite(noise).all():
                raise ValueError("initial noise contains NaN/inf")
            self._state = np.array(noise, np.float32, order="C")      # a copy: the caller keeps theirs
        else:
            n = int(np.prod(fine))
            self._state = rng.gauss(self.seed, 0, rng.INIT, np.arange(n), 0, channels).reshape(fine + (channels,))

    @property
    def noise(self) -> np.ndarray:
        """The current frame, [X, Y, Z, C] float32 (the ∫-pooled state for method='supersample'),
        read-only: writing to it must not change the warper (copy it to modify)."""
        if self.method == "flowmap":
            return _read_only(self._state.noise)
        return _read_only(ops.pool(self._state, self.factor) if self.factor > 1 else self._state)

    @property
    def state(self) -> np.ndarray:
        """The internal noise, [sX, sY, sZ, C] (equal to `noise` for methods 'particle', 'flowmap'), read-only."""
        return _read_only(self._state.noise if self.method == "flowmap" else self._state)

    def save(self, path):
        """Write the state and what made it to an .npz, atomically; `load` resumes exactly."""
        from core2d.atomic import atomic_path

        with self._lock:
            config = dict(shape=list(self.shape), channels=self.channels, method=self.method,
                          seed=self._user_seed, factor=self.factor, frame=self.frame)
            extra = {}
            if self.method == "flowmap":
                config.update(depth=self.depth, reanchor=self.reanchor)
                extra = self._state.arrays()
            state = self.state
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, config=json.dumps(config), state=state, **extra)

    @classmethod
    def load(cls, path, backend="auto"):
        """A warper resumed from a `save` file; any damaged or foreign file is one ValueError
        (the state must be finite white noise of the saved shape, the frame a count)."""
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as d:
                config, state = json.loads(str(d["config"])), d["state"]
                arrays = {k: d[k] for k in d.files if k.startswith("flowmap_")}
        except (OSError, ValueError, EOFError, KeyError, MemoryError, zipfile.BadZipFile, zlib.error) as exc:
            raise ValueError(f"{path}: not a saved volume warper state ({exc})") from None
        try:
            if not isinstance(config, dict):
                raise ValueError("saved config must be a JSON object")
            frame = config.pop("frame", None)
            if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
                raise ValueError(f"saved frame must be a non-negative integer, got {frame!r}")
            ops.check_white(state, "saved state")
            if config.get("method") == "flowmap":
                v = cls(**config, backend=backend)
                try:
                    v._state = flowmap.VolumeMap.from_arrays(arrays, np.array(state, np.float32))
                except KeyError as exc:
                    raise ValueError(f"not a saved volume warper state (missing {exc})") from None
            else:
                v = cls(**config, backend=backend, noise=state)
        except TypeError as exc:
            raise ValueError(f"{path}: not a saved volume warper state ({exc})") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        v.frame = frame
        return v

    def backward_flow(self, flow, direction="backward"):
        """Validate a flow [X, Y, Z, 3] (voxels) and return the backward flow the step uses."""
        if direction not in ("backward", "forward"):
            raise ValueError(f"direction must be 'backward' or 'forward'; got {direction!r}")
        flow = ops.check_flow(flow, self.shape, frame=self.frame + 1)
        if direction == "forward":
            from core2d import invert_flow

            flow = np.ascontiguousarray(invert_flow(flow, holes="fill"), np.float32)
            flow = ops.check_flow(flow, self.shape, frame=self.frame + 1, name="inverted flow")
        return flow

    def step(self, flow, direction="backward", revealed=None) -> np.ndarray:
        """Advance one frame along `flow`; return the new noise. Bad flow: ValueError, state untouched.

        revealed: optional bool [X, Y, Z] mask of voxels whose content was not visible in the
        previous frame: fresh noise there ('flowmap': a new reference region)."""
        with self._lock:
            flow = self.backward_flow(flow, direction)
            frame = self.frame + 1
            revealed = self._check_revealed(revealed, frame)
            if self.method == "flowmap":
                with _taichi.lock(self.backend):
                    self._state, self.last_stats = flowmap.step(self._state, flow, revealed, self.seed, frame,
                                                                self.depth, self.reanchor, self.backend)
                self.frame = frame
                return self.noise
            if self.backend == "taichi":
                with _taichi.LOCK:
                    if self._buffers is None:
                        self._buffers = _Buffers(int(np.prod(self._state.shape[:3])), self.channels)
                    y = particle_step_taichi(self._state, flow, self.seed, frame, self._buffers, self.factor)
            else:
                if self.factor > 1:
                    flow = ops.upsample_flow(flow, self.factor)
                y = particle_step_numpy(self._state, flow, self.seed, frame)
            if revealed is not None and revealed.any():         # fresh noise where content is new
                f = self.factor
                fine = np.repeat(np.repeat(np.repeat(revealed, f, 0), f, 1), f, 2) if f > 1 else revealed
                idx = np.nonzero(fine.ravel())[0]
                y = y.copy()
                with _taichi.lock(self.backend):
                    y.reshape(-1, self.channels)[idx] = rng.gauss_sites(self.seed, frame, rng.REVEALED, idx,
                                                                        self.channels, self.backend)
            self._state = y
            self.frame = frame
            return self.noise

    def _check_revealed(self, revealed, frame):
        if revealed is None:
            return None
        m = np.asarray(revealed)
        if m.shape != self.shape:
            raise ValueError(f"revealed mask at frame {frame} has shape {m.shape}; expected {self.shape}")
        if m.dtype != bool:
            if m.dtype.kind not in "iu" or not np.isin(m, (0, 1)).all():
                raise ValueError(f"revealed mask at frame {frame} must be bool (or 0/1 integers), got dtype {m.dtype}")
            m = m.astype(bool)
        return m


def warp_volume_sequence(flows, channels=1, method="particle", seed=0, backend="auto", factor=2,
                         direction="backward"):
    """All frames for a flow sequence [T, X, Y, Z, 3]: returns [T+1, X, Y, Z, C]."""
    flows = np.asarray(flows)
    if flows.ndim != 5 or flows.shape[-1] != 3:
        raise ValueError(f"flows must be [T, X, Y, Z, 3]; got shape {flows.shape}")
    v = VolumeWarper(flows.shape[1:4], channels, method, seed, backend, factor)
    out = [v.noise.copy()]
    for t in range(flows.shape[0]):
        out.append(v.step(flows[t], direction).copy())
    return np.stack(out)
