"""Thin operators: each button calls a function of `api` that scripts use too.

In the UI a bake runs as a modal operator on a timer (progress, Esc cancels, the next run
resumes after the last complete frame); headless (`blender -b`, `import bpy`) it runs to the
end and prints progress. Before the first bake with given settings in a session, Taichi starts
and compiles the kernels on a tiny problem with those settings; the bake says so while it
happens and reports how long it took.
"""
import os
import time

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from .properties import NoiseWarpSettings

# seconds the first bake with each set of kernel-shaping settings spent compiling, this session
_WARM = {}
COMPILING = ("compiling the noise kernels for these settings, once per session (a few seconds; "
             "about 10 s the first time on a computer)")


def first_bake_hint():
    """The panel's note until the first bake of the session, then ''."""
    return "" if _WARM else "The first bake compiles kernels: a few seconds (~10 s the first time)"


def _warm_key(bake):
    """What the compiled kernels depend on: the method and the channel, supersampling and
    latent factors of a texture bake; the method and channels of a volume bake."""
    if hasattr(bake, "latent_factor"):
        return ("TEXTURE", bake.method, bake.channels, bake.supersample, bake.latent_factor)
    return ("VOLUME", bake.method, bake.channels)


def needs_warm_up(bake):
    return _warm_key(bake) not in _WARM


def warm_up(bake):
    """Start Taichi and compile the kernels `bake` (an api.TextureBake or api.VolumeBake) will
    use, on a tiny problem with the same settings; the seconds it took, or None when this
    session already compiled them."""
    key = _warm_key(bake)
    if key in _WARM:
        return None
    import numpy as np

    t = time.perf_counter()
    if key[0] == "TEXTURE":
        import core2d
        _, method, channels, supersample, factor = key
        n = 4 * factor
        w = core2d.NoiseWarper(n, n, channels=channels, method=method, seed=0,
                               supersample=supersample, latent_factor=factor)
        w.step(np.full((n, n, 2), 0.3, np.float32))
    else:
        import noise3d
        from noise3d.nearest import SampleGrid
        v = noise3d.VolumeWarper((4, 4, 4), key[2], method=key[1], seed=0)
        v.step(np.full((4, 4, 4, 3), 0.3, np.float32))
        SampleGrid(np.eye(3)).query(np.zeros((1, 3)), k=2)
    _WARM[key] = time.perf_counter() - t
    return _WARM[key]


def output_folder(scene, kind):
    """(absolute folder of the texture or volume bake, or None; error message or None)."""
    s = scene.noise_warp
    folder = s.directory if kind == 'TEXTURE' else s.volume_directory
    if not folder:
        return None, "no output folder set"
    if folder.startswith("//") and not bpy.data.filepath:
        return None, (f"the output folder '{folder}' is relative to the .blend file, which is "
                      "not saved yet")
    path = os.path.abspath(bpy.path.abspath(folder))
    if not os.path.isdir(path):
        return None, f"'{path}' does not exist yet: bake first"
    return path, None


def _like(name):
    """The keywords (name, tooltip, default, limits, items) of the panel setting `name` of
    scene.noise_warp, for the operator argument that overrides it."""
    return dict(NoiseWarpSettings.__annotations__[name].keywords)


class _ModalBake:
    """Shared execute/invoke/modal: subclasses build a bake object with `.steps()`."""

    _timer = None
    _steps = None

    def make_bake(self, context):
        raise NotImplementedError

    def _kwargs(self):
        """Operator arguments actually given (same names as the api's keyword arguments); the
        rest fall back to scene.noise_warp in api."""
        return {name: getattr(self, name) for name in self.properties.bl_rna.properties.keys()
                if name != "rna_type" and self.properties.is_property_set(name)}

    def _start(self, context):
        from .motion import BakeError
        self.warm_seconds = None
        try:
            self.bake = self.make_bake(context)
        except (BakeError, ValueError) as exc:
            self.report({'ERROR'}, str(exc))
            return False
        return True

    def _warm_up(self):
        self.warm_seconds = warm_up(self.bake)

    def _finish_report(self):
        for w in self.bake.warnings:
            self.report({'WARNING'}, w)
        message = self.done_message()
        if self.warm_seconds is not None:
            message += (f" ({self.warm_seconds:.1f} s of it went to compiling the noise kernels "
                        "for these settings, once per session)")
        self.report({'INFO'}, message)

    def execute(self, context):
        from .motion import BakeError
        if not self._start(context):
            return {'CANCELLED'}
        if needs_warm_up(self.bake):
            print(f"noise_warp: {COMPILING}", flush=True)
        try:
            self._warm_up()
            self.bake.run()
        except (BakeError, ValueError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self._finish_report()
        return {'FINISHED'}

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self._start(context):
            return {'CANCELLED'}
        self._steps = self.bake.steps()
        self._warm_pending = True
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.01, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        if needs_warm_up(self.bake):   # shown before the first tick, which blocks meanwhile
            context.workspace.status_text_set(f"Noise Warp: {COMPILING}")
        return {'RUNNING_MODAL'}

    def _end(self, context):
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        context.workspace.status_text_set(None)

    def modal(self, context, event):
        from .motion import BakeError
        if event.type == 'ESC':
            self._steps.close()  # frames written so far stay; the next bake resumes
            self._end(context)
            self.report({'WARNING'}, "bake cancelled: run it again to resume after the last frame")
            return {'CANCELLED'}
        if event.type != 'TIMER':
            return {'PASS_THROUGH'}
        try:
            if self._warm_pending:
                self._warm_pending = False
                self._warm_up()
            done, total, message = next(self._steps)
        except StopIteration:
            self._end(context)
            self._finish_report()
            return {'FINISHED'}
        except (BakeError, ValueError) as exc:
            self._end(context)
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        context.window_manager.progress_update(int(100 * done / max(total, 1)))
        context.workspace.status_text_set(f"Noise Warp: {message} ({done}/{total}), Esc to cancel")
        return {'RUNNING_MODAL'}


class NOISE_WARP_OT_bake_texture(_ModalBake, bpy.types.Operator):
    """Bake warped noise for the scene camera (noise_####.exr + noise.npy)"""
    bl_idname = "noise_warp.bake_texture"
    bl_label = "Bake Noise Texture"
    bl_options = {'REGISTER'}

    directory: StringProperty(**_like("directory"))
    frame_start: IntProperty(**_like("frame_start"))
    frame_end: IntProperty(**_like("frame_end"))
    channels: IntProperty(**_like("channels"))
    method: EnumProperty(**_like("method"))
    seed: IntProperty(**_like("seed"))
    scale: FloatProperty(**_like("scale"))
    latent_factor: IntProperty(**_like("latent_factor"))
    supersample: IntProperty(**_like("supersample"))
    motion: EnumProperty(**_like("motion"))
    half: BoolProperty(**_like("half"))
    overwrite: BoolProperty(**_like("overwrite"))
    preview: EnumProperty(**_like("preview"))
    bake_simulations: BoolProperty(**_like("bake_simulations"))
    occlusions: BoolProperty(**_like("occlusions"))

    def make_bake(self, context):
        from .api import TextureBake
        return TextureBake(context.scene, **self._kwargs())

    def done_message(self):
        b = self.bake
        return (f"baked {len(b.files)} frames of {b.width // b.latent_factor}x"
                f"{b.height // b.latent_factor}x{b.channels} noise to {b.directory}")


class NOISE_WARP_OT_bake_volume(_ModalBake, bpy.types.Operator):
    """Bake warped volumetric noise in a box (noise_####.vdb) and add a Volume object"""
    bl_idname = "noise_warp.bake_volume"
    bl_label = "Bake Noise Volume"
    bl_options = {'REGISTER'}

    directory: StringProperty(**_like("volume_directory"))
    frame_start: IntProperty(**_like("frame_start"))
    frame_end: IntProperty(**_like("frame_end"))
    domain: StringProperty(name="Domain", description="Name of the box object whose bounds "
                                                      "the noise fills")
    source_collection: StringProperty(name="Source Collection",
                                      description="Name of the collection of moving meshes "
                                                  "that carry the noise along")
    resolution: IntProperty(**_like("resolution"))
    channels: IntProperty(**_like("volume_channels"))
    seed: IntProperty(**_like("seed"))
    motion: EnumProperty(**_like("volume_motion"))
    smoke_domain: StringProperty(name="Smoke Domain",
                                 description="Name of the baked smoke simulation's domain "
                                             "(Motion: Smoke)")
    write_density: BoolProperty(**_like("write_density"))
    overwrite: BoolProperty(**_like("overwrite"))
    bake_simulations: BoolProperty(**_like("bake_simulations"))
    method: EnumProperty(**_like("volume_method"))

    def make_bake(self, context):
        from .api import VolumeBake
        return VolumeBake(context.scene, **self._kwargs())

    def done_message(self):
        b = self.bake
        return f"baked {len(b.files)} volume frames {tuple(b.shape)} to {b.directory}"


class NOISE_WARP_OT_open_folder(bpy.types.Operator):
    """Open the bake's output folder in the system's file browser"""
    bl_idname = "noise_warp.open_folder"
    bl_label = "Open Output Folder"
    bl_options = {'REGISTER'}

    kind: EnumProperty(name="Bake", description="Whose output folder to open",
                       items=[('TEXTURE', "Texture", "The texture bake's output folder"),
                              ('VOLUME', "Volume", "The volume bake's output folder")])

    def execute(self, context):
        path, error = output_folder(context.scene, self.kind)
        if error:
            self.report({'ERROR'}, error)
            return {'CANCELLED'}
        return bpy.ops.wm.path_open(filepath=path)


classes = (NOISE_WARP_OT_bake_texture, NOISE_WARP_OT_bake_volume, NOISE_WARP_OT_open_folder)


register, unregister = bpy.utils.register_classes_factory(classes)
