"""Small inputs for the CLI tests: videos written with OpenCV, flow files in each convention."""
import os

import numpy as np

from noisewarp import io

H, W = 32, 48


def texture(h, w, seed=0):
    """A smooth random colour texture (DIS needs something to track)."""
    import cv2

    rs = np.random.default_rng(seed)
    img = rs.random((h, w, 3)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min())
    return np.round(img * 255).astype(np.uint8)


def write_video(path, frames=6, h=H, w=W, dx=3, seed=0):
    """An mp4 whose content moves dx px to the right each frame (a crop sliding left over a texture)."""
    import cv2

    big = texture(h, w + dx * frames + 8, seed)
    out = cv2.VideoWriter(os.fspath(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
    assert out.isOpened()
    x0 = dx * frames + 4
    for t in range(frames):
        out.write(np.ascontiguousarray(big[:, x0 - dx * t: x0 - dx * t + w]))
    out.release()
    return path


def constant_flows(n, dx, dy=0.0, h=H, w=W):
    f = np.zeros((n, h, w, 2), np.float32)
    f[..., 0], f[..., 1] = dx, dy
    return f


def write_vector_exrs(folder, n, vx, vy, h=H, w=W, layer="ViewLayer"):
    """A Blender-style multilayer EXR sequence whose Vector pass says: content moves (vx, vy) px
    per frame in image coordinates (x right, y down). Blender's y is up, so its Y = -vy."""
    os.makedirs(folder, exist_ok=True)
    for t in range(n):
        X = np.full((h, w), -vx, np.float32)   # previous - current, Blender coords
        Y = np.full((h, w), +vy, np.float32)   # previous_y_up - current_y_up = +vy
        Z = np.full((h, w), -vx, np.float32)   # current - next
        Wc = np.full((h, w), +vy, np.float32)
        if t == 0:
            X[:], Y[:] = 0, 0
        img = np.stack([X, Y, Z, Wc, np.full((h, w), 0.5, np.float32)], -1)
        names = [f"{layer}.Vector.{c}" for c in "XYZW"] + [f"{layer}.Combined.R"]
        io.write_exr(os.path.join(folder, f"frame_{t + 1:04d}.exr"), img, names=names)
    return folder


def shifted(prev, nxt, dx, dy=0):
    """(values of prev, values of nxt) on the overlap when content moved (dx, dy) px (integers)."""
    h, w = prev.shape[:2]
    ys, xs = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
    yd, xd = slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx))
    return prev[ys, xs], nxt[yd, xd]
