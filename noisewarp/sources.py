"""Flow sources: everything `noisewarp warp` accepts, turned into one stream of backward flows.

A source has `height`, `width`, `n_frames` (T, one noise frame per input frame), `fps`, and
`flows(start)`, a generator of `(t, B_t, image_t)` for t = start..T-1 (t >= 1), where `B_t` is
the backward flow on frame t's grid (where each pixel of frame t was in frame t-1; library
convention, see docs/CONVENTIONS) and `image_t` an RGB uint8 frame or None. Only one frame
(or flow) is in memory at a time, whatever the length of the input.
"""
import glob
import os
import time

import numpy as np

from . import io
from core2d.ops import check_flow

# FFmpeg (inside OpenCV) prints its own complaints about broken files on stderr, ahead of our
# one-line error; it reads this once, when OpenCV first opens a video
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}


def _frame_range(frames, total):
    """'A:B' (python-slice style, either side optional) -> (a, b) within [0, total)."""
    if frames is None:
        return 0, total
    if isinstance(frames, str):
        parts = frames.split(":")
        if len(parts) != 2:
            raise ValueError(f"--frames must look like A:B, got {frames!r}")
        try:
            a = int(parts[0]) if parts[0].strip() else 0
            b = int(parts[1]) if parts[1].strip() else total
        except ValueError:
            raise ValueError(f"--frames must look like A:B with integers, got {frames!r}") from None
    else:
        a, b = frames
    if a < 0:
        a += total
    if b < 0:
        b += total
    a, b = max(0, a), min(total, b)
    if b - a < 1:
        raise ValueError(f"frame range {frames!r} selects no frames (the input has {total})")
    return a, b


class Source:
    """Base class: subclasses set height/width/n_frames and implement _flow(t)."""

    name = ""
    fps = 24.0
    kind = ""

    def __init__(self):
        self.timings = {}  # stage -> seconds accumulated (read, flow)
        self.warnings = []  # ambiguous inputs read one way: the CLI prints these

    def _add_time(self, stage, seconds):
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def flows(self, start=1):
        for t in range(max(1, start), self.n_frames):
            yield t, self._flow(t), None

    def describe(self):
        return f"{self.kind} {self.name}: {self.n_frames} frames of {self.width}x{self.height}"


class VideoSource(Source):
    """A video file; backward flow B_t = DIS(frame t -> frame t-1), estimated on grey frames.

    Computing the backward flow directly (instead of inverting a forward flow) gives a flow on
    the grid the warpers need. With `occlusions=True` the forward flow is estimated too, and
    pixels whose forward/backward flows disagree are reported in `self.occlusion` (a mask).
    """

    kind = "video"

    def __init__(self, path, frames=None, preset="medium", occlusions=False):
        super().__init__()
        import cv2

        self.path = self.name = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ValueError(f"{self.path}: no such file")
        cap = cv2.VideoCapture(self.path)
        ok, first = (cap.read() if cap.isOpened() else (False, None))
        if not ok or first is None:
            cap.release()
            raise ValueError(f"{self.path}: cannot decode this video (unsupported codec or not a video)")
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 24.0)
        h, w = first.shape[:2]
        total = 1
        while cap.grab():  # the container's frame count is not reliable: count by grabbing
            total += 1
        cap.release()
        self.height, self.width = h, w
        self.start, self.stop = _frame_range(frames, total)
        self.n_frames = self.stop - self.start
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r} ({', '.join(DIS_PRESETS)})")
        self.preset = preset
        self.occlusions = occlusions
        self.occlusion = None

    def _open_at(self, index):
        """A capture positioned at frame `index`, by decoding from the start (seeking is not
        frame-exact for every codec, and resume must give identical bytes)."""
        import cv2

        cap = cv2.VideoCapture(self.path)
        for _ in range(index):
            if not cap.grab():
                raise ValueError(f"{self.path}: video ended early while seeking to frame {index}")
        return cap

    def _read(self, cap, t):
        import cv2

        t0 = time.perf_counter()
        ok, bgr = cap.read()
        if not ok or bgr is None:
            raise ValueError(f"{self.path}: cannot decode frame {self.start + t}")
        if bgr.shape[:2] != (self.height, self.width):
            raise ValueError(f"{self.path}: frame {self.start + t} is {bgr.shape[1]}x{bgr.shape[0]}, "
                             f"frame 0 was {self.width}x{self.height} (frames of different sizes)")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        self._add_time("read", time.perf_counter() - t0)
        return rgb, grey

    def first_image(self):
        cap = self._open_at(self.start)
        try:
            return self._read(cap, 0)[0]
        finally:
            cap.release()

    def flows(self, start=1):
        import cv2

        start = max(1, start)
        dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
        cap = self._open_at(self.start + start - 1)
        try:
            _, prev = self._read(cap, start - 1)
            for t in range(start, self.n_frames):
                rgb, grey = self._read(cap, t)
                t0 = time.perf_counter()
                back = dis.calc(grey, prev, None)
                if self.occlusions:
                    fwd = dis.calc(prev, grey, None)
                    self.occlusion = occlusion_mask(back, fwd)
                self._add_time("flow", time.perf_counter() - t0)
                back = check_flow(back, (self.height, self.width), frame=self.start + t,
                                  name=f"{self.path}: estimated flow")
                prev = grey
                yield t, back, rgb
        finally:
            cap.release()


def occlusion_mask(backward, forward, tol=0.5):
    """Pixels of frame t whose backward flow B_t(p) is not undone by the forward flow F_{t-1}
    at p + B_t(p) (the usual forward-backward consistency check): disoccluded content."""
    import cv2

    h, w = backward.shape[:2]
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = jj + backward[..., 0], ii + backward[..., 1]
    f = cv2.remap(forward, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = np.sum((f + backward) ** 2, axis=-1)
    mag = np.sum(f ** 2, axis=-1) + np.sum(backward ** 2, axis=-1)
    return err > 0.01 * mag + tol


class StackSource(Source):
    """A .npy stack of T-1 flows (memory-mapped: read one flow at a time)."""

    kind = "flow stack"

    def __init__(self, path, layout="auto", order="xy", negate=False, direction=None,
                 invert="invert", frames=None):
        super().__init__()
        self.path = self.name = os.fspath(path)
        stack = io.load_npy(self.path, mmap_mode="r")
        if stack.dtype.kind not in "fiu":
            raise ValueError(f"{self.path}: expected a numeric array of flows, got dtype {stack.dtype}")
        if os.path.basename(self.path) == "flows_dxdy.npy" and layout == "auto" and direction is None:
            layout, direction = "nchw", "forward"  # Go-with-the-Flow's file
        try:
            layout_given = layout
            layout = io.stack_layout(stack.shape, layout)
            probe = io.flows_from_stack(stack[:1] if stack.ndim == 4 else stack, layout, order, negate)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None
        if direction is None:
            direction = "backward"
            if layout == "nchw":  # RAFT and torchvision write [N, 2, H, W] forward flows
                self.warnings.append(
                    f"{self.path}: an [N, 2, H, W] stack ({'detected' if layout_given == 'auto' else 'given'}) "
                    "is read as backward flow (where each pixel came from); RAFT and torchvision give "
                    "forward flow: pass --flow-direction forward (or backward to silence this)")
        self.layout = layout
        self.order, self.negate = order, negate
        if direction not in ("backward", "forward"):
            raise ValueError(f"unknown flow direction {direction!r} (backward or forward)")
        self.direction, self.invert = direction, invert
        self.stack = stack if stack.ndim == 4 else stack[None]
        if stack.ndim == 4 and stack.flags.c_contiguous:
            self.stack = io.NpyFrames(self.path, mode="r")   # plain reads: no mapped pages pile up
        self.height, self.width = probe.shape[1:3]
        self.start, self.stop = _frame_range(frames, len(self.stack) + 1)
        self.n_frames = self.stop - self.start

    def _flow(self, t):
        t0 = time.perf_counter()
        k = self.start + t - 1  # flow k links input frames k and k+1
        flow = io.flows_from_stack(np.asarray(self.stack[k])[None], self.layout, self.order, self.negate)[0]
        flow = check_flow(flow, (self.height, self.width), frame=k, name=f"{self.path}: flow")
        if self.direction == "forward":
            flow = io.backward_from_forward(flow, self.invert)
        self._add_time("read", time.perf_counter() - t0)
        return flow


def _sorted_files(folder, ext):
    files = sorted(glob.glob(os.path.join(glob.escape(folder), "*" + ext)))
    if not files:
        raise ValueError(f"{folder}: no *{ext} files in this folder")
    return files


class FloFolderSource(Source):
    """A folder of Middlebury .flo files (forward flows F_0..F_{N-1}, sorted by name): N+1 frames."""

    kind = ".flo folder"

    def __init__(self, folder, invert="invert", frames=None):
        super().__init__()
        self.path = self.name = os.fspath(folder)
        self.files = _sorted_files(self.path, ".flo")
        first = io.read_flo(self.files[0])
        self.height, self.width = first.shape[:2]
        self.invert = invert
        self.start, self.stop = _frame_range(frames, len(self.files) + 1)
        self.n_frames = self.stop - self.start

    def _flow(self, t):
        t0 = time.perf_counter()
        path = self.files[self.start + t - 1]
        fwd = io.read_flo(path)
        if fwd.shape[:2] != (self.height, self.width):
            raise ValueError(f"{path}: flow is {fwd.shape[1]}x{fwd.shape[0]}, the first file is "
                             f"{self.width}x{self.height} (frames of different sizes)")
        fwd = check_flow(fwd, (self.height, self.width), name=path)
        out = io.backward_from_forward(fwd, self.invert)
        self._add_time("read", time.perf_counter() - t0)
        return out


class ExrFolderSource(Source):
    """A folder of Blender EXRs with a Vector pass, one per frame: B_t from frame t's XY."""

    kind = "Blender EXR folder"

    def __init__(self, folder, frames=None):
        super().__init__()
        self.path = self.name = os.fspath(folder)
        self.files = _sorted_files(self.path, ".exr")
        self.start, self.stop = _frame_range(frames, len(self.files))
        self.n_frames = self.stop - self.start
        vec = self._vector(self.files[self.start], None)
        self.height, self.width = vec.shape[:2]

    def _vector(self, path, shape):
        vec = io.read_vector_exr(path)
        if shape is not None and vec.shape[:2] != shape:
            raise ValueError(f"{path}: image is {vec.shape[1]}x{vec.shape[0]}, the first file is "
                             f"{shape[1]}x{shape[0]} (frames of different sizes)")
        if not np.isfinite(vec).all():
            raise ValueError(f"{path}: Vector pass has {int((~np.isfinite(vec)).sum())} NaN/inf values")
        if not np.any(vec):
            raise ValueError(f"{path}: Vector pass is all zeros (Blender writes zeros when motion "
                             "blur is on: turn motion blur off and render again)")
        return vec

    def _flow(self, t):
        t0 = time.perf_counter()
        path = self.files[self.start + t]
        back, _ = io.vector_pass_to_flows(self._vector(path, (self.height, self.width)))
        self._add_time("read", time.perf_counter() - t0)
        return check_flow(back, (self.height, self.width), name=path)


class ArraySource(Source):
    """Backward flows from a Python callable (the demo's analytic flows, tests)."""

    kind = "analytic"

    def __init__(self, name, height, width, n_frames, flow_fn, image_fn=None, fps=24.0):
        super().__init__()
        self.name, self.height, self.width, self.n_frames = name, height, width, n_frames
        self.flow_fn, self.image_fn, self.fps = flow_fn, image_fn, fps

    def flows(self, start=1):
        for t in range(max(1, start), self.n_frames):
            t0 = time.perf_counter()
            flow = check_flow(self.flow_fn(t), (self.height, self.width), frame=t)
            self._add_time("flow", time.perf_counter() - t0)
            yield t, flow, (self.image_fn(t) if self.image_fn else None)


def open_source(path, frames=None, flow_layout="auto", flow_order="xy", flow_negate=False,
                flow_direction=None, invert="invert", dis_preset="medium", occlusions=False):
    """Pick the reader for INPUT: a video, a .npy flow stack, a folder of .flo or of EXRs."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        has_flo = glob.glob(os.path.join(glob.escape(path), "*.flo"))
        has_exr = glob.glob(os.path.join(glob.escape(path), "*.exr"))
        if has_flo and has_exr:
            raise ValueError(f"{path}: folder holds both .flo and .exr files; keep one kind")
        if has_flo:
            return FloFolderSource(path, invert=invert, frames=frames)
        if has_exr:
            return ExrFolderSource(path, frames=frames)
        raise ValueError(f"{path}: folder has no .flo or .exr files")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return StackSource(path, layout=flow_layout, order=flow_order, negate=flow_negate,
                           direction=flow_direction, invert=invert, frames=frames)
    if ext == ".flo":
        raise ValueError(f"{path}: give the folder holding the .flo files, not one file")
    if ext == ".exr":
        raise ValueError(f"{path}: give the folder holding the EXR sequence, not one file")
    if ext in VIDEO_EXTS:
        return VideoSource(path, frames=frames, preset=dis_preset, occlusions=occlusions)
    raise ValueError(f"{path}: unsupported input type {ext or '(no extension)'!r} (a video "
                     f"{'/'.join(e[1:] for e in VIDEO_EXTS)}, a .npy flow stack, or a folder of .flo/.exr)")



def source_options(args):
    """open_source's keyword arguments from the CLI's source options (warp, compare, batch)."""
    return dict(frames=args.frames, flow_layout=args.flow_layout, flow_order=args.flow_order,
                flow_negate=args.flow_negate, flow_direction=args.flow_direction, invert=args.invert,
                dis_preset=args.dis_preset, occlusions=getattr(args, "occlusions", False))


def source_from_args(args, path=None):
    """The source the CLI's source options describe."""
    return open_source(path or args.input, **source_options(args))
