"""Where the motion comes from: Cycles' Vector pass, or evaluated meshes through the camera.

Both give backward flows in the library's convention ([H, W, 2] (dx, dy) px, x right, y down,
rows top-first) on frame f's grid, pointing to where each pixel was at frame f - 1.
"""
import os

import numpy as np

import bpy


CYCLES_MISSING = ("Cycles is not available (not in this build, or its add-on is disabled in "
                  "Preferences > Add-ons): it renders the Vector pass the motion comes from. "
                  "Enable Cycles, or use motion='MESH'")


class BakeError(RuntimeError):
    """A problem the user can fix; the operator reports its message and cancels."""


class TopologyChanged(BakeError):
    """Mesh motion cannot be followed because vertex/triangle counts change between frames."""


class Overrides:
    """Set RNA attributes and put every one back exactly, even after an error: the motion
    renders must not leave the scene changed.

    Values are saved before anything is touched (`keep`): in Blender 5 setting
    image_settings.media_type changes file_format and color_depth by itself, so a value read
    after the first change is already wrong. restore() goes in the order saved (media_type,
    then file_format, then the rest) and repeats while one restored value changed another.
    """

    SIMPLE = {"BOOLEAN", "INT", "FLOAT", "ENUM", "STRING"}
    FIRST = ("media_type", "file_format")

    def __init__(self):
        self._saved = {}

    def _save(self, owner, attr):
        key = (owner.as_pointer(), attr)
        if key not in self._saved:
            value = getattr(owner, attr)
            if hasattr(value, "__len__") and not isinstance(value, (str, set)):
                value = tuple(value)
            self._saved[key] = (owner, attr, value)

    def keep(self, owner):
        """Save every writable value of a struct and of the structs nested in it."""
        props = [p for p in owner.bl_rna.properties if p.identifier != "rna_type"]
        props.sort(key=lambda p: p.identifier not in self.FIRST)
        for p in props:
            if p.type in self.SIMPLE and not p.is_readonly:
                self._save(owner, p.identifier)
            elif p.type == "POINTER":
                nested = getattr(owner, p.identifier)
                if nested is not None and not isinstance(nested, bpy.types.ID):
                    self.keep(nested)

    def set(self, owner, attr, value):
        self._save(owner, attr)
        setattr(owner, attr, value)

    def restore(self):
        for _ in range(4):
            changed = False
            for owner, attr, value in self._saved.values():
                try:
                    current = getattr(owner, attr)
                    if hasattr(current, "__len__") and not isinstance(current, (str, set)):
                        current = tuple(current)
                    if current != value:
                        setattr(owner, attr, value)
                        changed = True
                except Exception:  # an enum item that no longer exists, a removed datablock
                    pass
            if not changed:
                break
        self._saved.clear()


def cycles_available() -> bool:
    """Cycles is compiled in and its add-on is enabled (a disabled Cycles is the user's choice)."""
    if not getattr(bpy.app.build_options, "cycles", True):
        return False
    return "cycles" in bpy.context.preferences.addons


def unbaked_simulations(scene):
    """Names of simulations whose caches are not baked.

    The Vector pass evaluates the scene at neighbouring frames out of order; an unbaked rigid
    body world then barely moves (measured 0.27 px instead of 2.4 px per frame).
    """
    found = []
    rbw = scene.rigidbody_world
    if rbw is not None and rbw.enabled and rbw.collection is not None and len(rbw.collection.objects):
        if not rbw.point_cache.is_baked:
            found.append("Rigid Body World")
    for obj in scene.objects:
        for mod in obj.modifiers:
            cache = None
            if mod.type in {"CLOTH", "SOFT_BODY"}:
                cache = mod.point_cache
            elif mod.type == "PARTICLE_SYSTEM" and mod.particle_system.settings.physics_type != "NO":
                cache = mod.particle_system.point_cache
            if cache is not None and mod.show_render and not cache.is_baked:
                found.append(f"{obj.name} ({mod.name})")
    return found


class VectorPassRenderer:
    """Render frame after frame with Cycles at minimal cost and return the Vector pass as flows.

    1 sample, no denoiser, no bounces, no compositor; motion blur forced off (the Vector pass
    is all zeros with it on); every setting restored by close().
    """

    def __init__(self, scene, width, height, tmpdir):
        if not cycles_available():
            raise BakeError(CYCLES_MISSING)
        self.scene = scene
        self.width, self.height = int(width), int(height)
        self.path = os.path.join(tmpdir, "vector.exr")
        self.seconds = 0.0
        self._o = Overrides()
        try:
            self._apply()
        except Exception:
            self._o.restore()
            raise

    def _apply(self):
        o, scene = self._o, self.scene
        r = scene.render
        o.set(r, "engine", "CYCLES")
        c = scene.cycles
        for attr, value in (("samples", 1), ("use_adaptive_sampling", False),
                            ("use_denoising", False), ("max_bounces", 0),
                            ("filter_width", 0.01), ("time_limit", 0.0),
                            ("use_animated_seed", False)):
            if hasattr(c, attr):
                o.set(c, attr, value)
        o.set(r, "use_motion_blur", False)
        o.set(r, "resolution_x", self.width)
        o.set(r, "resolution_y", self.height)
        o.set(r, "resolution_percentage", 100)
        o.set(r, "use_border", False)
        o.set(r, "use_compositing", False)
        o.set(r, "use_sequencer", False)
        o.set(r, "use_persistent_data", True)
        o.set(r, "filepath", self.path)
        o.set(r, "use_file_extension", False)
        s = r.image_settings
        o.keep(s)          # all of it first: media_type changes file_format and color_depth
        o.keep(r.ffmpeg)
        if hasattr(s, "media_type"):  # Blender 5.0: before the file format
            o.set(s, "media_type", "MULTI_LAYER_IMAGE")
        o.set(s, "file_format", "OPEN_EXR_MULTILAYER")
        o.set(s, "color_depth", "32")
        o.set(s, "exr_codec", "NONE")
        if hasattr(s, "use_exr_interleave"):  # 5.0 writes one part per pass otherwise
            o.set(s, "use_exr_interleave", True)
        layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
        for vl in scene.view_layers:
            o.set(vl, "use", vl == layer)
        o.set(layer, "use_pass_vector", True)
        self.layer = layer

    def flow(self, frame):
        """Backward flow of `frame` (to frame - 1) from the Vector pass."""
        import time

        from noisewarp.io import read_vector_exr, vector_pass_to_flows

        self.scene.frame_set(frame)
        t = time.perf_counter()
        if bpy.context.scene == self.scene:
            bpy.ops.render.render(write_still=True)
        else:
            bpy.ops.render.render(write_still=True, scene=self.scene.name)
        vector = read_vector_exr(self.path)
        self.seconds += time.perf_counter() - t
        if vector.shape[:2] != (self.height, self.width):
            raise BakeError(f"the Vector pass came out {vector.shape[1]}x{vector.shape[0]}, "
                            f"expected {self.width}x{self.height}")
        backward, _ = vector_pass_to_flows(vector)
        return backward

    def close(self):
        self._o.restore()
        try:
            os.remove(self.path)
        except OSError:
            pass


# ----------------------------------------------------------------------------- mesh motion

def _camera_matrix(scene, depsgraph, width, height):
    """World -> clip 4x4 (numpy) for the scene camera at this frame."""
    cam = scene.camera.evaluated_get(depsgraph)
    r = scene.render
    proj = cam.calc_matrix_camera(depsgraph, x=width, y=height, scale_x=r.pixel_aspect_x,
                                  scale_y=r.pixel_aspect_y)
    view = cam.matrix_world.inverted()
    return np.array(proj, np.float64) @ np.array(view, np.float64)


def mesh_arrays(evaluated):
    """Local vertex positions [n, 3] float32 and triangles [m, 3] int32 of an evaluated object."""
    mesh = evaluated.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        mesh.calc_loop_triangles()
        tris = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("vertices", tris)
    finally:
        evaluated.to_mesh_clear()
    return co.reshape(-1, 3), tris.reshape(-1, 3)


def mesh_snapshot(scene, depsgraph, width, height, objects=None):
    """{key: (clip coords [N, 4], triangles [T, 3])} of the visible evaluated meshes."""
    world_to_clip = _camera_matrix(scene, depsgraph, width, height)
    names = None if objects is None else {o.name for o in objects}
    snap = {}
    for inst in depsgraph.object_instances:
        obj = inst.object
        if obj.type != "MESH" or not inst.show_self or obj.original.hide_render:
            continue
        if names is not None and obj.original.name not in names:
            continue
        key = (obj.original.name, tuple(inst.persistent_id) if inst.is_instance else ())
        co, tris = mesh_arrays(obj)
        m = world_to_clip @ np.array(inst.matrix_world, np.float64)
        hom = np.concatenate([co.astype(np.float64), np.ones((len(co), 1))], axis=1)
        snap[key] = (hom @ m.T, tris)
    return snap


def _to_pixels(clip, width, height):
    w = clip[..., 3]
    x = (clip[..., 0] / w + 1.0) * 0.5 * width
    y = (1.0 - clip[..., 1] / w) * 0.5 * height
    return x, y


def rasterize_backward_flow(current, previous, width, height, max_pairs=4_000_000):
    """Backward flow [H, W, 2] from two mesh snapshots: z-buffered, perspective-correct.

    Each pixel centre covered by a triangle at frame f gets the screen position its surface point
    had at frame f - 1 (homogeneous clip coordinates interpolated, then divided: exact for the
    projection); uncovered pixels keep 0.
    """
    if set(current) != set(previous):
        gone = sorted(set(previous) ^ set(current))
        raise TopologyChanged(f"objects appear or disappear between frames: {gone[0][0]}")
    cur, prev = [], []
    for key, (clip, tris) in current.items():
        pclip, ptris = previous[key]
        if pclip.shape != clip.shape or not np.array_equal(ptris, tris):
            raise TopologyChanged(f"mesh '{key[0]}' changes topology between frames "
                                  f"({len(pclip)} -> {len(clip)} vertices)")
        if len(tris):
            cur.append(clip[tris])
            prev.append(pclip[tris])
    flow = np.zeros((height, width, 2), np.float32)
    if not cur:
        return flow
    cur = np.concatenate(cur)      # [T, 3, 4]
    prev = np.concatenate(prev)
    keep = (cur[:, :, 3] > 1e-9).all(axis=1) & (prev[:, :, 3] > 1e-9).all(axis=1)
    cur, prev = cur[keep], prev[keep]
    x, y = _to_pixels(cur, width, height)
    z = cur[..., 2] / cur[..., 3]
    jmin = np.clip(np.ceil(x.min(1) - 0.5), 0, width).astype(np.int64)
    jmax = np.clip(np.floor(x.max(1) - 0.5), -1, width - 1).astype(np.int64)
    imin = np.clip(np.ceil(y.min(1) - 0.5), 0, height).astype(np.int64)
    imax = np.clip(np.floor(y.max(1) - 0.5), -1, height - 1).astype(np.int64)
    bw = np.maximum(jmax - jmin + 1, 0)
    counts = bw * np.maximum(imax - imin + 1, 0)
    sel = np.nonzero(counts)[0]
    best_depth = np.full(height * width, np.inf)
    # Process triangles in chunks so a screen-filling plane does not blow memory up.
    start = 0
    csum = np.cumsum(counts[sel])
    while start < len(sel):
        base = csum[start - 1] if start else 0
        stop = int(np.searchsorted(csum, base + max_pairs, side="right"))
        stop = max(stop, start + 1)
        t_idx = sel[start:stop]
        start = stop
        c = counts[t_idx]
        tri = np.repeat(t_idx, c)
        local = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        jj = jmin[tri] + local % bw[tri]
        ii = imin[tri] + local // bw[tri]
        px, py = jj + 0.5, ii + 0.5
        x0, x1, x2 = x[tri, 0], x[tri, 1], x[tri, 2]
        y0, y1, y2 = y[tri, 0], y[tri, 1], y[tri, 2]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        ok = np.abs(area) > 1e-12
        b0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py))
        b1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py))
        b2 = ((x0 - px) * (y1 - py) - (x1 - px) * (y0 - py))
        with np.errstate(divide="ignore", invalid="ignore"):
            b0, b1, b2 = b0 / area, b1 / area, b2 / area
        eps = -1e-9
        inside = ok & (b0 >= eps) & (b1 >= eps) & (b2 >= eps)
        tri, ii, jj = tri[inside], ii[inside], jj[inside]
        b = np.stack([b0[inside], b1[inside], b2[inside]], axis=1)
        depth = (b * z[tri]).sum(1)
        # Perspective-correct weights: screen barycentrics over clip w, renormalised.
        bp = b / cur[tri, :, 3]
        bp /= bp.sum(1, keepdims=True)
        pc = (bp[:, :, None] * prev[tri]).sum(1)
        qx, qy = _to_pixels(pc, width, height)
        pix = ii * width + jj
        order = np.lexsort((depth, pix))
        pix, depth = pix[order], depth[order]
        first = np.ones(len(pix), bool)
        first[1:] = pix[1:] != pix[:-1]
        pix, depth, order = pix[first], depth[first], order[first]
        closer = depth < best_depth[pix]
        pix, order = pix[closer], order[closer]
        best_depth[pix] = depth[closer]
        flow.reshape(-1, 2)[pix, 0] = qx[order] - (jj[order] + 0.5)
        flow.reshape(-1, 2)[pix, 1] = qy[order] - (ii[order] + 0.5)
    flow[np.abs(flow) < 1e-4] = 0.0  # static surfaces: exactly still, not 1e-15 px
    return flow


class MeshMotion:
    """Backward flows from the evaluated meshes (no render): frame_set, to_mesh, project."""

    def __init__(self, scene, width, height):
        self.scene, self.width, self.height = scene, int(width), int(height)
        self._prev = None
        self._prev_frame = None

    def _snap(self, frame):
        self.scene.frame_set(frame)
        depsgraph = bpy.context.evaluated_depsgraph_get()
        return mesh_snapshot(self.scene, depsgraph, self.width, self.height)

    def flow(self, frame):
        if self._prev_frame != frame - 1:
            self._prev = self._snap(frame - 1)
        cur = self._snap(frame)
        flow = rasterize_backward_flow(cur, self._prev, self.width, self.height)
        self._prev, self._prev_frame = cur, frame
        return flow

    def close(self):
        pass
