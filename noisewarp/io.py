"""Files in and out: atomic writes, OpenEXR, and Blender's Vector pass as flows.

Every writer goes through `atomic_path`: the data lands under a temporary name in the same
folder and is renamed into place, so an interrupted run leaves only complete files.
"""
import contextlib
import os

import numpy as np

from core2d.atomic import atomic_path  # noqa: F401  (re-exported: every writer here uses it)


NPY_MAGIC = b"\x93NUMPY"


def load_npy(path, mmap_mode=None):
    """np.load for a user's .npy file, with one clear ValueError naming it when it is missing,
    not a .npy file (a text file named .npy would get NumPy's advice about pickles) or damaged."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise ValueError(f"{path}: not a NumPy .npy file (it does not start with the .npy header; "
                         "save arrays with numpy.save)")
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npy file ({exc})") from None


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


def write_exr(path, image: np.ndarray, names=None, half=False, compress=False):
    """Write [H, W, C] (rows top-first) as a float32 (or half) scanline EXR, atomically.

    Uncompressed by default: white noise does not compress (ZIP saves 0% on float32 noise,
    5% on half) and ZIP made writing 6x slower. compress=True (ZIP) suits smooth images.
    """
    import OpenEXR

    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    names = list(names) if names is not None else exr_channel_names(image.shape[-1])
    if len(names) != image.shape[-1]:
        raise ValueError(f"{len(names)} channel names for {image.shape[-1]} channels")
    dtype = np.float16 if half else np.float32
    channels = {n: np.ascontiguousarray(image[..., k].astype(dtype)) for k, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION if compress else OpenEXR.NO_COMPRESSION,
              "type": OpenEXR.scanlineimage}
    with atomic_path(path) as tmp:
        with OpenEXR.File(header, channels) as f:
            f.write(tmp)


def read_exr(path) -> dict:
    """All channels of an EXR, every part, as {name: [H, W] float32 array} (rows top-first).

    Blender 5 writes a multilayer EXR as one part per pass (`ViewLayer.Combined`,
    `ViewLayer.Vector`, ...), so the channels of every part are read; a name that two parts
    share is prefixed with its part's name.
    """
    import OpenEXR

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        with OpenEXR.File(path, separate_channels=True) as f:
            out = {}
            for part in f.parts:
                for name, ch in part.channels.items():
                    key = f"{part.name()}.{name}" if name in out else name
                    out[key] = np.asarray(ch.pixels, np.float32)
            return out
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


# ----------------------------------------------------------------------------- Middlebury .flo
FLO_MAGIC = 202021.25


def read_flo(path) -> np.ndarray:
    """Middlebury .flo -> [H, W, 2] float32 (u, v) = (dx, dy), y down; a forward flow by convention."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12:
            raise ValueError(f"{path}: truncated .flo file (no header)")
        magic = np.frombuffer(head[:4], "<f4")[0]
        if magic != np.float32(FLO_MAGIC):
            raise ValueError(f"{path}: not a Middlebury .flo file (bad magic number {magic!r})")
        w, h = (int(v) for v in np.frombuffer(head[4:], "<i4"))
        if not (0 < w < 1 << 16 and 0 < h < 1 << 16):
            raise ValueError(f"{path}: implausible .flo size {w}x{h}")
        data = np.frombuffer(f.read(), "<f4")
    if data.size != w * h * 2:
        raise ValueError(f"{path}: truncated .flo file ({data.size} values, expected {w * h * 2})")
    return data.reshape(h, w, 2).astype(np.float32)


def write_flo(path, flow: np.ndarray):
    """[H, W, 2] (dx, dy) -> Middlebury .flo, atomically."""
    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"a .flo flow must be [H, W, 2], got {flow.shape}")
    h, w = flow.shape[:2]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(np.array([FLO_MAGIC], "<f4").tobytes())
            f.write(np.array([w, h], "<i4").tobytes())
            f.write(np.ascontiguousarray(flow, "<f4").tobytes())


# ----------------------------------------------------------------------------- flow conventions
def flows_from_stack(stack, layout="auto", order="xy", negate=False) -> np.ndarray:
    """A stack of flows in someone else's layout -> [N, H, W, 2] (dx, dy) in pixels, y down.

    layout: "nhwc" ([N, H, W, 2]), "nchw" ([N, 2, H, W]: RAFT / torchvision, Go-with-the-Flow's
    flows_dxdy.npy) or "auto" (whichever axis has size 2; ambiguous shapes are refused).
    order: "xy" if the two components are (dx, dy), "yx" if (dy, dx) = (row, column).
    negate: the stack stores minus the displacement (e.g. a map built as p - flow).
    Direction (forward/backward) is not changed here.
    """
    stack = np.asarray(stack)
    if stack.ndim == 3:
        stack = stack[None]
    layout = stack_layout(stack.shape, layout)
    if layout == "nchw":
        stack = np.moveaxis(stack, 1, -1)
    out = np.asarray(stack, np.float32)
    if order == "yx":
        out = out[..., ::-1]
    elif order != "xy":
        raise ValueError(f"unknown flow component order {order!r} (xy or yx)")
    if negate:
        out = -out
    return np.ascontiguousarray(out, np.float32)


def stack_layout(shape, layout="auto"):
    """The axis order ("nhwc" or "nchw") of a flow stack of this shape (one flow [H, W, 2] or
    [2, H, W] counts as N = 1), or one ValueError quoting the whole shape."""
    shape = tuple(int(v) for v in shape)
    full = (1,) + shape if len(shape) == 3 else shape
    if len(full) != 4:
        raise ValueError(f"a flow stack must have 4 axes [N, H, W, 2] or [N, 2, H, W], got shape {shape}")
    layout = layout.lower()
    if layout == "auto":
        last, second = full[-1] == 2, full[1] == 2
        if last and not second:
            return "nhwc"
        if second and not last:
            return "nchw"
        if not (last or second):
            raise ValueError(f"flow stack of shape {shape} is neither [N, H, W, 2] nor [N, 2, H, W] "
                             "(a flow has two components, dx and dy)")
        raise ValueError(f"cannot tell the axis order of a flow stack of shape {shape}: "
                         "give --flow-layout nhwc or nchw")
    if layout == "nchw" and full[1] != 2:
        raise ValueError(f"flow stack of shape {shape} is not [N, 2, H, W]")
    if layout == "nhwc" and full[-1] != 2:
        raise ValueError(f"flow stack of shape {shape} is not [N, H, W, 2]")
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"unknown flow layout {layout!r} (nhwc, nchw or auto)")
    return layout


def raft_to_flows(flow) -> np.ndarray:
    """RAFT / torchvision output [B, 2, H, W] (dx, dy) -> [B, H, W, 2]; forward flows of (prev, cur)."""
    return flows_from_stack(flow, layout="nchw")


def gwtf_to_flows(flows_dxdy) -> np.ndarray:
    """Go-with-the-Flow's flows_dxdy.npy [T-1, 2, H, W] -> forward flows [T-1, H, W, 2]."""
    return flows_from_stack(flows_dxdy, layout="nchw")


def backward_from_forward(forward, mode="invert") -> np.ndarray:
    """Forward flow F_t (on frame t's grid) -> backward flow B_{t+1} (on frame t+1's grid).

    mode "invert": a real inversion (splat and fill, core2d.invert_flow); "negate": the peers'
    approximation B(p) = -F(p), exact only for constant motion.
    """
    if mode == "negate":
        return -np.asarray(forward, np.float32)
    if mode != "invert":
        raise ValueError(f"unknown inversion mode {mode!r} (invert or negate)")
    from core2d.warper import invert_flow

    return invert_flow(np.asarray(forward, np.float32))


def invert_with_holes(forward):
    """(backward flow, holes) of a real inversion: the same flow as backward_from_forward, and
    the bool [H, W] mask of the new frame's pixels nothing landed on (disocclusions)."""
    from scipy import ndimage

    from core2d.flow import OUTSIDE, invert_flow

    back = invert_flow(np.asarray(forward, np.float32), holes="fresh")
    holes = back[..., 0] >= OUTSIDE
    if holes.any() and not holes.all():     # filled as invert_flow(holes="fill") fills them
        _, (ni, nj) = ndimage.distance_transform_edt(holes, return_indices=True)
        back[holes] = back[ni[holes], nj[holes]]
    return back, holes


# ----------------------------------------------------------------------------- previews
def noise_to_uint8(noise: np.ndarray, sigma=3.0) -> np.ndarray:
    """Noise [H, W, C] -> 8-bit picture [H, W, 3]: first three channels as RGB (grey if C < 3),
    ±sigma mapped onto 0..255 (so N(0,1) looks mid-grey with full-range speckle)."""
    noise = np.asarray(noise, np.float32)
    if noise.ndim == 2:
        noise = noise[..., None]
    rgb = noise[..., :3] if noise.shape[-1] >= 3 else np.repeat(noise[..., :1], 3, axis=-1)
    v = (np.clip(rgb / (2 * sigma), -0.5, 0.5) + 0.5) * 255.0
    return np.round(v).astype(np.uint8)


def enlarge(image: np.ndarray, min_size=256) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor so the shorter side reaches min_size
    (latent-size noise is unreadable at 1 pixel per value)."""
    h, w = image.shape[:2]
    k = max(1, int(np.ceil(min_size / max(1, min(h, w)))))
    if k > 1:
        image = np.repeat(np.repeat(image, k, axis=0), k, axis=1)
    return image


def write_png(path, image: np.ndarray):
    """8-bit [H, W, 3] (RGB) or [H, W] picture -> PNG, atomically."""
    import cv2

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 3:
        image = image[..., ::-1]  # OpenCV wants BGR
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(image))
        if not ok:
            raise OSError(f"{path}: PNG encoding failed")
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())


class Mp4Writer:
    """H.264 MP4 through imageio-ffmpeg, written under a temporary name and renamed on close.

    Frames are 8-bit RGB; odd sizes are padded to even (yuv420p needs even sizes).
    """

    def __init__(self, path, fps=24.0):
        self.path = os.fspath(path)
        self.fps = float(fps)
        self._ctx = None
        self._tmp = None
        self._gen = None
        self._size = None

    def append(self, frame: np.ndarray):
        import imageio_ffmpeg

        frame = np.asarray(frame, np.uint8)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=-1)
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._gen is None:
            self._ctx = atomic_path(self.path)
            self._tmp = self._ctx.__enter__()
            self._size = frame.shape[1], frame.shape[0]
            self._gen = imageio_ffmpeg.write_frames(
                self._tmp, self._size, fps=self.fps, codec="libx264", quality=8,
                macro_block_size=2, pix_fmt_out="yuv420p", output_params=["-f", "mp4"])
            self._gen.send(None)
        if (frame.shape[1], frame.shape[0]) != self._size:
            raise ValueError(f"{self.path}: frame size {frame.shape[1]}x{frame.shape[0]} differs "
                             f"from {self._size[0]}x{self._size[1]}")
        self._gen.send(np.ascontiguousarray(frame))

    def close(self, ok=True):
        if self._gen is None:
            return
        gen, ctx = self._gen, self._ctx
        self._gen = self._ctx = None
        try:
            gen.close()
        except BaseException as exc:
            ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if ok:
            ctx.__exit__(None, None, None)
        else:
            err = RuntimeError("aborted")
            with contextlib.suppress(RuntimeError):
                ctx.__exit__(RuntimeError, err, None)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False


class NpyFrames:
    """A `.npy` array written (or read) one frame at a time with plain file writes.

    A memory map would keep every written page resident, so the process's memory would grow
    with the length of the clip; here only the frame being written is in memory. mode 'w'
    creates the file (a sparse file of the full size), 'r+' reopens it to resume, 'r' reads
    frames one at a time. `time_axis` is the file's frame axis: 0 for [T, ...], 1 for
    [C, T, ...] (a frame is then C strided blocks).
    """

    def __init__(self, path, mode="w", dtype=None, shape=None, time_axis=0):
        self.path = os.fspath(path)
        if mode == "w":
            with open(self.path, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                        "shape": tuple(int(v) for v in shape)})
                offset = f.tell()
                f.truncate(offset + int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self._f = open(self.path, "rb" if mode == "r" else "r+b")
        version = np.lib.format.read_magic(self._f)
        if version not in ((1, 0), (2, 0)):
            self._f.close()
            raise ValueError(f"{self.path}: .npy format version {version} is not supported (1.0 or 2.0)")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(self._f)
        if fortran:
            self._f.close()
            raise ValueError(f"{self.path}: Fortran-ordered arrays are not supported")
        self.shape, self.dtype, self._offset = tuple(shape), np.dtype(dtype), self._f.tell()
        a = int(time_axis)
        self.time_axis = a
        self.frame_shape = self.shape[:a] + self.shape[a + 1:]
        self._outer = int(np.prod(self.shape[:a]))                     # blocks per frame
        self._block = int(np.prod(self.shape[a + 1:])) * self.dtype.itemsize
        self._frame_bytes = self._outer * self._block

    def _check(self, t):
        if not 0 <= int(t) < self.shape[self.time_axis]:
            raise IndexError(f"frame {t} outside [0, {self.shape[self.time_axis]})")

    def _block_offset(self, t, k):
        return self._offset + (k * self.shape[self.time_axis] + int(t)) * self._block

    def __setitem__(self, t, frame):
        self._check(t)
        data = np.ascontiguousarray(frame, self.dtype)
        if data.shape != self.frame_shape:
            raise ValueError(f"frame of shape {data.shape}, expected {self.frame_shape}")
        raw = data.tobytes()
        for k in range(self._outer):
            self._f.seek(self._block_offset(t, k))
            self._f.write(raw[k * self._block:(k + 1) * self._block])

    def __len__(self):
        return self.shape[self.time_axis]

    def __getitem__(self, t):
        self._check(t)
        parts = []
        for k in range(self._outer):
            self._f.seek(self._block_offset(t, k))
            parts.append(self._f.read(self._block))
        data = b"".join(parts)
        if len(data) != self._frame_bytes:
            raise ValueError(f"{self.path}: truncated at frame {t}")
        return np.frombuffer(data, self.dtype).reshape(self.frame_shape)

    def __iter__(self):
        for t in range(len(self)):
            yield self[t]

    def flush(self):
        self._f.flush()

    def close(self):
        if not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- noise layouts
# The library's frames are [H, W, C]; a noise.npy can hold them in the axis order a model's
# pipeline wants: thwc [T, H, W, C] (Go-with-the-Flow's noises.npy), tchw [T, C, H, W]
# (CogVideoX's latents without the batch axis), cthw [C, T, H, W] (Wan, HunyuanVideo).
LAYOUTS = ("thwc", "tchw", "cthw")


def layout_shape(layout, T, h, w, C):
    """The file's shape for T frames of [h, w, C] in this layout."""
    return {"thwc": (T, h, w, C), "tchw": (T, C, h, w), "cthw": (C, T, h, w)}[_layout(layout)]


def time_axis(layout):
    return 1 if _layout(layout) == "cthw" else 0


def frame_to_layout(frame, layout):
    """One [H, W, C] frame as the file stores it: [H, W, C] (thwc) or [C, H, W] (tchw, cthw)."""
    return frame if _layout(layout) == "thwc" else np.moveaxis(frame, -1, 0)


def frame_from_layout(frame, layout):
    return frame if _layout(layout) == "thwc" else np.moveaxis(frame, 0, -1)


def to_thwc(array, layout):
    """A whole stack in `layout` -> [T, H, W, C] (a view)."""
    layout = _layout(layout)
    if layout == "thwc":
        return array
    if layout == "tchw":
        return np.moveaxis(array, 1, -1)
    return np.moveaxis(array, 0, -1)


def _layout(layout):
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    return layout


class NoiseFrames:
    """Read (or write) a noise stack frame by frame as [H, W, C], whatever its layout."""

    def __init__(self, path, layout="thwc", mode="r", dtype=None, frames=None, height=None, width=None,
                 channels=None):
        shape = layout_shape(layout, frames, height, width, channels) if mode == "w" else None
        self.layout = _layout(layout)
        self.file = NpyFrames(path, mode=mode, dtype=dtype, shape=shape, time_axis=time_axis(layout))
        if len(self.file.shape) != 4:
            self.file.close()
            raise ValueError(f"{path}: expected a noise stack with 4 axes, got shape {self.file.shape}")
        self.dtype = self.file.dtype
        f = self.file.frame_shape
        self.frame_shape = f if self.layout == "thwc" else (f[1], f[2], f[0])
        self.shape = (len(self.file),) + self.frame_shape          # [T, H, W, C]

    def __len__(self):
        return len(self.file)

    def __getitem__(self, t):
        return frame_from_layout(self.file[t], self.layout)

    def __setitem__(self, t, frame):
        self.file[t] = frame_to_layout(np.asarray(frame), self.layout)

    def __iter__(self):
        for t in range(len(self)):
            yield self[t]

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def peak_memory_mb() -> float:
    """This process's own peak resident memory in MB (VmHWM; ru_maxrss would include what a
    forking parent had resident, since Linux carries it over fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
