"""Volumes in and out: OpenVDB when the `openvdb` module can be reached, `.npz` otherwise.

There is no `openvdb` on PyPI; the Blender-as-a-module wheel (bpy) bundles one. It is found
next to the installed bpy package without importing bpy (inside Blender, through Blender's own
`bpy.utils.expose_bundled_modules()`).

Placement: voxel (i, j, k) covers origin + [i, i+1]×[j, j+1]×[k, k+1]·voxel_size in world
units. OpenVDB puts index (i, j, k) at the voxel *centre*, so the grid transform is
scale(voxel_size) then translate(origin + voxel_size/2): the volume lands where its domain was.
"""
import os
import threading
import zipfile
import zlib

import numpy as np

from core2d.atomic import atomic_path

from . import vdbfile

_READ_LOCK = threading.Lock()   # OpenVDB's delayed loading is switched off (process-wide) while reading

_OPENVDB = False  # not looked up yet


def openvdb_module():
    """The `openvdb` module (directly, or through bpy's bundled modules), or None.

    NOISEWARP_NO_OPENVDB=1 forces the .npz fallback.
    """
    global _OPENVDB
    if os.environ.get("NOISEWARP_NO_OPENVDB"):
        return None
    if _OPENVDB is not False:
        return _OPENVDB
    mod = None
    try:
        import openvdb as mod
    except ImportError:
        try:
            _expose_blender_openvdb()
            import openvdb as mod
        except Exception:
            mod = None
    _OPENVDB = mod
    return mod


def _expose_blender_openvdb():
    """Make Blender's bundled `openvdb` importable without importing Blender here: inside
    Blender, through its own `bpy.utils.expose_bundled_modules()`; elsewhere, by putting the
    `bpy` wheel's bundled site-packages on sys.path (found by file, so the 1 GB module is
    never loaded just to write a VDB)."""
    import glob
    import importlib.util
    import sys

    blender = sys.modules.get("bpy")
    if blender is not None and hasattr(getattr(blender, "utils", None), "expose_bundled_modules"):
        blender.utils.expose_bundled_modules()
        return
    spec = importlib.util.find_spec("bpy")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for so in sorted(glob.glob(os.path.join(folder, "*", "python", "lib", "python3*", "site-packages",
                                                "openvdb*"))):
            site = os.path.dirname(so)
            if site not in sys.path:
                sys.path.append(site)
            return


def _placement(voxel_size, origin):
    vs, org = np.asarray(voxel_size), np.asarray(origin)
    if vs.dtype.kind not in "fiu" or org.dtype.kind not in "fiu" or vs.ndim > 1 or org.ndim > 1 \
            or vs.size not in (1, 3) or org.size not in (1, 3):
        raise ValueError(f"voxel size and origin must be numbers or 3-vectors; got {voxel_size!r}, {origin!r}")
    vs = np.broadcast_to(vs.astype(np.float64), (3,)).copy()
    org = np.broadcast_to(org.astype(np.float64), (3,)).copy()
    if not (np.isfinite(vs).all() and (vs > 0).all() and np.isfinite(org).all()):
        raise ValueError(f"voxel size must be positive and origin finite; got {voxel_size}, {origin}")
    return vs, org


def _transform(vdb, vs, org):
    t = org + vs / 2
    m = [[vs[0], 0, 0, 0], [0, vs[1], 0, 0], [0, 0, vs[2], 0], [t[0], t[1], t[2], 1]]
    return vdb.createLinearTransform(m)


def channel_names(name, channels):
    """Grid names: `name` for one channel, `name_0` … `name_{C-1}` for more."""
    return [name] if channels == 1 else [f"{name}_{k}" for k in range(channels)]


def density_from_noise(noise):
    """A ready-to-render fog density in [0, 1]: channel 0 mapped from ±3σ."""
    return np.clip((np.asarray(noise)[..., 0] + 3.0) / 6.0, 0.0, 1.0).astype(np.float32)


def write_vdb(path, noise, voxel_size, origin, name="noise", density=None):
    """Write noise [X, Y, Z] or [X, Y, Z, C] as float grids (and optionally a `density` fog grid).

    density: None, True (derived from channel 0, see density_from_noise) or an [X, Y, Z] array.
    Without openvdb the data goes to `path` with a .npz suffix. Written atomically.
    Returns the path actually written.
    """
    noise = _volume(noise, "noise")
    vs, org = _placement(voxel_size, origin)
    density = _density(density, noise)
    path = os.fspath(path)
    vdb = openvdb_module()
    if vdb is None:
        return write_npz(path, noise, vs, org, name, density)
    grids = []
    for k, gname in enumerate(channel_names(name, noise.shape[3])):
        grids.append(_grid(vdb, vdb.FloatGrid, noise[..., k], gname, vs, org, fog=False))
        grids[-1]["noisewarp_shape"] = tuple(int(n) for n in noise.shape[:3])
    if density is not None:
        grids.append(_grid(vdb, vdb.FloatGrid, density, "density", vs, org, fog=True))
    with atomic_path(path) as tmp:
        vdb.write(tmp, grids=grids)
    return path


def _volume(values, what):
    """[X, Y, Z] or [X, Y, Z, C] finite values as float32 [X, Y, Z, C]: NaN/inf are refused, not
    written (OpenVDB would store a NaN voxel as an inactive background 0)."""
    a = np.asarray(values)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be a numeric array; got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or 0 in a.shape:
        raise ValueError(f"{what} must be [X, Y, Z] or [X, Y, Z, C]; got shape {np.shape(values)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains {int((~np.isfinite(a)).sum())} NaN/inf value(s)")
    return a


def _density(density, noise):
    """None, or the [X, Y, Z] density grid to write beside `noise` (True: from channel 0)."""
    if density is None or density is False:
        return None
    if density is True:
        return density_from_noise(noise)
    d = _volume(density, "density")
    if d.shape != noise.shape[:3] + (1,):
        raise ValueError(f"density has shape {np.shape(density)}; expected {noise.shape[:3]}")
    return d[..., 0]


def write_npz(path, noise, voxel_size, origin, name="noise", density=None):
    """The .npz form of write_vdb (same arrays, same placement); the suffix becomes .npz."""
    noise = _volume(noise, "noise")
    vs, org = _placement(voxel_size, origin)
    path = os.path.splitext(os.fspath(path))[0] + ".npz"
    arrays = dict(noise=noise, voxel_size=vs, origin=org, name=np.array(name))
    density = _density(density, noise)
    if density is not None:
        arrays["density"] = density
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return path


def _grid(vdb, cls, values, name, vs, org, fog):
    g = cls()
    g.copyFromArray(np.require(values, requirements="CW"))      # the binding refuses read-only arrays
    g.name = name
    g.transform = _transform(vdb, vs, org)
    if fog:
        g.gridClass = vdb.GridClass.FOG_VOLUME
    return g


def read_vdb(path, name="noise"):
    """Read what write_vdb wrote (or any float/vector grid): (noise [X, Y, Z, C], voxel_size [3], origin [3]).

    Several channels are found as `name_0`, `name_1`, …; a vector grid gives 3 channels.
    The file's structure is checked first (noise3d.vdbfile), so a damaged file gives ValueError
    instead of exhausting memory.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        alt = os.path.splitext(path)[0] + ".npz"
        if path.endswith(".vdb") and os.path.isfile(alt) and openvdb_module() is None:
            path = alt
        else:
            raise ValueError(f"{path}: no such file")
    if path.endswith(".npz"):
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not a readable .npz ({exc})") from None
        with z:
            key = name if name in z.files else ("noise" if "noise" in z.files else name)
            if key not in z.files:
                raise ValueError(f"{path}: no array named {name!r} (arrays: {', '.join(z.files)})")
            try:
                data = _volume(z[key], f"array {key!r}")
                vs, org = _placement(z["voxel_size"] if "voxel_size" in z.files else 1.0,
                                     z["origin"] if "origin" in z.files else 0.0)
            except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
                raise ValueError(f"{path}: {exc}") from None
        return data, vs, org
    vdb = openvdb_module()
    if vdb is None:
        raise ValueError(f"{path}: reading .vdb needs the openvdb module (install the bpy wheel)")

    def pick(names):
        if name in names:
            return [name]
        chosen = []
        while f"{name}_{len(chosen)}" in names:
            chosen.append(f"{name}_{len(chosen)}")
        if not chosen:
            raise ValueError(f"{path}: no grid named {name!r} (grids: {', '.join(sorted(set(names)))})")
        return chosen

    grids = _read_grids(vdb, path, pick)
    try:
        return _grids_to_array(grids, path)
    except RuntimeError as exc:      # the binding could not convert a damaged name or metadata
        raise ValueError(f"{path}: unreadable grid metadata ({exc})") from None


def _read_grids(vdb, path, pick):
    """The grids `pick(names)` chooses, read by OpenVDB once vdbfile.walk has checked the file
    (delayed loading off, so OpenVDB reads exactly the bytes the walk checked)."""
    try:
        chosen = pick([g.name for g in vdbfile.walk(path, pick).values()])
    except vdbfile.Corrupt as exc:
        raise ValueError(f"{path}: damaged or unsupported OpenVDB file ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    grids = []
    with _READ_LOCK:
        before = os.environ.get("OPENVDB_DISABLE_DELAYED_LOAD")
        os.environ["OPENVDB_DISABLE_DELAYED_LOAD"] = "1"
        try:
            for gname in chosen:
                grids.append(vdb.read(path, gname))
        except Exception as exc:
            raise ValueError(f"{path}: not a readable OpenVDB file ({exc})") from None
        finally:
            if before is None:
                del os.environ["OPENVDB_DISABLE_DELAYED_LOAD"]
            else:
                os.environ["OPENVDB_DISABLE_DELAYED_LOAD"] = before
    return grids


def _dense(shape, vector, path, what):
    """A zero float32 array for a dense copy of a grid, refused when it could not fit in memory
    (a damaged bounding box or shape must not take the machine down)."""
    shape = tuple(int(n) for n in shape) + ((3,) if vector else ())
    nbytes = 4 * float(np.prod(shape, dtype=np.float64))
    if nbytes > _memory_budget():
        raise ValueError(f"{path}: {what} of shape {shape} needs {nbytes / 2**30:.1f} GiB, more than half "
                         "the memory available; the file is damaged or the grid too large to read densely")
    return np.zeros(shape, np.float32)


def _memory_budget():
    try:
        return 0.5 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2.0 ** 34


def _grids_to_array(grids, path):
    g0 = grids[0]
    meta = dict(g0.metadata)
    vs = np.asarray(g0.transform.voxelSize(), np.float64)
    if not (np.isfinite(vs).all() and (vs > 0).all()):
        raise ValueError(f"{path}: grid {g0.name!r} has voxel size {vs}")
    if "noisewarp_shape" in meta:
        lo = np.zeros(3, np.int64)
        shape = _declared_shape(meta["noisewarp_shape"], grids, path)
    else:
        bbox = [g.evalActiveVoxelBoundingBox() for g in grids]
        lo = np.min([b[0] for b in bbox], axis=0).astype(np.int64)
        hi = np.max([b[1] for b in bbox], axis=0).astype(np.int64)
        shape = tuple(int(n) for n in np.maximum(hi - lo + 1, 1))
    centre = np.asarray(g0.transform.indexToWorld(tuple(int(v) for v in lo)), np.float64)
    origin = centre - vs / 2
    if any(n < 1 for n in shape):
        raise ValueError(f"{path}: grid {g0.name!r} declares shape {shape}")
    chans = []
    for g in grids:
        vector = g.valueTypeName.startswith("vec3")
        arr = _dense(shape, vector, path, f"grid {g.name!r}")
        g.copyToArray(arr, ijk=tuple(int(v) for v in lo))
        chans.append(arr if vector else arr[..., None])
    data = np.concatenate(chans, axis=-1)
    if not np.isfinite(data).all():
        raise ValueError(f"{path}: grid {g0.name!r} contains NaN/inf values")
    return data, vs, origin


def _declared_shape(value, grids, path):
    """The dense shape write_vdb recorded, checked against the active voxels it must contain."""
    try:
        shape = tuple(int(n) for n in value)
        ok = len(shape) == 3 and all(n >= 1 and n == m for n, m in zip(shape, value))
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: metadata noisewarp_shape={value!r} is not three positive sizes")
    for g in grids:
        if g.activeVoxelCount() and not (min(g.evalActiveVoxelBoundingBox()[0]) >= 0 and all(
                h < n for h, n in zip(g.evalActiveVoxelBoundingBox()[1], shape))):
            raise ValueError(f"{path}: grid {g.name!r} has active voxels outside its declared shape {shape}")
    return shape


def read_dense(path, name, shape):
    """Grid `name` of a .vdb as a dense array whose [0, 0, 0] is index (0, 0, 0), `shape` voxels
    ([X, Y, Z] or [X, Y, Z, 3] for vector grids; inactive voxels are the background, usually 0),
    and its grid class ("staggered" for MAC velocities). For caches whose extent is known
    (a fluid domain's resolution) rather than read from the active voxels."""
    vdb = openvdb_module()
    if vdb is None:
        raise ValueError(f"{path}: reading .vdb needs the openvdb module (install the bpy wheel)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")

    def pick(names):
        if name not in names:
            raise ValueError(f"{path}: no grid named {name!r} (grids: {', '.join(sorted(set(names)))})")
        return [name]

    grid, = _read_grids(vdb, path, pick)
    vector = grid.valueTypeName.startswith("vec3")
    arr = _dense(shape, vector, path, f"grid {name!r}")
    grid.copyToArray(arr, ijk=(0, 0, 0))
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: grid {name!r} contains NaN/inf values")
    try:
        return arr, str(dict(grid.metadata).get("class", ""))
    except RuntimeError as exc:
        raise ValueError(f"{path}: unreadable grid metadata ({exc})") from None


def read_velocity(path, name="velocity"):
    """A velocity grid [X, Y, Z, 3] with its voxel size and origin, from .vdb, .npz or .npy.

    .npy holds the bare array (voxel size 1, origin 0); .npz may add `voxel_size`, `origin`.
    """
    path = os.fspath(path)
    if path.endswith(".npy"):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such file")
        try:
            vel = np.load(path)
        except Exception as exc:
            raise ValueError(f"{path}: not a readable .npy file ({exc})") from None
        vs, org = np.ones(3), np.zeros(3)
    elif path.endswith(".npz"):
        vel, vs, org = read_vdb(path, name)
    elif path.endswith(".vdb"):
        vel, vs, org = read_vdb(path, name)
    else:
        raise ValueError(f"{path}: velocity grids must be .vdb, .npz or .npy")
    vel = np.asarray(vel, np.float32)
    if vel.ndim != 4 or vel.shape[-1] != 3:
        raise ValueError(f"{path}: velocity must be [X, Y, Z, 3]; got shape {vel.shape}")
    if not np.isfinite(vel).all():
        raise ValueError(f"{path}: velocity contains NaN/inf values")
    return vel, vs, org


def write_velocity_vdb(path, velocity, voxel_size, origin, name="velocity"):
    """A Vec3 float grid (e.g. to make test inputs like a smoke cache). Needs openvdb."""
    vdb = openvdb_module()
    if vdb is None:
        raise ValueError("writing a .vdb velocity grid needs the openvdb module (install the bpy wheel)")
    vs, org = _placement(voxel_size, origin)
    g = _grid(vdb, vdb.Vec3SGrid, np.asarray(velocity, np.float32), name, vs, org, fog=False)
    with atomic_path(path) as tmp:
        vdb.write(tmp, grids=[g])
    return os.fspath(path)
