"""Registration from the repository package, and the headless `blender -b file.blend` route."""
import os

import numpy as np
import pytest

import bpy
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
