"""Point Blender's user folders at a scratch directory (before bpy is imported anywhere), so
tests, benchmarks and figure scripts never read or write the real user's preferences; and run
a script in a Blender that holds nothing but the bpy module, for the extension zip."""
import os
import re
import subprocess
import sys


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


def requirement_closure(dist_name="bpy"):
    """Top-level entries (packages, modules, .libs folders) of a distribution and of every
    distribution it requires, recursively: what `pip install bpy` puts in a fresh venv."""
    from importlib import metadata

    todo, seen, tops = [dist_name], set(), set()
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        root = dist.locate_file("")
        for f in dist.files or []:
            top = f.parts[0]
            if top != ".." and not top.endswith((".dist-info", ".pth")):
                tops.add(os.path.join(str(root), top))
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0])
    return sorted(tops)


def run_in_clean_blender(folder, script, args, ti_cache=None, timeout=900):
    """Run `script` (source text) with this Python but no site-packages: its first argument is
    a folder linking only bpy and what bpy's wheel requires; Blender's user folders, HOME and
    the Taichi cache (default) under `folder`. Returns the CompletedProcess."""
    folder = str(folder)
    site = os.path.join(folder, "site")
    if not os.path.isdir(site):
        os.makedirs(site)
        for p in requirement_closure("bpy"):
            os.symlink(p, os.path.join(site, os.path.basename(p)))
    path = os.path.join(folder, "script.py")
    with open(path, "w") as f:
        f.write(script)
    env = isolate(os.path.join(folder, "user"),
                  {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": folder,
                   "NOISEWARP_TI_CACHE": ti_cache or os.path.join(folder, "ti_cache")})
    # -S: no site-packages at all (not this venv's taichi/core2d): only what the zip brings
    return subprocess.run([sys.executable, "-S", path, site] + [str(a) for a in args], env=env,
                          capture_output=True, text=True, timeout=timeout)
