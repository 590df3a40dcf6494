"""The SciPy-free searches behind the mesh and velocity fields: exact against brute force (and
against SciPy where it is installed), and the field code paths the Blender extension runs
never import SciPy (the extension does not ship it)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from noise3d.fields import trilinear
from noise3d.nearest import SampleGrid, capped_edt, nearest_numpy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cases():
    rng = np.random.default_rng(5)
    lattice = np.stack(np.meshgrid(*[np.arange(6.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    half = np.stack(np.meshgrid(*[np.arange(-2, 8) + 0.5] * 3, indexing="ij"), -1).reshape(-1, 3)
    sphere = rng.standard_normal((3000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    return {
        "random": (rng.random((2000, 3)) * 20, rng.random((700, 3)) * 24 - 2),
        "lattice with ties": (lattice, half),
        "surface, queries off it": (sphere * 10, rng.standard_normal((500, 3)) * 6),
        "queries far outside": (rng.random((300, 3)), rng.random((60, 3)) * 200 - 100),
        "one sample": (np.array([[1.0, 2.0, 3.0]]), rng.random((10, 3))),
        "coincident samples": (np.repeat(rng.random((5, 3)), 4, axis=0), rng.random((30, 3))),
    }


@pytest.mark.parametrize("name,k", [(name, k) for name, (S, _) in _cases().items()
                                    for k in (1, 4, 17) if k <= len(S)])
def test_grid_search_equals_brute_force(name, k):
    S, x = _cases()[name]
    d_ref, i_ref = nearest_numpy(S, x, k)
    d, i = SampleGrid(S).query(x, k=k, backend="taichi")
    if k == 1:
        assert d.shape == i.shape == (len(x),)
        d, i = d[:, None], i[:, None]
    assert np.array_equal(i, i_ref) and np.array_equal(d, d_ref)
    # the reference is right: sorted, and nothing left out is nearer than the k-th
    assert (np.diff(d_ref, axis=1) >= 0).all()
    all_d = np.sqrt(((S[None] - x[:, None]) ** 2).sum(2))
    assert np.allclose(np.sort(all_d, 1)[:, :k], d_ref, rtol=0, atol=1e-12)


def test_same_distances_as_scipy_kdtree():
    spatial = pytest.importorskip("scipy.spatial")
    S, x = _cases()["random"]
    d0, _ = spatial.cKDTree(S).query(x, k=17)
    d1, _ = SampleGrid(S).query(x, k=17)
    assert np.array_equal(d0, d1)


def test_bad_queries_are_refused():
    g = SampleGrid(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="k must be"):
        g.query(np.zeros((1, 3)), k=4)
    with pytest.raises(ValueError, match="samples must be"):
        SampleGrid(np.zeros((0, 3)))


def test_capped_edt_is_exact_within_the_cap():
    rng = np.random.default_rng(1)
    occ = rng.random((17, 12, 9)) < 0.004
    occ[3, 4, 5] = True
    cells = np.stack(np.meshgrid(*[np.arange(n) for n in occ.shape], indexing="ij"), -1).reshape(-1, 3)
    pts = np.argwhere(occ)
    brute = np.sqrt(((cells[:, None, :] - pts[None]) ** 2).sum(2)).min(1).reshape(occ.shape)
    for cap in (2.0, 3.7, 40.0):
        d = capped_edt(occ, cap)
        within = brute <= cap
        assert np.array_equal(d[within], brute[within])
        assert np.isinf(d[~within]).all()
    ndimage = pytest.importorskip("scipy.ndimage")
    assert np.array_equal(capped_edt(occ, 100.0), ndimage.distance_transform_edt(~occ))


def test_trilinear_is_exact_on_affine_fields_and_zero_outside():
    shape = (5, 4, 6)
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"), -1)
    A = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])
    field = g @ A.T + np.array([0.125, -2.0])                   # [X, Y, Z, 2], affine
    rng = np.random.default_rng(3)
    c = np.stack([rng.uniform(-0.5, n - 0.5, 4000) for n in shape])
    c[:, :2] = [[0, 4], [0, 3], [0, 5]]                          # the two extreme corners
    out = trilinear(field, c)
    inside = np.all((c >= 0) & (c <= np.array(shape)[:, None] - 1), 0)
    assert np.allclose(out[inside], c[:, inside].T @ A.T + [0.125, -2.0], rtol=0, atol=1e-12)
    assert (out[~inside] == 0).all() and inside.sum() > 1000 and (~inside).sum() > 100


def test_trilinear_matches_scipy_map_coordinates():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(4)
    for shape in [(6, 5, 7), (1, 4, 3), (2, 1, 1)]:
        v = rng.standard_normal(shape).astype(np.float32)
        c = np.stack([rng.uniform(-1.5, n + 0.5, 3000) for n in shape])
        c = np.concatenate([c, np.round(c), np.array([[-1e-12, n - 1 + 1e-12, 0, n - 1] for n in shape])], 1)
        ref = ndimage.map_coordinates(v, c, order=1, mode="constant", cval=0.0)
        assert np.array_equal(trilinear(v, c).astype(np.float32), ref), shape


def test_extension_code_paths_never_import_scipy():
    """The mesh field (EDT + neighbour search + affine fit) and the smoke velocity resampling,
    as the Blender extension calls them, in a process where SciPy cannot be imported."""
    script = textwrap.dedent("""
        import sys
        class NoScipy:
            def find_spec(self, name, path=None, target=None):
                if name == "scipy" or name.startswith("scipy."):
                    raise ImportError("scipy is not shipped in the extension")
        sys.meta_path.insert(0, NoScipy())
        import numpy as np, noise3d
        box = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) * 0.5 - 0.25
        faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
        f = noise3d.mesh_motion_field((box, faces), (box + [0.05, 0, 0], faces), (16, 16, 16),
                                      (-0.5, -0.5, -0.5), 1 / 16)
        assert abs(f[8, 8, 8, 0] - 0.8) < 1e-4, f[8, 8, 8]
        v = np.ones((8, 8, 8, 3), np.float32)
        m = np.diag([0.1, 0.1, 0.1, 1.0])
        g = noise3d.index_velocity_flow(v, m, 1.0, (5, 6, 7), (0.1, 0.1, 0.1), 0.1)
        assert np.allclose(g[2, 2, 2], -1.0)
        print("NO_SCIPY_OK", "scipy" in sys.modules)
    """)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "NO_SCIPY_OK False" in r.stdout
