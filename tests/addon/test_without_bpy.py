"""Without the bpy module (`pip install .` plus pytest, or a Python no Blender embeds, such as
3.12), the Blender tests are skipped with a reason, not collection errors that stop the run."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_addon_tests_skip_without_bpy(tmp_path):
    # a bpy that cannot be imported, first on the path: as if the module were not installed
    (tmp_path / "bpy.py").write_text("raise ModuleNotFoundError(\"No module named 'bpy'\", name='bpy')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                        os.path.join(REPO, "tests", "addon"), "-k", "not without_bpy"],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "error" not in out.lower(), out[-3000:]
    for name in ("test_artist_scenes", "test_flowmap_bake", "test_registration", "test_smoke",
                 "test_texture", "test_volume", "test_extension"):
        assert f"{name}.py" in out and "could not import 'bpy'" in out, (name, out[-3000:])
