"""Thin operators: each button calls a function of `api` that scripts use too.

In the UI a bake runs as a modal operator on a timer (progress, Esc cancels, the next run
resumes after the last complete frame); headless (`blender -b`, `import bpy`) it runs to the
end and prints progress. Before the first bake with a method in a session, Taichi starts and
compiles that method's kernels on a tiny problem (unless the panel's background warm-up did it
already, see warmup.py); the bake says so while it happens and reports how long it took.
"""
import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from .properties import NoiseWarpSettings
from .warmup import COMPILING, RUNNING, lock_busy, needs_warm_up, warm_up


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
                        "for this method, once per session)")
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
        if lock_busy():        # the background warm-up is compiling: wait without freezing the UI
            context.workspace.status_text_set(f"Noise Warp: {RUNNING}, Esc to cancel")
            return {'RUNNING_MODAL'}
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
