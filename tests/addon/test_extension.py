"""The extension zip: builds and validates with Blender's own tool, installs into a clean user
folder of a Blender that has nothing but bpy and numpy, registers, and bakes a frame.

Downloads the wheels for this platform from PyPI the first time (cached in build/wheelhouse).
"""
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile

import blender_user
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def built_zip(tmp_path_factory):
    sys.path.insert(0, os.path.join(REPO, "addon"))
    try:
        import build as addon_build
    finally:
        sys.path.remove(os.path.join(REPO, "addon"))
    out = tmp_path_factory.mktemp("dist")
    zips = addon_build.build(str(out), [addon_build.current_platform()],
                             os.path.join(REPO, "build", "wheelhouse"), validate=True)
    assert len(zips) == 1
    return zips[0], addon_build


def test_manifest_contract():
    with open(os.path.join(REPO, "blender_manifest.toml"), "rb") as f:
        m = tomllib.load(f)
    assert m["id"] == "noise_warp" and m["type"] == "add-on"
    assert m["blender_version_min"] == "4.2.0"
    assert m["platforms"] == ["linux-x64", "macos-arm64", "windows-x64"]
    assert set(m["permissions"]) == {"files"} and m["permissions"]["files"]


def test_zip_builds_and_validates(built_zip):
    path, addon_build = built_zip
    assert os.path.basename(path) == f"noise_warp-0.1.0-{addon_build.current_platform().replace('-', '_')}.zip"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
    assert "__init__.py" in names and "api.py" in names and "build.py" not in names
    wheels = [os.path.basename(w) for w in manifest["wheels"]]
    assert any(w.startswith("taichi-1.7.4") for w in wheels)
    assert any(w.startswith("noisewarp-") for w in wheels)
    assert not any(w.lower().startswith(("numpy-", "opencv", "matplotlib", "ray-", "torch"))
                   for w in wheels)
    r = subprocess.run([sys.executable, addon_build.blender_ext_tool(), "validate", path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


CLEAN_SCRIPT = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, sys.argv[1])            # bpy + numpy only
    import bpy
    zip_path, out = sys.argv[2], sys.argv[3]
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                             enable_on_install=True)
    assert "bl_ext.user_default.noise_warp" in bpy.context.preferences.addons
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 32, 24
    scene.frame_start, scene.frame_end = 1, 3
    cube = bpy.data.objects["Cube"]
    cube.keyframe_insert("location", frame=1)
    cube.location.x += 1.0
    cube.keyframe_insert("location", frame=3)
    res = bpy.ops.noise_warp.bake_texture(directory=out, channels=2, motion="MESH")
    assert res == {"FINISHED"}, res
    import taichi, core2d
    print("TAICHI", taichi.__file__)
    print("CORE2D", core2d.__file__)
    print("FILES", sorted(os.listdir(out)))
''')


def test_zip_installs_into_clean_blender(built_zip, tmp_path):
    """A subprocess with no site-packages but links to bpy and numpy, user folders in tmp."""
    import numpy
    path, _ = built_zip
    site = tmp_path / "site"
    site.mkdir()
    packages = os.path.dirname(os.path.dirname(numpy.__file__))   # bpy sits beside numpy
    for name in ("bpy", "numpy", "numpy.libs"):
        if os.path.exists(os.path.join(packages, name)):
            os.symlink(os.path.join(packages, name), site / name)
    user = tmp_path / "user"
    script = tmp_path / "install.py"
    script.write_text(CLEAN_SCRIPT)
    env = blender_user.isolate(user, {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                      "HOME": str(tmp_path),
                                      "NOISEWARP_TI_CACHE": str(tmp_path / "ti_cache")})
    # -S: no site-packages at all (not the venv's taichi/core2d): only what the zip brings
    r = subprocess.run([sys.executable, "-S", str(script), str(site), path, str(tmp_path / "out")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ext_site = str(user / "extensions")
    taichi_line = next(l for l in r.stdout.splitlines() if l.startswith("TAICHI"))
    core_line = next(l for l in r.stdout.splitlines() if l.startswith("CORE2D"))
    assert ext_site in taichi_line and ext_site in core_line
    assert "'noise.npy', 'noise_0001.exr', 'noise_0002.exr', 'noise_0003.exr'" in r.stdout
