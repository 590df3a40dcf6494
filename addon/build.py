"""Build the Blender extension zip(s): python addon/build.py --output-dir DIR [--platform P ...]

Stages addon/ + blender_manifest.toml + wheels (this project's wheel, installed --no-deps, and
only the dependencies the add-on's code paths import: Taichi and its pure-Python deps,
OpenEXR, SciPy; never numpy, which Blender ships; OpenVDB comes with Blender too), then builds
and validates one zip per platform with Blender's own extension tool (blender_ext.py from the
bpy wheel). Wheels are cached in --wheel-cache (default: build/wheelhouse, git-ignored) and
looked up there first, so rebuilds work offline.
"""
import argparse
import glob
import os
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
# What the add-on imports (core2d -> taichi, OpenEXR; noise3d.mesh -> scipy) and their
# dependencies except numpy. Pinned to versions that support Blender's numpy 1.26 and cp311.
BUNDLED = ["taichi==1.7.4", "colorama==0.4.6", "dill==0.4.1", "rich==15.0.0",
           "markdown-it-py==4.3.0", "mdurl==0.1.2", "pygments==2.21.0", "OpenEXR==3.5.3",
           "scipy==1.15.3"]
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
        sys.exit("build.py needs the bpy module (pip install bpy==5.0.1) for Blender's extension tool")
    root = os.path.dirname(spec.origin)
    found = glob.glob(os.path.join(root, "*", "scripts", "addons_core", "bl_pkg", "cli",
                                   "blender_ext.py"))
    if not found:
        sys.exit(f"blender_ext.py not found under {root}")
    return found[0]


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def download_wheels(platform, cache):
    """Wheels of BUNDLED for one platform into cache/<platform>, from the cache when present."""
    dest = os.path.join(cache, platform)
    os.makedirs(dest, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
            "--abi", "cp311", "--abi", "abi3", "--abi", "none", "-d", dest]
    for tag in PLATFORM_TAGS[platform]:
        base += ["--platform", tag]
    try:
        subprocess.run(base + ["--no-index", "--find-links", dest] + BUNDLED, check=True,
                       capture_output=True)
    except subprocess.CalledProcessError:
        run(base + BUNDLED)
    wanted = {r.split("==")[0].lower().replace("-", "_") for r in BUNDLED}
    versions = {r.split("==")[0].lower().replace("-", "_"): r.split("==")[1] for r in BUNDLED}
    out = []
    for path in sorted(glob.glob(os.path.join(dest, "*.whl"))):
        name, version = os.path.basename(path).split("-")[:2]
        key = name.lower()
        if key in wanted and versions[key] == version:
            out.append(path)
    return out


def build(output_dir, platforms, cache, validate=True):
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
        for whl in download_wheels(platform, cache):
            target = os.path.join(wheels_dir, os.path.basename(whl))
            if not os.path.exists(target):
                shutil.copy2(whl, target)
    wheels = sorted(os.listdir(wheels_dir))
    if any(w.lower().startswith("numpy-") for w in wheels):
        sys.exit("numpy must not be bundled (Blender ships it)")
    with open(os.path.join(REPO, "blender_manifest.toml")) as f:
        manifest = f.read()
    declared = tomllib.loads(manifest)["platforms"]
    unknown = [p for p in platforms if p not in declared]
    if unknown:
        sys.exit(f"platform(s) {unknown} are not in blender_manifest.toml {declared}")
    lines = []
    for line in manifest.splitlines():
        if line.startswith("platforms ="):
            line = "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]"
        lines.append(line)
        if line.startswith("license ="):
            lines.append("wheels = [")
            lines += [f'  "./wheels/{w}",' for w in wheels]
            lines.append("]")
    with open(os.path.join(stage, "blender_manifest.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    tool = blender_ext_tool()
    before = set(glob.glob(os.path.join(output_dir, "*.zip")))
    run([sys.executable, tool, "build", "--source-dir", stage, "--output-dir", output_dir,
         "--split-platforms"])
    zips = sorted(set(glob.glob(os.path.join(output_dir, "*.zip"))) - before) or sorted(
        glob.glob(os.path.join(output_dir, "noise_warp-*.zip")))
    if validate:
        for z in zips:
            run([sys.executable, tool, "validate", z])
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
    p.add_argument("--wheel-cache", default=os.path.join(REPO, "build", "wheelhouse"))
    p.add_argument("--no-validate", action="store_true")
    a = p.parse_args(argv)
    platforms = a.platform or ([current_platform()] if a.current_platform else list(PLATFORM_TAGS))
    zips = build(a.output_dir, platforms, a.wheel_cache, validate=not a.no_validate)
    for z in zips:
        print(f"built {z} ({os.path.getsize(z) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
