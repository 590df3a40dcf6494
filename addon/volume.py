"""Volume bake: warped 3D noise in a box, moved by meshes or by a smoke simulation.

Motion 'MESH': noise3d.mesh_motion_field on the meshes of a collection at two consecutive
frames, evaluated as the render evaluates them (deforming, skinned, shape keys, baked
simulations, render-level modifiers, instances). Motion 'SMOKE': the velocity grids of a baked
fluid domain's cache (fluid.py).
Either gives the backward flow on the later frame's voxel grid. Output: DIR/noise_####.vdb
(float grid `noise`, and a fog grid `density` when asked) and a Volume object bound to the
sequence.
"""
import math
import os
import time
import warnings

import numpy as np

import bpy

from .bake import (_existing_frames, _frames, _output_dir, _print_progress, _resolve, _Resume,
                   blend_relative, same_file)
from .motion import (GEOMETRY, OWN_TAG, BakeError, RenderEvaluation, mesh_arrays, same_topology,
                     bake_caches, check_simulations, evaluated_depsgraph, topology_change)

VOLUME_ARGS = {"directory": "volume_directory", "frame_start": "frame_start",
               "frame_end": "frame_end", "domain": "domain",
               "source_collection": "source_collection", "resolution": "resolution",
               "channels": "volume_channels", "seed": "seed", "motion": "volume_motion",
               "write_density": "write_density", "overwrite": "overwrite",
               "smoke_domain": "smoke_domain", "bake_simulations": "bake_simulations",
               "method": "volume_method"}
VOLUME_METHODS = ("particle", "flowmap")


def domain_grid(obj, resolution, depsgraph=None):
    """(shape, origin, voxel_size) filling the world-space bounds of `obj` as evaluated (its
    modifiers, and a transform a script has just set) with cubic voxels. Without a depsgraph,
    the last evaluated state (a panel's draw must not evaluate)."""
    ev = obj.evaluated_get(depsgraph or bpy.context.view_layer.depsgraph)
    m = np.array(ev.matrix_world, np.float64)
    corners = np.array([list(c) + [1.0] for c in ev.bound_box], np.float64) @ m.T
    lo, hi = corners[:, :3].min(0), corners[:, :3].max(0)
    ext = hi - lo
    if ext.max() <= 0:
        raise BakeError(f"the domain '{obj.name}' has no extent")
    vs = float(ext.max()) / int(resolution)
    shape = tuple(int(max(1, round(e / vs))) for e in ext)
    return shape, lo, vs


def collection_meshes(collection, depsgraph):
    """{key: (world vertices [n, 3] float64, triangles [m, 3], corners [k])} of what the
    objects in `collection` put in `depsgraph` (the render's, see motion.RenderEvaluation):
    their own surfaces and their instances (particles, Geometry Nodes, collection instances),
    which carry the motion of their instancer. key: (object, instanced object, instance id);
    corners: the topology (motion.mesh_arrays)."""
    members = {o.name_full for o in collection.all_objects}
    out = {}
    for inst in depsgraph.object_instances:
        obj = inst.object
        owner = inst.parent if inst.is_instance else obj
        if owner is None or owner.original.name_full not in members:
            continue
        if obj.type not in GEOMETRY or not (inst.is_instance or inst.show_self):
            continue
        co, tris, corners = mesh_arrays(obj)
        if not len(tris):
            continue
        m = np.array(inst.matrix_world, np.float64)
        v = co.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
        key = (owner.original.name, obj.original.name,
               tuple(inst.persistent_id) if inst.is_instance else ())
        out[key] = (v, tris.astype(np.int64), corners)
    return out


def _label(key):
    return key[0] if not key[2] else f"an instance of '{key[1]}' on '{key[0]}'"


class MeshSource:
    """Motion of the meshes in a collection, and of their instances, as the render evaluates
    them (noise3d.mesh_motion_field)."""

    def __init__(self, scene, collection):
        if collection is None:
            raise BakeError("no source collection: give the collection of moving meshes")
        if not any(o.type in GEOMETRY or o.instance_type != "NONE" or
                   any(m.type in {"NODES", "PARTICLE_SYSTEM"} for m in getattr(o, "modifiers", ()))
                   for o in collection.all_objects):
            raise BakeError(f"the collection '{collection.name}' holds no mesh objects")
        self.scene, self.collection, self.name = scene, collection, collection.name
        self._evaluate = RenderEvaluation(scene)
        self._prev = None
        self.notes = []

    def meshes(self, frame):
        return self._evaluate(frame, lambda depsgraph: collection_meshes(self.collection,
                                                                        depsgraph))

    def prescan(self, start, end):
        """Topology and motion over the whole range before anything is written."""
        from noise3d.mesh import open_edges

        prev, moved, changing, open_ = None, False, 0, {}
        for f in range(start, end + 1):
            cur = self.meshes(f)
            if not cur:
                raise BakeError(f"nothing in '{self.name}' has a surface at frame {f} (meshes, "
                                "curves, text, metaballs and their instances are used)")
            for key in cur.keys() - open_.keys():
                faces = cur[key][1]
                open_[key] = open_edges(faces) if len(faces) else 0
            if prev is not None:
                changing += len(set(cur) ^ set(prev))
                for key in set(cur) & set(prev):
                    (v0, _, c0), (v1, _, c1) = prev[key], cur[key]
                    if not same_topology((v0, c0), (v1, c1)):
                        raise BakeError(
                            topology_change(_label(key), (v0, c0), (v1, c1)).replace(
                                "between frames", f"between frames {f - 1} and {f}") +
                            ": volume motion follows vertices, so disable the modifier that "
                            "rebuilds it (remesh, fluid mesh, booleans) or bake from a copy "
                            "with a fixed topology")
                    moved = moved or not np.array_equal(v0, v1)
            prev = cur
        if not moved:
            raise BakeError(f"nothing in '{self.name}' moves between frames {start} and {end}")
        named = sorted({_label(k) if k[2] else f"'{k[0]}'" for k, n in open_.items() if n})
        if named:
            shown = ", ".join(named[:5]) + (", ..." if len(named) > 5 else "")
            self.notes.append(
                f"{shown} is not a closed surface (it has holes): only the noise within a few "
                "voxels of it moves with it, none inside it; fill the holes to carry the inside "
                "too" if len(named) == 1 else
                f"{shown} are not closed surfaces (they have holes): only the noise within a "
                "few voxels of them moves with them, none inside them; fill the holes to carry "
                "the insides too")
        if changing:
            self.notes.append(f"{changing} times an object or instance of '{self.name}' appears "
                              "or disappears between two frames (particles born or dying, "
                              "visibility keyed): the noise follows each only between frames "
                              "that both have it")

    def flow(self, frame, shape, origin, voxel_size):
        import noise3d

        prev = self._prev[1] if self._prev is not None and self._prev[0] == frame - 1 else \
            self.meshes(frame - 1)
        cur = self.meshes(frame)
        self._prev = (frame, cur)
        both = [k for k in cur if k in prev]
        if not both:
            return np.zeros(tuple(shape) + (3,), np.float32)
        # both frames with this frame's triangles: the previous triangulation may differ
        # where quads turned concave, the vertices are the same. Open meshes were named in
        # the bake's report (prescan), not as 'mesh k' on the console every bake.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"mesh \d+ is not closed")
            return noise3d.mesh_motion_field([cur[k][:2] for k in both],
                                             [(prev[k][0], cur[k][1]) for k in both],
                                             shape, origin, voxel_size)


class SmokeSource:
    """Motion of a baked smoke simulation, read from its cache (fluid.SmokeMotion)."""

    def __init__(self, scene, obj):
        from .fluid import SmokeMotion

        if obj is None:
            raise BakeError("no smoke domain: give the fluid domain whose baked cache moves the "
                            "noise")
        self.motion, self.name = SmokeMotion(scene, obj), obj.name

    def prescan(self, start, end):
        self.motion.check(range(start, end))   # frame f's flow uses the velocity of f - 1

    def flow(self, frame, shape, origin, voxel_size):
        return self.motion.flow(frame, shape, origin, voxel_size)


def _lookup(kind, value, store):
    if value is None or value == "":
        return None
    if isinstance(value, str):
        found = store.get(value)
        if found is None:
            raise BakeError(f"no {kind} named '{value}'")
        return found
    return value


class VolumeBake:
    """A volume bake, validated at construction (BakeError, nothing written)."""

    def __init__(self, scene=None, directory=None, frame_start=None, frame_end=None, domain=None,
                 source_collection=None, resolution=None, channels=None, seed=None, motion=None,
                 write_density=None, overwrite=None, smoke_domain=None, bake_simulations=None,
                 method=None):

        scene = scene or bpy.context.scene
        self.scene = scene
        a = _resolve(scene, dict(directory=directory, frame_start=frame_start, frame_end=frame_end,
                                 domain=domain, source_collection=source_collection,
                                 resolution=resolution, channels=channels, seed=seed,
                                 motion=motion, write_density=write_density,
                                 overwrite=overwrite, smoke_domain=smoke_domain,
                                 bake_simulations=bake_simulations, method=method), VOLUME_ARGS)
        self.method = str(a["method"]).lower()
        if self.method not in VOLUME_METHODS:
            raise BakeError(f"volume method must be one of {', '.join(VOLUME_METHODS)}; got {a['method']!r}")
        self.motion = str(a["motion"]).upper()
        if self.motion == "MESH":
            self.source = MeshSource(scene, _lookup("collection", a["source_collection"],
                                                    bpy.data.collections))
        elif self.motion == "SMOKE":
            self.source = SmokeSource(scene, _lookup("object", a["smoke_domain"],
                                                     bpy.data.objects))
        else:
            raise BakeError(f"volume motion must be 'MESH' or 'SMOKE'; got {a['motion']!r}")
        self.domain = _lookup("object", a["domain"], bpy.data.objects)
        if self.domain is None and self.motion == "SMOKE":
            self.domain = self.source.motion.obj   # noise fills the smoke domain
        if self.domain is None:
            raise BakeError("no domain: give a box object whose bounds the volume fills")
        self.channels, self.seed = int(a["channels"]), int(a["seed"])
        self.write_density, self.overwrite = bool(a["write_density"]), bool(a["overwrite"])
        self.resolution = int(a["resolution"])
        if self.resolution < 2:
            raise BakeError("resolution must be at least 2 voxels")
        self.frame_start, self.frame_end = _frames(scene, a["frame_start"], a["frame_end"])
        self._simulations = check_simulations(scene, bool(a["bake_simulations"]))
        from noise3d.vdb import openvdb_module

        if openvdb_module() is None:
            raise BakeError("OpenVDB is not available in this Blender (bpy.utils."
                            "expose_bundled_modules() found no openvdb): cannot write .vdb files")
        self.shape, self.origin, self.voxel_size = domain_grid(
            self.domain, self.resolution, evaluated_depsgraph(scene))
        self.directory = _output_dir(a["directory"])
        self.settings = {"channels": self.channels, "seed": self.seed, "shape": list(self.shape),
                         "origin": [float(o) for o in self.origin],
                         "voxel_size": self.voxel_size, "frame_start": self.frame_start,
                         "motion": self.motion, "source": self.source.name,
                         "density": self.write_density, "method": self.method}
        self._resume = _Resume(self.directory, "volume")
        self.resume_from = None
        meta = self._resume.read()
        existing = [f for f in _existing_frames(self.directory, "vdb")
                    if self.frame_start <= f <= self.frame_end]
        if not self.overwrite:
            if (meta and meta["settings"] == self.settings and meta["last_frame"] < self.frame_end
                    and all(os.path.isfile(self.path(f))
                            for f in range(self.frame_start, meta["last_frame"] + 1))):
                self.resume_from = meta
            elif existing:
                raise BakeError(f"'{self.directory}' already holds a volume bake "
                                f"(noise_{existing[0]:04d}.vdb): turn on Overwrite or choose "
                                "another folder")
        self.files, self.object, self.warnings = [], None, []
        self.motion_seconds = self.warp_seconds = self.write_seconds = 0.0

    def path(self, frame):
        return os.path.join(self.directory, f"noise_{frame:04d}.vdb")

    def _write(self, frame, noise):
        from noise3d.vdb import write_vdb

        write_vdb(self.path(frame), noise, self.voxel_size, self.origin, name="noise",
                  density=True if self.write_density else None)

    def steps(self):
        """Generator: bake frame after frame, yielding (done, total, message)."""
        import noise3d

        scene, total = self.scene, self.frame_end - self.frame_start + 1
        frame_before = scene.frame_current, scene.frame_subframe
        try:
            if self._simulations:
                self.warnings.append(bake_caches(scene, self._simulations))
                self._simulations = []
            if self.resume_from:
                last = self.resume_from["last_frame"]
                w = noise3d.VolumeWarper.load(os.path.join(self._resume.dir, self.resume_from["state"]))
                self.warnings.append(f"resumed after frame {last}")
            else:
                self.source.prescan(self.frame_start, self.frame_end)
                self.warnings += getattr(self.source, "notes", [])
                if self.overwrite:
                    self._resume.clear()
                w = noise3d.VolumeWarper(self.shape, self.channels, method=self.method, seed=self.seed)
                last = self.frame_start
                self._write(last, w.noise)
            yield last - self.frame_start + 1, total, f"frame {last}"
            for frame in range(last + 1, self.frame_end + 1):
                t = time.perf_counter()
                flow = self.source.flow(frame, self.shape, self.origin, self.voxel_size)
                self.motion_seconds += time.perf_counter() - t
                t = time.perf_counter()
                noise = w.step(flow)
                self.warp_seconds += time.perf_counter() - t
                t = time.perf_counter()
                self._write(frame, noise)
                os.makedirs(self._resume.dir, exist_ok=True)
                w.save(self._resume.state_path(frame))      # the whole state (a flow map's too)
                self._resume.write(self.settings, frame)
                self.write_seconds += time.perf_counter() - t
                yield frame - self.frame_start + 1, total, f"frame {frame}"
            self._resume.clear()
            self.files = [self.path(f) for f in range(self.frame_start, self.frame_end + 1)]
        finally:
            scene.frame_set(frame_before[0], subframe=frame_before[1])
        self.object = make_volume_object(scene, self.files, self.frame_start,
                                         "density" if self.write_density else
                                         ("noise" if self.channels == 1 else "noise_0"),
                                         max(self.shape) * self.voxel_size)

    def run(self, progress="print"):
        """progress: a callable(done, total, message), "print" (default) or None (silent)."""

        progress = _print_progress if progress == "print" else progress
        for done, total, message in self.steps():
            if progress:
                progress(done, total, message)
        return self


def bake_volume(scene=None, directory=None, frame_start=None, frame_end=None, domain=None,
                source_collection=None, resolution=None, channels=None, seed=None,
                progress="print", **options):
    """Bake warped volumetric noise: DIR/noise_####.vdb and a Volume object bound to them.

    domain / source_collection: objects or names. options: motion ('MESH': the meshes of
    source_collection; 'SMOKE': the baked cache of the fluid domain smoke_domain, which is also
    the default domain), smoke_domain, write_density, overwrite, bake_simulations (see
    api.bake_texture), method ('particle' | 'flowmap': the grain stays attached to what moves
    over long shots, slower). Returns the finished VolumeBake.
    """
    bake = VolumeBake(scene, directory, frame_start, frame_end, domain, source_collection,
                      resolution, channels, seed, **options)
    return bake.run(progress)


def make_volume_object(scene, files, frame_start, grid="density", extent=1.0):
    """A Volume object reading the VDB sequence, with a material showing the noise as grain
    (grain_material; `extent`: the domain's longest side in world units)."""
    name = "NoiseWarp Volume"
    for vol in bpy.data.volumes:   # a re-bake into the same folder updates its object
        if same_file(vol.filepath, files[0]):
            vol.frame_start, vol.frame_duration = frame_start, len(files)
            vol.frame_offset = frame_start - 1
            vol.grids.load()
            users = [o for o in bpy.data.objects if o.data == vol]
            if users:
                return users[0]
    vol = bpy.data.volumes.new(name)
    vol.filepath = blend_relative(files[0])
    vol.is_sequence = True
    vol.frame_start = frame_start
    vol.frame_duration = len(files)
    vol.frame_offset = frame_start - 1
    vol.sequence_mode = "CLIP"
    obj = bpy.data.objects.new(name, vol)
    obj[OWN_TAG] = "volume"      # kept out of the extension's own motion renders
    scene.collection.objects.link(obj)
    vol.materials.append(grain_material(name, grid, extent))
    return obj


GRAIN_RAMP = (0.5, 1.5)  # noise (σ) where the smoke starts and where it is densest
GRAIN_DEPTH = 3.4        # mean optical depth across the domain
GRAIN_COLOR = (0.1, 0.1, 0.1, 1.0)   # dark smoke: it absorbs more than it scatters back


def grain_material(name, grid="density", extent=1.0):
    """Principled Volume showing the noise as grain: empty below GRAIN_RAMP[0] σ, densest
    above GRAIN_RAMP[1] σ (a third of the voxels hold some smoke), dense enough that a ray across
    the domain (`extent` world units) meets an optical depth of GRAIN_DEPTH on average. A fog
    of the grid itself averages to a nearly uniform haze along every ray."""
    a, b = GRAIN_RAMP
    phi = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)   # noqa: E731
    cdf = lambda x: 0.5 * math.erfc(-x / math.sqrt(2.0))                 # noqa: E731
    mean_ramp = ((phi(a) - phi(b)) - a * (cdf(b) - cdf(a))) / (b - a) + 1.0 - cdf(b)
    density = GRAIN_DEPTH / (mean_ramp * float(extent))
    mat = bpy.data.materials.new(name)
    if bpy.app.version < (5, 0, 0):  # always on (and deprecated) from 5.0
        mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.clear()
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_name = grid
    # the density grid holds (noise + 3) / 6 (noise3d.vdb.density_from_noise)
    lo, hi = ((a + 3.0) / 6.0, (b + 3.0) / 6.0) if grid == "density" else (a, b)
    ramp = nt.nodes.new("ShaderNodeMapRange")
    ramp.inputs["From Min"].default_value = lo
    ramp.inputs["From Max"].default_value = hi
    ramp.inputs["To Min"].default_value = 0.0
    ramp.inputs["To Max"].default_value = density
    ramp.clamp = True
    vol_node = nt.nodes.new("ShaderNodeVolumePrincipled")
    vol_node.inputs["Density Attribute"].default_value = ""
    vol_node.inputs["Color"].default_value = GRAIN_COLOR
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(attr.outputs["Fac"], ramp.inputs["Value"])
    nt.links.new(ramp.outputs["Result"], vol_node.inputs["Density"])
    nt.links.new(vol_node.outputs["Volume"], out.inputs["Volume"])
    for i, node in enumerate((attr, ramp, vol_node, out)):
        node.location = (i * 250 - 500, 0)
    return mat
