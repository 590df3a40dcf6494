"""Flow sources: everything `noisewarp warp` accepts, turned into one stream of backward flows.

A source reads a *shot*: the input frames `indices` (every `step`-th frame of the input). Its
`steps(start)` yields, for shot positions t = start .. length-1 (t >= 1), a `Step(t, flow,
image, revealed)`: the backward flow B_t on frame t's grid (where each pixel of frame t was in
frame t-1; library convention, see docs/CONVENTIONS), the RGB uint8 frame or None, and a
boolean mask of pixels revealed since frame t-1 (forward-backward consistency) or None.
Only one frame (or flow) is in memory at a time, whatever the length of the input.

Output frames are shot positions `skip` .. length-1: `--frames A:B` warps the frames before A
too (skip > 0), so the noise of a chunk is exactly the same frames of the whole shot's noise.
`conform()` fits the shot to a model: trims or holds frames (`pad`) to a frame count and crops,
pads or stretches every flow, image and mask to a size (`Fit`), rescaling the flow vectors.
"""
import collections
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
FITS = ("crop", "pad", "stretch")

Step = collections.namedtuple("Step", "t flow image revealed")


def frame_range(frames, total):
    """'A:B' or 'A:B:S' (Python slice syntax, sides optional, negatives from the end) ->
    (start, stop, step) within [0, total)."""
    if frames is None:
        return 0, total, 1
    if isinstance(frames, str):
        parts = frames.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"--frames must look like A:B or A:B:S (a Python slice), got {frames!r}")
        try:
            vals = [int(p) if p.strip() else None for p in parts]
        except ValueError:
            raise ValueError(f"--frames must look like A:B or A:B:S with integers, got {frames!r}") from None
    else:
        vals = list(frames)
    vals += [None] * (3 - len(vals))
    if vals[2] is not None and vals[2] < 1:
        raise ValueError(f"--frames {frames!r}: the step must be a positive integer")
    start, stop, step = slice(*vals).indices(total)
    if stop - start < 1:
        raise ValueError(f"frame range {frames!r} selects no frames (the input has {total})")
    return start, stop, step


def compose_backward(later, earlier):
    """B_{a->c} from B_{b->c} (`later`, on frame c's grid) and B_{a->b} (`earlier`): follow the
    first, then the second at the position reached (bilinear, edge values outside)."""
    import cv2

    h, w = later.shape[:2]
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    d = cv2.remap(earlier, jj + later[..., 0], ii + later[..., 1], cv2.INTER_LINEAR,
                  borderMode=cv2.BORDER_REPLICATE)
    return (later + d).astype(np.float32)


def carried_mask(mask, flow):
    """An earlier frame's mask seen from a later frame: True where p + B(p) (`flow`, on the later
    frame's grid) lands in a True cell of `mask` (nearest cell; outside the frame: False)."""
    h, w = flow.shape[:2]
    ii, jj = np.mgrid[0:h, 0:w]
    ci = np.floor(ii + 0.5 + flow[..., 1]).astype(np.int64)
    cj = np.floor(jj + 0.5 + flow[..., 0]).astype(np.int64)
    inside = (ci >= 0) & (ci < mask.shape[0]) & (cj >= 0) & (cj < mask.shape[1])
    return inside & mask[np.clip(ci, 0, mask.shape[0] - 1), np.clip(cj, 0, mask.shape[1] - 1)]


def occlusion_mask(backward, forward, tol=0.5):
    """Pixels of frame t whose backward flow B_t(p) is not undone by the forward flow F_{t-1}
    at p + B_t(p) (the usual forward-backward consistency check): revealed content."""
    import cv2

    h, w = backward.shape[:2]
    jj, ii = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = jj + backward[..., 0], ii + backward[..., 1]
    f = cv2.remap(forward, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = np.sum((f + backward) ** 2, axis=-1)
    mag = np.sum(f ** 2, axis=-1) + np.sum(backward ** 2, axis=-1)
    return err > 0.01 * mag + tol


def parse_size(text):
    """'720x480' (width x height) -> (720, 480)."""
    if isinstance(text, (tuple, list)):
        w, h = (int(v) for v in text)
    else:
        try:
            w, h = (int(v) for v in str(text).lower().split("x"))
        except ValueError:
            raise ValueError(f"--size must look like WIDTHxHEIGHT (e.g. 720x480), got {text!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"--size {w}x{h}: width and height must be positive")
    return w, h


class Fit:
    """Maps frame-sized arrays of the input (w_in x h_in) onto the output size (w x h).

    'crop': scale to cover, cut the middle; 'pad': scale to fit, zero borders (static bars, zero
    flow); 'stretch': scale each axis. A flow is resized with the frame and its vectors are
    multiplied by the same per-axis scale, so it describes the same motion on the new grid.
    """

    def __init__(self, in_size, out_size, mode="crop"):
        if mode not in FITS:
            raise ValueError(f"unknown --fit {mode!r} (choose from {', '.join(FITS)})")
        (wi, hi), (wo, ho) = in_size, out_size
        self.mode, self.in_size, self.out_size = mode, (wi, hi), (wo, ho)
        if mode == "stretch":
            ws, hs = wo, ho
        else:
            s = (max if mode == "crop" else min)(wo / wi, ho / hi)
            ws, hs = max(1, int(round(wi * s))), max(1, int(round(hi * s)))
            if mode == "crop":
                ws, hs = max(ws, wo), max(hs, ho)
            else:
                ws, hs = min(ws, wo), min(hs, ho)
        self.scaled = (ws, hs)
        self.scale = (ws / wi, hs / hi)
        self.offset = ((ws - wo) // 2, (hs - ho) // 2)   # crop: where the window starts; pad: minus

    @property
    def identity(self):
        return self.in_size == self.out_size

    def resize(self, a, interpolation=None):
        """Input size -> scaled size (no crop or pad yet)."""
        import cv2

        if self.scaled == self.in_size:
            return a
        if interpolation is None:
            interpolation = cv2.INTER_AREA if self.scale[0] * self.scale[1] < 1 else cv2.INTER_LINEAR
        out = cv2.resize(a, self.scaled, interpolation=interpolation)
        return out.reshape(out.shape[:2] + a.shape[2:])

    def place(self, a):
        """Scaled size -> output size: cut the middle (crop) or centre on zeros (pad)."""
        (wo, ho), (ox, oy) = self.out_size, self.offset
        if self.scaled == self.out_size:
            return a
        if self.mode == "crop":
            return np.ascontiguousarray(a[oy:oy + ho, ox:ox + wo])
        out = np.zeros((ho, wo) + a.shape[2:], a.dtype)
        out[-oy:-oy + a.shape[0], -ox:-ox + a.shape[1]] = a
        return out

    def flow_scaled(self, flow):
        """A flow at the scaled size (already resized) -> output size."""
        return self.place(np.ascontiguousarray(flow, np.float32))

    def flow(self, flow):
        """A flow at the input size -> output size, vectors rescaled."""
        if self.identity:
            return flow
        f = self.resize(np.ascontiguousarray(flow, np.float32))
        f = f * np.array(self.scale, np.float32)
        return self.flow_scaled(f)

    def image(self, img):
        if img is None or self.identity:
            return img
        return self.place(self.resize(img))

    def mask(self, m):
        if m is None or self.identity:
            return m
        import cv2

        return self.place(self.resize(m.astype(np.float32), cv2.INTER_AREA) > 0.5)


class Source:
    """Base class: subclasses set name, in_height/in_width and call _select(total, frames);
    flow sources implement _raw_backward(k) (the backward flow linking input frames k-1 and k),
    optionally _raw_forward(k) and _image(k); videos override _pairs."""

    name = ""
    fps = 24.0
    kind = ""
    has_images = False
    has_revealed = False

    def __init__(self):
        self.timings = {}   # stage -> seconds accumulated (read, flow)
        self.warnings = []  # ambiguous inputs read one way: the CLI prints these
        self.notes = []     # what was done to the input (trimmed, padded, prefix warped)
        self.fit = None
        self.want_revealed = False
        self.pad = 0
        self._masks = None  # revealed masks given by the user (--revealed), one per input flow

    def use_revealed(self, path):
        """Read the revealed masks from `path`: [N-1, H, W] bool or 0/1, mask k-1 for the pixels of
        input frame k not visible in frame k-1 (they replace any the source would compute)."""
        path = os.fspath(path)
        masks = io.load_npy(path, mmap_mode="r")
        want = (self.total - 1, self.in_height, self.in_width)
        if masks.shape != want:
            raise ValueError(f"{path}: revealed masks must be [N-1, H, W] = {list(want)} for {self.name} "
                             f"({self.total} frames of {self.in_width}x{self.in_height}), got {list(masks.shape)}")
        if masks.dtype != bool and (masks.dtype.kind not in "iu" or masks.max(initial=0) > 1 or masks.min(initial=0) < 0):
            raise ValueError(f"{path}: revealed masks must be bool or 0/1 integers, got dtype {masks.dtype}")
        if self.step > 1 and not hasattr(self, "_raw_backward"):
            raise ValueError(f"{path}: revealed masks with a frame step (--frames A:B:{self.step}) need the flows "
                             f"between consecutive frames, which {self.kind} input does not give")
        self._masks = masks
        self.has_revealed = True
        return self

    # -------------------------------------------------------------- the shot
    def _select(self, total, frames=None, fresh_start=False):
        self.total = total
        start, stop, step = frame_range(frames, total)
        origin = start if fresh_start else start % step
        self.frames_arg = frames
        self.step = step
        self.indices = list(range(origin, stop, step))
        self.skip = (start - origin) // step
        self.height, self.width = self.in_height, self.in_width
        if self.skip:
            self.notes.append(f"warping input frames {origin}..{start - step} first, so the noise of frames "
                              f"{start}.. equals the whole shot's (chunks join exactly)")

    @property
    def length(self):
        """Shot positions the warper steps through (prefix, output frames, held frames)."""
        return len(self.indices) + self.pad

    @property
    def n_frames(self):
        """Output frames."""
        return self.length - self.skip

    @property
    def start(self):
        return self.indices[self.skip]

    def frame_numbers(self):
        """The input frame number of each output frame (held frames continue the count)."""
        last, s = self.indices[-1], self.step
        return self.indices[self.skip:] + [last + s * (k + 1) for k in range(self.pad)]

    def conform(self, num_frames=None, pad=False, size=None, fit="crop", rule=None):
        """Trim or hold frames to `num_frames` output frames, checking `rule` = (m, r): the count
        must be m·k + r; crop/pad/stretch to `size` (w, h). Raises one clear ValueError."""
        n = self.n_frames
        if num_frames is not None:
            num_frames = int(num_frames)
            if num_frames < 1:
                raise ValueError(f"--num-frames must be positive, got {num_frames}")
            if rule and num_frames % rule[0] != rule[1] % rule[0]:
                lo = (num_frames - rule[1]) // rule[0] * rule[0] + rule[1]
                raise ValueError(f"--num-frames {num_frames} breaks the rule {rule[0]}k+{rule[1]} "
                                 f"(use {lo} or {lo + rule[0]})")
            if num_frames < n:
                del self.indices[self.skip + num_frames:]
                self.notes.append(f"using {num_frames} of the {n} frames selected (--num-frames); "
                                  "--frames A:B picks which")
            elif num_frames > n:
                if not pad:
                    fewer = n if not rule else (n - rule[1]) // rule[0] * rule[0] + rule[1]
                    raise ValueError(f"{self.name}: {n} frames, {num_frames} needed: pass --pad to hold the "
                                     f"last frame for {num_frames - n} more"
                                     + (f", or --num-frames {fewer} to use what there is" if fewer >= 1 else ""))
                self.pad = num_frames - n
                self.notes.append(f"holding the last frame for {self.pad} more frames (--pad)")
        elif rule and n % rule[0] != rule[1] % rule[0]:
            lo = (n - rule[1]) // rule[0] * rule[0] + rule[1]
            hint = f"--num-frames {lo} to trim" if lo >= 1 else ""
            raise ValueError(f"{self.name}: {n} frames do not fit the rule {rule[0]}k+{rule[1]}: pass "
                             f"{hint}{' or ' if hint else ''}--num-frames {lo + rule[0]} --pad to hold the last frame")
        if size is not None:
            w, h = parse_size(size)
            self.fit = Fit((self.in_width, self.in_height), (w, h), fit)
            self.width, self.height = w, h
            if not self.fit.identity:
                self.notes.append(f"{fit} {self.in_width}x{self.in_height} -> {w}x{h} "
                                  "(flows resized and their vectors rescaled)")
        return self

    # -------------------------------------------------------------- streaming
    def steps(self, start=1):
        """Step(t, flow, image, revealed) for shot positions t = max(1, start) .. length-1."""
        start = max(1, int(start))
        n_in = len(self.indices)
        last_image = None
        if start < n_in:
            for t, flow, image, revealed in self._pairs(start):
                if self.fit is not None:
                    if not getattr(self, "_fits_itself", False):
                        flow, image, revealed = self.fit.flow(flow), self.fit.image(image), self.fit.mask(revealed)
                last_image = image
                yield Step(t, flow, image, revealed)
        for t in range(max(start, n_in), self.length):   # held frames: nothing moves
            if last_image is None and self.has_images:
                last_image = self.image_at(n_in - 1)
            zero = np.zeros((self.height, self.width, 2), np.float32)
            mask = np.zeros((self.height, self.width), bool) if self.want_revealed and self.has_revealed else None
            yield Step(t, zero, last_image, mask)

    def flows(self, start=1):
        """(t, B_t, image_t) for t = start .. length-1 (steps without the masks)."""
        for s in self.steps(start):
            yield s.t, s.flow, s.image

    def _pairs(self, start):
        """(t, backward flow, image, revealed) at the input size for t = start .. len(indices)-1,
        composing raw flows when the step skips frames."""
        masks = self.want_revealed and self.has_revealed
        for t in range(start, len(self.indices)):
            a, c = self.indices[t - 1], self.indices[t]
            t0 = time.perf_counter()
            flow = self._raw_backward(c)
            revealed = self._revealed(c, flow) if masks else None
            for k in range(c - 1, a, -1):      # a frame step: revealed on the way counts too
                earlier = self._raw_backward(k)
                if masks:
                    revealed = revealed | carried_mask(self._revealed(k, earlier), flow)
                flow = compose_backward(flow, earlier)
            self._add_time("read", time.perf_counter() - t0)
            yield t, flow, self._image(c), revealed

    def _revealed(self, k, backward):
        """The pixels of input frame k not visible in frame k-1 (`backward` links them): the
        given masks, else the source's own (`_raw_revealed`)."""
        if self._masks is not None:
            return np.asarray(self._masks[k - 1]).astype(bool)
        return self._raw_revealed(k, backward)

    def _raw_revealed(self, k, backward):
        return None

    def _image(self, k):
        return None

    def image_at(self, t):
        """The (fitted) RGB frame at shot position t, or None."""
        if not self.has_images:
            return None
        k = self.indices[min(t, len(self.indices) - 1)]
        img = self._image(k)
        return self.fit.image(img) if self.fit is not None else img

    def images(self):
        """The (fitted) RGB frame of each output frame, one at a time (None without images)."""
        for t in range(self.skip, self.length):
            yield self.image_at(t)

    def _add_time(self, stage, seconds):
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def describe(self):
        return f"{self.kind} {self.name}: {self.n_frames} frames of {self.width}x{self.height}"


class VideoSource(Source):
    """A video file; backward flow B_t = DIS(frame t -> frame t-1), estimated on grey frames
    (already resized when the output size differs, so DIS runs at the size that is used).

    Computing the backward flow directly (instead of inverting a forward flow) gives a flow on
    the grid the warpers need. With `occlusions=True` the forward flow is estimated too, and
    pixels whose forward/backward flows disagree are the step's `revealed` mask.
    """

    kind = "video"
    has_images = True
    has_revealed = True
    _fits_itself = True

    def __init__(self, path, frames=None, preset="medium", occlusions=False, fresh_start=False):
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
        self.in_height, self.in_width = h, w
        self._select(total, frames, fresh_start)
        self.fps /= self.step
        if preset not in DIS_PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r} ({', '.join(DIS_PRESETS)})")
        self.preset = preset
        self.want_revealed = bool(occlusions)

    def _open_at(self, index):
        """A capture positioned at frame `index`, by decoding from the start (seeking is not
        frame-exact for every codec, and resume must give identical bytes)."""
        import cv2

        cap = cv2.VideoCapture(self.path)
        for _ in range(index):
            if not cap.grab():
                raise ValueError(f"{self.path}: video ended early while seeking to frame {index}")
        return cap

    def _read(self, cap, k):
        """Input frame k (the capture is positioned on it): fitted RGB and grey at the scaled size."""
        import cv2

        t0 = time.perf_counter()
        ok, bgr = cap.read()
        if not ok or bgr is None:
            raise ValueError(f"{self.path}: cannot decode frame {k}")
        if bgr.shape[:2] != (self.in_height, self.in_width):
            raise ValueError(f"{self.path}: frame {k} is {bgr.shape[1]}x{bgr.shape[0]}, "
                             f"frame 0 was {self.in_width}x{self.in_height} (frames of different sizes)")
        if self.fit is not None:
            bgr = self.fit.resize(bgr)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        self._add_time("read", time.perf_counter() - t0)
        return rgb, grey

    def _pairs(self, start):
        import cv2

        dis = cv2.DISOpticalFlow_create(DIS_PRESETS[self.preset])
        place = self.fit.place if self.fit is not None else (lambda a: a)
        prev_k = self.indices[start - 1]
        cap = self._open_at(prev_k)
        try:
            _, prev = self._read(cap, prev_k)
            for t in range(start, len(self.indices)):
                k = self.indices[t]
                for j in range(prev_k + 1, k):
                    if not cap.grab():
                        raise ValueError(f"{self.path}: cannot decode frame {j}")
                rgb, grey = self._read(cap, k)
                t0 = time.perf_counter()
                back = dis.calc(grey, prev, None)
                revealed = None
                if self.want_revealed and self._masks is not None:
                    revealed = self.fit.mask(self._revealed(k, None)) if self.fit is not None else self._revealed(k, None)
                elif self.want_revealed:
                    revealed = place(occlusion_mask(back, dis.calc(prev, grey, None)))
                self._add_time("flow", time.perf_counter() - t0)
                back = check_flow(place(back), (self.height, self.width), frame=k,
                                  name=f"{self.path}: estimated flow")
                prev, prev_k = grey, k
                yield t, back, place(rgb), revealed
        finally:
            cap.release()

    def images(self):
        """Decoded once more, in order (cheap next to the flow): the fitted output frames."""
        place = self.fit.place if self.fit is not None else (lambda a: a)
        out = self.indices[self.skip:]
        cap = self._open_at(out[0])
        try:
            prev_k, rgb = out[0] - 1, None
            for k in out:
                for j in range(prev_k + 1, k):
                    cap.grab()
                rgb = place(self._read(cap, k)[0])
                prev_k = k
                yield rgb
            for _ in range(self.pad):
                yield rgb
        finally:
            cap.release()

    def image_at(self, t):
        k = self.indices[min(t, len(self.indices) - 1)]
        cap = self._open_at(k)
        try:
            rgb = self._read(cap, k)[0]
        finally:
            cap.release()
        return self.fit.place(rgb) if self.fit is not None else rgb


class StackSource(Source):
    """A .npy stack of T-1 flows (read one flow at a time)."""

    kind = "flow stack"

    def __init__(self, path, layout="auto", order="xy", negate=False, direction=None,
                 invert="invert", frames=None, fresh_start=False):
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
        self.has_revealed = direction == "forward" and invert == "invert"   # the inversion's holes
        self._holes = {}
        self.stack = stack if stack.ndim == 4 else stack[None]
        if stack.ndim == 4 and stack.flags.c_contiguous:
            self.stack = io.NpyFrames(self.path, mode="r")   # plain reads: no mapped pages pile up
        self.in_height, self.in_width = probe.shape[1:3]
        self._select(len(self.stack) + 1, frames, fresh_start)

    def _raw_backward(self, k):
        """Flow k-1 of the stack links input frames k-1 and k."""
        flow = io.flows_from_stack(np.asarray(self.stack[k - 1])[None], self.layout, self.order, self.negate)[0]
        flow = check_flow(flow, (self.in_height, self.in_width), frame=k - 1, name=f"{self.path}: flow")
        if self.direction == "forward":
            flow, self._holes = _inverted(flow, self.invert, k)
        return flow

    def _raw_revealed(self, k, backward):
        return self._holes.get(k)


def _inverted(forward, mode, k):
    """(backward flow, {k: holes}) of a forward flow linking input frames k-1 and k: holes are
    the pixels of frame k nothing lands on (disoccluded, or entering the frame), known only to
    a real inversion."""
    if mode != "invert":
        return io.backward_from_forward(forward, mode), {}
    back, holes = io.invert_with_holes(forward)
    return back, {k: holes}


def _sorted_files(folder, ext):
    files = sorted(glob.glob(os.path.join(glob.escape(folder), "*" + ext)))
    if not files:
        raise ValueError(f"{folder}: no *{ext} files in this folder")
    return files


class FloFolderSource(Source):
    """A folder of Middlebury .flo files (forward flows F_0..F_{N-1}, sorted by name): N+1 frames."""

    kind = ".flo folder"

    def __init__(self, folder, invert="invert", frames=None, fresh_start=False):
        super().__init__()
        self.path = self.name = os.fspath(folder)
        self.files = _sorted_files(self.path, ".flo")
        first = io.read_flo(self.files[0])
        self.in_height, self.in_width = first.shape[:2]
        self.invert = invert
        self.has_revealed = invert == "invert"      # the inversion's holes
        self._holes = {}
        self._select(len(self.files) + 1, frames, fresh_start)

    def _raw_backward(self, k):
        path = self.files[k - 1]
        fwd = io.read_flo(path)
        if fwd.shape[:2] != (self.in_height, self.in_width):
            raise ValueError(f"{path}: flow is {fwd.shape[1]}x{fwd.shape[0]}, the first file is "
                             f"{self.in_width}x{self.in_height} (frames of different sizes)")
        fwd = check_flow(fwd, (self.in_height, self.in_width), name=path)
        back, self._holes = _inverted(fwd, self.invert, k)
        return back

    def _raw_revealed(self, k, backward):
        return self._holes.get(k)


class ExrFolderSource(Source):
    """A folder of Blender EXRs with a Vector pass, one per frame: B_t from frame t's XY; the
    revealed mask from B_t and frame t-1's forward flow (its ZW)."""

    kind = "Blender EXR folder"
    has_revealed = True

    def __init__(self, folder, frames=None, fresh_start=False, occlusions=False):
        super().__init__()
        self.path = self.name = os.fspath(folder)
        self.files = _sorted_files(self.path, ".exr")
        vec = self._vector(self.files[0], None)
        self.in_height, self.in_width = vec.shape[:2]
        self._select(len(self.files), frames, fresh_start)
        self.want_revealed = bool(occlusions)

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

    def _flows_of(self, k):
        path = self.files[k]
        back, fwd = io.vector_pass_to_flows(self._vector(path, (self.in_height, self.in_width)))
        shape = (self.in_height, self.in_width)
        return check_flow(back, shape, name=path), check_flow(fwd, shape, name=path)

    def _raw_backward(self, k):
        return self._flows_of(k)[0]

    def _raw_forward(self, k):
        """Forward flow from input frame k-1 to k: frame k-1's ZW."""
        return self._flows_of(k - 1)[1]

    def _raw_revealed(self, k, backward):
        """Forward-backward consistency of frame k's XY against frame k-1's ZW."""
        return occlusion_mask(backward, self._raw_forward(k))


class ArraySource(Source):
    """Backward flows from a Python callable (the demo's analytic flows, tests)."""

    kind = "analytic"

    def __init__(self, name, height, width, n_frames, flow_fn, image_fn=None, fps=24.0, frames=None,
                 fresh_start=False, revealed_fn=None):
        super().__init__()
        self.name, self.in_height, self.in_width = name, height, width
        self.flow_fn, self.image_fn, self.fps = flow_fn, image_fn, fps
        self.revealed_fn = revealed_fn
        self.has_images = image_fn is not None
        self.has_revealed = self.want_revealed = revealed_fn is not None
        self._select(int(n_frames), frames, fresh_start)

    def _raw_backward(self, k):
        t0 = time.perf_counter()
        flow = check_flow(self.flow_fn(k), (self.in_height, self.in_width), frame=k)
        self._add_time("flow", time.perf_counter() - t0)
        return flow

    def _image(self, k):
        return self.image_fn(k) if self.image_fn else None

    def _raw_revealed(self, k, backward):
        return np.asarray(self.revealed_fn(k), bool) if self.revealed_fn else None


def open_source(path, frames=None, flow_layout="auto", flow_order="xy", flow_negate=False,
                flow_direction=None, invert="invert", dis_preset="medium", occlusions=True,
                fresh_start=False, revealed=None):
    """Pick the reader for INPUT: a video, a .npy flow stack, a folder of .flo or of EXRs;
    `revealed`: a file of revealed masks to use instead of the source's own."""
    src = _open(path, frames, flow_layout, flow_order, flow_negate, flow_direction, invert, dis_preset,
                occlusions, fresh_start)
    if revealed is not None:
        src.use_revealed(revealed)
    src.want_revealed = bool(occlusions) and src.has_revealed
    return src


def _open(path, frames, flow_layout, flow_order, flow_negate, flow_direction, invert, dis_preset,
          occlusions, fresh_start):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or folder")
    if os.path.isdir(path):
        has_flo = glob.glob(os.path.join(glob.escape(path), "*.flo"))
        has_exr = glob.glob(os.path.join(glob.escape(path), "*.exr"))
        if has_flo and has_exr:
            raise ValueError(f"{path}: folder holds both .flo and .exr files; keep one kind")
        if has_flo:
            return FloFolderSource(path, invert=invert, frames=frames, fresh_start=fresh_start)
        if has_exr:
            return ExrFolderSource(path, frames=frames, fresh_start=fresh_start, occlusions=occlusions)
        raise ValueError(f"{path}: folder has no .flo or .exr files")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        return StackSource(path, layout=flow_layout, order=flow_order, negate=flow_negate,
                           direction=flow_direction, invert=invert, frames=frames, fresh_start=fresh_start)
    if ext == ".flo":
        raise ValueError(f"{path}: give the folder holding the .flo files, not one file")
    if ext == ".exr":
        raise ValueError(f"{path}: give the folder holding the EXR sequence, not one file")
    if ext in VIDEO_EXTS:
        return VideoSource(path, frames=frames, preset=dis_preset, occlusions=occlusions, fresh_start=fresh_start)
    raise ValueError(f"{path}: unsupported input type {ext or '(no extension)'!r} (a video "
                     f"{'/'.join(e[1:] for e in VIDEO_EXTS)}, a .npy flow stack, or a folder of .flo/.exr)")


def source_options(args):
    """open_source's keyword arguments from the CLI's source options (warp, compare, batch)."""
    return dict(frames=args.frames, flow_layout=args.flow_layout, flow_order=args.flow_order,
                flow_negate=args.flow_negate, flow_direction=args.flow_direction, invert=args.invert,
                dis_preset=args.dis_preset, occlusions=getattr(args, "occlusions", True),
                fresh_start=getattr(args, "fresh_start", False), revealed=getattr(args, "revealed", None))


def source_from_args(args, path=None):
    """The source the CLI's source options describe."""
    return open_source(path or args.input, **source_options(args))
