"""The extension zip: builds and validates with Blender's own tool, carries wheels for Python
3.11 and 3.13 and nothing Blender ships or the add-on never imports, installs into a clean
user folder of a Blender that has nothing but the bpy module (and what its wheel requires),
registers, and bakes a texture and a volume. Runs under whichever bpy this Python has:
5.0.1 (Python 3.11, numpy 1.26) or 5.2.3 (Python 3.13, numpy 2).

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


def _addon_build():
    sys.path.insert(0, os.path.join(REPO, "addon"))
    try:
        import build as addon_build
    finally:
        sys.path.remove(os.path.join(REPO, "addon"))
    return addon_build


@pytest.fixture(scope="session")
def built_zip(tmp_path_factory):
    pytest.importorskip("bpy")      # Blender's extension tool comes with the bpy module
    addon_build = _addon_build()
    out = tmp_path_factory.mktemp("dist")
    zips = addon_build.build(str(out), [addon_build.current_platform()],
                             os.path.join(REPO, "build", "wheelhouse"), validate=True)
    assert len(zips) == 1
    return zips[0], addon_build


def test_manifest_contract():
    with open(os.path.join(REPO, "blender_manifest.toml"), "rb") as f:
        m = tomllib.load(f)
    assert m["id"] == "noise_warp" and m["type"] == "add-on"
    # 4.2.0 installs wheels of every Python side by side; the 4.2 LTS picks its own from 4.2.13
    assert m["blender_version_min"] == _addon_build().BOTH_PYTHONS_MIN == "4.2.13"
    assert "blender_version_max" not in m
    assert m["platforms"] == ["linux-x64", "macos-arm64", "windows-x64"]
    assert set(m["permissions"]) == {"files"} and m["permissions"]["files"]


def test_version_range_follows_the_pythons_bundled():
    b = _addon_build()
    assert b.version_range(("3.11", "3.13")) == ("4.2.13", None)
    assert b.version_range(("3.11",)) == ("4.2.0", "5.1.0")     # Blender 4.2-5.0 embed 3.11
    assert b.version_range(("3.13",)) == ("5.1.0", None)        # 5.1 and later embed 3.13
    fits = b._wheel_fits
    assert fits("taichi-1.7.4-cp311-cp311-win_amd64.whl", "3.11")
    assert not fits("taichi-1.7.4-cp311-cp311-win_amd64.whl", "3.13")
    assert fits("dill-0.4.1-py3-none-any.whl", "3.13")
    assert fits("colorama-0.4.6-py2.py3-none-any.whl", "3.11")
    assert fits("x-1.0-cp311-abi3-manylinux_2_28_x86_64.whl", "3.13")
    assert not fits("x-1.0-cp313-abi3-manylinux_2_28_x86_64.whl", "3.11")


def test_zip_builds_and_validates(built_zip):
    path, addon_build = built_zip
    assert os.path.basename(path) == f"noise_warp-0.1.0-{addon_build.current_platform().replace('-', '_')}.zip"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        manifest = tomllib.loads(z.read("blender_manifest.toml").decode())
    assert "__init__.py" in names and "api.py" in names and "build.py" not in names
    assert manifest["blender_version_min"] == "4.2.13"
    wheels = [os.path.basename(w) for w in manifest["wheels"]]
    for dist in ("taichi-1.7.4", "openexr-3.5.3"):
        for tag in ("cp311", "cp313"):   # one for each Python a supported Blender embeds
            assert any(w.startswith(dist) and f"-{tag}-" in w for w in wheels), (dist, tag, wheels)
    assert any(w.startswith("noisewarp-") for w in wheels)
    assert {w.split("-")[0].lower() for w in wheels} == {
        "taichi", "colorama", "dill", "openexr", "noisewarp"}, wheels
    r = subprocess.run([sys.executable, addon_build.blender_ext_tool(), "validate", path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


CLEAN_SCRIPT = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, sys.argv[1])            # bpy and what its wheel requires, nothing else
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
    # the Vector pass (Cycles, read back through the bundled OpenEXR) and the texture kernels
    res = bpy.ops.noise_warp.bake_texture(directory=os.path.join(out, "tex"), channels=2)
    assert res == {"FINISHED"}, res
    # the mesh field (noise3d.nearest's kernel), the 3D kernels, OpenVDB from Blender
    bpy.ops.mesh.primitive_cube_add(size=4.0)
    bpy.context.active_object.name = "Domain"
    movers = bpy.data.collections.new("Movers")
    scene.collection.children.link(movers)
    for c in list(cube.users_collection):
        c.objects.unlink(cube)
    movers.objects.link(cube)
    res = bpy.ops.noise_warp.bake_volume(directory=os.path.join(out, "vol"), domain="Domain",
                                         source_collection="Movers", resolution=12)
    assert res == {"FINISHED"}, res
    import taichi, core2d, numpy
    print("TAICHI", taichi.__file__)
    print("CORE2D", core2d.__file__)
    print("RUNTIME", "%d.%d" % sys.version_info[:2], numpy.__version__, bpy.app.version_string)
    print("SCIPY", "scipy" in sys.modules)
    for d in ("tex", "vol"):
        print("FILES", d, sorted(os.listdir(os.path.join(out, d))))
''')


def test_zip_installs_registers_and_bakes_in_a_clean_blender(built_zip, tmp_path):
    """A subprocess with no site-packages, only links to bpy and its requirements; Blender's
    user folders in tmp. Blender installs the wheels of its own Python from the zip."""
    pytest.importorskip("bpy")      # the module under test: its version decides the Python
    path, _ = built_zip
    names = {os.path.basename(p) for p in blender_user.requirement_closure("bpy")}
    assert {"bpy", "numpy"} <= names and "taichi" not in names and "scipy" not in names
    r = blender_user.run_in_clean_blender(tmp_path, CLEAN_SCRIPT, [path, tmp_path / "out"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Exception in module register" not in r.stdout + r.stderr, r.stderr[-3000:]
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines() if l.split(" ")[0] in
                 ("TAICHI", "CORE2D", "RUNTIME", "SCIPY"))
    py = "%d.%d" % sys.version_info[:2]
    ext_site = os.path.join(str(tmp_path / "user" / "extensions"), ".local", "lib",
                            f"python{py}", "site-packages")
    assert lines["TAICHI"].startswith(ext_site) and lines["CORE2D"].startswith(ext_site)
    assert lines["RUNTIME"].startswith(py + " ")
    assert lines["SCIPY"] == "False"
    assert "FILES tex ['noise.npy', 'noise_0001.exr', 'noise_0002.exr', 'noise_0003.exr']" in r.stdout
    assert "FILES vol ['noise_0001.vdb', 'noise_0002.vdb', 'noise_0003.vdb']" in r.stdout
    # only this Python's binary wheels were unpacked
    other = {"3.11": "313", "3.13": "311"}[py]
    so = [f for _, _, files in os.walk(ext_site) for f in files if f.endswith((".so", ".pyd"))]
    assert so and not any(f"cpython-{other}" in f or f"cp{other}" in f for f in so)
