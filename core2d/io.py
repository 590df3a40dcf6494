"""Files in and out: atomic writes, OpenEXR, and Blender's Vector pass as flows.

Every writer goes through `atomic_path`: the data lands under a temporary name in the same
folder and is renamed into place, so an interrupted run leaves only complete files.
"""
import contextlib
import os
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".part{ext}", dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def save_npy(path, array):
    """np.save, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def exr_channel_names(channels: int):
    """RGBA names for up to 4 channels, then C00, C01, ... beyond."""
    if channels <= 4:
        return ["R", "G", "B", "A"][:channels] if channels > 1 else ["Y"]
    return [f"C{k:02d}" for k in range(channels)]


def write_exr(path, image: np.ndarray, names=None, half=False):
    """Write [H, W, C] (rows top-first) as a float32 (or half) scanline EXR, atomically."""
    import OpenEXR

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    names = list(names) if names is not None else exr_channel_names(image.shape[-1])
    if len(names) != image.shape[-1]:
        raise ValueError(f"{len(names)} channel names for {image.shape[-1]} channels")
    dtype = np.float16 if half else np.float32
    channels = {n: np.ascontiguousarray(image[..., k].astype(dtype)) for k, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_path(path) as tmp:
        with OpenEXR.File(header, channels) as f:
            f.write(tmp)


def read_exr(path) -> dict:
    """All channels of an EXR's first part as {name: [H, W] float32 array} (rows top-first)."""
    import OpenEXR

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        with OpenEXR.File(path, separate_channels=True) as f:
            return {name: np.asarray(ch.pixels, np.float32) for name, ch in f.channels().items()}
    except ValueError:
        raise
    except Exception as exc:  # OpenEXR raises plain Exceptions for corrupt files
        raise ValueError(f"{path}: not a readable OpenEXR file ({exc})") from None


def vector_pass_to_flows(vector: np.ndarray):
    """Blender Vector pass [H, W, 4] (X, Y, Z, W; rows top-first) -> (backward, forward) flows.

    Blender stores XY = previous position - current and ZW = current - next, in pixels with
    y up. In this library's convention (y down): backward = (X, -Y), forward = (-Z, +W).
    """
    vector = np.asarray(vector, np.float32)
    if vector.ndim != 3 or vector.shape[-1] != 4:
        raise ValueError(f"Vector pass must be [H, W, 4], got shape {vector.shape}")
    backward = np.stack([vector[..., 0], -vector[..., 1]], axis=-1)
    forward = np.stack([-vector[..., 2], vector[..., 3]], axis=-1)
    return backward, forward


def read_vector_exr(path):
    """The Vector pass of a Blender EXR (multilayer `<layer>.Vector.X..W`, or plain X/Y/Z/W or RGBA)."""
    channels = read_exr(path)
    for prefix in sorted({n.rsplit(".", 1)[0] for n in channels if n.endswith(".Vector.X") or
                          n.endswith("Vector.X")}):
        names = [f"{prefix}.{c}" for c in "XYZW"]
        if all(n in channels for n in names):
            return np.stack([channels[n] for n in names], axis=-1)
    for names in (list("XYZW"), list("RGBA")):
        if all(n in channels for n in names) and len(channels) == 4:
            return np.stack([channels[n] for n in names], axis=-1)
    raise ValueError(f"{os.fspath(path)}: no Vector pass (channels: {', '.join(sorted(channels))})")
