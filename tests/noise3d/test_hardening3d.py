"""Hostile input for the 3D library (issue 12): damaged files, shared warpers, silent conversions."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import noise3d

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Reads every damaged file in one child process under an address-space cap, then reports each
# outcome and the peak resident memory: a regression exhausts the cap or the clock, never CI.
_READER = r"""
import json, resource, sys
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import noise3d
out = []
for p in sys.argv[2:]:
    try:
        noise3d.read_vdb(p)
        out.append("ok")
    except ValueError:
        out.append("ValueError")
    except BaseException as exc:
        out.append(f"{type(exc).__name__}: {exc}")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so it would report pytest's own size
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"outcomes": out, "maxrss_kb": hwm}))
"""


def _damaged_copies(src, folder):
    """The valid file with 64 bytes inverted at every 64-byte offset, and random bytes written
    over 1-8 bytes at 300 random places (counts, masks, sizes and values all get hit)."""
    data = open(src, "rb").read()
    rs = np.random.default_rng(12)
    paths = []
    edits = [(off, 64, None) for off in range(0, len(data), 64)]
    edits += [(int(rs.integers(len(data))), int(rs.integers(1, 9)), rs) for _ in range(300)]
    for k, (off, width, r) in enumerate(edits):
        b = bytearray(data)
        for i in range(off, min(off + width, len(b))):
            b[i] = b[i] ^ 0xFF if r is None else int(r.integers(256))
        p = os.path.join(folder, f"damaged_{k:04d}.vdb")
        with open(p, "wb") as f:
            f.write(bytes(b))
        paths.append(p)
    return paths


def test_damaged_vdb_files_give_value_errors_within_bounded_memory(tmp_path):
    noise = np.random.default_rng(0).standard_normal((8, 8, 8, 1)).astype(np.float32)
    src = noise3d.write_vdb(tmp_path / "noise.vdb", noise, 0.1, (0, 0, 0), density=True)
    paths = _damaged_copies(src, tmp_path)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cap = 3 << 30
    r = subprocess.run([sys.executable, "-c", _READER, str(cap)] + paths, capture_output=True, text=True,
                       timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-2000:]          # no crash, no abort
    report = json.loads(r.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    assert len(outcomes) == len(paths)
    assert set(outcomes) <= {"ok", "ValueError"}, [o for o in outcomes if o not in ("ok", "ValueError")][:5]
    assert outcomes.count("ValueError") > len(paths) // 3
    # the file is 12 kB: reading any version of it needs no more than the interpreter itself
    assert report["maxrss_kb"] < 400 * 1024, report["maxrss_kb"]


# ---------------------------------------------------------------------------- saved states (5)
def _saved(tmp_path):
    v = noise3d.VolumeWarper((6, 5, 4), channels=2, method="supersample", factor=2, seed=3, backend="numpy")
    v.step(np.full((6, 5, 4, 3), 0.3, np.float32))
    v.save(tmp_path / "vol.npz")
    return v, dict(np.load(tmp_path / "vol.npz"))


def _write(tmp_path, d, name="bad.npz"):
    np.savez(tmp_path / name, **d)
    return tmp_path / name


def test_volume_states_round_trip_and_damage_is_one_value_error(tmp_path):
    v, d = _saved(tmp_path)
    back = noise3d.VolumeWarper.load(tmp_path / "vol.npz", backend="numpy")
    assert back.frame == 1 and np.array_equal(back.noise, v.noise)
    raw = (tmp_path / "vol.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04" + bytes(100))
    cfg = d["config"].item()
    s = d["state"]
    bad = [tmp_path / "cut.npz", tmp_path / "junk.npz",
           _write(tmp_path, {"state": s}, "noconfig.npz"),
           _write(tmp_path, dict(d, config=np.array("[1]")), "list.npz"),
           _write(tmp_path, dict(d, config=np.array(cfg[:-1] + ', "colour": 1}')), "extra.npz"),
           _write(tmp_path, dict(d, state=s * 100), "x100.npz"),
           _write(tmp_path, dict(d, state=np.round(s).astype(np.int32)), "int.npz"),
           _write(tmp_path, dict(d, state=np.where(s > 2, np.nan, s)), "nan.npz")]
    for frame in ("-1", "1.5", "true"):
        bad.append(_write(tmp_path, dict(d, config=np.array(cfg.replace('"frame": 1', f'"frame": {frame}'))),
                          f"frame{frame}.npz"))
    for p in bad:
        with pytest.raises(ValueError, match=p.name):
            noise3d.VolumeWarper.load(p, backend="numpy")


# ---------------------------------------------------------------------------- aliasing (6)
@pytest.mark.parametrize("method", noise3d.METHODS)
def test_volume_results_do_not_alias_the_state(method):
    shape = (5, 4, 6)
    fine = tuple(2 * n for n in shape) if method == "supersample" else shape
    init = np.random.default_rng(1).standard_normal(fine + (2,)).astype(np.float32)
    mine = init.copy()
    given = method != "flowmap"                            # flowmap draws its own reference noise
    v = noise3d.VolumeWarper(shape, 2, method=method, factor=2, backend="numpy", noise=mine if given else None)
    mine *= 0                                              # the caller's array stays theirs
    ref = noise3d.VolumeWarper(shape, 2, method=method, factor=2, backend="numpy", noise=init if given else None)
    assert np.array_equal(v.noise, ref.noise)
    flow = np.full(shape + (3,), 0.4, np.float32)
    y = v.step(flow)
    for out in (y, v.noise, v.state):
        try:
            out *= 0                                       # refused (read-only) or harmless
        except ValueError:
            pass
    ref.step(flow)
    assert np.array_equal(v.noise, ref.noise)
    assert np.array_equal(v.step(flow), ref.step(flow)) and np.abs(v.noise).max() > 0


# ---------------------------------------------------------------------------- silent conversions (7)
@pytest.mark.parametrize("fallback", [False, True])
def test_volume_writers_refuse_nan_and_wrong_shapes(tmp_path, fallback, monkeypatch):
    if fallback:
        monkeypatch.setenv("NOISEWARP_NO_OPENVDB", "1")
    good = np.zeros((3, 4, 5, 2), np.float32)
    bad_noise = [np.where(np.arange(good.size).reshape(good.shape) == 7, np.nan, good),
                 np.full((3, 4, 5), np.inf, np.float32), np.zeros(10, np.float32), np.zeros((3, 4), np.float32),
                 np.array([["a"]])]
    for k, n in enumerate(bad_noise):
        with pytest.raises(ValueError, match="noise"):
            noise3d.write_vdb(tmp_path / f"n{k}.vdb", n, 1.0, (0, 0, 0))
    with pytest.raises(ValueError, match="density"):
        noise3d.write_vdb(tmp_path / "d.vdb", good, 1.0, (0, 0, 0), density=np.full((3, 4, 5), np.nan))
    for vs, org in (("0.5", 0), (1.0, "0"), (0.0, 0), (1.0, (0, 0))):
        with pytest.raises(ValueError, match="voxel size"):
            noise3d.write_vdb(tmp_path / "p.vdb", good, vs, org)
    assert list(tmp_path.iterdir()) == []                       # nothing half-written


def test_npz_volumes_with_nan_or_wrong_ndim_are_refused_on_read(tmp_path):
    for name, arr in (("nan", np.full((2, 2, 2), np.nan, np.float32)), ("flat", np.zeros(8, np.float32)),
                      ("5d", np.zeros((1, 2, 2, 2, 1), np.float32))):
        p = tmp_path / f"{name}.npz"
        with open(p, "wb") as f:
            np.savez(f, noise=arr)
        with pytest.raises(ValueError, match=p.name):
            noise3d.read_vdb(p)
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04" + bytes(64))
    with pytest.raises(ValueError, match="cut.npz"):
        noise3d.read_vdb(tmp_path / "cut.npz")


@pytest.mark.parametrize("kw", [dict(channels=1.7), dict(channels="2"), dict(channels=True), dict(channels=0),
                                dict(shape=(4.9, 4, 4)), dict(shape=(4, 4)), dict(shape="444"),
                                dict(shape=(4, 0, 4)), dict(seed=2.9), dict(seed=-1), dict(seed=2 ** 32),
                                dict(seed="1"), dict(method="supersample", factor=2.5),
                                dict(method="supersample", factor=0), dict(factor=2.5)])
def test_volume_warper_options_are_validated_like_the_2d_ones(kw):
    kw = dict(dict(shape=(4, 4, 4), channels=1, method="particle", seed=0), **kw)
    with pytest.raises(ValueError):
        noise3d.VolumeWarper(kw.pop("shape"), backend="numpy", **kw)


def _box():
    import trimesh
    return trimesh.creation.box(extents=(2.0, 2.0, 2.0))


@pytest.mark.parametrize("kw", [dict(k=0), dict(k=2.5), dict(spacing=0), dict(spacing=float("nan")),
                                dict(spacing="1"), dict(band=-1), dict(band=float("inf")), dict(stride=1.5),
                                dict(shape=(8.5, 8, 8)), dict(voxel_size="0.5")])
def test_mesh_motion_field_validates_its_numbers(kw):
    m = _box()
    args = dict(shape=(8, 8, 8), origin=(-2, -2, -2), voxel_size=0.5)
    args.update(kw)
    with pytest.raises(ValueError):
        noise3d.mesh_motion_field(m, m.vertices + 0.1, **args)


def test_mesh_motion_field_refuses_float_face_indices():
    m = _box()
    faces = m.faces.astype(np.float64) + 0.3
    with pytest.raises(ValueError, match="face indices must be integers"):
        noise3d.mesh_motion_field((m.vertices, faces), m.vertices + 0.1, (8, 8, 8), (-2, -2, -2), 0.5)


# ---------------------------------------------------------------------------- open meshes (10)
def test_an_open_source_mesh_is_reported():
    import warnings

    m = _box()
    args = ((-2, -2, -2), 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # a closed box: no warning
        noise3d.mesh_motion_field(m, m.vertices + 0.1, (8, 8, 8), *args)
    holed = (m.vertices, m.faces[1:])                          # one triangle removed
    with pytest.warns(UserWarning, match=r"mesh 0 is not closed \(3 edge"):
        flow = noise3d.mesh_motion_field(holed, m.vertices + 0.1, (8, 8, 8), *args)
    assert np.isfinite(flow).all()
