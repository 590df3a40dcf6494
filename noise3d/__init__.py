"""noise3d: volumetric integral noise warping (white noise that moves with 3D motion).

    import noise3d
    v = noise3d.VolumeWarper((64, 64, 64), channels=1, method="particle", seed=0)
    v.step(flow)                                   # backward flow [X, Y, Z, 3] in voxels
    flow = noise3d.mesh_motion_field(mesh_a, mesh_b, shape, origin, voxel_size)
    noise3d.write_vdb("noise_0001.vdb", v.noise, voxel_size, origin)

Volumes are [X, Y, Z, C] noise and [X, Y, Z, 3] flows in voxels; voxel (i, j, k) covers
origin + [i, i+1]×[j, j+1]×[k, k+1] · voxel_size in world units (Blender: Z up, metres).
"""
from .fields import index_velocity_flow, resample_field, staggered_to_centred, velocity_to_flow
from .mesh import grid_for_meshes, mesh_motion_field
from .vdb import openvdb_module, read_dense, read_vdb, read_velocity, write_vdb, write_velocity_vdb
from .warper import BACKENDS, METHODS, VolumeWarper, warp_volume_sequence

__all__ = ["VolumeWarper", "warp_volume_sequence", "mesh_motion_field", "grid_for_meshes",
           "velocity_to_flow", "resample_field", "index_velocity_flow", "staggered_to_centred", "read_dense", "write_vdb", "read_vdb", "read_velocity",
           "write_velocity_vdb", "openvdb_module", "METHODS", "BACKENDS"]
