"""First-use compilation of the noise kernels, in the foreground before a bake or in the background.

Taichi compiles a kernel the first time a session runs it: seconds a method with an empty kernel
cache; with a filled one the session still starts Taichi and loads its kernels (~3 s). The
kernels depend on the method only (not on channels, sizes or seed: noisewarp.warmup steps a tiny
warper through each method's code paths), so this happens once per method and session:

- `warm_up(bake)`: what a bake does first, unless its method is warm already; the bake says so
  and reports the seconds.
- `start(...)`: the same for several methods on a worker thread. The panel starts it for its own
  methods the first time it is drawn in an interactive Blender (never in `blender -b`) and shows
  `status()` meanwhile; scripts ask for it with `api.warmup(background=True)`.
Every compile and launch holds core2d._taichi.LOCK (re-entrant, shared by all Taichi calls), so a
bake that starts meanwhile waits for the method being compiled, never for a half-built kernel.
"""
import threading
import time

import bpy

_WARM = {}    # (kind, method) -> seconds its compilation took, this session
_jobs = []    # background warm-ups started this session
_asked = False
TEXTURE_METHODS = ("particle", "flowmap", "grid")    # the panel's own (properties.MAIN_METHODS)
VOLUME_METHODS = ("particle", "flowmap")
COMPILING = ("compiling the noise kernels for this method, once per session (a few seconds; "
             "about 10 s the first time on a computer)")
RUNNING = "Compiling noise kernels… (first use only)"
FIRST_BAKE = "The first bake compiles kernels: a few seconds (~10 s the first time)"


def _key(bake):
    """What the compiled kernels depend on: the kind of bake and its method."""
    return ("TEXTURE" if hasattr(bake, "latent_factor") else "VOLUME", bake.method)


def _has_kernels(key):
    from noisewarp.warmup import METHODS_2D, METHODS_3D

    return key[1] in (METHODS_2D if key[0] == "TEXTURE" else METHODS_3D)


def _compile(key):
    """Compile `key`'s kernels unless this session did; the seconds it took, or None."""
    from core2d import _taichi

    with _taichi.LOCK:      # the worker and a bake never both compile one method
        if key in _WARM:
            return None
        if not _taichi.available():     # the warpers run on NumPy: nothing to compile
            _WARM[key] = 0.0
            return None
        from noisewarp.warmup import warmup

        t = time.perf_counter()
        kind, method = key
        warmup([method] if kind == "TEXTURE" else [], [method] if kind == "VOLUME" else [])
        _WARM[key] = time.perf_counter() - t
        return _WARM[key]


def needs_warm_up(bake):
    return _has_kernels(_key(bake)) and _key(bake) not in _WARM


def warm_up(bake):
    """Compile the kernels `bake` (an api.TextureBake or api.VolumeBake) will use: the seconds
    it took, or None when this session has them already."""
    return _compile(_key(bake)) if needs_warm_up(bake) else None


class WarmUp:
    """A warm-up of several methods (from `start`). `wait(timeout=None)` returns True once it
    has finished; `done`; `error` (None, or what went wrong: the first bake then compiles what
    is missing); `seconds` {(kind, method): seconds} of what it compiled itself."""

    def __init__(self, keys):
        self.keys, self.seconds, self.error = tuple(keys), {}, None
        self._finished = threading.Event()

    def _run(self, raise_errors=False):
        try:
            for key in self.keys:
                if not threading.main_thread().is_alive():   # quitting: stop after the method compiling
                    break
                s = _compile(key)
                if s is not None:
                    self.seconds[key] = s
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            if raise_errors:
                raise
        finally:
            self._finished.set()

    @property
    def done(self):
        return self._finished.is_set()

    def wait(self, timeout=None):
        return self._finished.wait(timeout)


def start(texture=TEXTURE_METHODS, volume=VOLUME_METHODS, background=True):
    """Compile these texture and volume methods' kernels (in this order, skipping those already
    warm): on a worker thread with background=True, else before returning (errors raise).
    Returns the WarmUp."""
    keys = [k for k in [("TEXTURE", m) for m in texture] + [("VOLUME", m) for m in volume]
            if _has_kernels(k) and k not in _WARM]
    job = WarmUp(dict.fromkeys(keys))
    if not background or not keys:
        job._run(raise_errors=True)
        return job
    _jobs.append(job)
    # not a daemon: quitting waits for the method compiling (a thread killed inside Taichi's
    # compiler aborts the process), then the loop above stops
    threading.Thread(target=job._run, name="noise_warp kernel warm-up").start()
    if not bpy.app.background:    # the panel shows the status: redraw it when done
        bpy.app.timers.register(_redraw_when_done, first_interval=0.5)
    return job


def start_on_first_use(scene, interactive=None):
    """The panel's hook, called on every draw: the first call in an interactive Blender
    (interactive=None: not `blender -b` or the bpy module) starts compiling the panel's methods
    in the background, the scene's chosen ones first. Returns the WarmUp it started, or None."""
    global _asked
    if _asked or not (not bpy.app.background if interactive is None else interactive):
        return None
    _asked = True
    s = scene.noise_warp
    first = s.method.lower(), s.volume_method.lower()
    return start((first[0],) + TEXTURE_METHODS, (first[1],) + VOLUME_METHODS)


def running():
    return any(not job.done for job in _jobs)


def lock_busy():
    """Another thread holds the Taichi lock (a warm-up compiling): a modal bake waits without
    blocking the interface."""
    from core2d import _taichi

    if _taichi.LOCK.acquire(blocking=False):
        _taichi.LOCK.release()
        return False
    return True


def status():
    """(text, icon) of the panel's compile notice, or None once the kernels are warm."""
    if running():
        return RUNNING, 'TIME'
    failed = [job.error for job in _jobs if job.error and any(k not in _WARM for k in job.keys)]
    if failed:
        return f"Compiling the noise kernels failed ({failed[-1]}); the first bake tries again", 'ERROR'
    return None if _WARM else (FIRST_BAKE, 'INFO')


def _redraw_when_done():
    if running():
        return 0.5
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ('PROPERTIES', 'VIEW_3D'):
                area.tag_redraw()
    return None


def register():
    pass     # nothing starts here: the panel starts the warm-up when an artist first sees it


def unregister():
    if bpy.app.timers.is_registered(_redraw_when_done):
        bpy.app.timers.unregister(_redraw_when_done)
