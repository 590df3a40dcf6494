"""Where the motion comes from: Cycles' Vector pass, or evaluated meshes through the camera.

Both give backward flows in the library's convention ([H, W, 2] (dx, dy) px, x right, y down,
rows top-first) on frame f's grid, pointing to where each pixel was at frame f - 1, and the
*revealed* pixels of frame f: content that was not visible at frame f - 1 (uncovered by
something that moved away, or come into view), where the noise must start afresh.
"""
import os
import time

import numpy as np

import bpy

OWN_TAG = "noise_warp"   # ID property on the objects the extension creates
GEOMETRY = {"MESH", "CURVE", "SURFACE", "FONT", "META"}   # object types with a surface mesh


CYCLES_MISSING = ("Cycles is not available (not in this build, or its add-on is disabled in "
                  "Preferences > Add-ons): it renders the Vector pass the motion comes from. "
                  "Enable Cycles, or use motion='MESH'")


class BakeError(RuntimeError):
    """A problem the user can fix; the operator reports its message and cancels."""


class TopologyChanged(BakeError):
    """Mesh motion cannot be followed: a mesh's vertices or faces (or the set of objects)
    change between frames."""


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

    def keep(self, owner, _seen=None):
        """Save every writable value of a struct and of the structs nested in it."""
        seen = set() if _seen is None else _seen
        if owner.as_pointer() in seen:
            return
        seen.add(owner.as_pointer())
        props = [p for p in owner.bl_rna.properties if p.identifier != "rna_type"]
        props.sort(key=lambda p: p.identifier not in self.FIRST)
        for p in props:
            if p.type in self.SIMPLE and not p.is_readonly:
                self._save(owner, p.identifier)
            elif p.type == "POINTER":
                nested = getattr(owner, p.identifier)
                if nested is not None and not isinstance(nested, bpy.types.ID):
                    self.keep(nested, seen)

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


def evaluated_depsgraph(scene, layer=None):
    """The scene's depsgraph with every pending change evaluated (a script that just moved an
    object gets the new place, not the last evaluated one)."""
    if bpy.context.scene == scene and layer in (None, bpy.context.view_layer):
        return bpy.context.evaluated_depsgraph_get()
    depsgraph = (layer or scene.view_layers[0]).depsgraph
    depsgraph.update()
    return depsgraph


def cycles_available() -> bool:
    """Cycles is compiled in and its add-on is enabled (a disabled Cycles is the user's choice)."""
    if not getattr(bpy.app.build_options, "cycles", True):
        return False
    return "cycles" in bpy.context.preferences.addons


def unbaked_simulations(scene):
    """[(name, point cache)] of the simulations that move things and are not baked: rigid
    bodies, cloth, soft bodies, dynamic hair, emitter particles with physics.

    The Vector pass and the render evaluation visit frames out of order; an unbaked rigid body
    world then barely moves (measured 0.27 px instead of 2.4 px per frame). Hair without
    dynamics and particles without physics are not simulations: they follow their emitter.
    """
    found = []
    rbw = scene.rigidbody_world
    if rbw is not None and rbw.enabled and rbw.collection is not None and len(rbw.collection.objects):
        if not rbw.point_cache.is_baked:
            found.append(("Rigid Body World", rbw.point_cache))
    for obj in scene.objects:
        for mod in obj.modifiers:
            if not mod.show_render:
                continue
            cache = None
            if mod.type in {"CLOTH", "SOFT_BODY"}:
                cache = mod.point_cache
            elif mod.type == "PARTICLE_SYSTEM":
                psys = mod.particle_system
                moves = (psys.use_hair_dynamics if psys.settings.type == "HAIR"
                         else psys.settings.physics_type != "NO")
                cache = psys.point_cache if moves else None
            if cache is not None and not cache.is_baked:
                found.append((f"{obj.name} ({mod.name})", cache))
    return found


def check_simulations(scene, bake):
    """Unbaked simulations to bake first when `bake`, else a BakeError naming them."""
    sims = unbaked_simulations(scene)
    if sims and not bake:
        raise BakeError("bake the simulation caches first (" + ", ".join(n for n, _ in sims) +
                        "), or let the bake do it (Bake Simulations, bake_simulations=True): "
                        "the motion of unbaked simulations is not seen correctly when frames "
                        "are evaluated out of order")
    return sims


def bake_caches(scene, sims):
    """Bake the point caches (each over its own frame range), as Physics > Cache > Bake does;
    returns the note the bake reports."""
    for name, cache in sims:
        with bpy.context.temp_override(scene=scene, point_cache=cache):
            bpy.ops.ptcache.bake(bake=True)
        if not cache.is_baked:
            raise BakeError(f"could not bake the simulation cache of {name}: bake it in "
                            "Physics > Cache and try again")
    return "baked the simulation caches first: " + ", ".join(n for n, _ in sims)


ORTHO_NOTE = ("the orthographic camera moves: Cycles' Vector pass is wrong for moving "
              "orthographic cameras, so the objects' motion was rendered with the camera held "
              "still and the camera's own motion added exactly")


def copy_animatable(src, dst):
    """Copy the animatable numbers of an RNA struct (a camera's lens, ortho scale, shifts,
    clipping...) as evaluated at this frame onto another."""
    for p in src.bl_rna.properties:
        if p.type in {"FLOAT", "INT", "BOOLEAN"} and p.is_animatable and not p.is_readonly:
            try:
                setattr(dst, p.identifier, getattr(src, p.identifier))
            except (AttributeError, TypeError, ValueError):
                pass


class VectorPassRenderer:
    """Render frame after frame with Cycles at minimal cost and return the Vector pass as flows.

    1 sample, no denoiser, no bounces, no compositor; motion blur forced off (the Vector pass
    is all zeros with it on); every setting restored by close().

    Orthographic cameras: Cycles projects the previous position wrongly once the camera moves
    (a depth-dependent ramp, tens of pixels off), even when it only moves after this frame. So
    the pass is rendered through a still copy of the camera (object motion only), and the
    camera's motion is added exactly: each pixel's previous point is put back in 3D from the
    Depth pass and projected with the previous frame's camera. Exact for everything the camera
    sees, except an object moving in depth while the camera turns (second order).
    """

    def __init__(self, scene, width, height, tmpdir):
        if not cycles_available():
            raise BakeError(CYCLES_MISSING)
        self.scene = scene
        self.width, self.height = int(width), int(height)
        self.path = os.path.join(tmpdir, "vector.exr")
        self.seconds = 0.0
        self.notes = []
        self._o = Overrides()
        self._held = None          # the still copy of an orthographic camera
        self._cameras = {}         # frame -> (projection, world-to-camera) of the scene camera
        self._last = None          # (frame, forward flow, depth, camera) of the last render
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
        hide_own_objects(o, scene)   # a baked volume would fog the pass (and slow it 300x)

    def _depsgraph(self):
        return evaluated_depsgraph(self.scene, self.layer)

    def _camera(self):
        """The scene camera's (projection, world-to-camera) at the current frame."""
        return _camera_matrices(self.scene, self._depsgraph(), self.width, self.height)

    def _render(self):
        from noisewarp.io import read_exr, vector_pass_to_flows

        t = time.perf_counter()
        if bpy.context.scene == self.scene:
            bpy.ops.render.render(write_still=True)
        else:
            bpy.ops.render.render(write_still=True, scene=self.scene.name)
        channels = read_exr(self.path)
        self.seconds += time.perf_counter() - t
        vector = _pass(channels, "Vector", "XYZW")
        if vector.shape[:2] != (self.height, self.width):
            raise BakeError(f"the Vector pass came out {vector.shape[1]}x{vector.shape[0]}, "
                            f"expected {self.width}x{self.height}")
        return channels, vector_pass_to_flows(vector)

    def flow(self, frame):
        """Backward flow of `frame` (to frame - 1) from the Vector pass."""
        return self._frame(frame)[0]

    def motion(self, frame):
        """(backward flow, revealed mask) of `frame`: the mask from the backward flow and frame
        f - 1's forward flow (its own render, which the previous call usually made)."""
        if self._last is None or self._last[0] != frame - 1:
            self._frame(frame - 1)
        _, forward, depth, camera = self._last
        backward = self._frame(frame)[0]
        now = self._last[3]
        if depth is not None and not _same_camera(camera, now):   # forward: the camera moved on too
            forward = self._add_camera_motion(forward, depth, now, camera)
        return backward, revealed_from_vectors(backward, forward)

    def _frame(self, frame):
        """Render `frame`: (backward flow, forward flow as the pass has it, the depth when the
        camera's motion is added by hand, the camera); kept as the last frame rendered."""
        scene = self.scene
        self._release_camera()
        scene.frame_set(frame)
        if scene.camera is None or scene.camera.data.type != "ORTHO":
            backward, forward = self._render()[1]
            self._last = (frame, forward, None, None)
            return (backward,) + self._last[1:]
        now = self._camera()
        before = self._cameras.get(frame - 1)
        if before is None:
            scene.frame_set(frame - 1)
            before = self._camera()
            scene.frame_set(frame)
        self._cameras = {frame: now}
        self._hold_camera()
        channels, (backward, forward) = self._render()
        depth = _pass(channels, "Depth", "Z")[..., 0]
        self._last = (frame, forward, depth, now)
        if not _same_camera(before, now):
            if ORTHO_NOTE not in self.notes:
                self.notes.append(ORTHO_NOTE)
            backward = self._add_camera_motion(backward, depth, before, now)
        return (backward,) + self._last[1:]

    def _hold_camera(self):
        """Render through a still copy of the scene camera at this frame's pose."""
        o, scene = self._o, self.scene
        camera = scene.camera.evaluated_get(self._depsgraph())
        if self._held is None:
            data = scene.camera.data.copy()
            data.animation_data_clear()
            held = bpy.data.objects.new("NoiseWarp Held Camera", data)
            held[OWN_TAG] = "camera"
            scene.collection.objects.link(held)
            self._held = held
            self._markers = {m: m.camera for m in scene.timeline_markers if m.camera}
            o.set(self.layer, "use_pass_z", True)
        self._real = scene.camera
        copy_animatable(camera.data, self._held.data)
        copy_animatable(camera.data.dof, self._held.data.dof)
        self._held.matrix_world = camera.matrix_world
        o.set(scene, "camera", self._held)
        for marker in self._markers:    # the render switches cameras at markers too
            o.set(marker, "camera", self._held)

    def _release_camera(self):
        """The scene's own camera and camera markers back, before the next frame_set."""
        if self._held is None:
            return
        self.scene.camera = self._real
        for marker, camera in self._markers.items():
            marker.camera = camera

    def _add_camera_motion(self, backward, depth, before, now):
        """Backward flow with the camera's motion added: the point each pixel saw at the
        previous frame, found through the still camera `now` at the pixel's depth, projected
        with the previous camera `before`. Pixels with no surface (depth 1e10: the world, the
        same colour in every pixel of an orthographic view) keep the pass's motion."""
        h, w = depth.shape
        ys, xs = np.mgrid[0:h, 0:w] + 0.5
        proj, view = now
        ndc_x = 2.0 * (xs + backward[..., 0]) / w - 1.0
        ndc_y = 1.0 - 2.0 * (ys + backward[..., 1]) / h
        z = -depth.astype(np.float64)            # camera space looks down -Z
        # orthographic: ndc = proj[:2] @ (x, y, z, 1), w = 1
        rhs = np.stack([ndc_x - proj[0, 2] * z - proj[0, 3],
                        ndc_y - proj[1, 2] * z - proj[1, 3]], -1)
        xy = rhs @ np.linalg.inv(proj[:2, :2]).T
        cam = np.concatenate([xy, z[..., None], np.ones_like(z)[..., None]], -1)
        world = cam @ np.linalg.inv(view).T
        px, py = _to_pixels(world @ (before[0] @ before[1]).T, w, h)
        flow = np.stack([px - xs, py - ys], -1)
        surface = np.isfinite(depth) & (depth < 1e9)
        return np.where(surface[..., None], flow, backward).astype(np.float32)

    def close(self):
        self._o.restore()
        if self._held is not None:
            data = self._held.data
            bpy.data.objects.remove(self._held)
            bpy.data.cameras.remove(data)
            self._held = None
        try:
            os.remove(self.path)
        except OSError:
            pass


def _same_camera(a, b):
    return a is None or b is None or all(np.array_equal(x, y) for x, y in zip(a, b))


def _pass(channels, name, components):
    """[H, W, len(components)] of a render pass from a multilayer EXR's channel dict."""
    for key in sorted(channels):
        prefix, _, last = key.rpartition(".")
        if prefix.endswith("." + name) or prefix == name:
            if last == components[0] and all(f"{prefix}.{c}" in channels for c in components):
                return np.stack([channels[f"{prefix}.{c}"] for c in components], -1)
    raise BakeError(f"the render has no {name} pass (channels: {', '.join(sorted(channels))})")


# ----------------------------------------------------------------------------- mesh motion

def _camera_matrices(scene, depsgraph, width, height):
    """(projection, world-to-camera) 4x4 numpy matrices of the scene camera at this frame."""
    cam = scene.camera.evaluated_get(depsgraph)
    r = scene.render
    proj = cam.calc_matrix_camera(depsgraph, x=width, y=height, scale_x=r.pixel_aspect_x,
                                  scale_y=r.pixel_aspect_y)
    return np.array(proj, np.float64), np.array(cam.matrix_world.inverted(), np.float64)


def _camera_matrix(scene, depsgraph, width, height):
    """World -> clip 4x4 (numpy) for the scene camera at this frame."""
    proj, view = _camera_matrices(scene, depsgraph, width, height)
    return proj @ view


def mesh_arrays(evaluated):
    """Local vertex positions [n, 3] float32, triangles [m, 3] int32 and the vertex of every
    face corner [k] int32 (the topology) of an evaluated object.

    Vertex identity is what motion follows: Blender re-splits a quad along its other diagonal
    once it turns concave (an elbow, a squash), so triangles may change while the faces do not.
    """
    mesh = evaluated.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        corners = np.empty(len(mesh.loops), np.int32)
        mesh.loops.foreach_get("vertex_index", corners)
        mesh.calc_loop_triangles()
        tris = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("vertices", tris)
    finally:
        evaluated.to_mesh_clear()
    return co.reshape(-1, 3), tris.reshape(-1, 3), corners


def same_topology(a, b):
    """Same vertices and faces ((vertices, corners) of two frames); triangles may differ."""
    return len(a[0]) == len(b[0]) and np.array_equal(a[1], b[1])


def topology_change(name, a, b):
    what = (f"{len(a[0])} -> {len(b[0])} vertices" if len(a[0]) != len(b[0]) else
            f"{len(a[1])} -> {len(b[1])} face corners" if len(a[1]) != len(b[1]) else
            "its faces are rebuilt")
    return f"mesh '{name}' changes topology between frames ({what})"


def mesh_snapshot(scene, depsgraph, width, height, objects=None):
    """{key: (clip coords and view depth [N, 5], triangles [T, 3], corners [K])} of the visible
    evaluated meshes (view depth: distance in front of the camera, scene units); the triangles
    are this frame's."""
    proj, view = _camera_matrices(scene, depsgraph, width, height)
    world_to_clip = proj @ view
    names = None if objects is None else {o.name for o in objects}
    snap = {}
    for inst in depsgraph.object_instances:
        obj = inst.object
        if obj.type not in GEOMETRY or not inst.show_self:
            continue
        if names is not None and obj.original.name not in names:
            continue
        key = (obj.original.name, tuple(inst.persistent_id) if inst.is_instance else ())
        co, tris, corners = mesh_arrays(obj)
        world = np.array(inst.matrix_world, np.float64)
        hom = np.concatenate([co.astype(np.float64), np.ones((len(co), 1))], axis=1)
        depth = -(hom @ (view @ world)[2])
        snap[key] = (np.concatenate([hom @ (world_to_clip @ world).T, depth[:, None]], 1), tris, corners)
    return snap


def _to_pixels(clip, width, height):
    w = clip[..., 3]
    x = (clip[..., 0] / w + 1.0) * 0.5 * width
    y = (1.0 - clip[..., 1] / w) * 0.5 * height
    return x, y


def rasterize_backward_flow(current, previous, width, height, max_pairs=4_000_000):
    """Backward flow [H, W, 2] from two mesh snapshots (see rasterize)."""
    return rasterize(current, previous, width, height, max_pairs)[0]


def rasterize(current, previous, width, height, max_pairs=4_000_000):
    """(backward flow [H, W, 2], depth [H, W], previous depth [H, W]) from two mesh snapshots:
    z-buffered, perspective-correct.

    Each pixel centre covered by a triangle at frame f gets the screen position its surface point
    had at frame f - 1 (homogeneous clip coordinates interpolated, then divided: exact for the
    projection); uncovered pixels keep 0. `depth` is the view depth of the surface each pixel
    sees at frame f (inf where none), `previous depth` that point's view depth at frame f - 1.
    """
    flow = np.zeros((height, width, 2), np.float32)
    seen = np.full(height * width, np.inf)
    before = np.full(height * width, np.inf)
    if set(current) != set(previous):
        gone = sorted(set(previous) ^ set(current))
        raise TopologyChanged(f"objects appear or disappear between frames: {gone[0][0]}")
    cur, prev = [], []
    for key, (clip, tris, corners) in current.items():
        pclip, _, pcorners = previous[key]
        if not same_topology((pclip, pcorners), (clip, corners)):
            raise TopologyChanged(topology_change(key[0], (pclip, pcorners), (clip, corners)))
        if len(tris):
            cur.append(clip[tris])
            prev.append(pclip[tris])
    if not cur:
        return flow, seen.reshape(height, width), before.reshape(height, width)
    both = np.concatenate([np.concatenate(cur), np.concatenate(prev)], -1)   # [T, 3, 10]
    both = clip_triangles(both, both[..., 2] + both[..., 3])    # in front of the near plane now
    both = clip_triangles(both, both[..., 8] - 1e-9)            # and in front of the camera before
    cur, prev = both[..., :5], both[..., 5:]
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
        seen[pix] = (bp[order] * cur[tri[order], :, 4]).sum(1)
        before[pix] = pc[order, 4]
    flow[np.abs(flow) < 1e-4] = 0.0  # static surfaces: exactly still, not 1e-15 px
    return flow, seen.reshape(height, width), before.reshape(height, width)


def clip_triangles(tris, d):
    """The parts of triangles [T, 3, K] (vertex attributes, linear across each triangle) where
    the linear function d [T, 3] is positive: a triangle with one corner outside becomes two,
    with two outside one, with three none (orientation kept). So a ground plane made of one
    quad that reaches behind the camera still moves the noise in front of it."""
    inside = d > 0
    n = inside.sum(1)
    out = [tris[n == 3]]
    for count in (1, 2):
        sel = np.nonzero(n == count)[0]
        if not len(sel):
            continue
        # roll each triangle so that its odd corner (the one inside, or the one outside) is first
        first = np.argmax(inside[sel] if count == 1 else ~inside[sel], axis=1)
        order = (first[:, None] + np.arange(3)) % 3
        t, dd = tris[sel[:, None], order], d[sel[:, None], order]

        def cut(a, b):      # the point of edge a-b where d = 0
            w = (dd[:, a] / (dd[:, a] - dd[:, b]))[:, None]
            return t[:, a] + w * (t[:, b] - t[:, a])

        if count == 1:      # corner 0 inside
            out.append(np.stack([t[:, 0], cut(0, 1), cut(0, 2)], 1))
        else:               # corner 0 outside: the quad 1, 2, 2-0, 1-0
            c20, c10 = cut(2, 0), cut(1, 0)
            out.append(np.stack([t[:, 1], t[:, 2], c20], 1))
            out.append(np.stack([t[:, 1], c20, c10], 1))
    return np.concatenate(out)


def _around(values, positions):
    """values [H, W] at the pixel centres around each position [..., 2] (x, y): the up to four
    with a positive bilinear weight, as [..., 4] and a mask [..., 4] of those that exist."""
    h, w = values.shape
    p = positions - 0.5
    base = np.floor(p).astype(np.int64)
    frac = p - base
    out, valid = [], []
    for di in (0, 1):
        for dj in (0, 1):
            i, j = base[..., 1] + di, base[..., 0] + dj
            weight = (frac[..., 1] if di else 1 - frac[..., 1]) * (frac[..., 0] if dj else 1 - frac[..., 0])
            ok = (weight > 1e-6) & (i >= 0) & (i < h) & (j >= 0) & (j < w)
            out.append(values[np.clip(i, 0, h - 1), np.clip(j, 0, w - 1)])
            valid.append(ok)
    return np.stack(out, -1), np.stack(valid, -1)


def _centres(h, w):
    ii, jj = np.mgrid[0:h, 0:w] + 0.5
    return np.stack([jj, ii], -1)


def revealed_from_vectors(backward, forward_before, tol=0.05, rel=0.1):
    """Revealed pixels of frame f from its backward flow and frame f - 1's forward flow (the
    Vector pass's two directions): pixel p is seen at frame f - 1 where its backward flow lands,
    p + B(p), when one of the pixels around that point moves forward by -B(p) (within
    tol + rel·|B(p)| px): the point came from there. Otherwise its content was hidden, or off
    screen, at frame f - 1. The pixels *around* the point are tried (not a blend of their
    flows), so an edge between two motions is not mistaken for a disocclusion."""
    h, w = backward.shape[:2]
    where = _centres(h, w) + backward      # |F(q) + B(p)| over the pixels q around p + B(p)
    fx, valid = _around(forward_before[..., 0], where)
    fy, _ = _around(forward_before[..., 1], where)
    err = np.where(valid, np.hypot(fx + backward[..., :1], fy + backward[..., 1:]), np.inf).min(-1)
    return _off_screen(where, h, w) | ~(err <= tol + rel * np.hypot(backward[..., 0], backward[..., 1]))


def _off_screen(where, h, w):
    return (where[..., 0] < 0) | (where[..., 0] >= w) | (where[..., 1] < 0) | (where[..., 1] >= h)


def revealed_from_meshes(flow, depth, previous_depth, depth_before, tol=1e-3):
    """Revealed pixels of frame f from mesh visibility: a surface pixel whose point was off
    screen at frame f - 1, or behind something there (every pixel around its previous position
    saw a surface nearer than the point by more than tol × its depth); a background pixel that
    a surface covered at frame f - 1. `depth`: frame f's depth buffer, `previous_depth`: each
    pixel's point at frame f - 1, `depth_before`: frame f - 1's depth buffer (see rasterize)."""
    h, w = depth.shape
    surface = np.isfinite(depth)
    where = _centres(h, w) + flow
    off = _off_screen(where, h, w)
    there, valid = _around(depth_before, where)
    with np.errstate(invalid="ignore"):    # inf - inf where nothing is seen now or then
        gap = np.where(valid, previous_depth[..., None] - there, np.inf).min(-1)
        hidden = gap > tol * np.abs(previous_depth) + 1e-6
    return np.where(surface, off | hidden, np.isfinite(depth_before))


class _RenderDepsgraph(bpy.types.RenderEngine):
    """A render engine that draws nothing: Blender hands it the depsgraph it builds for a
    render, which RenderEvaluation passes to a function."""
    bl_idname = "NOISE_WARP_EVALUATE"
    bl_label = "Noise Warp (motion)"
    bl_use_postprocess = False

    def render(self, depsgraph):
        job = RenderEvaluation.job
        if job is not None and job[1] is None:
            try:
                job[1] = (job[0](depsgraph),)
            except BaseException as exc:   # re-raised by RenderEvaluation, not lost in Blender
                job[1] = exc


class RenderEvaluation:
    """Evaluate the scene exactly as the render does (render-level Subdivision, modifiers and
    objects enabled for renders, render particle counts, hidden-in-viewport objects that
    render): a render with an engine that draws nothing hands over Blender's render
    depsgraph. The engine exists only during each call and every setting is put back.
    """

    job = None

    def __init__(self, scene):
        self.scene = scene

    def __call__(self, frame, fn):
        """fn(render depsgraph) at `frame`; the scene is left at `frame`."""
        scene = self.scene
        scene.frame_set(frame)
        o = Overrides()
        registered = not _RenderDepsgraph.is_registered
        if registered:
            bpy.utils.register_class(_RenderDepsgraph)
        try:
            r = scene.render
            o.set(r, "engine", _RenderDepsgraph.bl_idname)
            o.set(r, "use_compositing", False)
            o.set(r, "use_sequencer", False)
            for attr, value in (("resolution_x", 16), ("resolution_y", 16),
                                ("resolution_percentage", 100), ("use_border", False)):
                o.set(r, attr, value)   # the image is not used: allocate little
            layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
            for vl in scene.view_layers:
                o.set(vl, "use", vl == layer)
            hide_own_objects(o, scene)
            RenderEvaluation.job = [fn, None]
            if bpy.context.scene == scene:
                bpy.ops.render.render()
            else:
                bpy.ops.render.render(scene=scene.name)
            result = RenderEvaluation.job[1]
        finally:
            RenderEvaluation.job = None
            o.restore()
            if registered:
                bpy.utils.unregister_class(_RenderDepsgraph)
        if result is None:
            raise BakeError("Blender did not evaluate the scene for rendering (is the view "
                            "layer disabled for rendering?)")
        if isinstance(result, BaseException):
            raise result
        return result[0]


def own_objects(scene):
    """Objects the extension made (baked volumes, previews, held cameras), tagged with the
    OWN_TAG ID property (volumes baked before the tag existed are known by their data's name):
    never part of the motion it measures."""
    return [o for o in scene.objects if OWN_TAG in o or (
        o.type == "VOLUME" and o.data.name.startswith("NoiseWarp Volume"))]


def hide_own_objects(o, scene):
    for obj in own_objects(scene):
        o.set(obj, "hide_render", True)


class MeshMotion:
    """Backward flows from the meshes as the render evaluates them, projected through the
    camera: no image is rendered."""

    def __init__(self, scene, width, height):
        self.scene, self.width, self.height = scene, int(width), int(height)
        self._evaluate = RenderEvaluation(scene)
        self._prev = None
        self._prev_frame = None
        self._prev_depth = None     # the depth buffer of the previous frame

    def _snap(self, frame):
        return self._evaluate(frame, lambda depsgraph: mesh_snapshot(
            self.scene, depsgraph, self.width, self.height))

    def flow(self, frame):
        return self.motion(frame)[0]

    def motion(self, frame):
        """(backward flow, revealed mask) of `frame`: exact visibility from the meshes."""
        if self._prev_frame != frame - 1:
            self._prev = self._snap(frame - 1)
            self._prev_depth = rasterize(self._prev, self._prev, self.width, self.height)[1]
        cur = self._snap(frame)
        flow, depth, previous = rasterize(cur, self._prev, self.width, self.height)
        revealed = revealed_from_meshes(flow, depth, previous, self._prev_depth)
        self._prev, self._prev_frame, self._prev_depth = cur, frame, depth
        return flow, revealed

    def close(self):
        pass
