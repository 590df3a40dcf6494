"""The scripting API behind every button: plain functions scripts and operators share.

    from bl_ext.user_default.noise_warp import api      # installed extension
    result = api.bake_texture(bpy.context.scene, "//noise/", 1, 24, channels=4)
    result = api.bake_volume(scene, "//vol/", 1, 24, domain="Domain", source_collection="Movers")

Every argument left as None takes its value from `scene.noise_warp` (the panel's settings).
Problems the user can fix raise `BakeError` before anything is written. Long bakes are
generators underneath (`TextureBake(...).steps()`), which the modal operator advances one
frame per timer tick; the functions here simply run them to the end.
"""
import os
import shutil
import tempfile
import time

import numpy as np

import bpy

from .bake import (_existing_frames, _frames, _output_dir, _print_progress, _resolve, _Resume,
                   blend_relative, same_file)
from .motion import (BakeError, MeshMotion, TopologyChanged, VectorPassRenderer,
                     bake_caches, check_simulations)

__all__ = ["bake_texture", "bake_volume", "TextureBake", "VolumeBake", "BakeError",
           "texture_size", "render_size", "load_texture_sequence", "make_preview_material", "warmup"]

def render_size(scene):
    """(height, width) Blender renders: resolution × percentage, rounded down as Blender does
    (259×147 at 50 % renders 129×73)."""
    r = scene.render
    pct = r.resolution_percentage
    return r.resolution_y * pct // 100, r.resolution_x * pct // 100


def texture_size(scene, scale=1.0, latent_factor=1):
    """(height, width) of the warped grid: the render size × scale, a multiple of latent_factor."""
    lf = int(latent_factor)
    h, w = (max(lf, int(round(n * float(scale) / lf)) * lf) for n in render_size(scene))
    return h, w


# ----------------------------------------------------------------------------- texture bake

TEXTURE_ARGS = {"directory": "directory", "frame_start": "frame_start", "frame_end": "frame_end",
                "channels": "channels", "method": "method", "seed": "seed", "scale": "scale",
                "latent_factor": "latent_factor", "supersample": "supersample", "motion": "motion",
                "half": "half", "overwrite": "overwrite", "preview": "preview",
                "bake_simulations": "bake_simulations", "occlusions": "occlusions"}


class TextureBake:
    """A texture bake, validated at construction (BakeError, nothing written).

    Advance with `for done, total, message in bake.steps(): ...`, or `bake.run()`.
    Results: files, npy_path, image, material, warnings, render_seconds, warp_seconds.
    """

    def __init__(self, scene=None, directory=None, frame_start=None, frame_end=None,
                 channels=None, method=None, seed=None, scale=None, latent_factor=None,
                 supersample=None, motion=None, half=None, overwrite=None, preview=None,
                 bake_simulations=None, occlusions=None):
        scene = scene or bpy.context.scene
        self.scene = scene
        a = _resolve(scene, dict(directory=directory, frame_start=frame_start, frame_end=frame_end,
                                 channels=channels, method=method, seed=seed, scale=scale,
                                 latent_factor=latent_factor, supersample=supersample,
                                 motion=motion, half=half, overwrite=overwrite, preview=preview,
                                 bake_simulations=bake_simulations, occlusions=occlusions),
                     TEXTURE_ARGS)
        self.method = str(a["method"]).lower()
        self.motion = str(a["motion"]).upper()
        self.preview = str(a["preview"]).upper()
        self.channels, self.seed = int(a["channels"]), int(a["seed"])
        self.latent_factor, self.supersample = int(a["latent_factor"]), int(a["supersample"])
        self.half, self.overwrite = bool(a["half"]), bool(a["overwrite"])
        self.occlusions = bool(a["occlusions"])
        from .properties import METHOD_ITEMS
        methods = [m[0].lower() for m in METHOD_ITEMS] + ["gp"]
        if self.method not in methods:
            raise BakeError(f"method must be one of {', '.join(methods)}; got {a['method']!r}")
        if self.motion not in ("VECTOR", "MESH"):
            raise BakeError(f"motion must be 'VECTOR' or 'MESH'; got {a['motion']!r}")
        if self.channels < 1:
            raise BakeError("channels must be at least 1")
        if scene.camera is None:
            raise BakeError(f"scene '{scene.name}' has no camera: the noise is baked for the "
                            "scene camera (Scene Properties > Camera)")
        self.frame_start, self.frame_end = _frames(scene, a["frame_start"], a["frame_end"])
        if self.latent_factor < 1:
            raise BakeError("latent_factor must be at least 1")
        frame = [n * float(a["scale"]) for n in render_size(scene)]
        if self.latent_factor > min(frame):
            raise BakeError(f"the latent factor {self.latent_factor} is larger than the frame "
                            f"({frame[1]:g}×{frame[0]:g}: the render size × scale): the latent "
                            "would be a single cell; lower the latent factor or raise the scale")
        self.height, self.width = texture_size(scene, a["scale"], self.latent_factor)
        if self.motion == "VECTOR":
            from .motion import CYCLES_MISSING, cycles_available
            if not cycles_available():
                raise BakeError(CYCLES_MISSING)
        self._simulations = check_simulations(scene, bool(a["bake_simulations"]))
        self.directory = _output_dir(a["directory"])
        self.settings = {"method": self.method, "channels": self.channels, "seed": self.seed,
                         "size": [self.height, self.width], "latent_factor": self.latent_factor,
                         "supersample": self.supersample, "motion": self.motion,
                         "frame_start": self.frame_start, "half": self.half,
                         "occlusions": self.occlusions}
        self._resume = _Resume(self.directory, "texture")
        self.resume_from = None
        self._check_existing()
        self.files, self.npy_path, self.image, self.material = [], None, None, None
        self.warnings, self.render_seconds, self.warp_seconds = [], 0.0, 0.0
        self.frames_done = 0

    def path(self, frame):
        return os.path.join(self.directory, f"noise_{frame:04d}.exr")

    def _check_existing(self):
        meta = self._resume.read()
        exr = [f for f in _existing_frames(self.directory, "exr")
               if self.frame_start <= f <= self.frame_end]
        npy = os.path.join(self.directory, "noise.npy")
        if self.overwrite:
            return
        if (meta and meta["settings"] == self.settings and meta["last_frame"] < self.frame_end
                and all(os.path.isfile(self.path(f))
                        for f in range(self.frame_start, meta["last_frame"] + 1))):
            self.resume_from = meta
            return
        if exr or os.path.exists(npy):
            what = f"noise_{exr[0]:04d}.exr" if exr else "noise.npy"
            raise BakeError(f"'{self.directory}' already holds a bake ({what}): turn on Overwrite "
                            "or choose another folder")

    def _new_warper(self):
        import core2d

        return core2d.NoiseWarper(self.height, self.width, channels=self.channels,
                                  method=self.method, seed=self.seed,
                                  supersample=self.supersample, latent_factor=self.latent_factor)

    def _motion_source(self, tmpdir):
        if self.motion == "MESH":
            return MeshMotion(self.scene, self.width, self.height)
        return VectorPassRenderer(self.scene, self.width, self.height, tmpdir)

    def _write(self, frame, noise):
        from noisewarp.io import write_exr

        write_exr(self.path(frame), noise, half=self.half)

    def steps(self):
        """Generator: bake frame after frame, yielding (done, total, message)."""
        from noisewarp.io import read_exr

        import core2d

        scene, total = self.scene, self.frame_end - self.frame_start + 1
        frame_before = scene.frame_current, scene.frame_subframe
        tmpdir = tempfile.mkdtemp(prefix="noise_warp_")
        source = None
        try:
            if self._simulations:
                self.warnings.append(bake_caches(scene, self._simulations))
                self._simulations = []
            if self.resume_from:
                last = self.resume_from["last_frame"]
                w = core2d.NoiseWarper.load(os.path.join(self._resume.dir, self.resume_from["state"]))
                pending, moved = [], True
                self.warnings.append(f"resumed after frame {last}")
            else:
                if self.overwrite:
                    self._resume.clear()
                w = self._new_warper()
                last = self.frame_start
                pending, moved = [(last, w.noise.copy())], False
            source = self._motion_source(tmpdir)
            yield last - self.frame_start + 1, total, f"frame {last}"
            for frame in range(last + 1, self.frame_end + 1):
                t = time.perf_counter()
                try:
                    flow, revealed = source.motion(frame)
                except TopologyChanged as exc:
                    self.warnings.append(f"{exc}: using the Vector pass from frame {frame}")
                    print(f"noise_warp: {self.warnings[-1]}", flush=True)
                    source.close()
                    source = VectorPassRenderer(scene, self.width, self.height, tmpdir)
                    flow, revealed = source.motion(frame)
                self.render_seconds += time.perf_counter() - t
                self._take_notes(source)
                t = time.perf_counter()
                noise = w.step(flow, revealed=revealed if self.occlusions else None)
                self.warp_seconds += time.perf_counter() - t
                moved = moved or bool(np.any(flow))
                pending.append((frame, noise.copy()))
                if moved:  # nothing is written until something has moved
                    for f, n in pending:
                        self._write(f, n)
                    pending = []
                    os.makedirs(self._resume.dir, exist_ok=True)
                    w.save(self._resume.state_path(frame))
                    self._resume.write(self.settings, frame)
                yield frame - self.frame_start + 1, total, f"frame {frame}"
            if not moved:
                raise BakeError(f"nothing moves in the camera view between frames "
                                f"{self.frame_start} and {self.frame_end}: the noise would be "
                                "the same image every frame")
            # noise.npy from the EXRs one frame at a time (they hold every frame, resumed or
            # not), so memory does not grow with the length of the shot
            from noisewarp.io import NpyFrames, atomic_path, exr_channel_names
            order = exr_channel_names(self.channels)
            self.npy_path = os.path.join(self.directory, "noise.npy")
            first = read_exr(self.path(self.frame_start))
            shape = (total,) + first[order[0]].shape + (self.channels,)
            with atomic_path(self.npy_path) as tmp:
                with NpyFrames(tmp, "w", np.float16 if self.half else np.float32, shape) as out:
                    for t, f in enumerate(range(self.frame_start, self.frame_end + 1)):
                        fr = first if t == 0 else read_exr(self.path(f))
                        out[t] = np.stack([fr[n] for n in order], axis=-1)
            self.files = [self.path(f) for f in range(self.frame_start, self.frame_end + 1)]
            self._resume.clear()
            self.frames_done = total
        finally:
            if source is not None:
                source.close()
            shutil.rmtree(tmpdir, ignore_errors=True)
            scene.frame_set(frame_before[0], subframe=frame_before[1])
        self.image = load_texture_sequence(self.files, self.frame_start)
        if self.preview == "MATERIAL":
            self.material = make_preview_material(self.image, self.frame_start, total)

    def _take_notes(self, source):
        """What a motion source did differently (said once, in warnings and the console)."""
        for note in getattr(source, "notes", ()):
            if note not in self.warnings:
                self.warnings.append(note)
                print(f"noise_warp: {note}", flush=True)

    def run(self, progress=_print_progress):
        for done, total, message in self.steps():
            if progress:
                progress(done, total, message)
        return self


def bake_texture(scene=None, directory=None, frame_start=None, frame_end=None, channels=None,
                 method=None, seed=None, progress=_print_progress, **options):
    """Bake warped noise for the scene camera: DIR/noise_####.exr and DIR/noise.npy.

    options: scale, latent_factor, supersample, motion ('VECTOR' | 'MESH'), half, overwrite,
    preview ('MATERIAL' | 'NONE'), bake_simulations (bake unbaked rigid body, cloth, soft body
    and dynamic particle caches first; default on, else they are refused), occlusions (default
    on: pixels showing content hidden the frame before start with fresh noise). Returns the
    finished TextureBake.
    """
    bake = TextureBake(scene, directory, frame_start, frame_end, channels, method, seed, **options)
    return bake.run(progress)


def load_texture_sequence(files, frame_start):
    """The baked EXRs as one image-sequence datablock (Non-Color, channels packed)."""
    first = files[0]
    name = "noise_warp:" + os.path.basename(os.path.dirname(first))
    image = bpy.data.images.get(name)
    if image is None or not same_file(image.filepath, first):
        image = bpy.data.images.load(first, check_existing=False)
        image.name = name
    image.filepath = blend_relative(first)
    image.use_fake_user = True     # kept in the .blend even when no material uses it yet
    image.source = "SEQUENCE"
    image.colorspace_settings.name = "Non-Color"
    image.alpha_mode = "CHANNEL_PACKED"
    image.reload()
    return image


def make_preview_material(image, frame_start, frame_count):
    """Emission material showing the sequence in screen space (±3σ -> black..white).

    Window coordinates put the camera-aligned noise exactly where the camera sees it, so the
    preview shows the noise following the objects it was warped with.
    """
    mat = bpy.data.materials.get("NoiseWarp Preview") or bpy.data.materials.new("NoiseWarp Preview")
    mat.use_fake_user = True       # saved with the .blend before it is assigned to anything
    if bpy.app.version < (5, 0, 0):  # always on (and deprecated) from 5.0
        mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    coords = nt.nodes.new("ShaderNodeTexCoord")
    tex = nt.nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.interpolation = "Closest"
    tex.extension = "EXTEND"
    u = tex.image_user
    u.frame_start = frame_start
    u.frame_offset = frame_start - 1
    u.frame_duration = frame_count
    u.use_auto_refresh = True
    u.use_cyclic = False
    rng = nt.nodes.new("ShaderNodeMapRange")
    rng.data_type = "FLOAT_VECTOR"
    rng.inputs[7].default_value = (-3.0, -3.0, -3.0)   # From Min (vector)
    rng.inputs[8].default_value = (3.0, 3.0, 3.0)      # From Max
    rng.inputs[9].default_value = (0.0, 0.0, 0.0)
    rng.inputs[10].default_value = (1.0, 1.0, 1.0)
    rng.clamp = True
    emit = nt.nodes.new("ShaderNodeEmission")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(coords.outputs["Window"], tex.inputs["Vector"])
    nt.links.new(tex.outputs["Color"], rng.inputs[6])
    nt.links.new(rng.outputs[1], emit.inputs["Color"])
    nt.links.new(emit.outputs["Emission"], out.inputs["Surface"])
    for i, node in enumerate((coords, tex, rng, emit, out)):
        node.location = (i * 250 - 500, 0)
    return mat


# ----------------------------------------------------------------------------- warm-up

def warmup(methods=None, volume_methods=None, background=False):
    """Compile the noise kernels of these methods now, so the session's first bake with them does
    not wait (the panel does this by itself in an interactive Blender; `blender -b` scripts call
    it). Defaults: the panel's methods, 'particle', 'flowmap', 'grid' and for volumes 'particle',
    'flowmap'; methods this session compiled already are skipped. background=True returns at
    once: the returned WarmUp's `wait(timeout)` is True when it has finished, `error` says what
    failed; otherwise it returns the finished WarmUp (errors raise).
    """
    from . import warmup as warm
    from .properties import METHOD_ITEMS, VOLUME_METHOD_ITEMS

    chosen = []
    for what, given, default, items in (
            ("method", methods, warm.TEXTURE_METHODS, [m[0] for m in METHOD_ITEMS] + ["GP"]),
            ("volume method", volume_methods, warm.VOLUME_METHODS, [m[0] for m in VOLUME_METHOD_ITEMS])):
        given = default if given is None else [given] if isinstance(given, str) else given
        names, known = [str(m).lower() for m in given], [m.lower() for m in items]
        for m in names:
            if m not in known:
                raise BakeError(f"{what} must be one of {', '.join(known)}; got {m!r}")
        chosen.append(names)
    return warm.start(*chosen, background=background)


# ----------------------------------------------------------------------------- volume bake
# (defined in volume.py; re-exported here so scripts need one import)
from .volume import VolumeBake, bake_volume  # noqa: E402
