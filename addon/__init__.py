"""Noise Warp: Blender extension baking warped Gaussian noise (textures and volumes).

Relative imports only: the same package runs as the installed extension
(`bl_ext.<repo>.noise_warp`) and as `addon` when tests import it from the repository.
"""
from . import operators, panels, properties, warmup

_modules = (properties, operators, panels, warmup)


def register():
    from .fluid import repair_mantaflow

    repair_mantaflow()   # lets fluid caches bake in the bpy module; a no-op in Blender itself
    for m in _modules:
        m.register()


def unregister():
    for m in reversed(_modules):
        m.unregister()
