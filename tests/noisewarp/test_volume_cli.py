"""`noisewarp volume`: meshes and velocity grids in, VDB/npz sequences out, one-line errors."""
import json

import numpy as np
import pytest
import trimesh

import noise3d
from noisewarp import cli as main_cli

from ..noise3d import vol_helpers as H
from ..noise3d.vol_helpers import needs_openvdb


def run(argv, capsys):
    rc = main_cli.main(argv)
    return rc, capsys.readouterr().err


def make_mesh_frames(folder, n=3, ext="obj"):
    folder.mkdir()
    box = trimesh.creation.box(extents=(1.0, 0.8, 0.6))
    for t in range(n):
        m = box.copy()
        m.apply_transform(trimesh.transformations.rotation_matrix(0.15 * t, [0, 0, 1]))
        m.apply_translation([0.04 * t, 0, 0])
        m.export(folder / f"frame_{t + 1}.{ext}")
    return box


@needs_openvdb
@pytest.mark.parametrize("ext", ["obj", "ply"])
def test_mesh_folder_to_vdb_sequence(tmp_path, capsys, ext):
    make_mesh_frames(tmp_path / "meshes", 3, ext)
    out = tmp_path / "out"
    rc, err = run(["volume", str(tmp_path / "meshes"), "-o", str(out), "--resolution", "24",
                   "--channels", "2", "--density"], capsys)
    assert rc == 0, err
    meta = json.loads((out / "volume.json").read_text())
    files = sorted(p.name for p in out.glob("noise_*.vdb"))
    assert files == ["noise_0001.vdb", "noise_0002.vdb", "noise_0003.vdb"]
    shape = tuple(meta["shape"])
    assert max(shape) == 24
    frames = []
    for f in files:
        noise, vs, org = noise3d.read_vdb(out / f)
        assert noise.shape == shape + (2,)
        np.testing.assert_allclose(vs, meta["voxel_size"])
        np.testing.assert_allclose(org, meta["origin"])
        H.assert_white(noise, f)
        frames.append(noise)
    # the same command gives the same bytes (seeded), and frames differ from each other
    assert not np.array_equal(frames[0], frames[1])
    assert "volume" in err                       # the progress bar went to stderr


def test_rerun_needs_force_and_is_deterministic(tmp_path, capsys):
    make_mesh_frames(tmp_path / "m", 2)
    args = ["volume", str(tmp_path / "m"), "-o", str(tmp_path / "o"), "--resolution", "16", "-q"]
    assert run(args, capsys)[0] == 0
    first = noise3d.read_vdb(tmp_path / "o" / "noise_0002.vdb")[0]
    rc, err = run(args, capsys)
    assert rc == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert run(args + ["--force"], capsys)[0] == 0
    assert np.array_equal(first, noise3d.read_vdb(tmp_path / "o" / "noise_0002.vdb")[0])


@pytest.mark.parametrize("method", ["particle", "supersample"])
def test_velocity_npy_folder_moves_the_noise(tmp_path, capsys, method):
    folder = tmp_path / "vel"
    folder.mkdir()
    shape = (16, 12, 10)
    for t in range(3):   # 2 voxels per frame along +X (voxel size 1, fps 2 -> v = 4 units/s)
        np.save(folder / f"v_{t:03d}.npy", np.tile(np.float32([4.0, 0, 0]), shape + (1,)))
    out = tmp_path / "out"
    rc, err = run(["volume", str(folder), "-o", str(out), "--resolution", "16", "--fps", "2",
                   "--format", "npz", "--method", method, "-q"], capsys)
    assert rc == 0, err
    a = noise3d.read_vdb(out / "noise_0001.npz")[0]
    b = noise3d.read_vdb(out / "noise_0002.npz")[0]
    assert np.array_equal(b[2:], a[:-2])        # an exact 2-voxel shift along X


@needs_openvdb
def test_velocity_vdb_folder(tmp_path, capsys):
    folder = tmp_path / "cache"
    folder.mkdir()
    shape = (10, 10, 10)
    for t in range(2):
        vel = np.zeros(shape + (3,), np.float32)
        vel[..., 1] = 0.5                      # world units / s
        noise3d.write_velocity_vdb(folder / f"fluid_data_{t + 1:04d}.vdb", vel, 0.1, (0, 0, 0))
    out = tmp_path / "out"
    rc, err = run(["volume", str(folder), "-o", str(out), "--resolution", "10", "--fps", "5", "-q"], capsys)
    assert rc == 0, err
    a, vs, org = noise3d.read_vdb(out / "noise_0001.vdb")
    b = noise3d.read_vdb(out / "noise_0002.vdb")[0]
    np.testing.assert_allclose(vs, 0.1)
    assert np.array_equal(b[:, 1:], a[:, :-1])  # 0.5 / 5 / 0.1 = 1 voxel along Y


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    rc, err = run(["volume", str(tmp_path / "nope"), "-o", str(tmp_path / "o"), "--resolution", "8"], capsys)
    assert rc == 2 and "not a folder" in err and len(err.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, err = run(["volume", str(empty), "-o", str(tmp_path / "o"), "--resolution", "8"], capsys)
    assert rc == 2 and "no meshes" in err
    mixed = tmp_path / "topo"
    mixed.mkdir()
    trimesh.creation.icosphere(1).export(mixed / "a_1.obj")
    trimesh.creation.icosphere(2).export(mixed / "a_2.obj")
    rc, err = run(["volume", str(mixed), "-o", str(tmp_path / "o"), "--resolution", "8"], capsys)
    assert rc == 2 and "a_2.obj" in err and "same topology" in err
    nan = tmp_path / "nan"
    nan.mkdir()
    for t in range(2):
        v = np.zeros((4, 4, 4, 3), np.float32)
        v[1, 1, 1, 0] = np.nan
        np.save(nan / f"v{t}.npy", v)
    rc, err = run(["volume", str(nan), "-o", str(tmp_path / "o"), "--resolution", "4"], capsys)
    assert rc == 2 and "NaN" in err
    rc, err = run(["volume", str(nan), "-o", str(tmp_path / "o"), "--resolution", "1"], capsys)
    assert rc == 2 and "--resolution" in err


def test_resume_after_interrupt_gives_identical_files(tmp_path, capsys, monkeypatch):
    make_mesh_frames(tmp_path / "meshes", 5)
    args = ["volume", str(tmp_path / "meshes"), "--resolution", "16", "--channels", "2",
            "--format", "npz", "--method", "supersample", "-q"]
    rc, err = run(args + ["-o", str(tmp_path / "full")], capsys)
    assert rc == 0, err
    part = tmp_path / "part"
    monkeypatch.setenv("NOISEWARP_INTERRUPT_AFTER", "3")
    rc, err = run(args + ["-o", str(part)], capsys)
    assert rc == 130
    assert sorted(p.name for p in part.glob("noise_*.npz")) == ["noise_0001.npz", "noise_0002.npz", "noise_0003.npz"]
    monkeypatch.delenv("NOISEWARP_INTERRUPT_AFTER")
    rc, err = run(args + ["-o", str(part)], capsys)
    assert rc == 2 and "--resume" in err                 # not overwritten without --resume/--force
    rc, err = run(args + ["-o", str(part), "--resume"], capsys)
    assert rc == 0, err
    for k in range(1, 6):
        a = np.load(tmp_path / "full" / f"noise_{k:04d}.npz")
        b = np.load(part / f"noise_{k:04d}.npz")
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            assert np.array_equal(a[name], b[name]), (k, name)
    assert not (part / ".noisewarp" / "volume_state.npz").exists()
    rc, err = run(args + ["-o", str(part), "--resume"], capsys)   # complete: nothing to do
    assert rc == 0
    rc, err = run(args[:-1] + ["--seed", "3", "-q", "-o", str(part), "--resume"], capsys)
    assert rc == 2 and "options differ" in err


def test_volume_warper_save_load(tmp_path):
    v = noise3d.VolumeWarper((8, 9, 10), channels=2, method="supersample", seed=4, backend="taichi")
    flow = np.full((8, 9, 10, 3), 0.3, np.float32)
    v.step(flow)
    v.save(tmp_path / "s.npz")
    w = noise3d.VolumeWarper.load(tmp_path / "s.npz", backend="taichi")
    assert w.frame == 1
    assert np.array_equal(v.step(flow), w.step(flow))


def test_flowmap_volume_follows_the_mesh_and_resumes_exactly(tmp_path, capsys, monkeypatch):
    """--method flowmap: a box sliding 0.23 voxel a frame carries its noise without diffusing it,
    every frame white; an interrupted run resumed gives the same files; --depth is refused with
    other methods."""
    folder = tmp_path / "slide"
    folder.mkdir()
    box = trimesh.creation.box(extents=(1.2, 1.2, 1.2))
    for t in range(7):
        m = box.copy()
        m.apply_translation([0.025 * t, 0, 0])
        m.export(folder / f"f_{t + 1}.obj")
    args = ["volume", str(folder), "--resolution", "16", "--padding", "0.2", "--channels", "4", "--format", "npz",
            "--method", "flowmap", "--depth", "1", "-q"]
    rc, err = run(args + ["-o", str(tmp_path / "full")], capsys)
    assert rc == 0, err
    meta = json.loads((tmp_path / "full" / "volume.json").read_text())
    assert meta["method"] == "flowmap" and meta["flowmap"] == {"depth": 1}
    frames = [noise3d.read_vdb(tmp_path / "full" / f"noise_{k:04d}.npz")[0] for k in range(1, 8)]
    for k, f in enumerate(frames):
        H.assert_white(f, f"frame {k + 1}")
    # 6 x 0.025 units = 1.37 voxels: inside the box, frame 7 against frame 1 shifted by 1 and by 2
    # voxels shares all of the noise between the two (particle: 0.62 of it, diffused)
    assert abs(0.15 / meta["voxel_size"] - 1.37) < 0.01
    inner = (slice(3, 11), slice(3, 12), slice(3, 12))
    r = [np.corrcoef(frames[0][inner].ravel(), frames[6][(slice(3 + k, 11 + k),) + inner[1:]].ravel())[0, 1]
         for k in (1, 2)]
    assert sum(r) >= 0.9, r
    part = tmp_path / "part"
    monkeypatch.setenv("NOISEWARP_INTERRUPT_AFTER", "4")
    assert run(args + ["-o", str(part)], capsys)[0] == 130
    monkeypatch.delenv("NOISEWARP_INTERRUPT_AFTER")
    rc, err = run(args + ["-o", str(part), "--resume"], capsys)
    assert rc == 0, err
    for k in range(1, 8):
        a, b = np.load(tmp_path / "full" / f"noise_{k:04d}.npz"), np.load(part / f"noise_{k:04d}.npz")
        for name in a.files:
            assert np.array_equal(a[name], b[name]), (k, name)
    rc, err = run(["volume", str(folder), "-o", str(tmp_path / "x"), "--resolution", "8", "--depth", "2"], capsys)
    assert rc == 2 and "--depth is an option of --method flowmap" in err
