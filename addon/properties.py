"""`scene.noise_warp`: the settings shared by the panels, the operators and scripts.

Operators take the same names as arguments; an argument left unset falls back to the value
stored here, so `bpy.ops.noise_warp.bake_texture()` in `blender -b file.blend --python-expr`
bakes exactly what the panel shows.
"""
import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

# Kept literal (not imported from core2d) so registering never imports Taichi.
METHOD_ITEMS = [
    ("PARTICLE", "Particle", "Infinite-resolution particle warping (fast, robust to folds)"),
    ("GRID", "Grid", "Exact polygon overlaps (injective motion)"),
    ("UPSAMPLE", "Upsample", "Chang et al. conditional upsampling baseline"),
    ("NEAREST", "Nearest", "Nearest-cell transport baseline"),
    ("BILINEAR", "Bilinear", "Bilinear interpolation baseline (not white: blurs)"),
    ("FIXED", "Fixed", "Same noise every frame"),
    ("RESAMPLE", "Resample", "Fresh noise every frame"),
]
MOTION_ITEMS = [
    ("VECTOR", "Vector Pass", "Motion from Cycles' Vector pass (1 sample, no denoiser)"),
    ("MESH", "Mesh Motion", "Evaluated mesh vertices projected through the camera (no render)"),
]
VOLUME_MOTION_ITEMS = [
    ("MESH", "Meshes", "Motion of the evaluated meshes in the source collection"),
    ("SMOKE", "Smoke", "Velocity of a baked smoke simulation (the fluid domain's OpenVDB cache)"),
]
PREVIEW_ITEMS = [
    ("MATERIAL", "Material", "Create a screen-space preview material reading the sequence"),
    ("NONE", "None", "Only load the image sequence"),
]


class NoiseWarpSettings(bpy.types.PropertyGroup):
    directory: StringProperty(name="Output Folder", subtype='DIR_PATH', default="//noise/",
                              description="Folder for noise_####.exr and noise.npy")
    frame_start: IntProperty(name="Start", default=-1, min=-1,
                             description="First frame (-1: the scene's start frame)")
    frame_end: IntProperty(name="End", default=-1, min=-1,
                           description="Last frame (-1: the scene's end frame)")
    channels: IntProperty(name="Channels", default=4, min=1, max=64,
                          description="Noise channels (4 for SD-style latents, 16 for others)")
    method: EnumProperty(name="Method", items=METHOD_ITEMS, default="PARTICLE")
    seed: IntProperty(name="Seed", default=0, min=0)
    scale: FloatProperty(name="Scale", default=1.0, min=0.01, max=16.0,
                         description="Noise size relative to the render resolution")
    latent_factor: IntProperty(name="Latent Factor", default=1, min=1, max=64,
                               description="∫-pool the noise by this factor (8 for a VAE latent)")
    supersample: IntProperty(name="Supersample", default=1, min=1, max=8,
                             description="Warp at this many times the output size (less diffusion)")
    motion: EnumProperty(name="Motion", items=MOTION_ITEMS, default="VECTOR")
    half: BoolProperty(name="Half Float", default=False, description="Store EXRs as float16")
    overwrite: BoolProperty(name="Overwrite", default=False,
                            description="Replace existing outputs instead of refusing")
    preview: EnumProperty(name="Preview", items=PREVIEW_ITEMS, default="MATERIAL")

    volume_directory: StringProperty(name="Volume Folder", subtype='DIR_PATH',
                                     default="//noise_volume/",
                                     description="Folder for noise_####.vdb")
    domain: PointerProperty(name="Domain", type=bpy.types.Object,
                            description="Box object whose bounds the volume fills")
    source_collection: PointerProperty(name="Source Collection", type=bpy.types.Collection,
                                       description="Collection of the moving meshes")
    resolution: IntProperty(name="Resolution", default=64, min=2, max=1024,
                            description="Voxels along the domain's longest side")
    volume_channels: IntProperty(name="Channels", default=1, min=1, max=16)
    volume_motion: EnumProperty(name="Motion", items=VOLUME_MOTION_ITEMS, default="MESH")
    smoke_domain: PointerProperty(name="Smoke Domain", type=bpy.types.Object,
                                  poll=lambda self, obj: any(
                                      m.type == 'FLUID' and m.fluid_type == 'DOMAIN'
                                      for m in obj.modifiers),
                                  description="Fluid domain whose baked cache moves the noise "
                                              "(also the volume's bounds when Domain is empty)")
    write_density: BoolProperty(name="Density Grid", default=True,
                                description="Also write a ready-to-render fog grid 'density'")


def register():
    bpy.utils.register_class(NoiseWarpSettings)
    bpy.types.Scene.noise_warp = PointerProperty(type=NoiseWarpSettings)


def unregister():
    del bpy.types.Scene.noise_warp
    bpy.utils.unregister_class(NoiseWarpSettings)
