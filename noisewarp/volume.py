"""`noisewarp volume`: warped noise in a volume that moves with meshes or velocity grids.

The main `noisewarp` parser (noisewarp/cli.py) calls `register(subparsers)` and then `args.func(args)`;
bad input raises ValueError, which the main CLI prints as one line (exit 2).
"""
import json
import os
import re
import sys

import numpy as np

MESH_EXT = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
GRID_EXT = (".vdb", ".npz", ".npy")


def register(subparsers):
    from noise3d.warper import BACKENDS, METHODS

    p = subparsers.add_parser(
        "volume", help="warped noise in a volume moving with meshes or velocity grids",
        description="Warp volumetric white noise along INPUT, a folder of per-frame meshes "
                    "(obj/ply/glb/gltf/stl/off, one topology) or of velocity grids (vdb/npz/npy). "
                    "Writes OUTDIR/<name>_0001.vdb ... (or .npz) and OUTDIR/volume.json.")
    p.add_argument("input", metavar="INPUT", help="folder of per-frame meshes or velocity grids")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--resolution", type=int, required=True,
                   help="voxels along the longest side of the domain")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--method", choices=METHODS, default="particle",
                   help="particle (default), supersample, or flowmap (the noise stays attached to what "
                        "moves over long shots instead of slowly blurring away; slower)")
    p.add_argument("--factor", type=int, default=2, help="state resolution factor of --method supersample")
    p.add_argument("--depth", type=int, default=None, metavar="D",
                   help="flowmap: reference cells of 1/2 (D=1, default) or 1/4 voxel (D=2): finer follows "
                        "slow motion more smoothly, about 8x the work")
    p.add_argument("--reanchor", type=float, default=None, metavar="R",
                   help="flowmap: voxels whose source volume grew or shrank more than R times, or is "
                        "stretched R:1, start fresh reference noise (default 4; 0: never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument("--format", choices=["auto", "vdb", "npz"], default="auto",
                   help="vdb needs the openvdb module (bundled in the bpy wheel); auto falls back to npz")
    p.add_argument("--name", default="noise", help="grid and file name (default: noise)")
    p.add_argument("--density", action="store_true", help="also write a `density` fog grid (±3σ → [0, 1])")
    p.add_argument("--band", type=float, default=3.0,
                   help="meshes: voxels over which the motion fades to zero outside a mesh")
    p.add_argument("--padding", type=float, default=None,
                   help="meshes: world units of empty space around the meshes (default: band + 1 voxels)")
    p.add_argument("--fps", type=float, default=24.0, help="velocity grids: frames per second (dt = 1/fps)")
    p.add_argument("--velocity-name", default="velocity", help="name of the velocity grid in .vdb/.npz")
    p.add_argument("--velocity-units", choices=["world", "voxels"], default="world",
                   help="world: world units per second; voxels: voxels of the input grid per frame")
    p.add_argument("--voxel-size", type=float, default=1.0, help="world size of a voxel of .npy velocity grids")
    p.add_argument("--start", type=int, default=1, help="number of the first output file")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run with the same options (same bytes as one run)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def _natural_key(name):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_inputs(folder):
    """('mesh' | 'grid', sorted file paths) of a per-frame input folder."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder}: not a folder (expected per-frame meshes or velocity grids)")
    names = sorted((n for n in os.listdir(folder) if not n.startswith(".")), key=_natural_key)
    meshes = [n for n in names if n.lower().endswith(MESH_EXT)]
    grids = [n for n in names if n.lower().endswith(GRID_EXT)]
    if meshes and grids:
        raise ValueError(f"{folder}: holds both meshes and grids; use one kind per folder")
    files = meshes or grids
    if len(files) < 1:
        raise ValueError(f"{folder}: no meshes ({', '.join(MESH_EXT)}) or velocity grids "
                         f"({', '.join(GRID_EXT)}) found")
    exts = {os.path.splitext(n)[1].lower() for n in files}
    if grids and len(exts) > 1:
        raise ValueError(f"{folder}: velocity grids of several formats ({', '.join(sorted(exts))})")
    return ("mesh" if meshes else "grid"), [os.path.join(folder, n) for n in files]


def load_mesh(path):
    """(vertices [n, 3], faces [m, 3]) of a mesh file, vertex order kept (no merging)."""
    import trimesh

    try:
        m = trimesh.load(path, force="mesh", process=False)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable mesh ({exc})") from None
    V = np.asarray(getattr(m, "vertices", np.zeros((0, 3))), np.float64)
    F = np.asarray(getattr(m, "faces", np.zeros((0, 3))), np.int64)
    if len(V) == 0 or len(F) == 0:
        raise ValueError(f"{path}: no triangles in this mesh")
    if not np.isfinite(V).all():
        raise ValueError(f"{path}: vertices contain NaN/inf")
    return V, F


def _frame_path(outdir, name, number, ext):
    return os.path.join(outdir, f"{name}_{number:04d}{ext}")


def run(args):
    from noise3d import vdb as vdbio
    from noise3d.fields import resample_field
    from noise3d.mesh import grid_for_meshes, mesh_motion_field
    from noise3d.warper import VolumeWarper

    if args.resolution < 2:
        raise ValueError(f"--resolution must be >= 2; got {args.resolution}")
    if args.channels < 1:
        raise ValueError(f"--channels must be >= 1; got {args.channels}")
    if args.fps <= 0 or not np.isfinite(args.fps):
        raise ValueError(f"--fps must be positive; got {args.fps}")
    if not (args.voxel_size > 0 and np.isfinite(args.voxel_size)):
        raise ValueError(f"--voxel-size must be positive; got {args.voxel_size}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        raise ValueError(f"--name {args.name!r}: use letters, digits, '_', '-', '.'")
    fmt = args.format
    if fmt == "auto":
        fmt = "vdb" if vdbio.openvdb_module() is not None else "npz"
    if fmt == "vdb" and vdbio.openvdb_module() is None:
        raise ValueError("--format vdb needs the openvdb module (pip install bpy==5.0.1, which bundles it); "
                         "or use --format npz")
    ext = "." + fmt
    flowmap = {k: v for k, v in (("depth", args.depth), ("reanchor", args.reanchor)) if v is not None}
    if flowmap and args.method != "flowmap":
        raise ValueError(f"--{next(iter(flowmap))} is an option of --method flowmap (this run uses {args.method})")
    kind, files = list_inputs(args.input)
    if len(files) < 2:
        raise ValueError(f"{args.input}: {len(files)} frame(s); at least 2 are needed to make motion")
    os.makedirs(args.output, exist_ok=True)
    numbers = range(args.start, args.start + len(files))
    existing = [p for p in (_frame_path(args.output, args.name, n, ext) for n in numbers) if os.path.exists(p)]
    if args.resume and args.force:
        raise ValueError("--resume and --force exclude each other")
    if existing and not (args.force or args.resume):
        raise ValueError(f"{existing[0]} exists ({len(existing)} output file(s) in the way); "
                         "use --force to overwrite or --resume to continue")
    state_path = os.path.join(args.output, ".noisewarp", "volume_state.npz")

    if kind == "mesh":
        meshes = [load_mesh(f) for f in files]
        n0 = len(meshes[0][0])
        for f, (V, F) in zip(files, meshes):
            if len(V) != n0:
                raise ValueError(f"{f}: {len(V)} vertices but {files[0]} has {n0}; every frame "
                                 "must have the same topology")
            if not np.array_equal(F, meshes[0][1]):
                raise ValueError(f"{f}: faces differ from {files[0]}; every frame must have the same topology")
        shape, origin, vs = grid_for_meshes(meshes, args.resolution, args.padding, args.band)

        def backward(t):
            # the meshes give the motion both ways: the backward flow on frame t's grid is the
            # field of the motion t -> t-1, no inversion needed
            return mesh_motion_field(meshes[t], meshes[t - 1], shape, origin, vs, band=args.band)
    else:
        def read(f):
            v, svs, sorg = vdbio.read_velocity(f, args.velocity_name)
            if f.endswith(".npy"):
                svs = np.full(3, float(args.voxel_size))
            return v, svs, sorg

        # the domain: the union of every frame's grid (one pass, keeping only the placement)
        boxes = []
        for f in files:
            v, svs, sorg = read(f)
            boxes.append((sorg, sorg + np.array(v.shape[:3]) * svs))
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
        vs = float((hi - lo).max() / args.resolution)
        shape = tuple(int(max(1, min(args.resolution, np.ceil((h - l) / vs - 1e-6)))) for l, h in zip(lo, hi))
        origin = lo
        dt = 1.0 / args.fps

        def backward(t):
            v, svs, sorg = read(files[t])
            if args.velocity_units == "voxels":   # input voxels per frame -> world units per frame
                v = v * svs.astype(np.float32)
                step = 1.0
            else:
                step = dt
            v = resample_field(v, svs, sorg, shape, vs, origin)
            # semi-Lagrangian backtrace with the velocity of the new frame
            return np.ascontiguousarray(-v * np.float32(step / vs), np.float32)

    warper = None

    def write(number, noise):
        path = _frame_path(args.output, args.name, number, ext)
        if fmt == "npz":
            vdbio.write_npz(path, noise, vs, origin, name=args.name, density=args.density or None)
        else:
            vdbio.write_vdb(path, noise, vs, origin, name=args.name, density=args.density or None)

    meta = dict(input=os.path.abspath(args.input), kind=kind, frames=len(files), shape=list(shape),
                channels=args.channels, voxel_size=float(vs), origin=[float(o) for o in origin],
                method=args.method, factor=args.factor if args.method == "supersample" else 1,
                **({"flowmap": flowmap} if args.method == "flowmap" else {}),
                seed=args.seed, format=fmt, files=f"{args.name}_####{ext}", first=args.start,
                grid_names=vdbio.channel_names(args.name, args.channels) + (["density"] if args.density else []))
    from noisewarp.io import atomic_path

    meta_path = os.path.join(args.output, "volume.json")
    if args.resume:
        try:
            with open(meta_path) as f:
                prior = json.load(f)
        except (OSError, ValueError):
            raise ValueError(f"{args.output}: nothing to resume (no readable volume.json)") from None
        diff = sorted(k for k in meta if prior.get(k) != meta[k])
        if diff:
            raise ValueError(f"{args.output}: cannot resume: options differ from the interrupted run "
                             f"({', '.join(diff)})")
        if os.path.isfile(state_path):
            warper = VolumeWarper.load(state_path, backend=args.backend)
        elif len(existing) == len(files):
            if not args.quiet:
                print(f"noisewarp: {args.output} is already complete ({len(files)} frames)", file=sys.stderr)
            return 0
    if warper is None:
        warper = VolumeWarper(shape, channels=args.channels, method=args.method, seed=args.seed,
                              backend=args.backend, factor=args.factor, **flowmap)
    with atomic_path(meta_path) as tmp:
        with open(tmp, "w") as f:
            json.dump(meta, f, indent=2)

    from tqdm import tqdm

    interrupt_after = int(os.environ.get("NOISEWARP_INTERRUPT_AFTER", "0") or 0)  # test hook
    os.makedirs(os.path.dirname(state_path), exist_ok=True)
    done = warper.frame                           # frames 0..done are written (or about to be)
    bar = tqdm(total=len(files), initial=done, desc="volume", unit="frame", file=sys.stderr, disable=args.quiet)
    if done == 0:
        write(args.start, warper.noise)
        warper.save(state_path)
        bar.update(1)
    for t in range(done + 1, len(files)):
        warper.step(backward(t))
        write(args.start + t, warper.noise)
        warper.save(state_path)                   # after the frame: a resume starts at t + 1
        bar.update(1)
        if interrupt_after and t + 1 >= interrupt_after and t + 1 < len(files):
            raise KeyboardInterrupt
    bar.close()
    os.remove(state_path)
    if not args.quiet:
        print(f"wrote {len(files)} frames {shape} ({fmt}) to {args.output}", file=sys.stderr)
    return 0
