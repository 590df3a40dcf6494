"""Panels: Properties > Output > Noise Warp, and the 3D viewport sidebar (N panel, "Noise Warp"
tab), the same tree in both: the settings both bakes use (frames, seed, overwrite, baking
simulations first, the compile notice), then a Texture and a Volume sub-panel, each showing the
size it will bake before it runs, and the research baselines under Texture > Advanced. The first
draw in an interactive Blender starts compiling the kernels in the background (warmup.py)."""
import bpy

from . import warmup
from .properties import MAIN_METHODS, METHOD_ITEMS


def texture_size_label(scene, s):
    """What the texture bake will write, e.g. '1920×1080 → latent 240×135 × 16', or why it
    will refuse."""
    from .api import render_size, texture_size

    frame = [n * s.scale for n in render_size(scene)]
    if s.latent_factor > min(frame):
        return (f"latent factor {s.latent_factor} is larger than the frame "
                f"({frame[1]:g}×{frame[0]:g})")
    h, w = texture_size(scene, s.scale, s.latent_factor)
    if s.latent_factor > 1:
        return f"{w}×{h} → latent {w // s.latent_factor}×{h // s.latent_factor} × {s.channels}"
    return f"{w}×{h} × {s.channels}"


def volume_size_label(scene, s):
    """What the volume bake will write, e.g. '64×32×48 voxels × 1', or what is missing."""
    if s.domain is None:
        if s.volume_motion == 'SMOKE' and s.smoke_domain is not None:
            return f"the smoke domain's own cells × {s.volume_channels}"
        return "pick a Domain box"
    from .motion import BakeError
    from .volume import domain_grid

    try:
        shape = domain_grid(s.domain, s.resolution)[0]   # as last evaluated: no evaluation
    except (BakeError, ValueError) as exc:
        return str(exc)
    return "×".join(str(n) for n in shape) + f" voxels × {s.volume_channels}"


def _frames_text(scene, s):
    start = scene.frame_start if s.frame_start < 0 else s.frame_start
    end = scene.frame_end if s.frame_end < 0 else s.frame_end
    return f"frames {start}–{end}"


def _draw_shared(layout, scene, s):
    col = layout.column(align=True)
    row = col.row(align=True)
    row.prop(s, "frame_start")
    row.prop(s, "frame_end")
    row = layout.row(align=True)
    row.prop(s, "seed")
    row.prop(s, "overwrite")
    layout.prop(s, "bake_simulations")
    warmup.start_on_first_use(scene)     # compiles in the background, once a session
    notice = warmup.status()
    if notice:
        layout.label(text=notice[0], icon=notice[1])


def _draw_texture(layout, scene, s):
    layout.prop(s, "directory")
    col = layout.column()
    col.prop(s, "motion")
    row = col.row(align=True)
    row.label(text="Method")
    for m in MAIN_METHODS:
        row.prop_enum(s, "method", m)
    if s.method not in MAIN_METHODS:
        name = next(item[1] for item in METHOD_ITEMS if item[0] == s.method)
        col.label(text=f"Method: {name} (see Advanced)", icon='ERROR')
    col.prop(s, "channels")
    col.prop(s, "scale")
    col.prop(s, "latent_factor")
    col.prop(s, "preview")
    size = texture_size_label(scene, s)
    box = layout.box()
    box.alert = size.startswith("latent factor")
    box.label(text=size + ", " + _frames_text(scene, s),
              icon='ERROR' if box.alert else 'IMAGE_DATA')
    row = layout.row(align=True)
    row.operator("noise_warp.bake_texture", icon='RENDER_ANIMATION')
    row.operator("noise_warp.open_folder", text="", icon='FILE_FOLDER').kind = 'TEXTURE'


def _draw_advanced(layout, scene, s):
    col = layout.column()
    col.prop(s, "method", text="Method")
    col.prop(s, "supersample")
    col.prop(s, "occlusions")
    col.prop(s, "half")


def _draw_volume(layout, scene, s):
    if bpy.app.version < (4, 4, 0):
        layout.label(text="Volume bakes need Blender 4.4 or later (its OpenVDB module)",
                     icon='ERROR')
    col = layout.column()
    col.prop(s, "volume_directory")
    col.prop(s, "volume_motion")
    col.prop(s, "volume_method")
    col.prop(s, "domain")
    if s.volume_motion == 'SMOKE':
        col.prop(s, "smoke_domain")
    else:
        col.prop(s, "source_collection")
    col.prop(s, "resolution")
    col.prop(s, "volume_channels")
    col.prop(s, "write_density")
    box = layout.box()
    box.label(text=volume_size_label(scene, s) + ", " + _frames_text(scene, s), icon='VOLUME_DATA')
    row = layout.row(align=True)
    row.operator("noise_warp.bake_volume", icon='VOLUME_DATA')
    row.operator("noise_warp.open_folder", text="", icon='FILE_FOLDER').kind = 'VOLUME'


class _Output:
    bl_space_type = 'PROPERTIES'
    bl_region_type = 'WINDOW'
    bl_context = "output"


class _Sidebar:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Noise Warp"


def _panel(draw_fn):
    def draw(self, context):
        self.layout.use_property_split = True
        self.layout.use_property_decorate = False
        draw_fn(self.layout, context.scene, context.scene.noise_warp)
    return draw


def _tree(prefix, place, closed):
    """The parent panel and its Texture, Advanced and Volume sub-panels for one place."""
    parent = f"NOISE_WARP_PT_{prefix}"
    opts = {'bl_options': {'DEFAULT_CLOSED'}} if closed else {}
    specs = [
        (parent, "Noise Warp", None, _draw_shared, opts),
        (f"{parent}_texture", "Texture", parent, _draw_texture, {}),
        (f"{parent}_advanced", "Advanced", f"{parent}_texture", _draw_advanced,
         {'bl_options': {'DEFAULT_CLOSED'}}),
        (f"{parent}_volume", "Volume", parent, _draw_volume, {}),
    ]
    out = []
    for idname, label, parent_id, fn, extra in specs:
        attrs = {"bl_idname": idname, "bl_label": label, "draw": _panel(fn), **extra}
        if parent_id:
            attrs["bl_parent_id"] = parent_id
        out.append(type(idname, (place, bpy.types.Panel), attrs))
    return out


classes = tuple(_tree("output", _Output, closed=True) + _tree("view3d", _Sidebar, closed=False))


register, unregister = bpy.utils.register_classes_factory(classes)
