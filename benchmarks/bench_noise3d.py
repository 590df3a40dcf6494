"""Speed and memory of the volumetric warper and of mesh motion fields (not a test).

    .venv/bin/python benchmarks/bench_noise3d.py                 # everything below
    .venv/bin/python benchmarks/bench_noise3d.py --sizes 64 128  # a subset
    NOISEWARP_TI_ARCH=cpu ... to force the CPU on a CUDA machine

Per-step time: median of `--repeats` steps of a rigid rotation (after one warm-up step that
compiles the kernels), for the particle and the supersample (factor 2) methods. Memory: the
arrays a step holds (state, new frame, the int64 fixed-point sums T and U, the flow), the peak
of new NumPy allocations during one step (tracemalloc), and the process's peak RSS so far. The 2D figure is core2d.NoiseWarper(method="particle",
backend="taichi") on a frame with the same number of cells, in the same run: the ratio is the
3D cost per voxel over the 2D cost per pixel (target <= 2.5: 8 trilinear corners instead of 4).
Mesh fields: wall and CPU time of noise3d.mesh_motion_field for spheres of ~10k, 20k and
100k triangles (radius 0.8 of the half-domain) rotated by 3°, on a 128³ grid.
"""
import argparse
import json
import os
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def rotation_flow(shape, angle_deg=10.0):
    """Backward flow of a rotation about the Z axis through the volume centre (voxels)."""
    p = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) + 0.5 for n in shape], indexing="ij"), -1)
    c = np.array(shape, np.float32) / 2
    a = np.deg2rad(angle_deg)
    d = p - c
    src = np.stack([np.cos(a) * d[..., 0] + np.sin(a) * d[..., 1],
                    -np.sin(a) * d[..., 0] + np.cos(a) * d[..., 1], d[..., 2]], -1) + c
    return (src - p).astype(np.float32)


def time_steps(step, flow, repeats):
    step(flow)  # warm-up: compiles kernels, allocates scratch
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step(flow)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def peak_step_bytes(step, flow):
    tracemalloc.start()
    step(flow)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def bench_2d(cells, channels, repeats):
    import core2d

    side = int(round(np.sqrt(cells)))
    w = core2d.NoiseWarper(side, side, channels=channels, method="particle", seed=0, backend="taichi")
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) + 0.5
    c = side / 2
    a = np.deg2rad(10.0)
    sx = np.cos(a) * (xx - c) + np.sin(a) * (yy - c) + c
    sy = -np.sin(a) * (xx - c) + np.cos(a) * (yy - c) + c
    flow = np.stack([sx - xx, sy - yy], -1).astype(np.float32)
    return time_steps(w.step, flow, repeats), side * side


def bench_volume(n, channels, method, repeats):
    import noise3d

    shape = (n, n, n)
    v = noise3d.VolumeWarper(shape, channels=channels, method=method, seed=0, backend="taichi")
    flow = rotation_flow(shape)
    t = time_steps(v.step, flow, repeats)
    mem = peak_step_bytes(v.step, flow)
    # what a step holds: state and new frame (float32 × C), fixed-point sums T (int64) and
    # U (int64 × C), all at the state's resolution, and the flow (the kernels upsample it on the fly)
    fine = v.state.shape[0] * v.state.shape[1] * v.state.shape[2]
    held = fine * (4 * channels * 2 + 8 + 8 * channels) + flow.nbytes
    return t, mem, held


def bench_mesh(tris, n=128):
    import trimesh

    import noise3d

    # a UV sphere with about `tris` thousand faces (faces ≈ 3.9 · count²); 20k: icosphere(5)
    if tris == 20:
        mesh = trimesh.creation.icosphere(5, radius=0.8)                      # 20,480 faces
    else:
        c = int(round(np.sqrt(tris * 1000 / 3.89)))
        mesh = trimesh.creation.uv_sphere(radius=0.8, count=[c, c])
    moved = mesh.copy()
    moved.apply_transform(trimesh.transformations.rotation_matrix(np.deg2rad(3), [0.2, 0.1, 1]))
    shape = (n, n, n)
    origin = np.array([-1.0, -1.0, -1.0])
    vs = 2.0 / n
    noise3d.mesh_motion_field(mesh, moved, (16, 16, 16), origin, 2.0 / 16)   # import/warm-up
    walls, cpus = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        noise3d.mesh_motion_field(mesh, moved, shape, origin, vs)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return float(np.median(walls)), float(np.median(cpus)), len(mesh.faces)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256])
    ap.add_argument("--channels", type=int, nargs="*", default=[1, 4])
    ap.add_argument("--methods", nargs="*", default=["particle", "supersample"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mesh", type=int, nargs="*", default=[10, 20, 100], help="thousands of triangles")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()

    from core2d import _taichi

    arch = _taichi.init()
    print(f"# arch={arch} threads={os.environ.get('NOISEWARP_THREADS', 'all')} cpus={os.cpu_count()}")
    rows = []
    print("| volume | C | method | s/step | ns/voxel | 2D particle ns/px (same cells) | ratio 3D/2D "
          "| arrays held MB | new allocations in a step MB | process RSS peak so far MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for C in args.channels:
            t2d, px = bench_2d(n ** 3, C, args.repeats)
            per2d = t2d / px * 1e9
            for method in args.methods:
                if method == "supersample" and n >= 256:
                    continue  # 512³ fine state: ~12 GB at C=4, beyond this machine's comfort
                t, mem, held = bench_volume(n, C, method, args.repeats)
                per = t / n ** 3 * 1e9
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                row = dict(n=n, channels=C, method=method, s_per_step=t, ns_per_voxel=per,
                           ns_per_px_2d=per2d, ratio=per / per2d, step_peak_mb=mem / 2 ** 20, held_mb=held / 2 ** 20,
                           rss_mb=rss)
                rows.append(row)
                print(f"| {n}³ | {C} | {method} | {t:.3f} | {per:.1f} | {per2d:.1f} | {per / per2d:.2f} | "
                      f"{held / 2 ** 20:.0f} | {mem / 2 ** 20:.0f} | {rss:.0f} |", flush=True)
    if args.mesh:
        print("\n| mesh triangles | grid | mesh_motion_field wall s | CPU s (all threads) |")
        print("|---|---|---|---|")
        for k in args.mesh:
            t, c, faces = bench_mesh(k)
            rows.append(dict(mesh_faces=faces, grid=128, seconds=t, cpu_seconds=c))
            print(f"| {faces:,} | 128³ | {t:.2f} | {c:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
