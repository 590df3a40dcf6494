"""`noisewarp`: warped noise from the command line (warp, stats, compare, demo, batch, volume, warmup).

Every subcommand is dispatched through `args.func(args)`. Bad input ends with one line on
stderr (`noisewarp: error: ...`) and exit status 2: library code raises ValueError with a
message naming the file and the problem, and main() turns it (or an OSError) into that line.
"""
import argparse
import errno
import os
import re
import sys

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _add_source_args(p):
    g = p.add_argument_group("input conventions (for .npy flow stacks and .flo folders)")
    g.add_argument("--flow-layout", choices=["auto", "nhwc", "nchw"], default="auto",
                   help="axis order of a .npy stack: [N,H,W,2] (nhwc) or [N,2,H,W] (nchw, RAFT, "
                        "Go-with-the-Flow); auto picks the axis of size 2 (flows_dxdy.npy: nchw, forward)")
    g.add_argument("--flow-order", choices=["xy", "yx"], default="xy",
                   help="components are (dx, dy) (xy, default) or (dy, dx) = (row, col) (yx)")
    g.add_argument("--flow-negate", action="store_true",
                   help="the stack stores minus the displacement (maps built as p - flow)")
    g.add_argument("--flow-direction", choices=["backward", "forward"], default=None,
                   help="backward: on frame t+1's grid, where pixels came from (default for .npy); "
                        "forward: on frame t's grid, where pixels go (.flo and flows_dxdy.npy)")
    g.add_argument("--invert", choices=["invert", "negate"], default="invert",
                   help="turning forward flow into backward: real inversion (default) or the "
                        "common approximation B = -F")
    g.add_argument("--dis-preset", choices=["ultrafast", "fast", "medium"], default="medium",
                   help="OpenCV DIS optical flow preset for video input (default medium)")
    g.add_argument("--frames", metavar="A:B[:S]", default=None,
                   help="only input frames A..B-1, every S-th (Python slice; sides may be empty or negative); "
                        "frames before A are warped too, so chunks join exactly")
    g.add_argument("--fresh-start", action="store_true",
                   help="with --frames A:B, start fresh noise at A instead (faster; chunks then do not join)")


def _add_job_args(p):
    """The options of one warp job, shared by `warp` and `batch` (batch passes them to every video)."""
    from .models import MODELS

    p.add_argument("--method", default="particle",
                   help="particle (default), flowmap (keeps its coherence for hundreds of frames, slower), "
                        "grid, upsample, gp, nearest, bilinear, fixed, resample")
    p.add_argument("--depth", type=int, default=None, metavar="D",
                   help="flowmap: how finely the noise is followed along moving edges, 0-6 (default 2: "
                        "quarter pixels); each level costs about twice the time")
    p.add_argument("--reanchor", type=float, default=None, metavar="R",
                   help="flowmap: start fresh reference noise where a pixel's source area has grown or "
                        "shrunk more than R times or is stretched R:1 (default 4; 0: never; keeps zoom-outs fast)")
    p.add_argument("--channels", type=int, default=None, help="noise channels (default 4; 16 for CogVideoX)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--latent-factor", type=int, default=None, metavar="F",
                   help="∫-pool the output by F (8 for SD/CogVideoX latents): [T, H/F, W/F, C]")
    p.add_argument("--supersample", type=int, default=1, metavar="S",
                   help="warp at S× resolution (better long-range coherence, S² the cost)")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--degrade", type=float, default=0.0, metavar="A",
                   help="mix in fresh noise, 0 (none) .. 1 (all fresh)")
    d.add_argument("--degrade-mask", metavar="FILE", default=None,
                   help="per-pixel degradation in [0,1]: .npy or 8/16-bit image, input or output size")
    p.add_argument("--format", default="npy", metavar="npy,exr,png,mp4",
                   help="outputs besides noise.npy: exr (exr/noise_0001.exr…), png (png/…), mp4 "
                        "(preview.mp4: the video beside the noise, with frames.png and spacetime.png)")
    p.add_argument("--dtype", choices=["float32", "float16"], default=None, help="noise.npy dtype (default float32)")
    p.add_argument("--backend", default="auto", help="auto (default), taichi or numpy")
    p.add_argument("--occlusions", action=argparse.BooleanOptionalAction, default=True,
                   help="give pixels whose content was hidden in the previous frame fresh noise (flowmap: a new "
                        "reference there). Found by checking the flow forward against backward (video, Blender EXRs), "
                        "from the inversion of forward flows, or read from --revealed. --no-occlusions: skip it "
                        "(video: one optical flow per frame instead of two)")
    p.add_argument("--save-flows", action="store_true",
                   help="also write the backward flows between noise frames, OUTDIR/flows.npy [T-1, H, W, 2] (for stats)")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="save the warper state every N frames; 0 (default): every 2 s (less often when "
                        "saving would take over 5 %% of the time; a resume recomputes the frames since, with the same bytes)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="refuse runs estimated to need more (e.g. 16G); default: the memory available now")
    g = p.add_argument_group("video-model layouts (see docs/cli.md, one section per model family)")
    g.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="preset for a video model: channels, latent factors, size, frame count, layout")
    g.add_argument("--temporal-factor", type=int, default=None, metavar="K",
                   help="keep noise frames 0, K, 2K, ... (a causal video VAE's latent frames: 49 -> 13 for K=4); "
                        "the frame count must be Kn+1")
    g.add_argument("--layout", choices=["thwc", "tchw", "cthw"], default=None,
                   help="axis order of noise.npy: thwc [T,H,W,C] (default), tchw [T,C,H,W] (CogVideoX), "
                        "cthw [C,T,H,W] (Wan, HunyuanVideo)")
    g.add_argument("--size", default=None, metavar="WxH",
                   help="output size before --latent-factor, e.g. 720x480; flows are resized and rescaled")
    g.add_argument("--fit", choices=["crop", "pad", "stretch"], default=None,
                   help="how --size is reached: crop (default: scale to cover, cut the middle), pad "
                        "(scale to fit, still borders), stretch")
    g.add_argument("--num-frames", type=int, default=None, metavar="N",
                   help="exactly N video frames: longer clips are trimmed (with a note), shorter ones refused "
                        "unless --pad")
    g.add_argument("--pad", action="store_true", help="hold the last frame to reach --num-frames")
    _add_source_args(p)


def _add_revealed_arg(p):
    p.add_argument("--revealed", default=None, metavar="MASKS.npy",
                   help="revealed pixels of each input frame, [N-1, H, W] bool or 0/1 (mask k-1: the pixels "
                        "of frame k not visible in frame k-1), instead of the ones the input gives")


def _add_warp_args(p):
    p.add_argument("input", metavar="INPUT",
                   help="video (mp4/mov/avi/mkv), .npy flow stack, Go-with-the-Flow flows_dxdy.npy, "
                        "folder of .flo files, or folder of Blender EXRs with a Vector pass")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    _add_job_args(p)
    _add_revealed_arg(p)
    r = p.add_mutually_exclusive_group()
    r.add_argument("--resume", action="store_true", help="continue an interrupted run in OUTDIR")
    r.add_argument("--force", action="store_true", help="overwrite the outputs in an existing OUTDIR")
    p.add_argument("-v", "--verbose", action="store_true", help="print per-stage per-frame times")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _print_warnings(source):
    for w in getattr(source, "warnings", ()):
        print(f"noisewarp: warning: {w}", file=sys.stderr)


def cmd_warp(args):
    from .runner import options_from_args, warp_to_folder
    from .sources import source_from_args

    opts, shape = options_from_args(args)  # validates --format before any work
    source = source_from_args(args).conform(**shape)
    _print_warnings(source)
    try:
        summary = warp_to_folder(source, args.output, **opts)
    except KeyboardInterrupt as exc:
        done = f" after {exc.done} of {exc.total} frames" if hasattr(exc, "done") else ""
        print(f"noisewarp: interrupted{done}; run the same command with --resume to continue", file=sys.stderr)
        raise
    if not args.quiet:
        shape = summary.get("file_shape", summary["shape"])
        print(f"noisewarp: wrote {os.path.join(args.output, 'noise.npy')} {tuple(shape)} "
              f"[{summary.get('axes', 'T,H,W,C')}] {summary['dtype']} in {summary['seconds']:.1f} s", file=sys.stderr)
    return 0


def cmd_stats(args):
    from .stats import report

    rep = report(args.noise, args.output, flows=args.flows, force=args.force, max_lag=args.max_lag,
                 revealed=args.revealed, layout=args.layout)
    if not args.quiet:
        print(f"noisewarp: wrote {os.path.join(args.output, 'report.json')}: {rep['summary_line']}", file=sys.stderr)
    return 0


def cmd_compare(args):
    from .compare import compare

    compare(args, log=sys.stderr)
    return 0


def cmd_demo(args):
    from .demo import demo

    try:
        demo(args.output, frames=args.frames_count, size=args.size, method=args.method,
             supersample=args.supersample, force=args.force, progress=not args.quiet, seed=args.seed)
    except KeyboardInterrupt:
        print("noisewarp: demo interrupted; run it again with --force to start over", file=sys.stderr)
        raise
    return 0


def cmd_batch(args):
    from .batch import batch

    return batch(args)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="noisewarp",
        description="Warped noise: Gaussian white noise that moves with the motion of a video. "
                    "Every frame is exactly i.i.d. N(0,1).")
    parser.add_argument("--version", action="version", version="noisewarp 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("warp", help="warp noise along a video or a flow sequence",
                       description="Warp noise along INPUT; writes OUTDIR/noise.npy [T, H, W, C].")
    _add_warp_args(p)
    p.set_defaults(func=cmd_warp)

    p = sub.add_parser("stats", help="statistics report and plots for a noise.npy",
                       description="Check a noise stack: Gaussianity, whiteness, temporal coherence.")
    p.add_argument("noise", metavar="NOISE.npy", help="noise stack [T, H, W, C] (warp's OUTDIR/noise.npy)")
    p.add_argument("--flows", default=None, metavar="FLOWS",
                   help="backward flows [T-1, H, W, 2] (e.g. OUTDIR/flows.npy from warp --save-flows) to measure "
                        "coherence along the motion, for moving and static content; without it, in place")
    p.add_argument("-o", "--output", required=True, metavar="REPORT_DIR", help="folder for report.json and the plots")
    p.add_argument("--revealed", default=None, metavar="MASKS",
                   help="revealed-pixel masks [T-1, H, W] (warp --save-flows --occlusions writes OUTDIR/revealed.npy, "
                        "found beside FLOWS by default): such pixels leave the coherence measure")
    p.add_argument("--layout", choices=["thwc", "tchw", "cthw"], default=None,
                   help="axis order of NOISE.npy (default: from the run.json beside it, else thwc)")
    p.add_argument("--max-lag", type=int, default=16, help="longest frame lag for the coherence curve")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("compare", help="every warping method on one input: table and pictures",
                       description="Run every method on INPUT and compare speed, memory and quality.")
    p.add_argument("input", metavar="INPUT", help="a video or flow input, as for warp")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the table and pictures")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods, or all (default: every method but gp, which is slow)")
    p.add_argument("--max-lag", type=int, default=16, help="longest frame lag of the coherence curves (default 16)")
    p.add_argument("--ends", type=int, default=8, help="end frames averaged in the coherence curves (default 8)")
    p.add_argument("--channels", type=int, default=4, help="noise channels (default 4)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--max-size", type=int, default=256,
                   help="resize flows so the longer side is at most this (default 256; 0 = keep)")
    p.add_argument("--force", action="store_true", help="overwrite an existing comparison")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--occlusions", action=argparse.BooleanOptionalAction, default=True,
                   help="give every method the input's revealed pixels (see warp); they also leave the "
                        "coherence measure")
    _add_source_args(p)
    _add_revealed_arg(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("demo", help="a quick look: noise warped along a generated moving scene",
                       description="Generate a moving scene with known motion, warp noise along it, "
                                   "write previews and a stats report. Nothing is downloaded.")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--frames", dest="frames_count", type=int, default=48, help="number of frames (default 48)")
    p.add_argument("--size", type=int, default=256, help="frame height (width is 1.5×)")
    p.add_argument("--method", default="particle", help="warping method (default particle; flowmap, grid, ...)")
    p.add_argument("--supersample", type=int, default=1, help="warp at S× resolution (default 1)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite an existing demo folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("batch", help="many videos in parallel on Ray (resumable)",
                       description="Warp noise for every video in INPUT_DIR, one Ray task per video; "
                                   "OUTDIR/<video name>/ per video and OUTDIR/summary.json. Rerun to resume.")
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of videos")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="OUTDIR/<video name>/ per video")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (e.g. ray://host:10001 or auto); default: a local Ray")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    p.add_argument("--force", action="store_true",
                   help="redo videos whose existing outputs were made with other options")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_job_args(p)
    p.set_defaults(func=cmd_batch)

    from . import volume, warmup

    volume.register(sub)
    warmup.register(sub)
    return parser


_SLICE = re.compile(r"-?\d*:-?\d*(:-?\d*)?")


def _join_slice_values(argv):
    """`--frames -10:` is a value, not an option: glue it to its flag (argparse would refuse it)."""
    argv = list(argv)
    out = []
    for k, a in enumerate(argv):
        if k and argv[k - 1] == "--frames" and a.startswith("-") and _SLICE.fullmatch(a):
            out[-1] = f"--frames={a}"
        else:
            out.append(a)
    return out


def os_error_message(exc):
    """An OSError as `<file>: <reason>`, without Python's `[Errno N]`; writes that the system
    refuses say so."""
    reason = (exc.strerror or str(exc) or exc.__class__.__name__).lower()
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"cannot write or read here ({reason})"
    elif exc.errno == errno.ENOSPC:
        reason = "no space left on the device"
    return f"{exc.filename}: {reason}" if exc.filename else reason


def main(argv=None):
    os.environ.setdefault("ENABLE_TAICHI_HEADER_PRINT", "0")  # keep stdout for results
    parser = build_parser()
    args = parser.parse_args(_join_slice_values(sys.argv[1:] if argv is None else argv))
    try:
        out = getattr(args, "output", None)
        if out is not None and not str(out).strip():
            raise ValueError("-o/--output is empty: give the folder to write into")
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"noisewarp: error: {str(exc) or exc.__class__.__name__}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"noisewarp: error: {os_error_message(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
