"""Taichi kernels of the 3D particle warper (two passes over destinations, 8 trilinear corners).

Pass 1 adds every request to the fixed-point sums T_c, U_c (integer atomics: order-free).
Pass 2 runs one thread per destination, walks its corners in the fixed order and takes the
bridge pieces, then adds fresh noise for the out-of-volume weight. Mirrors
warper.particle_requests / particle_step_numpy operation for operation.

With factor s > 1 (method 'supersample') the kernels read the coarse flow and interpolate it
at the fine voxel centres on the fly, with the same float32 operations, in the same order, as
core2d.ops.upsample_flow (linear along axis 0, then 1, then 2, clamped at the borders, × s),
so no s³-sized flow array is ever built.
"""
import taichi as ti

from core2d import partition


def build():
    request, take, finish_one = partition.taichi_funcs()

    @ti.func
    def axis_weights(i, n, s):
        """Coarse neighbours and weight of fine index i along an axis of n coarse cells."""
        fine = (ti.cast(i, ti.f64) + 0.5) / ti.cast(s, ti.f64) - 0.5
        fine = ti.min(ti.max(fine, 0.0), ti.cast(n - 1, ti.f64))
        i0 = ti.cast(ti.floor(fine), ti.i32)
        i1 = ti.min(i0 + 1, n - 1)
        t = ti.cast(fine - ti.cast(i0, ti.f64), ti.f32)
        return i0, i1, t

    @ti.func
    def fine_flow(flow: ti.template(), i, j, k, cx, cy, cz, s, d):
        """Component d of ops.upsample_flow(flow, s) at fine voxel (i, j, k)."""
        a0, a1, ta = axis_weights(i, cx, s)
        b0, b1, tb = axis_weights(j, cy, s)
        c0, c1, tc = axis_weights(k, cz, s)
        v1 = ti.Vector([0.0, 0.0], ti.f32)
        for e in ti.static(range(2)):
            kk = c0 if e == 0 else c1
            v00 = flow[(a0 * cy + b0) * cz + kk, d] * (1.0 - ta) + flow[(a1 * cy + b0) * cz + kk, d] * ta
            v01 = flow[(a0 * cy + b1) * cz + kk, d] * (1.0 - ta) + flow[(a1 * cy + b1) * cz + kk, d] * ta
            v1[e] = v00 * (1.0 - tb) + v01 * tb
        return (v1[0] * (1.0 - tc) + v1[1] * tc) * ti.cast(s, ti.f32)

    @ti.func
    def lower_corner(flow: ti.template(), p, nx, ny, nz, s):
        i = p // (ny * nz)
        j = (p // nz) % ny
        k = p % nz
        b = ti.Vector([0.0, 0.0, 0.0], ti.f32)
        if s == 1:
            b = ti.Vector([flow[p, 0], flow[p, 1], flow[p, 2]], ti.f32)
        else:
            for d in ti.static(range(3)):
                b[d] = fine_flow(flow, i, j, k, nx // s, ny // s, nz // s, s, d)
        q = ti.Vector([ti.cast(i, ti.f32) + b[0], ti.cast(j, ti.f32) + b[1], ti.cast(k, ti.f32) + b[2]], ti.f32)
        hi = ti.Vector([ti.cast(nx + 1, ti.f32), ti.cast(ny + 1, ti.f32), ti.cast(nz + 1, ti.f32)])
        q = ti.min(ti.max(q, -2.0), hi)
        lo = ti.floor(q)
        f = q - lo
        return ti.cast(lo, ti.i32), f

    @ti.func
    def corner_weight(f, dx, dy, dz):
        """Trilinear weight of corner (dx, dy, dz): the same float32 products as the NumPy side."""
        wx = ti.select(dx == 1, f[0], 1.0 - f[0])
        wy = ti.select(dy == 1, f[1], 1.0 - f[1])
        wz = ti.select(dz == 1, f[2], 1.0 - f[2])
        return (wx * wy) * wz

    @ti.kernel
    def pass1(flow: ti.types.ndarray(), T: ti.types.ndarray(), U: ti.types.ndarray(),
              nx: ti.i32, ny: ti.i32, nz: ti.i32, s: ti.i32, piece_base: ti.u32, channels: ti.i32):
        for p in range(nx * ny * nz):
            lo, f = lower_corner(flow, p, nx, ny, nz, s)
            for corner in range(8):   # a runtime loop: unrolled, the kernel compiles 8× slower
                dx, dy, dz = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
                w = corner_weight(f, dx, dy, dz)
                cx, cy, cz = lo[0] + dx, lo[1] + dy, lo[2] + dz
                if 0 <= cx < nx and 0 <= cy < ny and 0 <= cz < nz and w > 0:
                    c = (cx * ny + cy) * nz + cz
                    request(T, U, c, p, w, piece_base, channels)

    @ti.kernel
    def pass2(flow: ti.types.ndarray(), x: ti.types.ndarray(), T: ti.types.ndarray(),
              U: ti.types.ndarray(), y: ti.types.ndarray(), nx: ti.i32, ny: ti.i32, nz: ti.i32,
              s: ti.i32, piece_base: ti.u32, left_base: ti.u32, fresh_base: ti.u32, channels: ti.i32):
        for p in range(nx * ny * nz):
            for ch in range(channels):
                y[p, ch] = 0.0
            lo, f = lower_corner(flow, p, nx, ny, nz, s)
            asum = 0.0
            v_out = 0.0
            for corner in range(8):   # a runtime loop: unrolled, the kernel compiles 8× slower
                dx, dy, dz = (corner >> 2) & 1, (corner >> 1) & 1, corner & 1
                w = corner_weight(f, dx, dy, dz)
                cx, cy, cz = lo[0] + dx, lo[1] + dy, lo[2] + dz
                if 0 <= cx < nx and 0 <= cy < ny and 0 <= cz < nz:
                    if w > 0:
                        c = (cx * ny + cy) * nz + cz
                        asum += take(x, T, U, y, c, p, w, 0.0, piece_base, left_base, channels)
                else:
                    v_out += w
            finish_one(y, p, asum, v_out, fresh_base, channels)

    return pass1, pass2
