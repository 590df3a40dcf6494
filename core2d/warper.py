"""NoiseWarper: the public 2D API. Holds the noise state, validates input, dispatches methods.

The state lives at `supersample`× the flow's resolution; the output is its ∫-pooling by
`supersample · latent_factor` (white again), then optional degradation and the output dtype.
A step that is refused (bad flow) leaves the state untouched: everything is validated and
computed into new arrays before the state is replaced.
"""
import json
import os
import threading
import zipfile
import zlib

import numpy as np

from . import _taichi, flowmap, gp, grid, particle, partition, rng, upsample
from .flow import invert_flow
from .ops import check_flow, check_int, check_number, check_white, degrade, pool, upsample_flow

METHODS = ("particle", "grid", "upsample", "gp", "nearest", "bilinear", "fixed", "resample", "flowmap")
BACKENDS = ("auto", "taichi", "numpy")
DTYPES = ("float32", "float16")
_OPTIONS = ("supersample", "latent_factor", "degrade", "dtype", "upsample_k", "gp_features",
            "gp_lengthscale", "holes", "max_span", "footprint", "depth", "reanchor")
_ADDED = {"depth": flowmap.DEPTH, "reanchor": flowmap.REANCHOR}  # options older saved states lack
FOOTPRINTS = ("unit", "jacobian")


def _resolve_backend(backend):
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "numpy":
        return "numpy"
    try:
        from . import _taichi

        _taichi.init()
        return "taichi"
    except ImportError:
        if backend == "taichi":
            raise ValueError("backend 'taichi' needs the taichi package (pip install taichi==1.7.4)") from None
        return "numpy"


class Serialised:
    """One step at a time per warper: step, save and load hold the warper's own lock, so a
    warper shared by threads never loses or mixes a step (which thread steps first is theirs
    to decide). The lock is not part of a copy or pickle."""

    def __getstate__(self):
        d = dict(self.__dict__)
        d.pop("_lock", None)
        d.pop("_work", None)                     # scratch memory (NoiseWarper): a copy makes its own
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        self._lock = threading.RLock()


class NoiseWarper(Serialised):
    """Warped Gaussian noise for a sequence of frames of size (height, width).

    Options:
      supersample   s: keep the state at s× resolution, warp there, ∫-pool to the output.
                    Sub-pixel motion diffuses s× less, so coherence lasts longer (costs s²).
      latent_factor F: ∫-pool the output by F (e.g. 8 for a VAE latent); height and width
                    must be divisible by F.
      degrade       α in [0, 1], a scalar or an [H/F, W/F] mask: mix fresh noise into the output
                    (correlation with the warped noise (1-α)/sqrt((1-α)² + α²)); the state itself
                    stays undegraded, so coherence is not lost over time.
      dtype         'float32' or 'float16' for `noise`.
      upsample_k    k of Chang et al.'s k×k upsampling (method 'upsample').
      gp_features, gp_lengthscale: J and ℓ (pixels, > 0) of the GP method (its field repeats
                    every T px, T ≥ 4× the frame: see core2d.gp).
      holes         how `direction='forward'` flows treat disocclusions: 'fill' or 'fresh'.
      max_span      grid/upsample: polygons spanning more cells than this per axis fall back to
                    the particle footprint (counted in `last_stats['fallback_pixels']`).
      depth         flowmap: quadtree levels of the reference field along preimage edges (leaves
                    of 2^-depth px; more levels keep more sub-pixel structure, cost grows ~2^depth).
      reanchor      flowmap: r > 1 starts a new reference region for pixels whose preimage area
                    leaves [1/r, r] px² or whose elongation exceeds r (bounds the work per pixel
                    under zoom-out and shear); 0 never re-anchors. See core2d.flowmap.
      footprint     particle: 'unit' (the paper's unit square) or 'jacobian' (a box with the
                    local Jacobian's area and aspect: under minification it integrates every cell
                    the pixel covers instead of sampling one; robust to folds like the unit square).

    `last_stats` counts what the last step did, with the same keys and values on both backends:
    'fresh_pixels' (particle, nearest, upsample), 'fallback_pixels' (grid, upsample, and boxes
    clamped by the jacobian footprint); the baselines report nothing.

    Threads: a warper may be shared by threads; its steps are serialised (each is whole, none is
    lost), in whatever order the threads make them. Taichi runs one kernel launch at a time in a
    process (core2d._taichi.LOCK, shared with the 3D warper), so for parallel jobs use processes
    (the CLI's `batch` uses Ray workers) or the 'numpy' backend, whose warpers step in parallel.
    """

    def __setstate__(self, d):
        super().__setstate__(d)
        self._work = partition.Workspace()

    def __init__(self, height, width, channels=4, method="particle", seed=0, backend="auto", *,
                 supersample=1, latent_factor=1, degrade=0.0, dtype="float32", upsample_k=4,
                 gp_features=3000, gp_lengthscale=None, holes="fill", max_span=grid.MAX_SPAN,
                 footprint="unit", depth=flowmap.DEPTH, reanchor=flowmap.REANCHOR):
        for name, v in (("height", height), ("width", width), ("channels", channels),
                        ("supersample", supersample), ("latent_factor", latent_factor),
                        ("upsample_k", upsample_k), ("gp_features", gp_features), ("max_span", max_span)):
            check_int(name, v)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if holes not in ("fill", "fresh"):
            raise ValueError(f"holes must be 'fill' or 'fresh', got {holes!r}")
        if footprint not in FOOTPRINTS:
            raise ValueError(f"footprint must be one of {', '.join(FOOTPRINTS)}, got {footprint!r}")
        if height % latent_factor or width % latent_factor:
            raise ValueError(f"frame size {height}×{width} is not divisible by latent_factor {latent_factor}")
        rng.seed_key(seed)                 # an integer in [0, 2**32), or ValueError
        if (isinstance(depth, bool) or not isinstance(depth, (int, np.integer))
                or not 0 <= depth <= flowmap.MAX_DEPTH):
            raise ValueError(f"depth must be an integer in [0, {flowmap.MAX_DEPTH}], got {depth!r}")
        try:
            reanchor = float(0.0 if reanchor is None else reanchor)
        except (TypeError, ValueError):
            reanchor = -1.0
        if not (reanchor == 0 or 1 < reanchor < np.inf):
            raise ValueError(f"reanchor must be 0 (never) or a threshold above 1, got {reanchor!r}")
        self.height, self.width, self.channels = int(height), int(width), int(channels)
        self.method, self.seed = method, int(seed)
        self.supersample, self.latent_factor = int(supersample), int(latent_factor)
        self.dtype, self.upsample_k, self.holes = dtype, int(upsample_k), holes
        self.gp_features = int(gp_features)
        self.gp_lengthscale = check_number(
            "gp_lengthscale", gp.DEFAULT_LENGTHSCALE if gp_lengthscale is None else gp_lengthscale)
        self.max_span = int(max_span)
        self.footprint = footprint
        self.depth, self.reanchor = int(depth), reanchor
        self.backend_requested = backend
        self.backend = _resolve_backend(backend)
        self._lock = threading.RLock()
        self._key = rng.seed_key(self.seed)
        self.degrade = self._check_alpha(degrade)
        self.frame = 0
        self.last_stats = {}
        self._work = partition.Workspace()   # the Taichi path's scratch and state buffers: freed with the warper
        S = self.supersample
        self._shape = (self.height * S, self.width * S)
        if method == "gp":
            self._period = gp.period(self._shape, self.gp_lengthscale * S)
            self._features = gp.features(self._key, self.channels, self.gp_features, self.gp_lengthscale * S,
                                         self._period)
            ii, jj = np.mgrid[0:self._shape[0], 0:self._shape[1]].astype(np.float32)
            self._state = np.stack([jj + 0.5, ii + 0.5], -1)      # frame-0 positions of the pixel centres
        elif method == "flowmap":                                  # the composed map and its frame
            self._state = flowmap.FlowMap.start(*self._shape, self._key, self.channels, self.backend)
        else:
            n = self._shape[0] * self._shape[1]
            self._state = rng.gauss(self._key, 0, rng.INIT, np.arange(n), 0, self.channels).reshape(
                self._shape + (self.channels,))
        with _taichi.lock(self.backend):
            self._noise = self._output(self._state, 0, self.degrade)

    # ------------------------------------------------------------------ public
    @property
    def noise(self) -> np.ndarray:
        """The current frame [H/F, W/F, C] (a copy-free view: do not modify)."""
        return self._noise

    @property
    def output_shape(self):
        F = self.latent_factor
        return (self.height // F, self.width // F, self.channels)

    def step(self, flow, direction="backward", revealed=None):
        """Advance one frame along `flow` [H, W, 2] (dx, dy) px; return the new noise.

        direction='backward': flow on the new frame's grid, pointing to where each pixel came
        from; 'forward': on the old frame's grid, where each pixel goes (inverted by splatting,
        see core2d.flow.invert_flow).
        revealed: optional bool [H, W] mask of the new frame's pixels whose content was not
        visible in the previous frame (disocclusions): they get fresh noise ('flowmap' starts a
        new reference region there, so they stay coherent afterwards).
        """
        if direction not in ("backward", "forward"):
            raise ValueError(f"direction must be 'backward' or 'forward', got {direction!r}")
        with self._lock:
            frame = self.frame + 1
            flow = check_flow(flow, (self.height, self.width), frame=frame)
            revealed = self._check_revealed(revealed, frame)
            if direction == "forward":
                flow = invert_flow(flow, holes=self.holes)
            flow = np.ascontiguousarray(upsample_flow(flow, self.supersample))
            with _taichi.lock(self.backend):
                state, stats = self._advance(flow, frame, revealed)
                noise = self._output(state, frame, self.degrade)
                self._state, self.frame, self.last_stats, self._noise = state, frame, stats, noise
            return noise

    def state_dict(self) -> dict:
        """Everything needed to resume exactly (arrays and a JSON-able config)."""
        with self._lock:
            config = dict(height=self.height, width=self.width, channels=self.channels, method=self.method,
                          seed=self.seed, backend=self.backend_requested, frame=self.frame,
                          **{k: getattr(self, k) for k in _OPTIONS if k != "degrade"})
            if self.method == "flowmap":
                return {"config": json.dumps(config), "state": self._state.noise,
                        "degrade": np.asarray(self.degrade, np.float32), **self._state.arrays()}
            return {"config": json.dumps(config), "state": self._state.copy(),   # its buffer is reused
                    "degrade": np.asarray(self.degrade, np.float32)}

    def load_state_dict(self, d):
        """Resume from `state_dict()` output. Everything is checked first (the config against this
        warper's, the frame, the state: float, finite, and for noise states white, see
        ops.check_white); a refused dict raises ValueError and changes nothing."""
        with self._lock:
            state, frame, alpha = self._checked(d)
            with _taichi.lock(self.backend):
                noise = self._output(state, frame, alpha)
                self._state, self.frame, self.degrade, self._noise = state, frame, alpha, noise

    def save(self, path):
        """Write the state to an .npz atomically."""
        from .atomic import atomic_path

        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **self.state_dict())

    @classmethod
    def load(cls, path, backend=None):
        """A warper resumed from a `save` file; any damaged or foreign file is one ValueError."""
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, MemoryError, zipfile.BadZipFile, zlib.error) as exc:
            raise ValueError(f"{path}: not a saved warper state ({exc})") from None
        try:
            config = _saved_config(d)
            config.pop("frame")
            if backend is not None:
                config["backend"] = backend
            w = cls(**config, degrade=d["degrade"])
            w.load_state_dict(d)
        except TypeError as exc:
            raise ValueError(f"{path}: not a saved warper state ({exc})") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return w

    # ------------------------------------------------------------------ internals
    def _checked(self, d):
        """(state, frame, degradation) of a saved dict, all validated; raises ValueError."""
        config = _saved_config(d)
        mine = json.loads(self.state_dict()["config"])
        for k in mine:
            if k not in ("frame", "backend") and config.get(k, _ADDED.get(k)) != mine[k]:
                raise ValueError(f"saved state has {k}={config.get(k)!r}, this warper has {mine[k]!r}")
        frame = config["frame"]
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise ValueError(f"saved frame must be a non-negative integer, got {frame!r}")
        state = np.asarray(d["state"])
        shape = self._state.noise.shape if self.method == "flowmap" else self._state.shape
        if state.shape != shape:
            raise ValueError(f"saved state has shape {state.shape}, expected {shape}")
        if self.method == "gp":          # positions, not noise
            if state.dtype.kind != "f" or not np.isfinite(state).all():
                raise ValueError(f"saved state (GP positions) must be finite floats, got dtype {state.dtype}")
        else:
            check_white(state, "saved state", upper_only=self.method == "bilinear")
        alpha = self._check_alpha(np.asarray(d["degrade"]))
        state = np.array(state, np.float32)
        if self.method == "flowmap":
            try:
                state = flowmap.FlowMap.from_arrays(d, state)
            except (KeyError, TypeError) as exc:
                raise ValueError(f"saved flow-map state is incomplete or damaged ({exc})") from None
        return state, frame, alpha

    def _check_alpha(self, alpha):
        a = np.asarray(alpha)
        if a.dtype.kind not in "fiu":
            raise ValueError(f"degradation α must be a number or a numeric mask, got {alpha!r}"[:200])
        a = a.astype(np.float32)
        if a.ndim and a.shape != self.output_shape[:2]:
            raise ValueError(f"degradation mask has shape {a.shape}, expected {self.output_shape[:2]}")
        if not np.all(np.isfinite(a)) or np.any(a < 0) or np.any(a > 1):
            raise ValueError("degradation α must be finite and within [0, 1]")
        return a if a.ndim else float(a)

    def _check_revealed(self, revealed, frame):
        """The revealed mask at the state's resolution (bool [sH, sW]), or None."""
        if revealed is None:
            return None
        shape = (self.height, self.width)
        m = np.asarray(revealed)
        if m.shape != shape:
            raise ValueError(f"revealed mask at frame {frame} has shape {m.shape}; expected {shape}")
        if m.dtype != bool:
            if m.dtype.kind not in "iu" or not np.isin(m, (0, 1)).all():
                raise ValueError(f"revealed mask at frame {frame} must be bool (or 0/1 integers), "
                                 f"got dtype {m.dtype}")
            m = m.astype(bool)
        S = self.supersample
        return np.repeat(np.repeat(m, S, 0), S, 1) if S > 1 else m

    def _reveal(self, state, revealed, frame):
        """Other methods: revealed pixels of the new state get fresh noise (the GP moves them to a
        band of its periodic plane away from the frame: T >= 4 × the frame, so the bands at
        T/4, T/2 and 3T/4 are disjoint from it and from each other, used in turn)."""
        if revealed is None or not revealed.any():
            return state
        state = state.copy()
        ii, jj = np.nonzero(revealed)
        if self.method == "gp":
            band = (frame % 3 + 1) * self._period / 4
            state[ii, jj] = np.stack([jj + 0.5, ii + 0.5 + band], -1).astype(np.float32)
        else:
            state[ii, jj] = rng.gauss_sites(self._key, frame, rng.REVEALED, ii * self._shape[1] + jj, self.channels,
                                            self.backend)
        return state

    def _output(self, state, frame, alpha):
        """The output frame of `state` (pooled, degraded by alpha, cast): never a view of the state."""
        if self.method == "gp":
            H, W = self._shape
            flat = gp.evaluate(state.reshape(-1, 2), self._features, self.backend)
            y = flat.reshape(H, W, self.channels)
        elif self.method == "flowmap":
            state = y = state.noise
        else:
            y = state
        y = pool(y, self.supersample * self.latent_factor)
        y = degrade(y, alpha, self._key, frame, self.backend)
        if y is state:                           # a copy the caller owns, in recycled memory
            return self._work.output(y, self.dtype)
        return y.astype(self.dtype, copy=False)

    def _advance(self, flow, frame, revealed=None):
        if self.method == "flowmap":
            f = flowmap.step_numpy if self.backend == "numpy" else flowmap.step_taichi
            return f(self._state, flow, revealed, self._key, frame, depth=self.depth, reanchor=self.reanchor)
        state, stats = self._step_method(flow, frame)
        return self._reveal(state, revealed, frame), stats

    def _step_method(self, flow, frame):
        x, key, m = self._state, self._key, self.method
        numpy = self.backend == "numpy"
        kw = {} if numpy else {"work": self._work}
        if m == "particle" and self.footprint == "jacobian":
            f = grid.step_numpy if numpy else grid.step_taichi
            return f(x, flow, key, frame, max_span=self.max_span, footprint="box", **kw)
        if m in ("particle", "nearest"):
            f = particle.step_numpy if numpy else particle.step_taichi
            return f(x, flow, key, frame, nearest=(m == "nearest"), **kw)
        if m == "grid":
            f = grid.step_numpy if numpy else grid.step_taichi
            return f(x, flow, key, frame, max_span=self.max_span, **kw)
        if m == "upsample":
            f = upsample.step_numpy if numpy else upsample.step_taichi
            return f(x, flow, key, frame, k=self.upsample_k, max_span=self.max_span, **kw)
        if m == "bilinear":
            f = particle.bilinear_numpy if numpy else particle.bilinear_taichi
            return f(x, flow, key, frame, **kw)
        if m == "gp":
            return gp.compose_positions(x, flow, self._period), {}
        if m == "fixed":
            return x, {}
        if m == "resample":  # fresh every frame (same draws on both backends)
            n = x.shape[0] * x.shape[1]
            return rng.gauss(key, frame, rng.FRESH, np.arange(n), 0, self.channels).reshape(x.shape), {}
        raise AssertionError(m)


def _saved_config(d):
    """The config dict of a saved state (with its keys 'config', 'state', 'degrade')."""
    missing = [k for k in ("config", "state", "degrade") if k not in d]
    if missing:
        raise ValueError(f"saved state lacks {', '.join(missing)}")
    try:
        config = json.loads(str(d["config"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"saved config is not JSON ({exc})") from None
    if not isinstance(config, dict) or "frame" not in config:
        raise ValueError("saved config must be a JSON object with a frame")
    return config


def warp_sequence(flows, channels=4, method="particle", seed=0, direction="backward", backend="auto",
                  **options) -> np.ndarray:
    """Warp through a flow stack [T, H, W, 2]; return all T+1 frames [T+1, H', W', C]."""
    flows = np.asarray(flows)
    if flows.ndim != 4 or flows.shape[-1] != 2:
        raise ValueError(f"flows must have shape [T, H, W, 2], got {flows.shape}")
    T, H, W = flows.shape[:3]
    w = NoiseWarper(H, W, channels=channels, method=method, seed=seed, backend=backend, **options)
    out = np.empty((T + 1,) + w.output_shape, w.dtype)
    out[0] = w.noise
    for t in range(T):
        out[t + 1] = w.step(flows[t], direction=direction)
    return out
