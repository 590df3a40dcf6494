"""The `warp` job: stream flows from a source through a NoiseWarper into an output folder.

One frame at a time: memory does not grow with the video length. noise.npy is filled through
a memory map under a temporary name and renamed at the end; every other file is written
atomically. After each frame the warper's state is checkpointed, so an interrupted run
continues with `resume=True` and produces the same bytes as an uninterrupted one.
"""
import json
import os
import shutil
import sys
import time

import numpy as np

from . import io
from core2d.ops import degrade as _degrade

STATE_DIR = ".noisewarp"
FORMATS = ("npy", "exr", "png", "mp4")
AUTO_CHECKPOINT_S = 2.0
_OCCLUSION_SEED_SALT = 0x6F63636C  # keeps occlusion refresh noise apart from --degrade noise


def parse_formats(text):
    """'npy,exr' -> ['npy', 'exr'] (npy is always written)."""
    items = [f.strip().lower() for f in (text or "npy").split(",") if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown output format(s) {', '.join(bad)} (choose from {', '.join(FORMATS)})")
    return ["npy"] + [f for f in FORMATS[1:] if f in items]


class OptionsDiffer(ValueError):
    """An output folder holds a run made with other options."""


def options_from_args(args):
    """The keyword arguments of warp_to_folder taken from parsed `warp` (or `batch`) arguments."""
    return dict(method=args.method, channels=args.channels, seed=args.seed,
                latent_factor=args.latent_factor, supersample=args.supersample,
                degrade=args.degrade, degrade_mask=args.degrade_mask,
                formats=parse_formats(args.format), dtype=args.dtype, backend=args.backend,
                resume=getattr(args, "resume", False), force=getattr(args, "force", False),
                progress=not args.quiet, verbose=getattr(args, "verbose", False),
                checkpoint_every=args.checkpoint_every, occlusions=args.occlusions,
                save_flows=args.save_flows)


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


def _block_mean(mask, f):
    if f == 1:
        return mask.astype(np.float32)
    h, w = mask.shape
    return mask.reshape(h // f, f, w // f, f).mean(axis=(1, 3)).astype(np.float32)


def _artefacts(outdir):
    return [os.path.join(outdir, n) for n in ("noise.npy", "flows.npy", "exr", "png", "preview.mp4", "run.json", STATE_DIR)]


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
                   checkpoint_every=0, occlusions=False, save_flows=False, log=None, warper_options=None):
    """Run the whole job; return a summary dict (also written to OUTDIR/run.json)."""
    import core2d

    log = log or sys.stderr
    outdir = os.fspath(outdir)
    formats = list(formats)
    H, W, T = source.height, source.width, source.n_frames
    F = int(latent_factor)
    if F < 1 or int(supersample) < 1:
        raise ValueError("--latent-factor and --supersample must be positive integers")
    if int(checkpoint_every) < 0:
        raise ValueError(f"--checkpoint-every must be 0 (every 2 s) or a number of frames, got {checkpoint_every}")
    if H % F or W % F:
        raise ValueError(f"{source.name}: frames are {W}x{H}, not divisible by --latent-factor {F} "
                         f"(crop or resize the input to a multiple of {F})")
    if method not in core2d.METHODS:
        raise ValueError(f"unknown method {method!r} (choose from {', '.join(core2d.METHODS)})")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"--dtype must be float32 or float16, not {dtype!r}")
    if int(channels) < 1:
        raise ValueError("--channels must be at least 1")
    out_shape = (H // F, W // F)
    alpha = load_mask(degrade_mask, (H, W), out_shape) if degrade_mask else float(degrade)
    if np.ndim(alpha) == 0 and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--degrade must be within [0, 1], got {alpha}")
    config = dict(input=os.path.abspath(source.name) if os.path.exists(source.name) else source.name,
                  frames=[getattr(source, "start", 0), getattr(source, "start", 0) + T],
                  method=method, channels=int(channels), seed=int(seed), latent_factor=F,
                  supersample=int(supersample), degrade=alpha if np.ndim(alpha) == 0 else os.path.abspath(degrade_mask),
                  dtype=dtype, formats=formats, occlusions=bool(occlusions), save_flows=bool(save_flows),
                  warper_options=warper_options or {})

    state_dir = os.path.join(outdir, STATE_DIR)
    progress_path = os.path.join(state_dir, "progress.json")
    state_path = os.path.join(state_dir, "state.npz")
    partial = os.path.join(outdir, ".noise.partial.npy")
    flows_partial = os.path.join(outdir, ".flows.partial.npy")
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
            _remove(_artefacts(outdir) + [partial, flows_partial])
        else:
            raise ValueError(f"{outdir}: output folder exists and is not empty "
                             "(use --force to overwrite or --resume to continue)")
    created = not os.path.isdir(outdir)
    os.makedirs(state_dir, exist_ok=True)
    for fmt in ("exr", "png"):
        if fmt in formats:
            os.makedirs(os.path.join(outdir, fmt), exist_ok=True)

    _init_taichi_quietly()
    C = int(channels)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    timings = {"warp": 0.0, "write": 0.0, "checkpoint": 0.0}
    t_start = time.perf_counter()
    done = 0
    ok = interrupted = False
    try:
        w = None
        if prior is not None and os.path.isfile(state_path) and os.path.isfile(partial):
            w = core2d.NoiseWarper.load(state_path)
            done = int(w.frame) + 1
            noise = io.NpyFrames(partial, mode="r+")
            if noise.shape != (T,) + out_shape + (C,) or noise.dtype != np_dtype:
                raise ValueError(f"{partial}: partial output does not match the run's shape; use --force")
        else:
            w = core2d.NoiseWarper(H, W, channels=C, method=method, seed=int(seed), backend=backend,
                                   supersample=int(supersample), latent_factor=F, degrade=alpha,
                                   dtype=dtype, **(warper_options or {}))
            noise = io.NpyFrames(partial, mode="w", dtype=np_dtype, shape=(T,) + out_shape + (C,))
        flows_out = None
        if save_flows and T > 1:
            mode = "r+" if (done and os.path.isfile(flows_partial)) else "w"
            flows_out = io.NpyFrames(flows_partial, mode=mode, dtype=np.float32, shape=(T - 1, H, W, 2))

        def emit(t, frame):
            t0 = time.perf_counter()
            noise[t] = frame
            stem = f"noise_{t + 1:04d}"
            if "exr" in formats:
                io.write_exr(os.path.join(outdir, "exr", stem + ".exr"), frame.astype(np.float32))
            if "png" in formats:
                io.write_png(os.path.join(outdir, "png", stem + ".png"), io.noise_to_uint8(frame))
            timings["write"] += time.perf_counter() - t0

        def checkpoint(t):
            t0 = time.perf_counter()
            noise.flush()
            if flows_out is not None:
                flows_out.flush()
            w.save(state_path)  # atomic
            with io.atomic_path(progress_path) as tmp:
                with open(tmp, "w") as f:
                    json.dump({"config": config, "done": t + 1, "complete": False}, f, indent=1)
            timings["checkpoint"] += time.perf_counter() - t0

        last_ckpt = [time.perf_counter()]

        def due(t):
            """Checkpoint every N frames; auto (N = 0): every AUTO_CHECKPOINT_S seconds: a 720p×4 state costs ~60 ms to save, too much
            for every frame, and a resume recomputes the few frames since (same bytes)."""
            if t == T - 1:
                return True
            if int(checkpoint_every) > 0:
                return (t + 1) % int(checkpoint_every) == 0
            if time.perf_counter() - last_ckpt[0] >= AUTO_CHECKPOINT_S:
                last_ckpt[0] = time.perf_counter()
                return True
            return False

        interrupt_after = int(os.environ.get("NOISEWARP_INTERRUPT_AFTER", "0") or 0)  # test hook
        from tqdm import tqdm

        bar = tqdm(total=T, initial=done, unit="frame", file=sys.stderr, disable=not progress,
                   desc=os.path.basename(os.path.normpath(outdir)) or "noise", dynamic_ncols=True)
        try:
            if done == 0:
                emit(0, np.asarray(w.noise, np_dtype))
                checkpoint(0)
                done = 1
                bar.update(1)
            for t, flow, _ in source.flows(done):
                t0 = time.perf_counter()
                frame = np.asarray(w.step(flow, direction="backward"), np_dtype)
                if occlusions and getattr(source, "occlusion", None) is not None:
                    a = _block_mean(source.occlusion.astype(np.float32), F)
                    frame = _degrade(frame.astype(np.float32), a, int(seed) ^ _OCCLUSION_SEED_SALT, t).astype(np_dtype)
                timings["warp"] += time.perf_counter() - t0
                if flows_out is not None:
                    flows_out[t - 1] = flow
                emit(t, frame)
                if due(t):
                    checkpoint(t)
                done = t + 1
                bar.update(1)
                if interrupt_after and done >= interrupt_after and done < T:
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
        if done != T:
            raise ValueError(f"{source.name}: input ended after {done} of {T} frames")
        noise.flush()
        noise.close()
        os.replace(partial, final)
        if flows_out is not None:
            flows_out.close()
            os.replace(flows_partial, os.path.join(outdir, "flows.npy"))
        if "mp4" in formats:
            t0 = time.perf_counter()
            write_preview_mp4(final, os.path.join(outdir, "preview.mp4"), fps=source.fps)
            timings["write"] += time.perf_counter() - t0
        n_steps = max(1, T - 1)
        per_frame = {k: v / n_steps for k, v in {**source.timings, **timings}.items()}
        summary = dict(status="resumed" if prior is not None else "done",
                       config=config, frames=T, shape=[T, *out_shape, C], dtype=dtype,
                       seconds=time.perf_counter() - t_start, per_frame_seconds=per_frame,
                       outputs=sorted(os.listdir(outdir)))
        with io.atomic_path(os.path.join(outdir, "run.json")) as tmp:
            with open(tmp, "w") as f:
                json.dump(summary, f, indent=1)
        with io.atomic_path(progress_path) as tmp:
            with open(tmp, "w") as f:
                json.dump({"config": config, "done": T, "complete": True}, f, indent=1)
        if os.path.exists(state_path):
            os.remove(state_path)
        ok = True
        if verbose:
            print_timings(per_frame, log)
        return summary
    except KeyboardInterrupt as exc:
        interrupted = True
        exc.done, exc.total = done, T   # for the caller's message (warp suggests --resume)
        raise
    finally:
        if not ok and not interrupted and prior is None:
            # a failed fresh run leaves nothing behind
            if created:
                shutil.rmtree(outdir, ignore_errors=True)
            else:
                _remove(_artefacts(outdir) + [partial, flows_partial])


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


def write_preview_mp4(noise_path, mp4_path, fps=24.0, min_size=256):
    """MP4 preview of a noise.npy, read one frame at a time from a memory map."""
    noise = np.load(noise_path, mmap_mode="r")
    with io.Mp4Writer(mp4_path, fps=fps) as mp4:
        for frame in noise:
            mp4.append(io.enlarge(io.noise_to_uint8(np.asarray(frame, np.float32)), min_size))
