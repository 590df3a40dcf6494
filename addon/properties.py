"""`scene.noise_warp`: the settings shared by the panels, the operators and scripts.

Operators take the same names as arguments; an argument left unset falls back to the value
stored here, so `bpy.ops.noise_warp.bake_texture()` in `blender -b file.blend --python-expr`
bakes exactly what the panel shows. Every tooltip is written for an artist: what the setting
changes in the result, in plain words.
"""
import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

# Kept literal (not imported from core2d) so registering never imports Taichi.
METHOD_ITEMS = [
    ("PARTICLE", "Particle", "Recommended. The noise follows the motion and every frame stays "
                             "perfectly random noise, even where things fold or overlap"),
    ("FLOWMAP", "Flow Map", "The noise stays attached to what moves for the whole shot: it "
                            "does not drift or fade over many frames, and every frame stays "
                            "perfectly random noise. Slower than Particle"),
    ("GRID", "Grid", "Follows the motion by exact pixel overlaps. Best for smooth motion where "
                     "nothing overlaps; slower than Particle"),
    ("UPSAMPLE", "Upsample (research)", "Research baseline (Chang et al. 2024): the original "
                                        "noise-warping method, much slower"),
    ("NEAREST", "Nearest (research)", "Research baseline: copies the nearest pixel. Noise "
                                      "repeats and gets holes where things stretch"),
    ("BILINEAR", "Bilinear (research)", "Research baseline: blends neighbouring pixels. The "
                                        "noise blurs and loses contrast over time"),
    ("FIXED", "Fixed (research)", "Research baseline: the same noise image every frame; it "
                                  "does not move with anything"),
    ("RESAMPLE", "Resample (research)", "Research baseline: new random noise every frame; "
                                        "nothing carries over between frames"),
]
MAIN_METHODS = ("PARTICLE", "FLOWMAP", "GRID")   # the panel's own choice; the rest under Advanced
MOTION_ITEMS = [
    ("VECTOR", "Render Pass", "Motion as Cycles sees it (a quick render of its Vector pass "
                              "per frame): objects, deformations, hair, the camera and the "
                              "sky behind it"),
    ("MESH", "Mesh Motion", "Motion of the mesh vertices as the camera sees them, without "
                            "rendering: faster, but it ignores the world background, hair, "
                            "curves and volumes"),
]
VOLUME_METHOD_ITEMS = [
    ("PARTICLE", "Particle", "Recommended. The grain moves with the motion; over long shots it "
                             "slowly softens and changes"),
    ("FLOWMAP", "Flow Map", "The grain stays attached to what moves for the whole shot and "
                            "does not soften. Slower than Particle"),
]
VOLUME_MOTION_ITEMS = [
    ("MESH", "Meshes", "The noise moves with the meshes in the Source Collection"),
    ("SMOKE", "Smoke", "The noise moves with a baked smoke or fire simulation"),
]
PREVIEW_ITEMS = [
    ("MATERIAL", "Material", "Also make a material that shows the noise exactly where the "
                             "camera sees it, to check that it follows the objects"),
    ("NONE", "None", "Only load the noise images into Blender"),
]
FRAME_HINT = " (-1: the scene's own frame range)"
# Output folders are '//'-relative by default; Blender 4.5 and later warn when such a path is set
# on a property not marked as taking one (4.2 has no such flag and no warning).
BLEND_RELATIVE = ({"options": {'ANIMATABLE', 'PATH_SUPPORTS_BLEND_RELATIVE'}}
                  if "is_path_supports_blend_relative" in bpy.types.StringProperty.bl_rna.properties
                  else {})


class NoiseWarpSettings(bpy.types.PropertyGroup):
    # shared by both bakes
    frame_start: IntProperty(name="Start", default=-1, min=-1,
                             description="First frame to bake" + FRAME_HINT)
    frame_end: IntProperty(name="End", default=-1, min=-1,
                           description="Last frame to bake" + FRAME_HINT)
    seed: IntProperty(name="Seed", default=0, min=0,
                      description="Pick another number for a different noise pattern; the same "
                                  "seed always gives exactly the same noise")
    overwrite: BoolProperty(name="Overwrite", default=False,
                            description="Replace an earlier bake in the output folder. Off: "
                                        "refuse, or continue an interrupted bake that used the "
                                        "same settings")
    bake_simulations: BoolProperty(name="Bake Simulations", default=True,
                                   description="Bake unbaked rigid body, cloth, soft body and "
                                               "particle simulations first: their motion is "
                                               "only right once baked. Off: such scenes are "
                                               "refused with their names")

    # texture
    directory: StringProperty(name="Output Folder", subtype='DIR_PATH', default="//noise/",
                              **BLEND_RELATIVE,
                              description="Where the noise images (noise_0001.exr, ...) and "
                                          "noise.npy are written. '//' is the folder of the "
                                          ".blend file")
    channels: IntProperty(name="Channels", default=4, min=1, max=64,
                          description="Independent noise images per frame: 4 for Stable "
                                      "Diffusion 1.5 and SDXL, 16 for SD3, Flux and most "
                                      "video models")
    method: EnumProperty(name="Method", items=METHOD_ITEMS, default="PARTICLE",
                         description="How the noise is carried from frame to frame")
    scale: FloatProperty(name="Resolution Scale", default=1.0, min=0.01, max=16.0,
                         description="Output resolution of the noise, relative to the render "
                                     "resolution (after its %): 1 gives one noise pixel per "
                                     "rendered pixel, 0.5 half as many each way")
    latent_factor: IntProperty(name="Latent Factor", default=1, min=1, max=64,
                               description="Shrink the noise to a model's latent size: 8 for "
                                           "Stable Diffusion and most video models, 1 to keep "
                                           "the full size. Blocks are combined so that the "
                                           "result is still perfectly random noise")
    supersample: IntProperty(name="Supersample", default=1, min=1, max=8,
                             description="Follow the motion on a grid this many times finer "
                                         "than the output: sharper on fine or slow motion, "
                                         "slower to bake")
    motion: EnumProperty(name="Motion", items=MOTION_ITEMS, default="VECTOR",
                         description="Where the motion comes from")
    half: BoolProperty(name="Half Float", default=False,
                       description="Store the noise images with 16-bit instead of 32-bit "
                                   "numbers: half the disk space, slightly less precise")
    preview: EnumProperty(name="Preview", items=PREVIEW_ITEMS, default="MATERIAL",
                          description="What to set up in Blender after the bake")
    occlusions: BoolProperty(name="Fresh Noise Where Revealed", default=True,
                             description="Where something moves away and shows what was behind "
                                         "it, or new things come into view, start with new "
                                         "noise there instead of stretching the old noise over "
                                         "it")

    # volume
    volume_directory: StringProperty(name="Output Folder", subtype='DIR_PATH',
                                     default="//noise_volume/", **BLEND_RELATIVE,
                                     description="Where the volume frames (noise_0001.vdb, "
                                                 "...) are written. '//' is the folder of the "
                                                 ".blend file")
    domain: PointerProperty(name="Domain", type=bpy.types.Object,
                            description="Box object whose bounds the noise fills")
    source_collection: PointerProperty(name="Source Collection", type=bpy.types.Collection,
                                       description="Collection of the moving meshes that carry "
                                                   "the noise along")
    resolution: IntProperty(name="Resolution", default=64, min=2, max=1024,
                            description="Voxels along the longest side of the domain (more: "
                                        "finer grain, slower, bigger files)")
    volume_channels: IntProperty(name="Channels", default=1, min=1, max=16,
                                 description="Independent noise values per voxel")
    volume_motion: EnumProperty(name="Motion", items=VOLUME_MOTION_ITEMS, default="MESH",
                                description="What moves the noise")
    volume_method: EnumProperty(name="Method", items=VOLUME_METHOD_ITEMS, default="PARTICLE",
                                description="How the noise is carried from frame to frame")
    smoke_domain: PointerProperty(name="Smoke Domain", type=bpy.types.Object,
                                  poll=lambda self, obj: any(
                                      m.type == 'FLUID' and m.fluid_type == 'DOMAIN'
                                      for m in obj.modifiers),
                                  description="The smoke simulation's domain (bake it first). "
                                              "With no Domain above, the noise fills it")
    write_density: BoolProperty(name="Density Grid", default=True,
                                description="Also store a 'density' grid that renders as "
                                            "visible grain")


def register():
    bpy.utils.register_class(NoiseWarpSettings)
    bpy.types.Scene.noise_warp = PointerProperty(type=NoiseWarpSettings)


def unregister():
    del bpy.types.Scene.noise_warp
    bpy.utils.unregister_class(NoiseWarpSettings)
