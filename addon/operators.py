"""Thin operators: each button calls a function of `api` that scripts use too.

In the UI a bake runs as a modal operator on a timer (progress, Esc cancels, the next run
resumes after the last complete frame); headless (`blender -b`, `import bpy`) it runs to the
end and prints progress.
"""
import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from .properties import METHOD_ITEMS, MOTION_ITEMS, PREVIEW_ITEMS, VOLUME_MOTION_ITEMS


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
        try:
            self.bake = self.make_bake(context)
        except (BakeError, ValueError) as exc:
            self.report({'ERROR'}, str(exc))
            return False
        return True

    def _finish_report(self):
        for w in self.bake.warnings:
            self.report({'WARNING'}, w)
        self.report({'INFO'}, self.done_message())

    def execute(self, context):
        from .motion import BakeError
        if not self._start(context):
            return {'CANCELLED'}
        try:
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
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.01, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
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

    directory: StringProperty(name="Output Folder", subtype='DIR_PATH')
    frame_start: IntProperty(name="Start", default=-1)
    frame_end: IntProperty(name="End", default=-1)
    channels: IntProperty(name="Channels", default=4, min=1, max=64)
    method: EnumProperty(name="Method", items=METHOD_ITEMS, default="PARTICLE")
    seed: IntProperty(name="Seed", default=0, min=0)
    scale: FloatProperty(name="Scale", default=1.0, min=0.01, max=16.0)
    latent_factor: IntProperty(name="Latent Factor", default=1, min=1, max=64)
    supersample: IntProperty(name="Supersample", default=1, min=1, max=8)
    motion: EnumProperty(name="Motion", items=MOTION_ITEMS, default="VECTOR")
    half: BoolProperty(name="Half Float", default=False)
    overwrite: BoolProperty(name="Overwrite", default=False)
    preview: EnumProperty(name="Preview", items=PREVIEW_ITEMS, default="MATERIAL")

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

    directory: StringProperty(name="Output Folder", subtype='DIR_PATH')
    frame_start: IntProperty(name="Start", default=-1)
    frame_end: IntProperty(name="End", default=-1)
    domain: StringProperty(name="Domain", description="Name of the box object")
    source_collection: StringProperty(name="Source Collection",
                                      description="Name of the collection of moving meshes")
    resolution: IntProperty(name="Resolution", default=64, min=2, max=1024)
    channels: IntProperty(name="Channels", default=1, min=1, max=16)
    seed: IntProperty(name="Seed", default=0, min=0)
    motion: EnumProperty(name="Motion", items=VOLUME_MOTION_ITEMS, default="MESH")
    smoke_domain: StringProperty(name="Smoke Domain",
                                 description="Name of the baked fluid domain (motion 'SMOKE')")
    write_density: BoolProperty(name="Density Grid", default=True)
    overwrite: BoolProperty(name="Overwrite", default=False)

    def make_bake(self, context):
        from .api import VolumeBake
        return VolumeBake(context.scene, **self._kwargs())

    def done_message(self):
        b = self.bake
        return f"baked {len(b.files)} volume frames {tuple(b.shape)} to {b.directory}"


classes = (NOISE_WARP_OT_bake_texture, NOISE_WARP_OT_bake_volume)


register, unregister = bpy.utils.register_classes_factory(classes)
