"""What the texture and volume bakes share: settings from the panel, frame ranges, output
folders, resuming an interrupted bake, progress lines."""
import json
import os
import re
import shutil
import tempfile

import bpy

from .motion import BakeError

STATE_DIR = ".noise_warp"
FRAME_RE = re.compile(r"^noise_(\d{4,})\.(exr|vdb)$")


def _settings(scene):
    s = getattr(scene, "noise_warp", None)
    if s is None:
        raise BakeError("the Noise Warp add-on is not registered (scene.noise_warp is missing)")
    return s


# values for settings a scene may not have (a panel without them)
DEFAULTS = {"bake_simulations": True, "occlusions": True}


def _resolve(scene, values, mapping):
    """Fill None values from the scene settings: mapping {argument: scene attribute}."""
    s = _settings(scene)
    out = {}
    for arg, attr in mapping.items():
        v = values.get(arg)
        if v is None:
            v = getattr(s, attr, DEFAULTS.get(arg)) if arg in DEFAULTS else getattr(s, attr)
        out[arg] = v
    return out


def _frames(scene, start, end):
    start = scene.frame_start if start is None or start < 0 else int(start)
    end = scene.frame_end if end is None or end < 0 else int(end)
    if end <= start:
        raise BakeError(f"the frame range {start}-{end} needs at least two frames")
    if start < 0:
        raise BakeError("frames before 0 cannot be numbered noise_####")
    return start, end


def _output_dir(directory):
    """Absolute, existing, writable folder, or BakeError (nothing created on failure)."""
    if not directory:
        raise BakeError("no output folder given")
    path = os.path.abspath(bpy.path.abspath(directory))
    if bpy.data.filepath == "" and directory.startswith("//"):
        raise BakeError(f"the output folder '{directory}' is relative to the .blend file, "
                        "which is not saved yet: save it or give an absolute folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise BakeError(f"the output folder '{path}' is a file")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".noise_warp_probe", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise BakeError(f"the output folder '{path}' is not writable ({exc.strerror or exc})") from None
    return path


def blend_relative(path):
    """`path` relative to the saved .blend ("//noise/noise_0001.exr"), as Blender stores paths
    by default; absolute while the file is unsaved or on another drive."""
    if not bpy.data.filepath:
        return path
    try:
        return bpy.path.relpath(path)
    except ValueError:
        return path


def same_file(blender_path, path):
    return os.path.normpath(bpy.path.abspath(blender_path)) == os.path.normpath(path)


def _existing_frames(path, ext):
    return sorted(int(m.group(1)) for n in os.listdir(path)
                  if (m := FRAME_RE.match(n)) and m.group(2) == ext)


def _print_progress(done, total, message):
    print(f"noise_warp: {message} ({done}/{total})", flush=True)


class _Resume:
    """Bake progress in DIR/.noise_warp/: meta.json (settings, last frame) + the warper state.

    The state file is named after its frame and written before meta.json points to it, so an
    interruption at any moment leaves a consistent pair: the bake resumes after the last
    complete frame.
    """

    def __init__(self, directory, kind):
        self.dir = os.path.join(directory, STATE_DIR)
        self.meta_path = os.path.join(self.dir, f"{kind}.json")
        self.kind = kind

    def read(self):
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        state = os.path.join(self.dir, meta.get("state", ""))
        return meta if os.path.isfile(state) else None

    def state_path(self, frame):
        return os.path.join(self.dir, f"{self.kind}_state_{frame:04d}.npz")

    def write(self, settings, frame, extra=None):
        from noisewarp.io import atomic_path

        meta = {"settings": settings, "last_frame": frame,
                "state": os.path.basename(self.state_path(frame)), **(extra or {})}
        with atomic_path(self.meta_path) as tmp:
            with open(tmp, "w") as f:
                json.dump(meta, f, indent=1)
        for name in os.listdir(self.dir):
            if name.startswith(f"{self.kind}_state_") and name != meta["state"]:
                try:
                    os.remove(os.path.join(self.dir, name))
                except OSError:
                    pass

    def clear(self):
        shutil.rmtree(self.dir, ignore_errors=True)
