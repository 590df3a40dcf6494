"""Point Blender's user folders at a scratch directory (before bpy is imported anywhere), so
tests, benchmarks and figure scripts never read or write the real user's preferences."""
import os


def isolate(root, env=None, override=True):
    """BLENDER_USER_* under `root` in `env` (default os.environ), which is returned;
    override=False keeps folders the caller already set."""
    env = os.environ if env is None else env
    for var, sub in (("BLENDER_USER_RESOURCES", ""), ("BLENDER_USER_CONFIG", "config"),
                     ("BLENDER_USER_SCRIPTS", "scripts"),
                     ("BLENDER_USER_EXTENSIONS", "extensions")):
        if override or var not in env:
            env[var] = os.path.join(str(root), sub)
    env.setdefault("NOISEWARP_TI_ARCH", "cpu")
    return env
