"""The `warp` job: stream flows from a source through a NoiseWarper into an output folder.

One frame at a time: memory does not grow with the video length. noise.npy is written frame
by frame under a temporary name and renamed at the end; every other file is written
atomically. The warper's state is checkpointed (every 2 s by default) only once every output
of the frames it has stepped is on disk, so an interrupted run continues with `resume=True`
and produces the same bytes as an uninterrupted one. Before anything starts, the memory, disk
and time the run needs are estimated, and a run that cannot fit is refused with its cost.
"""
import json
import os
import shutil
import sys
import time

import numpy as np

from . import io, models

STATE_DIR = ".noisewarp"
FORMATS = ("npy", "exr", "png", "mp4")
AUTO_CHECKPOINT_S = 2.0
CHECKPOINT_SHARE = 0.05      # auto checkpoints take at most this share of the run's time

# Cost of one step per state pixel (H·W·S²): bytes of working memory (fixed + per channel) and
# CPU nanoseconds (fixed + per channel), measured on a 2-core x86-64 (Taichi CPU backend,
# 256x384 and 512x768, 1 and 4 channels); benchmarks/bench_estimate.py prints the estimate next
# to a real run's peak memory and time. gp costs per Fourier feature instead.
METHOD_COST = {
    "particle": (100, 30, 250, 100), "grid": (200, 25, 600, 150), "upsample": (255, 10, 4000, 500),
    "gp": (100, 30, 0, 0), "nearest": (80, 30, 100, 40), "bilinear": (70, 10, 100, 60),
    "fixed": (70, 10, 1, 1), "resample": (80, 15, 200, 100), "flowmap": (800, 60, 10000, 600),
}
FLOWMAP_STATE = (80, 8)      # bytes per state pixel a flow map adds to its noise (fixed, per channel)
GP_NS_PER_FEATURE = 40
BASE_MEMORY = 150e6          # Python, NumPy, OpenCV, Taichi and its compiled kernels
ESTIMATE_SHOWN_ABOVE = dict(memory=2e9, seconds=600)
MEMORY_SHARE = 0.9           # of the memory available now, what one run may take by default


class OptionsDiffer(ValueError):
    """An output folder holds a run made with other options."""


def parse_formats(text):
    """'npy,exr' -> ['npy', 'exr'] (npy is always written)."""
    items = [f.strip().lower() for f in (text or "npy").split(",") if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown output format(s) {', '.join(bad)} (choose from {', '.join(FORMATS)})")
    return ["npy"] + [f for f in FORMATS[1:] if f in items]


def parse_memory(text):
    """'16G', '800M', '2.5GB' or bytes -> bytes."""
    if text is None:
        return None
    t = str(text).strip().upper().rstrip("B")
    mult = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(t[-1:], 1)
    try:
        v = float(t[:-1] if mult != 1 else t) * mult
    except ValueError:
        raise ValueError(f"--max-memory must look like 16G or 800M, got {text!r}") from None
    if v <= 0:
        raise ValueError(f"--max-memory must be positive, got {text!r}")
    return v


def options_from_args(args):
    """(warp_to_folder keyword arguments, Source.conform keyword arguments) from parsed `warp`
    or `batch` arguments; a `--model` preset fills every option the user did not give."""
    m = models.preset(getattr(args, "model", None))

    def pick(name, default=None):
        v = getattr(args, name, None)
        if v is not None:
            return v
        if m is not None and name in m:
            return m[name]
        return models.DEFAULTS.get(name, default)

    tf = int(pick("temporal_factor"))
    opts = dict(method=args.method, channels=pick("channels"), seed=args.seed,
                latent_factor=pick("latent_factor"), temporal_factor=tf, supersample=args.supersample,
                degrade=args.degrade, degrade_mask=args.degrade_mask, layout=pick("layout"),
                formats=parse_formats(args.format), dtype=pick("dtype"), backend=args.backend,
                resume=getattr(args, "resume", False), force=getattr(args, "force", False),
                progress=not args.quiet, verbose=getattr(args, "verbose", False),
                checkpoint_every=args.checkpoint_every, occlusions=args.occlusions,
                save_flows=args.save_flows, model=getattr(args, "model", None),
                max_memory=parse_memory(getattr(args, "max_memory", None)),
                warper_options=flowmap_options(args))
    size = pick("size")
    shape = dict(num_frames=pick("num_frames"), pad=bool(getattr(args, "pad", False)),
                 size=size, fit=getattr(args, "fit", None) or "crop",
                 rule=(tf, 1) if tf > 1 else None)
    return opts, shape


def flowmap_options(args):
    """The warper options of `--method flowmap` (--depth, --reanchor; refused with other methods)."""
    given = {k: getattr(args, k, None) for k in ("depth", "reanchor")}
    given = {k: v for k, v in given.items() if v is not None}
    if args.method != "flowmap":
        if given:
            raise ValueError(f"--{next(iter(given))} is an option of --method flowmap (this run uses {args.method})")
        return None
    return given


def load_mask(path, in_shape, out_shape):
    """A degradation mask from .npy or an image, values in [0, 1], at input or output size."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    if path.lower().endswith(".npy"):
        mask = io.load_npy(path)
        if mask.dtype.kind not in "fiub":
            raise ValueError(f"{path}: a mask must be numeric, got dtype {mask.dtype}")
        mask = mask.astype(np.float32)
    else:
        import cv2

        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: not a readable image")
        if img.ndim == 3:
            img = img[..., 0]
        scale = 65535.0 if img.dtype == np.uint16 else (255.0 if img.dtype == np.uint8 else 1.0)
        mask = img.astype(np.float32) / scale
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape == tuple(in_shape) and tuple(in_shape) != tuple(out_shape):
        f = in_shape[0] // out_shape[0]
        mask = mask.reshape(out_shape[0], f, out_shape[1], f).mean(axis=(1, 3))
    if mask.shape != tuple(out_shape):
        raise ValueError(f"{path}: mask is {mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]}, "
                         f"expected {out_shape[1]}x{out_shape[0]} (output) or {in_shape[1]}x{in_shape[0]} (input)")
    if not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"{path}: mask values must be finite and within [0, 1]")
    return mask


# ----------------------------------------------------------------------------- cost estimate
def _gb(b):
    return f"{b / 1e9:.1f} GB" if b >= 1e8 else f"{b / 1e6:.0f} MB"


def _duration(s):
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")


def estimate(height, width, channels=4, method="particle", supersample=1, latent_factor=1, steps=1,
             out_frames=1, dtype="float32", formats=("npy",), gp_features=3000, save_flows=False,
             masks=False):
    """What a run costs: peak memory, checkpoint size, disk and CPU time (bytes, seconds)."""
    px = height * width * supersample ** 2
    a, b, ta, tb = METHOD_COST.get(method, METHOD_COST["particle"])
    state = px * channels * 4 if method != "gp" else px * 8
    if method == "flowmap":     # + corners, anchors, the last flow, and kept sub-cells of re-anchored pixels
        state += px * (FLOWMAP_STATE[0] + FLOWMAP_STATE[1] * channels)
    memory = BASE_MEMORY + px * (a + b * channels) + 2 * height * width * 8
    step_s = px * (ta + tb * channels) * 1e-9
    if method == "gp":
        step_s = px * channels * gp_features * GP_NS_PER_FEATURE * 1e-9
    frame = (height // latent_factor) * (width // latent_factor) * channels
    per_frame = frame * (2 if dtype == "float16" else 4)
    disk = out_frames * per_frame + 2 * state
    disk += out_frames * frame * 4 * ("exr" in formats) + out_frames * frame * ("png" in formats)
    disk += (steps * height * width * (8 + bool(masks))) if save_flows else 0
    return dict(memory=memory, state=state, disk=disk, seconds_per_step=step_s, seconds=steps * step_s)


def _available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _free_disk(path):
    """Free bytes where `path` will be, or None on a pseudo file system (no capacity to speak of)."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    usage = shutil.disk_usage(p)
    return usage.free if usage.total else None


def check_cost(cost, outdir, max_memory=None, what="", log=None, show=False):
    """Refuse a run whose memory or disk need exceeds what there is; print the estimate when it
    is large (or asked for)."""
    line = (f"about {_gb(cost['memory'])} of memory, ~{cost['seconds_per_step']:.2g} s per frame "
            f"(~{_duration(cost['seconds'])} in all on a 2-core CPU), {_gb(cost['disk'])} on disk "
            f"(checkpoints of {_gb(cost['state'])})")
    limit = max_memory
    if limit is None:   # leave a tenth for the system and the other processes
        avail = _available_memory()
        limit = None if avail is None else MEMORY_SHARE * avail
    if limit is not None and cost["memory"] > limit:
        raise ValueError(f"{what}this run needs {line}, but {'--max-memory is' if max_memory else 'this machine has'} "
                         f"{_gb(limit)}{'' if max_memory else ' to spare (90 % of what is available)'}: lower "
                         "--supersample or the size, or pass --max-memory to allow more")
    free = _free_disk(outdir)
    if free is not None and cost["disk"] > free:
        raise ValueError(f"{what}this run needs {line}, but {outdir} has {_gb(free)} free")
    if log is not None and (show or cost["memory"] > ESTIMATE_SHOWN_ABOVE["memory"]
                            or cost["seconds"] > ESTIMATE_SHOWN_ABOVE["seconds"]):
        print(f"noisewarp: estimate: {line}", file=log)


# ----------------------------------------------------------------------------- the job
def _artefacts(outdir):
    return [os.path.join(outdir, n) for n in ("noise.npy", "flows.npy", "revealed.npy", "exr", "png", "preview.mp4", "frames.png",
                                              "spacetime.png", "run.json", STATE_DIR)]


def _remove(paths):
    for p in paths:
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            try:
                os.remove(p)
            except OSError:
                pass


def warp_to_folder(source, outdir, method="particle", channels=4, seed=0, latent_factor=1,
                   supersample=1, degrade=0.0, degrade_mask=None, formats=("npy",), dtype="float32",
                   backend="auto", resume=False, force=False, progress=True, verbose=False,
                   checkpoint_every=0, occlusions=True, save_flows=False, log=None, warper_options=None,
                   temporal_factor=1, layout="thwc", model=None, max_memory=None):
    """Run the whole job; return a summary dict (also written to OUTDIR/run.json).

    The source's output frames (see sources.Source) become noise frames; with
    temporal_factor k only frames 0, k, 2k, ... are kept (a causal video VAE's latent frames:
    the first alone, then one per group of k), each an exact warped frame. With `occlusions`
    the source's revealed masks (content not visible in the previous frame) go to every step:
    fresh noise there, a new reference region for 'flowmap'.
    """
    import core2d

    log = log or sys.stderr
    outdir = os.fspath(outdir)
    formats = list(formats)
    H, W = source.height, source.width
    F, tf = int(latent_factor), int(temporal_factor)
    n_out, L, skip = source.n_frames, source.length, source.skip
    if F < 1 or int(supersample) < 1 or tf < 1:
        raise ValueError("--latent-factor, --temporal-factor and --supersample must be positive integers")
    if int(checkpoint_every) < 0:
        raise ValueError(f"--checkpoint-every must be 0 (every 2 s) or a number of frames, got {checkpoint_every}")
    if H % F or W % F:
        raise ValueError(f"{source.name}: frames are {W}x{H}, not divisible by --latent-factor {F} "
                         f"(crop or resize the input to a multiple of {F}, e.g. with --size)")
    if (n_out - 1) % tf:
        lo = (n_out - 1) // tf * tf + 1
        raise ValueError(f"{source.name}: {n_out} frames do not fit --temporal-factor {tf} (the count must be "
                         f"{tf}k+1): pass --num-frames {lo} to trim, or --num-frames {lo + tf} --pad")
    models.check_size(model, W, H)
    source.want_revealed = bool(occlusions) and getattr(source, "has_revealed", False)
    if method not in core2d.METHODS:
        raise ValueError(f"unknown method {method!r} (choose from {', '.join(core2d.METHODS)})")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"--dtype must be float32 or float16, not {dtype!r}")
    if int(channels) < 1:
        raise ValueError("--channels must be at least 1")
    io.layout_shape(layout, 1, 1, 1, 1)                       # validates the layout name
    out_shape = (H // F, W // F)
    C = int(channels)
    T = models.latent_frames(n_out, tf)                        # noise frames written
    alpha = load_mask(degrade_mask, (H, W), out_shape) if degrade_mask else float(degrade)
    if np.ndim(alpha) == 0 and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--degrade must be within [0, 1], got {alpha}")
    numbers = source.frame_numbers()
    config = dict(input=os.path.abspath(source.name) if os.path.exists(source.name) else source.name,
                  frames=[numbers[0], numbers[-1] + 1], frames_arg=getattr(source, "frames_arg", None),
                  step=getattr(source, "step", 1), skip=skip, pad=getattr(source, "pad", 0),
                  size=[W, H], fit=source.fit.mode if getattr(source, "fit", None) else None,
                  method=method, channels=C, seed=int(seed), latent_factor=F, temporal_factor=tf,
                  supersample=int(supersample), degrade=alpha if np.ndim(alpha) == 0 else os.path.abspath(degrade_mask),
                  dtype=dtype, layout=layout, model=model, formats=formats, occlusions=source.want_revealed,
                  save_flows=bool(save_flows), warper_options=warper_options or {})
    cost = estimate(H, W, C, method, int(supersample), F, steps=max(1, L - 1), out_frames=T, dtype=dtype,
                    formats=formats, save_flows=save_flows, masks=source.want_revealed,
                    gp_features=(warper_options or {}).get("gp_features", 3000))
    check_cost(cost, outdir, max_memory, what=f"{source.name}: ", log=log if progress else None, show=verbose)
    kept_numbers = numbers[::tf]

    state_dir = os.path.join(outdir, STATE_DIR)
    progress_path = os.path.join(state_dir, "progress.json")
    state_path = os.path.join(state_dir, "state.npz")
    carry_path = os.path.join(state_dir, "flows_since_kept.npy")
    carry_masks_path = os.path.join(state_dir, "revealed_since_kept.npy")
    partial = os.path.join(outdir, ".noise.partial.npy")
    flows_partial = os.path.join(outdir, ".flows.partial.npy")
    revealed_partial = os.path.join(outdir, ".revealed.partial.npy")
    final = os.path.join(outdir, "noise.npy")

    prior = None
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise ValueError(f"{outdir}: exists and is not a folder")
    if os.path.isdir(outdir) and os.listdir(outdir):
        if resume:
            if os.path.isfile(progress_path):
                with open(progress_path) as f:
                    prior = json.load(f)
                if prior["config"] != json.loads(json.dumps(config)):
                    diff = [k for k in config if prior["config"].get(k) != json.loads(json.dumps(config[k]))]
                    what = "complete run" if prior.get("complete") else "interrupted run"
                    raise OptionsDiffer(f"{outdir}: cannot resume: options differ from the {what} "
                                        f"({', '.join(diff)}); use --force to start over")
                if prior.get("complete") and os.path.isfile(final):
                    if progress:
                        print(f"noisewarp: {outdir} is already complete ({T} frames)", file=log)
                    with open(os.path.join(outdir, "run.json")) as f:
                        return dict(json.load(f), status="already complete")
        elif force:
            _remove(_artefacts(outdir) + [partial, flows_partial, revealed_partial])
        else:
            raise ValueError(f"{outdir}: output folder exists and is not empty "
                             "(use --force to overwrite or --resume to continue)")
    created = not os.path.isdir(outdir)
    os.makedirs(state_dir, exist_ok=True)
    for fmt in ("exr", "png"):
        if fmt in formats:
            os.makedirs(os.path.join(outdir, fmt), exist_ok=True)
    if progress:
        for note in getattr(source, "notes", ()):
            print(f"noisewarp: {note}", file=log)

    _init_taichi_quietly()
    np_dtype = np.float16 if dtype == "float16" else np.float32
    timings = {"warp": 0.0, "write": 0.0, "checkpoint": 0.0}
    t_start = time.perf_counter()
    done = 0
    ok = interrupted = False
    try:
        w = None
        carry, carry_masks = [], []      # backward flows and revealed masks since the last kept frame (save_flows)
        if prior is not None and os.path.isfile(state_path) and os.path.isfile(partial):
            w = core2d.NoiseWarper.load(state_path)
            done = int(w.frame) + 1
            noise = io.NoiseFrames(partial, layout=layout, mode="r+")
            if noise.shape != (T,) + out_shape + (C,) or noise.dtype != np_dtype:
                raise ValueError(f"{partial}: partial output does not match the run's shape; use --force")
            if os.path.isfile(carry_path):
                carry = list(np.load(carry_path))
            if os.path.isfile(carry_masks_path):
                carry_masks = list(np.load(carry_masks_path))
        else:
            w = core2d.NoiseWarper(H, W, channels=C, method=method, seed=int(seed), backend=backend,
                                   supersample=int(supersample), latent_factor=F, degrade=alpha,
                                   dtype=dtype, **(warper_options or {}))
            noise = io.NoiseFrames(partial, layout=layout, mode="w", dtype=np_dtype, frames=T,
                                   height=out_shape[0], width=out_shape[1], channels=C)
        flows_out = revealed_out = None
        if save_flows and T > 1:
            mode = "r+" if (done and os.path.isfile(flows_partial)) else "w"
            flows_out = io.NpyFrames(flows_partial, mode=mode, dtype=np.float32, shape=(T - 1, H, W, 2))
            if source.want_revealed:
                mode = "r+" if (done and os.path.isfile(revealed_partial)) else "w"
                revealed_out = io.NpyFrames(revealed_partial, mode=mode, dtype=np.uint8, shape=(T - 1, H, W))

        def emit(t, frame):
            """Shot position t's frame, if it is an output frame that is kept."""
            o = t - skip
            if o < 0 or o % tf:
                return
            j = o // tf
            t0 = time.perf_counter()
            noise[j] = frame
            stem = f"noise_{kept_numbers[j] + 1:04d}"   # named by the input frame it belongs to
            if "exr" in formats:
                io.write_exr(os.path.join(outdir, "exr", stem + ".exr"), frame.astype(np.float32))
            if "png" in formats:
                io.write_png(os.path.join(outdir, "png", stem + ".png"), io.noise_to_uint8(frame))
            timings["write"] += time.perf_counter() - t0

        def checkpoint(t):
            t0 = time.perf_counter()
            noise.flush()
            if revealed_out is not None:
                revealed_out.flush()
            if flows_out is not None:
                flows_out.flush()
                for path, items in ((carry_path, carry), (carry_masks_path, carry_masks)):
                    if items:
                        io.save_npy(path, np.stack(items))
                    elif os.path.exists(path):
                        os.remove(path)
            w.save(state_path)  # atomic
            with io.atomic_path(progress_path) as tmp:
                with open(tmp, "w") as f:
                    json.dump({"config": config, "done": t + 1, "complete": False}, f, indent=1)
            last_ckpt[1] = time.perf_counter() - t0
            timings["checkpoint"] += last_ckpt[1]

        last_ckpt = [time.perf_counter(), 0.0]   # when the last auto checkpoint was due, what it cost

        def due(t):
            """Checkpoint every N frames; auto (N = 0): see checkpoint_interval."""
            if t == L - 1:
                return True
            if int(checkpoint_every) > 0:
                return (t + 1) % int(checkpoint_every) == 0
            if time.perf_counter() - last_ckpt[0] >= checkpoint_interval(last_ckpt[1]):
                last_ckpt[0] = time.perf_counter()
                return True
            return False

        interrupt_after = int(os.environ.get("NOISEWARP_INTERRUPT_AFTER", "0") or 0)  # test hook
        from tqdm import tqdm

        bar = tqdm(total=L, initial=done, unit="frame", file=sys.stderr, disable=not progress,
                   desc=os.path.basename(os.path.normpath(outdir)) or "noise", dynamic_ncols=True)
        try:
            if done == 0:
                emit(0, np.asarray(w.noise, np_dtype))
                checkpoint(0)
                done = 1
                bar.update(1)
            for t, flow, _, revealed in source.steps(done):
                t0 = time.perf_counter()
                frame = np.asarray(w.step(flow, direction="backward", revealed=revealed), np_dtype)
                timings["warp"] += time.perf_counter() - t0
                if flows_out is not None and t > skip:
                    carry.append(flow)
                    if revealed_out is not None:
                        carry_masks.append(np.zeros((H, W), np.uint8) if revealed is None else revealed.astype(np.uint8))
                    if (t - skip) % tf == 0:    # the flow between kept frames: follow each flow in turn
                        link, seen = carry[-1], carry_masks[-1].astype(bool) if revealed_out is not None else None
                        for k in range(len(carry) - 2, -1, -1):
                            if seen is not None:  # revealed on the way counts too
                                seen = seen | carried_mask(carry_masks[k].astype(bool), link)
                            link = _compose(link, carry[k])
                        flows_out[(t - skip) // tf - 1] = link
                        if revealed_out is not None:
                            revealed_out[(t - skip) // tf - 1] = seen
                        carry, carry_masks = [], []
                emit(t, frame)
                if due(t):
                    checkpoint(t)
                done = t + 1
                bar.update(1)
                if interrupt_after and done >= interrupt_after and done < L:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            # Ctrl-C keeps every complete frame, but only a state that matches them: if the
            # warper already stepped a frame whose outputs were not all written, the last
            # checkpoint stays, and --resume recomputes from there (same bytes)
            if done > 0 and w.frame == done - 1:
                checkpoint(done - 1)
            raise
        finally:
            bar.close()
        if done != L:
            raise ValueError(f"{source.name}: input ended after {done} of {L} frames")
        noise.flush()
        if "mp4" in formats:
            # from the file, one frame at a time (never the whole stack in memory), before it is
            # renamed: an interrupted preview is redone by --resume
            t0 = time.perf_counter()
            images = source.images() if getattr(source, "has_images", False) else None
            kept = (img for o, img in enumerate(images) if o % tf == 0) if images is not None else None
            from .preview import write_previews

            write_previews(((noise[j], next(kept) if kept is not None else None) for j in range(T)), T,
                           outdir, fps=source.fps / tf, seed=int(seed))
            timings["write"] += time.perf_counter() - t0
        noise.close()
        os.replace(partial, final)
        if flows_out is not None:
            flows_out.close()
            os.replace(flows_partial, os.path.join(outdir, "flows.npy"))
        if revealed_out is not None:
            revealed_out.close()
            os.replace(revealed_partial, os.path.join(outdir, "revealed.npy"))
        n_steps = max(1, L - 1)
        per_frame = {k: v / n_steps for k, v in {**source.timings, **timings}.items()}
        axes = {"thwc": "T,H,W,C", "tchw": "T,C,H,W", "cthw": "C,T,H,W"}[layout]
        summary = dict(status="resumed" if prior is not None else "done",
                       config=config, frames=T, video_frames=n_out, frame_numbers=kept_numbers,
                       shape=[T, *out_shape, C], layout=layout, axes=axes,
                       file_shape=list(io.layout_shape(layout, T, *out_shape, C)), dtype=dtype,
                       seconds=time.perf_counter() - t_start, per_frame_seconds=per_frame,
                       estimate=cost, outputs=sorted(n for n in os.listdir(outdir) if not n.startswith(".")))
        with io.atomic_path(os.path.join(outdir, "run.json")) as tmp:
            with open(tmp, "w") as f:
                json.dump(summary, f, indent=1)
        with io.atomic_path(progress_path) as tmp:
            with open(tmp, "w") as f:
                json.dump({"config": config, "done": L, "complete": True}, f, indent=1)
        for p in (state_path, carry_path, carry_masks_path):
            if os.path.exists(p):
                os.remove(p)
        ok = True
        if verbose:
            print_timings(per_frame, log)
        return summary
    except KeyboardInterrupt as exc:
        interrupted = True
        exc.done, exc.total = done, L   # for the caller's message (warp suggests --resume)
        raise
    finally:
        if not ok and not interrupted and prior is None:
            # a failed fresh run leaves nothing behind
            if created:
                shutil.rmtree(outdir, ignore_errors=True)
            else:
                _remove(_artefacts(outdir) + [partial, flows_partial, revealed_partial])


def checkpoint_interval(last_cost):
    """Seconds between auto checkpoints: AUTO_CHECKPOINT_S, or longer when saving the state costs
    more than CHECKPOINT_SHARE of that (a flow map's state is 5× a particle state's); a resume
    recomputes the frames since (same bytes)."""
    return max(AUTO_CHECKPOINT_S, last_cost / CHECKPOINT_SHARE)


def carried_mask(mask, flow):
    from .sources import carried_mask

    return carried_mask(mask, flow)


def _compose(later, earlier):
    from .sources import compose_backward

    return compose_backward(later, earlier)


def _init_taichi_quietly():
    """Taichi announces its arch on stdout; drop that so stdout stays for results and an
    error stays one line."""
    import contextlib

    from core2d import _taichi

    if _taichi.available():
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            _taichi.init()


def print_timings(per_frame, log=sys.stderr):
    """Per-stage per-frame times, the numbers behind 'warping must not be slower than flow'."""
    order = ["read", "flow", "warp", "write", "checkpoint"]
    parts = [f"{k} {per_frame[k] * 1e3:.1f} ms" for k in order if k in per_frame]
    print("noisewarp: per frame: " + ", ".join(parts), file=log)
