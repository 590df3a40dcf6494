"""Build the Blender extension zip(s): python addon/build.py --output-dir DIR [--platform P ...]

Stages addon/ + blender_manifest.toml + wheels, then builds and validates one zip per
platform with Blender's own extension tool (blender_ext.py from the bpy wheel). The wheels:
this project's own (installed --no-deps) and what the add-on imports at run time, for every
Python a supported Blender embeds (3.11: Blender 4.2-5.0; 3.13: Blender 5.1 and later).
Blender installs only the wheels that match its own Python. Never numpy or OpenVDB, which
Blender ships. Wheels are cached in --wheel-cache (default: build/wheelhouse, git-ignored)
and looked up there first, so rebuilds work offline.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON = os.path.join(REPO, "addon")

PLATFORM_TAGS = {
    "linux-x64": ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_27_x86_64",
                  "manylinux_2_28_x86_64"],
    "macos-arm64": ["macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_13_0_arm64",
                    "macosx_14_0_arm64", "macosx_10_9_universal2", "macosx_11_0_universal2"],
    "windows-x64": ["win_amd64"],
}
# The Pythons Blender embeds, and the Blender versions that embed them (max: first one that
# does not). Blender 4.2.0 installed every wheel whatever its Python (the cp313 Taichi over
# the cp311 one); from 4.2.13 at the latest, the 4.2 LTS installs only the matching ones.
PYTHONS = {"3.11": ("4.2.0", "5.1.0"), "3.13": ("5.1.0", None)}
BOTH_PYTHONS_MIN = "4.2.13"
# What the add-on imports at run time, numpy aside. Taichi's own imports: colorama and dill;
# its `rich` requirement (and rich's markdown-it-py, mdurl, pygments) serves only the `ti`
# command line, which Blender never runs. No SciPy: the mesh and velocity fields search and
# sample with noise3d.nearest and noise3d.fields.trilinear. Each of these has a wheel for
# cp311 and cp313 on every platform below (download_wheels checks).
BUNDLED = ["taichi==1.7.4", "colorama==0.4.6", "dill==0.4.1", "OpenEXR==3.5.3"]
NEVER = ("numpy", "scipy", "rich", "pygments", "markdown_it_py", "mdurl", "bpy")
SKIP_FILES = {"build.py"}


def current_platform():
    import platform
    machine = platform.machine().lower()
    arch = "arm64" if machine in ("arm64", "aarch64") else "x64"
    osname = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    return f"{osname}-{arch}"


def blender_ext_tool():
    """Path of blender_ext.py inside the installed bpy wheel (no Blender binary needed)."""
    import importlib.util
    spec = importlib.util.find_spec("bpy")
    if spec is None:
        sys.exit("build.py needs the bpy module for Blender's extension tool: pip install "
                 "bpy==5.0.1 (Python 3.11) or bpy==5.2.3 (Python 3.13)")
    root = os.path.dirname(spec.origin)
    found = glob.glob(os.path.join(root, "*", "scripts", "addons_core", "bl_pkg", "cli",
                                   "blender_ext.py"))
    if not found:
        sys.exit(f"blender_ext.py not found under {root}")
    return found[0]


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def _dist(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def _wheel_fits(filename, python):
    """Whether a wheel serves CPython `python` ('3.11'): a cp311 or py3 wheel, or an abi3
    wheel built for that Python or an older one."""
    python_tag, abi = filename[:-4].split("-")[-3:-1]
    tags = python_tag.split(".")
    cp = int(python.replace(".", ""))
    return (f"cp{cp}" in tags or "py3" in tags or
            (abi == "abi3" and any(t.startswith("cp3") and int(t[2:]) <= cp for t in tags)))


def download_wheels(platform, cache, pythons=tuple(PYTHONS)):
    """Wheels of BUNDLED for one platform and each Python into cache/<platform>, from the
    cache when present; exits naming what has no wheel."""
    dest = os.path.join(cache, platform)
    os.makedirs(dest, exist_ok=True)
    for python in pythons:
        abi = "cp" + python.replace(".", "")
        base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                "--abi", abi, "--abi", "abi3", "--abi", "none", "-d", dest]
        for tag in PLATFORM_TAGS[platform]:
            base += ["--platform", tag]
        try:
            subprocess.run(base + ["--no-index", "--find-links", dest] + BUNDLED, check=True,
                           capture_output=True)
        except subprocess.CalledProcessError:
            try:
                run(base + BUNDLED)
            except subprocess.CalledProcessError:
                sys.exit(f"no wheels of {', '.join(BUNDLED)} for Python {python} on {platform}")
    versions = {_dist(r.split("==")[0]): r.split("==")[1] for r in BUNDLED}
    out, missing = [], []
    for python in pythons:
        for dist, version in versions.items():
            found = [p for p in sorted(glob.glob(os.path.join(dest, "*.whl")))
                     if _dist(os.path.basename(p).split("-")[0]) == dist
                     and os.path.basename(p).split("-")[1] == version
                     and _wheel_fits(os.path.basename(p), python)]
            if not found:
                missing.append(f"{dist}=={version} (Python {python})")
            out += found[:1]
    if missing:
        sys.exit(f"{platform}: no wheel for " + ", ".join(missing))
    return sorted(set(out))


def version_range(pythons):
    """(blender_version_min, blender_version_max or None) that installs these Pythons' wheels."""
    if set(pythons) == set(PYTHONS):
        return BOTH_PYTHONS_MIN, None
    (python,) = pythons
    return PYTHONS[python]


def build(output_dir, platforms, cache, validate=True, pythons=tuple(PYTHONS)):
    """Build, validate and return the zip of each platform, with wheels for each Python."""
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    stage = os.path.join(output_dir, "stage")
    shutil.rmtree(stage, ignore_errors=True)
    wheels_dir = os.path.join(stage, "wheels")
    os.makedirs(wheels_dir)
    for name in sorted(os.listdir(ADDON)):
        src = os.path.join(ADDON, name)
        if name.endswith(".py") and name not in SKIP_FILES:
            shutil.copy2(src, os.path.join(stage, name))
    # This project's wheel, without its declared (heavy, unneeded here) dependencies.
    # Built from a clean copy so a stale build/lib in the repository never leaks into it.
    src = os.path.join(output_dir, "project-src")
    shutil.rmtree(src, ignore_errors=True)
    os.makedirs(src)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if os.path.exists(os.path.join(REPO, name)):
            shutil.copy2(os.path.join(REPO, name), src)
    for pkg in ("core2d", "noise3d", "noisewarp"):
        shutil.copytree(os.path.join(REPO, pkg), os.path.join(src, pkg),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheel_cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", wheels_dir, src]
    try:  # offline when setuptools + wheel are installed; else pip fetches them
        subprocess.run(wheel_cmd[:5] + ["--no-build-isolation"] + wheel_cmd[5:], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError:
        run(wheel_cmd)
    shutil.rmtree(src, ignore_errors=True)
    for platform in platforms:
        for whl in download_wheels(platform, cache, pythons):
            target = os.path.join(wheels_dir, os.path.basename(whl))
            if not os.path.exists(target):
                shutil.copy2(whl, target)
    wheels = sorted(os.listdir(wheels_dir))
    bad = [w for w in wheels if _dist(w.split("-")[0]) in NEVER]
    if bad:
        sys.exit(f"must not be bundled: {bad} (Blender ships numpy; the rest is never imported)")
    with open(os.path.join(REPO, "blender_manifest.toml")) as f:
        manifest = f.read()
    m = tomllib.loads(manifest)
    unknown = [p for p in platforms if p not in m["platforms"]]
    if unknown:
        sys.exit(f"platform(s) {unknown} are not in blender_manifest.toml {m['platforms']}")
    vmin, vmax = version_range(pythons)
    lines = []
    for line in manifest.splitlines():
        if line.startswith("platforms ="):
            line = "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]"
        if line.startswith("blender_version_max"):
            continue
        if line.startswith("blender_version_min"):
            line = f'blender_version_min = "{vmin}"'
            if vmax:
                line += f'\nblender_version_max = "{vmax}"'
        lines.append(line)
        if line.startswith("license ="):
            lines.append("wheels = [")
            lines += [f'  "./wheels/{w}",' for w in wheels]
            lines.append("]")
    with open(os.path.join(stage, "blender_manifest.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    tool = blender_ext_tool()
    run([sys.executable, tool, "build", "--source-dir", stage, "--output-dir", output_dir,
         "--split-platforms"])
    zips = []
    for platform in platforms:
        z = os.path.join(output_dir, f"{m['id']}-{m['version']}-{platform.replace('-', '_')}.zip")
        if set(pythons) != set(PYTHONS):      # a one-Python zip says so in its name
            one = z[:-4] + "-py" + "".join(p.replace(".", "") for p in pythons) + ".zip"
            os.replace(z, one)
            z = one
        if validate:
            run([sys.executable, tool, "validate", z])
        zips.append(z)
    shutil.rmtree(stage, ignore_errors=True)
    return zips


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", required=True, help="where the zip(s) go")
    p.add_argument("--platform", action="append", choices=sorted(PLATFORM_TAGS),
                   help="build only for this platform (repeatable; 'current' is not a choice: "
                        "use --current-platform). Default: every platform in the manifest")
    p.add_argument("--current-platform", action="store_true",
                   help="build only for the platform this Python runs on")
    p.add_argument("--python", action="append", choices=sorted(PYTHONS),
                   help="bundle wheels for this Python only (repeatable): 3.11 for Blender "
                        "4.2-5.0, 3.13 for 5.1 and later; a zip half the size. Default: both")
    p.add_argument("--wheel-cache", default=os.path.join(REPO, "build", "wheelhouse"))
    p.add_argument("--no-validate", action="store_true")
    a = p.parse_args(argv)
    platforms = a.platform or ([current_platform()] if a.current_platform else list(PLATFORM_TAGS))
    zips = build(a.output_dir, platforms, a.wheel_cache, validate=not a.no_validate,
                 pythons=tuple(sorted(set(a.python or PYTHONS))))
    for z in zips:
        print(f"built {z} ({os.path.getsize(z) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
