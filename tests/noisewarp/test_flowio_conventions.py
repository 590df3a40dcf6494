"""Every input convention, checked the same way: content moving +3 px right (or down) must
move the warped noise 3 px right (or down) — an exact shift for an integer translation."""
import os

import numpy as np
import pytest

import core2d
from noisewarp import io
from noisewarp.sources import open_source

from .cli_util import H, W, constant_flows, shifted, write_vector_exrs


def warp_source(src, method="particle"):
    w = core2d.NoiseWarper(src.height, src.width, channels=2, method=method, seed=3)
    frames = [w.noise.copy()]
    for _, flow, _ in src.flows(1):
        frames.append(w.step(flow).copy())
    return frames


def assert_moved(frames, dx, dy=0, margin=0):
    """Frame t+1 equals frame t moved by (dx, dy) (away from `margin` px at the borders)."""
    assert len(frames) >= 2
    for a, b in zip(frames[:-1], frames[1:]):
        pa, pb = shifted(a, b, dx, dy)
        if margin:
            pa, pb = pa[margin:-margin, margin:-margin], pb[margin:-margin, margin:-margin]
        np.testing.assert_allclose(pb, pa, atol=1e-5)
        # and not trivially: the other direction does not match
        qa, qb = shifted(a, b, -dx, -dy)
        assert not np.allclose(qa, qb, atol=1e-3)


def test_library_convention_backward_npy(tmp_path):
    p = tmp_path / "flows.npy"
    np.save(p, constant_flows(3, -3.0))  # backward: each pixel came from 3 px to the left
    assert_moved(warp_source(open_source(p)), 3)


def test_backward_npy_down(tmp_path):
    p = tmp_path / "flows.npy"
    np.save(p, constant_flows(2, 0.0, -3.0))
    assert_moved(warp_source(open_source(p)), 0, 3)


def test_raft_layout_forward(tmp_path):
    p = tmp_path / "raft.npy"
    fwd = np.moveaxis(constant_flows(3, 3.0), -1, 1)  # [N, 2, H, W], forward (dx, dy)
    assert fwd.shape == (3, 2, H, W)
    np.save(p, fwd)
    src = open_source(p, flow_layout="nchw", flow_direction="forward")
    assert_moved(warp_source(src), 3, margin=3)
    np.testing.assert_array_equal(io.raft_to_flows(fwd), constant_flows(3, 3.0))


def test_gwtf_flows_dxdy_is_forward_nchw(tmp_path):
    p = tmp_path / "flows_dxdy.npy"
    np.save(p, np.moveaxis(constant_flows(3, 3.0), -1, 1).astype(np.float16))
    src = open_source(p)  # recognised by name: [T-1, 2, H, W], forward
    assert src.n_frames == 4 and (src.height, src.width) == (H, W)
    assert_moved(warp_source(src), 3, margin=3)


def test_gwtf_negate_approximation(tmp_path):
    p = tmp_path / "flows_dxdy.npy"
    np.save(p, np.moveaxis(constant_flows(2, 3.0), -1, 1))
    assert_moved(warp_source(open_source(p, invert="negate")), 3)


def test_row_column_order(tmp_path):
    p = tmp_path / "rc.npy"
    np.save(p, constant_flows(2, 0.0, -3.0)[..., ::-1])  # stored (dy, dx) = (-3, 0): came from above
    assert_moved(warp_source(open_source(p, flow_order="yx")), 0, 3)
    np.save(p, constant_flows(2, -3.0, 0.0)[..., ::-1])
    assert_moved(warp_source(open_source(p, flow_order="yx")), 3)


def test_negated_map_convention(tmp_path):
    p = tmp_path / "neg.npy"
    np.save(p, constant_flows(2, 3.0))  # stored as p - flow: the backward displacement is -3
    assert_moved(warp_source(open_source(p, flow_negate=True)), 3)


def test_flo_roundtrip_and_folder(tmp_path):
    f = np.random.default_rng(0).normal(size=(H, W, 2)).astype(np.float32)
    io.write_flo(tmp_path / "a.flo", f)
    np.testing.assert_array_equal(io.read_flo(tmp_path / "a.flo"), f)
    raw = (tmp_path / "a.flo").read_bytes()
    assert np.frombuffer(raw[:4], "<f4")[0] == np.float32(202021.25)
    assert tuple(np.frombuffer(raw[4:12], "<i4")) == (W, H)
    d = tmp_path / "flo"
    d.mkdir()
    for k, fl in enumerate(constant_flows(3, 3.0)):  # Middlebury: forward (u, v), y down
        io.write_flo(d / f"frame_{k:04d}.flo", fl)
    src = open_source(d)
    assert src.n_frames == 4
    assert_moved(warp_source(src), 3, margin=3)


def test_flo_bad_magic(tmp_path):
    (tmp_path / "x.flo").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match="x.flo.*magic"):
        io.read_flo(tmp_path / "x.flo")


def test_blender_vector_pass_right_and_down(tmp_path):
    src = open_source(write_vector_exrs(tmp_path / "right", 3, 3.0, 0.0))
    assert src.n_frames == 3
    assert_moved(warp_source(src), 3)
    src = open_source(write_vector_exrs(tmp_path / "down", 3, 0.0, 3.0))
    assert_moved(warp_source(src), 0, 3)


def test_vector_pass_forward_half_matches():
    vec = np.zeros((4, 5, 4), np.float32)
    vec[..., 2], vec[..., 3] = -3.0, 2.0  # Z = current - next (x), W = current - next (y up)
    back, fwd = io.vector_pass_to_flows(vec)
    np.testing.assert_array_equal(fwd[..., 0], 3.0)   # moves right
    np.testing.assert_array_equal(fwd[..., 1], 2.0)   # y up -> down in image coordinates


def test_flows_from_stack_layouts():
    nhwc = constant_flows(2, 1.0, 2.0)
    np.testing.assert_array_equal(io.flows_from_stack(nhwc), nhwc)
    np.testing.assert_array_equal(io.flows_from_stack(np.moveaxis(nhwc, -1, 1)), nhwc)
    with pytest.raises(ValueError, match="cannot tell"):
        io.flows_from_stack(np.zeros((2, 2, 5, 2)))
    np.testing.assert_array_equal(io.backward_from_forward(nhwc, "negate"), -nhwc)


def test_video_dis_flow_moves_noise_right(tmp_path):
    from .cli_util import write_video

    path = write_video(tmp_path / "v.mp4", frames=4, h=48, w=64, dx=3)
    src = open_source(path)
    assert (src.n_frames, src.height, src.width) == (4, 48, 64)
    flows = [f for _, f, _ in src.flows(1)]
    inner = [f[12:-12, 12:-12] for f in flows]
    for f in inner:  # DIS recovers the backward flow (-3, 0) in the interior
        assert abs(np.median(f[..., 0]) + 3) < 0.5 and abs(np.median(f[..., 1])) < 0.5
    frames = warp_source(open_source(path), method="nearest")
    a, b = shifted(frames[0], frames[1], 3)
    r = np.corrcoef(a[12:-12, 12:-12].ravel(), b[12:-12, 12:-12].ravel())[0, 1]
    a, b = shifted(frames[0], frames[1], -3)
    r_wrong = np.corrcoef(a[12:-12, 12:-12].ravel(), b[12:-12, 12:-12].ravel())[0, 1]
    assert r > 0.8 and abs(r_wrong) < 0.3


def test_noise_preview_mapping():
    x = np.array([[[-3.0, 0.0, 3.0], [-10, 10, 0]]], np.float32)
    img = io.noise_to_uint8(x)
    assert img.dtype == np.uint8 and img.shape == (1, 2, 3)
    assert img[0, 0].tolist() == [0, 128, 255] and img[0, 1].tolist() == [0, 255, 128]
    grey = io.noise_to_uint8(np.zeros((2, 3, 1), np.float32))
    assert grey.shape == (2, 3, 3) and (grey == 128).all()
    assert io.enlarge(np.zeros((4, 8, 3), np.uint8), 16).shape == (16, 32, 3)


def test_mp4_writer_is_atomic_and_readable(tmp_path):
    import imageio.v3 as iio

    p = tmp_path / "x.mp4"
    with io.Mp4Writer(p, fps=10) as mp4:
        for k in range(3):
            mp4.append(np.full((15, 21, 3), 40 * k, np.uint8))  # odd sizes get padded
    frames = iio.imread(p)
    assert frames.shape[0] == 3 and frames.shape[1:3] == (16, 22)
    assert sorted(os.listdir(tmp_path)) == ["x.mp4"]


def test_occlusion_mask_forward_backward_check():
    from noisewarp.sources import occlusion_mask

    back = constant_flows(1, -2.0)[0]
    fwd = constant_flows(1, 2.0)[0]
    assert not occlusion_mask(back, fwd)[:, 4:-4].any()       # consistent motion: nothing occluded
    fwd_wrong = fwd.copy()
    fwd_wrong[:, 10:20] = 0.0                                  # forward flow disagrees here
    m = occlusion_mask(back, fwd_wrong)
    assert m[:, 13:21].all() and not m[:, 30:-4].any()


def test_warp_with_occlusions_stays_white(tmp_path):
    from noisewarp.cli import main

    from .cli_util import write_video
    from ..core2d.helpers import assert_white

    v = write_video(tmp_path / "v.mp4", frames=4)
    assert main(["warp", str(v), "-o", str(tmp_path / "o"), "--occlusions", "-q"]) == 0
    n = np.load(tmp_path / "o" / "noise.npy")
    for t in range(4):
        assert_white(n[t], f"frame {t}")


def test_blender5_multipart_exr_vector_pass(tmp_path):
    """Blender 5 writes one part per pass; the Vector pass is in the second part."""
    import OpenEXR

    h, w = 6, 8
    vec = np.zeros((h, w, 4), np.float32)
    vec[..., 0] = -3.0                      # X: previous - current = -3 px: came from the left
    def header():
        return {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}

    combined = {f"ViewLayer.Combined.{c}": np.ones((h, w), np.float32) for c in "RGBA"}
    vector = {f"ViewLayer.Vector.{c}": np.ascontiguousarray(vec[..., k]) for k, c in enumerate("XYZW")}
    path = str(tmp_path / "render_0001.exr")
    with OpenEXR.File([OpenEXR.Part(header(), combined, "ViewLayer.Combined"),
                       OpenEXR.Part(header(), vector, "ViewLayer.Vector")]) as f:
        f.write(path)
    back, fwd = io.vector_pass_to_flows(io.read_vector_exr(path))
    np.testing.assert_array_equal(back[..., 0], -3.0)   # backward: came from 3 px to the left
