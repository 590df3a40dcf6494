"""Registration from the repository package, the headless `blender -b file.blend` route, and
the panel an artist sees: tooltips, layout, the size shown before baking, first-bake notice."""
import os
import re

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")  # Blender as a module: Python 3.11 and 3.13 only
import scenes


def test_register_unregister_cycle(registered):
    for name in ("NOISE_WARP_OT_bake_texture", "NOISE_WARP_OT_bake_volume",
                 "NOISE_WARP_PT_output", "NOISE_WARP_PT_view3d"):
        assert hasattr(bpy.types, name), name
    assert "noise_warp" in bpy.types.Scene.bl_rna.properties
    registered.unregister()
    try:
        assert not hasattr(bpy.types.Scene, "noise_warp")
        assert not hasattr(bpy.types, "NOISE_WARP_OT_bake_texture")
    finally:
        registered.register()
    assert bpy.context.scene.noise_warp.method == 'PARTICLE'
    assert bpy.ops.noise_warp.bake_texture.idname() == "NOISE_WARP_OT_bake_texture"


def test_relative_folder_needs_a_saved_file(registered):
    scene, _ = scenes.moving_cube_scene()
    assert scene.noise_warp.directory == "//noise/"
    with pytest.raises(RuntimeError, match="not saved yet"):
        bpy.ops.noise_warp.bake_texture()


def test_output_folders_take_blend_relative_paths(registered):
    """'//noise/' is the default and what the docs' scripts pass: setting it (as a script does)
    must not warn 'does not support blend relative "//" prefix' (Blender 4.5 and later)."""
    import warnings
    if "is_path_supports_blend_relative" not in bpy.types.StringProperty.bl_rna.properties:
        pytest.skip("this Blender has no blend-relative path flag")
    scene, _ = scenes.moving_cube_scene()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scene.noise_warp.directory = "//other_noise/"
        scene.noise_warp.volume_directory = "//other_volume/"
    for rna, name in ((scene.noise_warp.bl_rna, "directory"), (scene.noise_warp.bl_rna, "volume_directory"),
                      (bpy.ops.noise_warp.bake_texture.get_rna_type(), "directory"),
                      (bpy.ops.noise_warp.bake_volume.get_rna_type(), "directory")):
        assert rna.properties[name].is_path_supports_blend_relative, (rna.identifier, name)


def test_saved_blend_bakes_with_its_settings(registered, tmp_path):
    """What `blender -b file.blend --python-expr "...bake_texture()"` does: the file's settings."""
    scene, _ = scenes.moving_cube_scene()
    scene.noise_warp.channels = 3
    scene.noise_warp.preview = 'NONE'
    blend = str(tmp_path / "shot.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.wm.read_factory_settings()
    bpy.ops.wm.open_mainfile(filepath=blend)
    assert bpy.context.scene.noise_warp.channels == 3
    assert bpy.ops.noise_warp.bake_texture() == {'FINISHED'}
    n = np.load(str(tmp_path / "noise" / "noise.npy"))
    assert n.shape == (4, 48, 64, 3)
    assert os.path.isfile(str(tmp_path / "noise" / "noise_0004.exr"))


def test_invoke_headless_runs_to_the_end(registered, tmp_path, capsys):
    """'INVOKE_DEFAULT' (what a button does) without a window: runs through and prints progress."""
    scenes.moving_cube_scene()
    out = str(tmp_path / "inv")
    assert bpy.ops.noise_warp.bake_texture('INVOKE_DEFAULT', directory=out, channels=1,
                                           preview='NONE') == {'FINISHED'}
    assert "noise_warp: frame 4 (4/4)" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(out, "noise.npy"))


# ----------------------------------------------------------------------------- the panel
JARGON = re.compile(r"∫|\bpool|(?<!Stable )diffusion|\bwhite\b|i\.i\.d|injective", re.I)


def _described(rna):
    """(identifier, description) of every property of an RNA struct, enum items included."""
    for p in rna.properties:
        if p.identifier == "rna_type":
            continue
        yield f"{rna.identifier}.{p.identifier}", p.description
        if p.type == 'ENUM':
            for item in p.enum_items:
                yield f"{rna.identifier}.{p.identifier}:{item.identifier}", item.description


def test_every_setting_and_argument_has_a_plain_tooltip(registered):
    from addon import operators, properties
    args = [getattr(bpy.ops.noise_warp, c.bl_idname.split(".")[1]).get_rna_type()
            for c in operators.classes]
    structs = [properties.NoiseWarpSettings.bl_rna] + args
    seen = 0
    for rna in structs:
        for name, text in _described(rna):
            seen += 1
            assert len(text) >= 12, f"{name}: no tooltip"
            assert not JARGON.search(text), f"{name}: jargon in {text!r}"
    assert seen > 50
    scale = properties.NoiseWarpSettings.bl_rna.properties["scale"]
    assert "resolution" in scale.name.lower() and "resolution" in scale.description.lower()


class RecordingLayout:
    """Stands in for Blender's UILayout, which the bpy module cannot create (no window): it
    records what a panel draws and checks every property, enum value, operator and icon
    against this Blender's own RNA, as drawing would."""

    ICONS = set(bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys())

    def __init__(self, log):
        self.log = log
        self.use_property_split = self.use_property_decorate = self.alert = False

    def _icon(self, icon):
        assert icon in self.ICONS, f"no icon {icon!r} in Blender {bpy.app.version_string}"

    def column(self, **_):
        return RecordingLayout(self.log)

    row = box = column

    def label(self, text="", icon='NONE'):
        self._icon(icon)
        self.log.append(("label", text))

    def prop(self, data, name, text=None, icon='NONE', **_):
        self._icon(icon)
        assert name in data.bl_rna.properties, f"no property {name!r}"
        self.log.append(("prop", name))

    def prop_enum(self, data, name, value, **_):
        assert value in data.bl_rna.properties[name].enum_items.keys(), (name, value)
        self.log.append(("prop_enum", name, value))

    def operator(self, idname, text=None, icon='NONE', **_):
        self._icon(icon)
        category, name = idname.split(".")
        op = getattr(getattr(bpy.ops, category), name)
        assert hasattr(bpy.types, op.idname()), f"operator {idname} is not registered"
        self.log.append(("operator", idname))
        return OperatorArgs(op)


class OperatorArgs:
    """The argument holder `layout.operator()` returns: only real arguments can be set."""

    def __init__(self, op):
        object.__setattr__(self, "rna", op.get_rna_type())

    def __setattr__(self, name, value):
        prop = self.rna.properties[name]          # KeyError: no such argument
        if prop.type == 'ENUM':
            assert value in prop.enum_items.keys(), (name, value)


def draw_panel(cls):
    log = []
    holder = type("PanelSelf", (), {"layout": RecordingLayout(log)})()
    cls.draw(holder, bpy.context)
    return log


def test_panels_draw_and_are_arranged_for_artists(registered, tmp_path):
    from addon import panels
    scene, _ = scenes.moving_cube_scene()
    ids = {c.bl_idname: c for c in panels.classes}
    for place in ("output", "view3d"):
        parent = f"NOISE_WARP_PT_{place}"
        assert ids[f"{parent}_texture"].bl_parent_id == parent
        assert ids[f"{parent}_volume"].bl_parent_id == parent
        assert ids[f"{parent}_advanced"].bl_parent_id == f"{parent}_texture"
        assert 'DEFAULT_CLOSED' in ids[f"{parent}_advanced"].bl_options
        for name in (parent, f"{parent}_texture", f"{parent}_volume", f"{parent}_advanced"):
            assert hasattr(bpy.types, name), name
        shared = draw_panel(ids[parent])
        texture = draw_panel(ids[f"{parent}_texture"])
        advanced = draw_panel(ids[f"{parent}_advanced"])
        volume = draw_panel(ids[f"{parent}_volume"])
        # what both bakes use sits above both
        assert {("prop", n) for n in ("frame_start", "frame_end", "seed", "overwrite",
                                      "bake_simulations")} <= set(shared)
        # the texture panel offers Particle, Flow Map and Grid; every research baseline is in Advanced
        assert [e for e in texture if e[0] == "prop_enum"] == [
            ("prop_enum", "method", "PARTICLE"), ("prop_enum", "method", "FLOWMAP"),
            ("prop_enum", "method", "GRID")]
        assert ("prop", "method") not in texture and ("prop", "method") in advanced
        assert ("prop", "occlusions") in advanced
        assert ("operator", "noise_warp.bake_texture") in texture
        assert ("operator", "noise_warp.open_folder") in texture
        assert ("operator", "noise_warp.bake_volume") in volume
        assert ("operator", "noise_warp.open_folder") in volume
    # a research baseline chosen under Advanced is pointed out in the main panel
    scene.noise_warp.method = 'NEAREST'
    labels = [e[1] for e in draw_panel(ids["NOISE_WARP_PT_output_texture"]) if e[0] == "label"]
    assert any("Nearest" in t and "Advanced" in t for t in labels)
    # the smoke source shows its own field
    scene.noise_warp.volume_motion = 'SMOKE'
    assert ("prop", "smoke_domain") in draw_panel(ids["NOISE_WARP_PT_view3d_volume"])


def test_size_shown_before_baking(registered):
    from addon import panels
    scene, _ = scenes.moving_cube_scene()
    s = scene.noise_warp
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    scene.render.resolution_percentage = 100
    s.channels, s.latent_factor = 16, 8
    assert panels.texture_size_label(scene, s) == "1920×1080 → latent 240×135 × 16"
    s.channels, s.latent_factor, s.scale = 4, 1, 0.5
    assert panels.texture_size_label(scene, s) == "960×540 × 4"
    labels = [e[1] for e in draw_panel(panels.classes[1]) if e[0] == "label"]
    assert "960×540 × 4, frames 1–4" in labels
    s.latent_factor, s.scale = 64, 0.05
    assert panels.texture_size_label(scene, s) == "latent factor 64 is larger than the frame (96×54)"
    s.latent_factor = 1
    assert panels.volume_size_label(scene, s) == "pick a Domain box"
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    domain = bpy.context.active_object
    domain.scale = (1.0, 0.5, 2.0)
    bpy.context.view_layer.update()
    s.domain, s.resolution, s.volume_channels = domain, 16, 2
    assert panels.volume_size_label(scene, s) == "8×4×16 voxels × 2"


def test_first_bake_of_a_session_says_it_compiles(registered, tmp_path, capsys):
    from addon import warmup
    scenes.moving_cube_scene()
    warmup._WARM.clear()
    assert "compiles kernels" in warmup.status()[0]

    def bake(folder, channels):
        assert bpy.ops.noise_warp.bake_texture(directory=str(tmp_path / folder), preview='NONE',
                                               channels=channels) == {'FINISHED'}
        return capsys.readouterr().out

    out = bake("a", 1)
    assert "compiling the noise kernels for this method, once per session" in out
    assert re.search(r"\(\d+\.\d s of it went to compiling the noise kernels", out)
    assert warmup.status() is None
    assert "compiling" not in bake("b", 1)
    assert "compiling" not in bake("c", 2)     # the kernels loop over the channels at run time


def _warm_up_threads():
    import threading
    return [t for t in threading.enumerate() if t.name == "noise_warp kernel warm-up"]


def test_warm_up_in_the_background_then_bake_without_compiling(registered, tmp_path, capsys):
    """api.warmup(background=True) returns at once, the panel says it compiles, a bake started
    meanwhile waits for it and gets the same noise; afterwards bakes compile nothing."""
    from core2d import _taichi

    from addon import api, panels, warmup
    scenes.moving_cube_scene()
    warmup._WARM.clear()
    with pytest.raises(api.BakeError, match="volume method must be one of particle, flowmap; got 'grid'"):
        api.warmup(volume_methods=["grid"], background=True)
    with _taichi.LOCK:            # the worker waits for it: still running when the call returns
        job = api.warmup(background=True)
        assert not job.done and not job.wait(0.2) and len(_warm_up_threads()) == 1
        assert warmup.status() == (warmup.RUNNING, 'TIME')
        assert ("label", "Compiling noise kernels… (first use only)") in draw_panel(panels.classes[0])
    assert bpy.ops.noise_warp.bake_texture(directory=str(tmp_path / "during"), preview='NONE',
                                           channels=2) == {'FINISHED'}
    assert job.wait(600) and job.error is None and not _warm_up_threads()
    assert set(job.keys) == {("TEXTURE", "particle"), ("TEXTURE", "flowmap"), ("TEXTURE", "grid"),
                             ("VOLUME", "particle"), ("VOLUME", "flowmap")}
    assert set(job.seconds) | {("TEXTURE", "particle")} == set(job.keys)   # the bake may have done particle
    assert warmup.status() is None
    assert not [e for e in draw_panel(panels.classes[0]) if e[0] == "label" and "ompil" in e[1]]
    capsys.readouterr()
    for method in ("PARTICLE", "FLOWMAP", "GRID"):
        assert bpy.ops.noise_warp.bake_texture(directory=str(tmp_path / method), preview='NONE',
                                               channels=2, method=method) == {'FINISHED'}
    assert "compiling" not in capsys.readouterr().out
    assert np.array_equal(np.load(str(tmp_path / "during" / "noise.npy")),
                          np.load(str(tmp_path / "PARTICLE" / "noise.npy")))
    assert api.warmup().done and not api.warmup().seconds      # everything warm: nothing to do


def test_panel_warms_up_only_in_an_interactive_blender(registered):
    """`blender -b` (and the bpy module) never starts the warm-up by itself: not on register,
    not when the panel is drawn; in an interactive Blender the first draw starts it, once."""
    from addon import panels, warmup
    scene, _ = scenes.moving_cube_scene()
    assert bpy.app.background
    warmup._WARM.clear()
    warmup._asked = False
    jobs = len(warmup._jobs)
    registered.unregister()
    registered.register()
    labels = [e[1] for e in draw_panel(panels.classes[0]) if e[0] == "label"]
    assert len(warmup._jobs) == jobs and not _warm_up_threads() and not warmup._asked
    assert warmup.FIRST_BAKE in labels
    scene.noise_warp.method, scene.noise_warp.volume_method = 'GRID', 'FLOWMAP'
    job = warmup.start_on_first_use(scene, interactive=True)     # what a draw in the UI does
    assert job is not None and warmup.start_on_first_use(scene, interactive=True) is None
    assert job.keys[0] == ("TEXTURE", "grid") and job.keys[3] == ("VOLUME", "flowmap")  # the scene's first
    assert job.wait(600) and job.error is None
    assert warmup.status() is None


def test_open_output_folder_explains_what_is_missing(registered, tmp_path):
    from addon import operators
    scene, _ = scenes.moving_cube_scene()
    assert operators.output_folder(scene, 'TEXTURE') == (
        None, "the output folder '//noise/' is relative to the .blend file, which is not saved yet")
    with pytest.raises(RuntimeError, match="not saved yet"):
        bpy.ops.noise_warp.open_folder(kind='TEXTURE')
    scene.noise_warp.volume_directory = str(tmp_path / "vol")
    with pytest.raises(RuntimeError, match="does not exist yet: bake first"):
        bpy.ops.noise_warp.open_folder(kind='VOLUME')
    (tmp_path / "vol").mkdir()
    assert operators.output_folder(scene, 'VOLUME') == (str(tmp_path / "vol"), None)
