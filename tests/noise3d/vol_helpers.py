"""Statistics and motion maps shared by the noise3d tests (thresholds from the sample size)."""
import numpy as np
import pytest
from scipy import stats

from noise3d.vdb import openvdb_module

# OpenVDB reaches Python through the bpy wheel (or a system openvdb); `pip install .` has neither,
# so these tests skip there and .npz stands in (tested without them).
needs_openvdb = pytest.mark.skipif(openvdb_module() is None,
                                   reason="needs the openvdb module (bundled in the bpy wheel)")

Z = 4.5  # standard errors a statistic may stray: < 1 % false alarms over ~1,500 checks a run


def assert_white(y, label=""):
    """Per frame: mean 0, variance 1, Gaussian (KS), lag-1 autocorrelation along every axis and
    cross-channel correlation ≈ 0, each within Z standard errors for this many samples."""
    y = np.asarray(y, np.float64)
    assert np.isfinite(y).all(), label
    n = y.size
    assert abs(y.mean()) < Z / np.sqrt(n), (label, y.mean())
    assert abs(y.var() - 1) < Z * np.sqrt(2.0 / n), (label, y.var())
    d = stats.kstest(y.ravel(), "norm").statistic
    assert d < 1.95 / np.sqrt(n), (label, "KS", d)   # alpha = 0.001
    for ax in range(3):
        a = np.moveaxis(y, ax, 0)
        u, v = a[:-1].ravel(), a[1:].ravel()
        r = np.corrcoef(u, v)[0, 1]
        assert abs(r) < Z / np.sqrt(u.size), (label, "lag-1 along axis", ax, r)
    C = y.shape[-1]
    for i in range(C):
        for j in range(i + 1, C):
            r = np.corrcoef(y[..., i].ravel(), y[..., j].ravel())[0, 1]
            assert abs(r) < Z / np.sqrt(y[..., 0].size), (label, "channels", i, j, r)


def grid(shape):
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)


def rotation_flow(shape, angle_deg, axis=(0, 0, 1)):
    """Backward flow of a rigid rotation about the volume centre (voxel units)."""
    from scipy.spatial.transform import Rotation

    p = grid(shape) + 0.5
    c = np.array(shape) / 2.0
    R = Rotation.from_rotvec(np.deg2rad(angle_deg) * np.asarray(axis, float) / np.linalg.norm(axis)).as_matrix()
    src = (p - c) @ R + c          # R^T (p - c) + c: where p came from
    return (src - p).astype(np.float32)


def swirl_flow(shape, strength=2.0):
    """Rotation about Z whose angle decays with the distance from the axis (a vortex)."""
    p = grid(shape) + 0.5
    c = np.array(shape) / 2.0
    d = p - c
    r = np.hypot(d[..., 0], d[..., 1])
    ang = strength * np.exp(-(r / (0.3 * shape[0])) ** 2)
    co, si = np.cos(ang), np.sin(ang)
    sx = co * d[..., 0] + si * d[..., 1]
    sy = -si * d[..., 0] + co * d[..., 1]
    src = np.stack([sx, sy, d[..., 2]], -1) + c
    return (src - p).astype(np.float32)


def fold_flow(shape):
    """A non-injective map: x ↦ |x − c| + c (both halves come from the same half), plus a y shear."""
    p = grid(shape) + 0.5
    c = shape[0] / 2.0
    src = p.copy()
    src[..., 0] = np.abs(p[..., 0] - c) * 0.8 + c
    src[..., 1] = p[..., 1] + 0.37 * p[..., 2]
    return (src - p).astype(np.float32)


def collapse_flow(shape):
    """Every voxel comes from one point (a collapse)."""
    p = grid(shape) + 0.5
    target = np.array(shape) / 2.0 + np.array([0.3, 0.1, 0.7])
    return (target - p).astype(np.float32)


def zoom_flow(shape, scale):
    """Uniform scaling about the centre: scale > 1 magnifies (sources come from a smaller region)."""
    p = grid(shape) + 0.5
    c = np.array(shape) / 2.0
    return ((p - c) / scale + c - p).astype(np.float32)
