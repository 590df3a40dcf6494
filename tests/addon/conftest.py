"""Blender add-on tests: the real bpy module, user folders redirected to a temporary directory.

The environment variables must be set before bpy is imported anywhere in the session.
"""
import os
import sys
import tempfile

_USER = tempfile.mkdtemp(prefix="noise_warp_blender_user_")
os.environ["BLENDER_USER_RESOURCES"] = _USER
os.environ["BLENDER_USER_CONFIG"] = os.path.join(_USER, "config")
os.environ["BLENDER_USER_SCRIPTS"] = os.path.join(_USER, "scripts")
os.environ["BLENDER_USER_EXTENSIONS"] = os.path.join(_USER, "extensions")
os.environ.setdefault("NOISEWARP_TI_ARCH", "cpu")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
for p in (REPO, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def registered():
    """The add-on registered from the repository (`addon` package, relative imports)."""
    import addon
    addon.register()
    yield addon
    addon.unregister()


@pytest.fixture
def outdir(tmp_path):
    return str(tmp_path / "bake")
