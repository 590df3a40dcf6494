"""Blender add-on tests: the real bpy module, user folders redirected to a temporary directory.

The environment variables must be set before bpy is imported anywhere in the session.
"""
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
for p in (REPO, HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

import blender_user  # noqa: E402

_USER = tempfile.mkdtemp(prefix="noise_warp_blender_user_")
blender_user.isolate(_USER)

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
