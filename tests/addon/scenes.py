"""Tiny test scenes built with the real bpy module (no files, no mocks)."""
import bpy

PX_PER_UNIT = 10.0  # ortho_scale 6.4 over 64 px


def empty_scene(width=64, height=48, frames=(1, 4), camera=None, sun=None, linear_keys=True):
    """Factory settings, no objects, and a camera: by default orthographic looking down -Z at
    10 px per unit; camera=(location, rotation) gives a perspective one instead.
    sun=(rotation, energy) adds a sun lamp. New keyframes are linear unless linear_keys=False."""
    bpy.ops.wm.read_factory_settings()
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    if linear_keys:
        bpy.context.preferences.edit.keyframe_new_interpolation_type = 'LINEAR'
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = frames
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    if camera is None:
        cam.data.type = 'ORTHO'
        cam.data.ortho_scale = width / PX_PER_UNIT
        cam.location = (0.0, 0.0, 10.0)
    else:
        cam.location, cam.rotation_euler = camera
    scene.collection.objects.link(cam)
    scene.camera = cam
    if sun is not None:
        light = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", 'SUN'))
        light.rotation_euler, light.data.energy = sun
        scene.collection.objects.link(light)
    return scene


def into_collection(scene, obj, name="Movers"):
    """A new collection `name` under the scene holding only `obj` (a volume bake's source)."""
    coll = bpy.data.collections.new(name)
    scene.collection.children.link(coll)
    for c in list(obj.users_collection):
        c.objects.unlink(obj)
    coll.objects.link(obj)
    return coll


def vector_pass_flow(scene, frame, width, height):
    """The backward flow of one frame from the add-on's Vector-pass renderer."""
    import tempfile

    from addon.motion import VectorPassRenderer
    with tempfile.TemporaryDirectory() as tmp:
        vec = VectorPassRenderer(scene, width, height, tmp)
        try:
            return vec.flow(frame)
        finally:
            vec.close()


def add_plane(scene, size=20.0, z=-1.0):
    bpy.ops.mesh.primitive_plane_add(size=size, location=(0.0, 0.0, z))
    return bpy.context.active_object


def moving_cube_scene(px_per_frame=3.0, frames=(1, 4), width=64, height=48, size=2.0,
                      background=True):
    """A cube (size units = 10*size px) sliding right by px_per_frame px per frame."""
    scene = empty_scene(width, height, frames)
    if background:
        add_plane(scene)
    bpy.ops.mesh.primitive_cube_add(size=size, location=(0.0, 0.0, 0.0))
    cube = bpy.context.active_object
    cube.name = "Mover"
    step = px_per_frame / PX_PER_UNIT
    x0 = -1.5
    for f in (frames[0], frames[1]):
        cube.location.x = x0 + step * (f - frames[0])
        cube.keyframe_insert("location", index=0, frame=f)
    make_linear(cube)
    scene.frame_set(frames[0])
    return scene, cube


def make_linear(idblock):
    """Linear keyframes (Blender 5 keeps F-curves in layered actions' channel bags)."""
    action = idblock.animation_data.action
    curves = list(getattr(action, "fcurves", None) or [])
    for layer in getattr(action, "layers", []):
        for strip in layer.strips:
            for bag in strip.channelbags:
                curves += list(bag.fcurves)
    assert curves, "no F-curves found"
    for fc in curves:
        for kp in fc.keyframe_points:
            kp.interpolation = 'LINEAR'


def smoke_plume(scene, cache, res, frames, center=(0.0, 0.0, 2.0), source=(0.0, 0.0, 0.6),
                radius=0.5, behavior='INFLOW', initial_velocity=None, **domain):
    """A 4-unit Mantaflow gas domain "Smoke" (OpenVDB cache in `cache`, frames baked with
    bake_fluid) and a smoke-emitting sphere; `domain` sets more domain settings."""
    bpy.ops.mesh.primitive_cube_add(size=4.0, location=center)
    dom = bpy.context.active_object
    dom.name = "Smoke"
    mod = dom.modifiers.new("Fluid", "FLUID")
    mod.fluid_type = 'DOMAIN'
    ds = mod.domain_settings
    ds.domain_type, ds.resolution_max = 'GAS', res
    ds.cache_directory, ds.cache_type = str(cache), 'ALL'
    ds.cache_frame_start, ds.cache_frame_end = frames
    for key, value in domain.items():
        setattr(ds, key, value)
    bpy.ops.mesh.primitive_uv_sphere_add(radius=radius, location=source)
    src = bpy.context.active_object
    fm = src.modifiers.new("Fluid", "FLUID")
    fm.fluid_type = 'FLOW'
    fs = fm.flow_settings
    fs.flow_type, fs.flow_behavior = 'SMOKE', behavior
    if initial_velocity is not None:
        fs.use_initial_velocity = True
        fs.velocity_coord = initial_velocity
        fs.velocity_factor = fs.velocity_normal = 0.0
    src.hide_render = True
    return dom


def bake_fluid(dom):
    """Bake a fluid domain's cache (the add-on's registration repaired Mantaflow if needed)."""
    bpy.context.view_layer.objects.active = dom
    with bpy.context.temp_override(object=dom, active_object=dom, selected_objects=[dom]):
        return bpy.ops.fluid.bake_all()


# not settings: evaluation state, UI tool state, and how Blender 5.2 happens to store an
# attribute (a single value expands to an array whenever the mesh is evaluated)
SKIP_PROPS = {"rna_type", "depsgraph", "tool_settings", "statistics", "storage_type"}


def rna_dump(struct, depth=5, path="", out=None):
    """{path: value} of every readable property of an RNA struct: nested structs and
    collections followed `depth` levels down, IDs recorded by name (not followed)."""
    out = {} if out is None else out
    for prop in struct.bl_rna.properties:
        name = prop.identifier
        if name in SKIP_PROPS:
            continue
        key = f"{path}.{name}"
        try:
            value = getattr(struct, name)
        except Exception:
            continue
        if prop.type == 'POINTER':
            if value is None or isinstance(value, bpy.types.ID):
                out[key] = None if value is None else "ID:" + value.name
            elif depth > 0:
                rna_dump(value, depth - 1, key, out)
        elif prop.type == 'COLLECTION':
            items = list(value)
            out[key + "#"] = len(items)
            for i, item in enumerate(items[:64]):
                if isinstance(item, bpy.types.ID):
                    out[f"{key}[{i}]"] = "ID:" + item.name
                elif depth > 0:
                    rna_dump(item, depth - 1, f"{key}[{i}]", out)
        else:
            if isinstance(value, set):                 # enum flags
                value = tuple(sorted(value))
            elif getattr(prop, "is_array", False):
                value = tuple(value)
            out[key] = value
    return out


def settings_dump(scene):
    """Every setting of the scene (render, image and video output, engines, view layers and
    their passes, frame, camera) and of its objects and their data, for before/after checks."""
    out = rna_dump(scene, path="scene")
    if not scene.render.image_settings.has_linear_colorspace:
        # unused by this format, and Blender derives it again on every format change; a
        # never-set (empty) name cannot be set back through Python once a change filled it
        out.pop("scene.render.image_settings.linear_colorspace_settings.name", None)
    for obj in scene.objects:
        rna_dump(obj, 2, f"object[{obj.name}]", out)
        if obj.data is not None:
            rna_dump(obj.data, 1, f"data[{obj.name}]", out)
    out["ids"] = sorted(f"{type(i).__name__}:{i.name}" for coll in (
        bpy.data.objects, bpy.data.cameras, bpy.data.meshes, bpy.data.materials,
        bpy.data.volumes, bpy.data.node_groups) for i in coll)
    return out


def dump_differences(before, after):
    keys = sorted(set(before) | set(after))
    return [(k, before.get(k, "<missing>"), after.get(k, "<missing>")) for k in keys
            if before.get(k, "<missing>") != after.get(k, "<missing>")]


def quad_grid(scene, nx, ny, width, height, name="Grid"):
    """A flat grid of nx x ny quads (width x height units) centred at the origin, in the XY
    plane facing the default camera."""
    verts = [(width * (i / nx - 0.5), height * (j / ny - 0.5), 0.0)
             for j in range(ny + 1) for i in range(nx + 1)]
    faces = [(j * (nx + 1) + i, j * (nx + 1) + i + 1, (j + 1) * (nx + 1) + i + 1,
              (j + 1) * (nx + 1) + i) for j in range(ny) for i in range(nx)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    return obj


def two_bone_arm(scene, degrees=120.0, frames=(1, 4)):
    """An arm as an artist rigs it: a strip of quads (3.2 x 0.8 units, 0.2-unit quads) skinned
    to two bones meeting at the origin, the forearm (x > 0.2, weight 1) bending about Z by
    `degrees` over the frames (linear); the elbow's quads squash and turn concave."""
    import math
    arm = quad_grid(scene, 16, 4, 3.2, 0.8, "Arm")
    rig_data = bpy.data.armatures.new("Rig")
    rig = bpy.data.objects.new("Rig", rig_data)
    scene.collection.objects.link(rig)
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode='EDIT')
    upper = rig_data.edit_bones.new("Upper")
    upper.head, upper.tail = (-1.6, 0.0, 0.0), (0.0, 0.0, 0.0)
    fore = rig_data.edit_bones.new("Fore")
    fore.head, fore.tail, fore.parent = (0.0, 0.0, 0.0), (1.6, 0.0, 0.0), upper
    bpy.ops.object.mode_set(mode='OBJECT')
    groups = arm.vertex_groups.new(name="Upper"), arm.vertex_groups.new(name="Fore")
    for v in arm.data.vertices:
        w = min(max((v.co.x + 0.2) / 0.4, 0.0), 1.0)   # blended over the elbow
        if w < 1:
            groups[0].add([v.index], 1 - w, 'REPLACE')
        if w > 0:
            groups[1].add([v.index], w, 'REPLACE')
    arm.modifiers.new("Armature", 'ARMATURE').object = rig
    bone = rig.pose.bones["Fore"]
    bone.rotation_mode = 'XYZ'
    for f, angle in ((frames[0], 0.0), (frames[1], degrees)):
        bone.rotation_euler.z = math.radians(angle)
        bone.keyframe_insert("rotation_euler", index=2, frame=f)
    make_linear(rig)
    scene.frame_set(frames[0])
    return arm, rig


def dented_sheet(scene, shift_px=(1.3, 0.4), frames=(1, 4), thickness=0.6):
    """A 6 x 4 unit sheet of 0.5-unit quads, made a closed slab by a Solidify modifier
    (`thickness` units, centred on z = 0), with a shape key (linear 0 -> 1 over the frames):
    its left part (x <= -0.5) slides by shift_px per frame, and on the right three vertices
    are pushed diagonally into their quads, which turn concave on the last frame (Blender then
    splits them along the other diagonal)."""
    sheet = quad_grid(scene, 12, 8, 6.0, 4.0, "Sheet")
    solid = sheet.modifiers.new("Solidify", 'SOLIDIFY')
    solid.thickness, solid.offset = thickness, 0.0
    sheet.shape_key_add(name="Basis")
    key = sheet.shape_key_add(name="Squash")
    n = frames[1] - frames[0]
    dx, dy = (s * n / PX_PER_UNIT for s in shift_px)   # image y down = world -y
    for v in key.data:
        x, y = v.co.x, v.co.y
        if x <= -0.5 + 1e-6:
            v.co.x, v.co.y = x + dx, y - dy
        elif abs(x - 2.0) < 1e-6 and abs(y) < 1.01 and abs(y - round(y)) < 1e-6:
            v.co.x, v.co.y = x - 0.3, y + 0.3            # a dent past the quad's diagonal
    key.value = 0.0
    key.keyframe_insert("value", frame=frames[0])
    key.value = 1.0
    key.keyframe_insert("value", frame=frames[1])
    make_linear(sheet.data.shape_keys)
    scene.frame_set(frames[0])
    return sheet


def instancer(scene, points, size=0.8, name="Scatter"):
    """A Geometry Nodes scatter as artists build it: an object whose modifier puts a cube
    (size units, made by the node tree, not an object) on each of its mesh's `points`; the
    object itself shows only the instances."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([tuple(p) for p in points], [], [])
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    tree = bpy.data.node_groups.new(name, 'GeometryNodeTree')
    tree.interface.new_socket("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    tree.interface.new_socket("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')
    nodes, links = tree.nodes, tree.links
    group_in, group_out = nodes.new('NodeGroupInput'), nodes.new('NodeGroupOutput')
    on_points = nodes.new('GeometryNodeInstanceOnPoints')
    cube = nodes.new('GeometryNodeMeshCube')
    cube.inputs["Size"].default_value = (size, size, size)
    links.new(group_in.outputs[0], on_points.inputs["Points"])
    links.new(cube.outputs["Mesh"], on_points.inputs["Instance"])
    links.new(on_points.outputs["Instances"], group_out.inputs[0])
    obj.modifiers.new("Scatter", 'NODES').node_group = tree
    return obj
