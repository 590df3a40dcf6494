"""`noisewarp batch`: one Ray task per video, each the `warp` job into OUTDIR/<video name>/.

Every task runs with resume on, so rerunning the same command after a crash (or on a
bigger cluster) skips finished videos and continues the interrupted ones from their last
checkpoint. Ray is optional: without it the command says how to get it.
"""
import json
import os
import sys
import time

from . import io
from .sources import VIDEO_EXTS

INSTALL_HINT = "the batch command needs Ray: pip install 'noisewarp[ray]'"


def find_videos(folder):
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: no such folder")
    videos = sorted(os.path.join(folder, n) for n in os.listdir(folder)
                    if os.path.splitext(n)[1].lower() in VIDEO_EXTS and not n.startswith("."))
    if not videos:
        raise ValueError(f"{folder}: no videos ({', '.join(VIDEO_EXTS)}) in this folder")
    stems = [os.path.splitext(os.path.basename(v))[0] for v in videos]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ValueError(f"{folder}: several videos share a name ({', '.join(dup)}); outputs would collide")
    return videos


def warp_one(video, outdir, options, source_options, shape=None, force=False, threads=1):
    """The body of one task (also callable without Ray): never raises, returns a status dict.

    A finished output folder is kept when it was made with the same options; one made with
    other options is reported as failed (its files untouched) unless `force`, which redoes it.
    """
    os.environ.setdefault("NOISEWARP_THREADS", str(threads))
    t0 = time.perf_counter()
    name = os.path.basename(video)
    try:
        import cv2

        cv2.setNumThreads(max(1, int(threads)))
        from .runner import OptionsDiffer, warp_to_folder
        from .sources import open_source

        src = open_source(video, **source_options).conform(**(shape or {}))
        try:
            summary = warp_to_folder(src, outdir, resume=True, progress=False, **options)
        except OptionsDiffer:
            if not force:
                raise
            summary = warp_to_folder(src, outdir, force=True, progress=False, **options)
            summary["status"] = "redone (options changed)"
        status = {"already complete": "skipped (done)"}.get(summary["status"], summary["status"])
        return {"video": name, "status": status, "frames": summary["frames"],
                "seconds": time.perf_counter() - t0, "output": outdir, "shape": summary["shape"],
                "per_frame_seconds": summary["per_frame_seconds"]}
    except (ValueError, OSError) as exc:
        return {"video": name, "status": "failed", "error": str(exc), "frames": 0,
                "seconds": time.perf_counter() - t0, "output": outdir}
    except KeyboardInterrupt:
        return {"video": name, "status": "interrupted", "frames": 0,
                "seconds": time.perf_counter() - t0, "output": outdir}


def table(results):
    """The lines of the per-video table, columns as wide as their longest entry."""
    width = max(len("video"), *(len(r["video"]) for r in results))
    swidth = max(len("status"), *(len(r["status"]) for r in results))
    lines = [f"{'video':<{width}}  {'status':<{swidth}}  frames  seconds"]
    for r in results:
        extra = f"  {r['error']}" if r.get("error") else ""
        lines.append(f"{r['video']:<{width}}  {r['status']:<{swidth}}  {r['frames']:>6}  "
                     f"{r['seconds']:7.1f}{extra}")
    return lines


def batch(args, log=sys.stderr):
    """Returns the exit status: 0 if every video is done, 1 if some failed."""
    from .runner import options_from_args
    from .sources import source_options

    videos = find_videos(args.input_dir)   # bad input first, whether or not Ray is installed
    try:
        import ray
    except ImportError:
        raise ValueError(INSTALL_HINT) from None
    out = os.fspath(args.output)
    options, shape = options_from_args(args)
    options = {k: v for k, v in options.items() if k not in ("resume", "force", "progress", "verbose")}
    src_options = source_options(args)
    os.makedirs(out, exist_ok=True)
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = dict(log_to_driver=False, configure_logging=True, logging_level="ERROR")
        if args.address:  # joining a cluster: its resources and dashboard are its own
            ray.init(address=args.address, **kwargs)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, **kwargs)
    t0 = time.perf_counter()
    try:
        task = ray.remote(num_cpus=1)(warp_one)
        pending = {task.remote(v, os.path.join(out, os.path.splitext(os.path.basename(v))[0]), options,
                               src_options, shape, args.force): v for v in videos}
        results = []
        from tqdm import tqdm

        with tqdm(total=len(videos), unit="video", file=sys.stderr, disable=args.quiet) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    pending.pop(ref)
                    results.append(ray.get(ref))
                    bar.update(1)
    finally:
        if started_here:
            ray.shutdown()
    results.sort(key=lambda r: r["video"])
    summary = {"input_dir": os.path.abspath(args.input_dir), "output": os.path.abspath(out),
               "videos": len(results), "failed": sum(r["status"] == "failed" for r in results),
               "seconds": time.perf_counter() - t0, "options": dict(options, **src_options, **shape), "results": results}
    with io.atomic_path(os.path.join(out, "summary.json")) as tmp:
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
    for line in table(results):
        print(line, file=log)
    print(f"noisewarp: {len(results) - summary['failed']}/{len(results)} videos done in "
          f"{summary['seconds']:.1f} s; summary in {os.path.join(out, 'summary.json')}", file=log)
    return 1 if summary["failed"] else 0
