"""Smoke domains as a volume motion source, and the repair that lets the bpy module bake them.

Mantaflow writes each frame of a domain's cache to `<cache>/data/fluid_data_####.vdb`; its
`velocity` grid is staggered (MAC) and in Mantaflow's own units, grid cells per solver time
unit along the domain's axes. One frame lasts 0.1 · 25 / fps · time_scale solver units
(Blender's fluid.cc), and the density of frame f is the density of frame f − 1 advected by the
velocity stored at f − 1. So the backward flow of frame f is −v(f − 1) · frame_length cells,
mapped through the domain's grid-to-world transform. Reading the cache files directly (not
the domain's RNA grids) keeps Mantaflow out of the process that bakes the noise.
"""
import atexit
import ctypes
import os
import sys

import numpy as np

import bpy

from .motion import BakeError

# Mantaflow's class tree (extern/mantaflow: grid.h, shapes.h, particle.h, mesh.h, ...).
MANTA_BASES = {
    "GridBase": "PbClass", "Grid<Real>": "GridBase", "Grid<Vec3>": "GridBase",
    "Grid<int>": "GridBase", "LevelsetGrid": "Grid<Real>", "MACGrid": "Grid<Vec3>",
    "FlagGrid": "Grid<int>", "Grid4dBase": "PbClass", "Grid4d<Real>": "Grid4dBase",
    "Grid4d<Vec3>": "Grid4dBase", "Grid4d<Vec4>": "Grid4dBase", "Grid4d<int>": "Grid4dBase",
    "FluidSolver": "PbClass", "Shape": "PbClass", "NullShape": "Shape", "Box": "Shape",
    "Sphere": "Shape", "Cylinder": "Shape", "Slope": "Shape", "ParticleBase": "PbClass",
    "ParticleSystem<BasicParticleData>": "ParticleBase",
    "ParticleSystem<ParticleIndexData>": "ParticleBase",
    "ParticleSystem<TurbulenceParticleData>": "ParticleBase",
    "ParticleSystem<VortexParticleData>": "ParticleBase",
    "BasicParticleSystem": "ParticleSystem<BasicParticleData>",
    "ParticleIndexSystem": "ParticleSystem<ParticleIndexData>",
    "TurbulenceParticleSystem": "ParticleSystem<TurbulenceParticleData>",
    "VortexParticleSystem": "ParticleSystem<VortexParticleData>",
    "ParticleDataBase": "PbClass", "ParticleDataImpl<Real>": "ParticleDataBase",
    "ParticleDataImpl<Vec3>": "ParticleDataBase", "ParticleDataImpl<int>": "ParticleDataBase",
    "Mesh": "PbClass", "VortexSheetMesh": "Mesh", "MeshDataBase": "PbClass",
    "MeshDataImpl<Real>": "MeshDataBase", "MeshDataImpl<Vec3>": "MeshDataBase",
    "MeshDataImpl<int>": "MeshDataBase", "MovingObstacle": "PbClass",
    "WaveletNoiseField": "PbClass", "Timings": "PbClass",
}

_repaired = None


def mantaflow_broken():
    """True where Mantaflow's Python classes have lost their bases (the `bpy` module, 4.2 to
    5.0): every fluid bake then stops at "'LevelsetGrid' object has no attribute 'setConst'"."""
    manta = sys.modules.get("manta")
    if manta is None:
        try:
            import manta  # noqa: F401  (built into Blender's Python where fluids are compiled in)
        except ImportError:
            return False
        manta = sys.modules["manta"]
    level = getattr(manta, "LevelsetGrid", None)
    return level is not None and not hasattr(level, "setConst")


def _mro_offset(cls):
    """Byte offset of tp_mro in the type object, found by its value, never assumed."""
    want = id(cls.__mro__)
    for off in range(0, 512, ctypes.sizeof(ctypes.c_void_p)):
        if ctypes.c_void_p.from_address(id(cls) + off).value == want:
            return off
    return None


def repair_mantaflow():
    """Give Mantaflow's classes their base classes back so fluid bakes run in the bpy module.

    The classes are static C types whose MRO lists only themselves; each one gets its real
    chain (LevelsetGrid → Grid<Real> → GridBase → PbClass), written into tp_mro after checking
    that the slot holds the current MRO. Also frees the fluid modifiers at exit: Mantaflow
    otherwise aborts the interpreter ("can't clean grid cache"). Does nothing where Mantaflow
    is intact (Blender itself). Returns True when the classes are usable.
    """
    global _repaired
    if _repaired is not None:
        return _repaired
    if not mantaflow_broken():
        _repaired = True
        return True
    import manta

    types = {n: getattr(manta, n) for n in set(MANTA_BASES) | set(MANTA_BASES.values())
             if isinstance(getattr(manta, n, None), type)}
    off = _mro_offset(types.get("LevelsetGrid"))
    if off is None or len(types) < len(set(MANTA_BASES) | set(MANTA_BASES.values())):
        _repaired = False
        return False
    done = set()

    def fix(name):
        if name in done or name not in MANTA_BASES:
            return
        fix(MANTA_BASES[name])
        cls, base = types[name], types[MANTA_BASES[name]]
        slot = ctypes.c_void_p.from_address(id(cls) + off)
        if slot.value != id(cls.__mro__):
            raise RuntimeError(f"unexpected type layout for Mantaflow class {name}")
        mro = (cls,) + base.__mro__
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(mro))  # owned by the type from now on
        slot.value = id(mro)
        ctypes.pythonapi.PyType_Modified(ctypes.py_object(cls))
        done.add(name)

    try:
        for name in MANTA_BASES:
            fix(name)
    except RuntimeError:
        _repaired = False
        return False
    atexit.register(_free_fluids)
    _repaired = not mantaflow_broken()
    return _repaired


def _free_fluids():
    """Remove every fluid modifier and re-evaluate, so Mantaflow frees its solvers while Python
    still runs (the process is ending: nothing is saved after this)."""
    try:
        for obj in bpy.data.objects:
            for mod in [m for m in obj.modifiers if m.type == "FLUID"]:
                obj.modifiers.remove(mod)
        for scene in bpy.data.scenes:
            for layer in scene.view_layers:
                layer.depsgraph.update()
    except Exception:
        pass


def fluid_domain_settings(obj):
    """The domain settings of a fluid domain object, or None."""
    for mod in getattr(obj, "modifiers", ()):
        if mod.type == "FLUID" and mod.fluid_type == "DOMAIN":
            return mod.domain_settings
    return None


class SmokeMotion:
    """Backward flows from a baked fluid domain's cache (velocity grids in .vdb files)."""

    def __init__(self, scene, obj):
        ds = fluid_domain_settings(obj)
        if ds is None:
            raise BakeError(f"'{obj.name}' is not a fluid domain (Physics > Fluid > Type: Domain)")
        if ds.cache_data_format != "OPENVDB":
            raise BakeError(f"the fluid cache of '{obj.name}' is stored as {ds.cache_data_format}: "
                            "set Cache > Format Volumes to OpenVDB and bake it again")
        if ds.use_adaptive_domain:
            raise BakeError(f"'{obj.name}' uses an adaptive domain, whose grid moves every frame: "
                            "turn Adaptive Domain off and bake it again")
        from noise3d.vdb import openvdb_module

        if openvdb_module() is None:
            raise BakeError("OpenVDB is not available: the smoke cache cannot be read")
        self.scene, self.obj, self.ds = scene, obj, ds
        self.directory = os.path.join(bpy.path.abspath(ds.cache_directory), "data")
        fps = scene.render.fps / scene.render.fps_base
        self.frame_length = 0.1 * 25.0 / fps * ds.time_scale
        co = np.array([v.co for v in obj.data.vertices], np.float64).reshape(-1, 3)
        if len(co) == 0:
            raise BakeError(f"the fluid domain '{obj.name}' has no vertices")
        self.p0, self.p1 = co.min(0), co.max(0)
        self.res = self._resolution()

    def _resolution(self):
        """Cells per axis: Blender's rule, cubic cells of the longest side / resolution_max
        (in world units, so the object's scale counts), at least 4 cells per axis."""
        size = (self.p1 - self.p0) * np.abs(np.array(self.obj.scale, np.float64))
        cell = size.max() / self.ds.resolution_max
        return tuple(int(max(int(s / cell + 0.5), 4)) for s in size)

    def path(self, frame):
        return os.path.join(self.directory, f"fluid_data_{frame:04d}.vdb")

    def check(self, frames):
        """BakeError unless every frame in `frames` is cached with a velocity grid that moves."""
        frames = list(frames)
        from noise3d import vdbfile
        from noise3d.vdb import openvdb_module

        vdb = openvdb_module()
        missing = [f for f in frames if not os.path.isfile(self.path(f))]
        if missing:
            raise BakeError(
                f"the smoke cache of '{self.obj.name}' has no frame {missing[0]} "
                f"({self.path(missing[0])}): bake the domain first (Physics > Fluid > Cache > "
                f"Bake Data, or Bake All) over frames {min(frames)}-{max(frames) + 1}")
        active = 0
        for f in frames:
            try:   # the layout walk first: a damaged count must not make OpenVDB allocate gigabytes
                vdbfile.walk(self.path(f))
                meta = {g.name: dict(g.metadata) for g in vdb.readAllGridMetadata(self.path(f))}
            except Exception as exc:
                raise BakeError(f"{self.path(f)}: not a readable OpenVDB file ({exc})") from None
            if "velocity" not in meta:
                raise BakeError(f"{self.path(f)}: the fluid cache holds no 'velocity' grid")
            active += int(meta["velocity"].get("file_voxel_count", 1))
            base = meta["velocity"].get("file_base_resolution")
            if base is not None and f == frames[0]:
                self.res = tuple(int(n) for n in base)   # what Mantaflow used, when it says
        if active == 0:
            raise BakeError(f"nothing moves in the smoke of '{self.obj.name}' over frames "
                            f"{min(frames)}-{max(frames) + 1}")

    def index_to_world(self):
        """Cell (i, j, k)'s centre in world space: the grid fills the domain mesh's bounds."""
        cell = (self.p1 - self.p0) / np.asarray(self.res, np.float64)
        local = np.eye(4)
        local[:3, :3] = np.diag(cell)
        local[:3, 3] = self.p0 + 0.5 * cell
        return np.array(self.obj.matrix_world, np.float64) @ local

    def velocity(self, frame):
        """Centred velocity [X, Y, Z, 3] in cells per solver time unit."""
        from noise3d.fields import staggered_to_centred
        from noise3d.vdb import read_dense

        try:
            v, cls = read_dense(self.path(frame), "velocity", self.res)
        except ValueError as exc:
            raise BakeError(str(exc)) from None
        return staggered_to_centred(v) if cls == "staggered" else v

    def flow(self, frame, shape, origin, voxel_size):
        """Backward flow of `frame` (to frame − 1) on the noise grid, in voxels."""
        from noise3d.fields import index_velocity_flow

        return index_velocity_flow(self.velocity(frame - 1), self.index_to_world(),
                                   self.frame_length, shape, origin, voxel_size)
