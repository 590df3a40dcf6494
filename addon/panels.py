"""Panels: Properties > Output, and the 3D viewport sidebar (N panel, "Noise Warp" tab)."""
import bpy


def _draw_texture(layout, s):
    col = layout.column(align=True)
    col.prop(s, "directory")
    row = col.row(align=True)
    row.prop(s, "frame_start")
    row.prop(s, "frame_end")
    col = layout.column()
    col.prop(s, "method")
    col.prop(s, "motion")
    row = col.row(align=True)
    row.prop(s, "channels")
    row.prop(s, "seed")
    row = col.row(align=True)
    row.prop(s, "scale")
    row.prop(s, "latent_factor")
    col.prop(s, "supersample")
    row = col.row(align=True)
    row.prop(s, "half")
    row.prop(s, "overwrite")
    col.prop(s, "preview")
    layout.operator("noise_warp.bake_texture", icon='RENDER_ANIMATION')


def _draw_volume(layout, s):
    col = layout.column()
    col.prop(s, "volume_directory")
    col.prop(s, "volume_motion")
    col.prop(s, "domain")
    if s.volume_motion == 'SMOKE':
        col.prop(s, "smoke_domain")
    else:
        col.prop(s, "source_collection")
    row = col.row(align=True)
    row.prop(s, "resolution")
    row.prop(s, "volume_channels")
    col.prop(s, "write_density")
    layout.operator("noise_warp.bake_volume", icon='VOLUME_DATA')


class _Output:
    bl_space_type = 'PROPERTIES'
    bl_region_type = 'WINDOW'
    bl_context = "output"
    bl_options = {'DEFAULT_CLOSED'}


class _Sidebar:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Noise Warp"


class _Texture:
    def draw(self, context):
        _draw_texture(self.layout, context.scene.noise_warp)


class _Volume:
    def draw(self, context):
        _draw_volume(self.layout, context.scene.noise_warp)


class NOISE_WARP_PT_output(_Texture, _Output, bpy.types.Panel):
    bl_label = "Noise Warp"


class NOISE_WARP_PT_output_volume(_Volume, _Output, bpy.types.Panel):
    bl_label = "Volume"
    bl_parent_id = "NOISE_WARP_PT_output"


class NOISE_WARP_PT_view3d(_Texture, _Sidebar, bpy.types.Panel):
    bl_label = "Noise Texture"


class NOISE_WARP_PT_view3d_volume(_Volume, _Sidebar, bpy.types.Panel):
    bl_label = "Noise Volume"


classes = (NOISE_WARP_PT_output, NOISE_WARP_PT_output_volume, NOISE_WARP_PT_view3d,
           NOISE_WARP_PT_view3d_volume)


register, unregister = bpy.utils.register_classes_factory(classes)
