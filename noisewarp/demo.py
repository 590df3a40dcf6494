"""`noisewarp demo`: a generated scene whose motion is known exactly, noise warped along it.

The scene: a striped background panning right, and a textured disc that drifts left while it
spins. The backward flow (where each pixel of frame t was in frame t-1) is written down
analytically, so the demo needs no optical flow and no download, and shows what the warped
noise does: it moves with the scene, while every frame stays white N(0,1) noise.
"""
import os

import numpy as np

PAN = np.array([1.25, 0.0], np.float32)     # background velocity, px/frame
SPIN = np.deg2rad(3.0)                      # disc rotation, rad/frame (clockwise on screen)
DRIFT = np.array([-0.8, 0.35], np.float32)  # disc centre velocity, px/frame


class Scene:
    """Positions are in pixels, x right, y down, pixel (i, j) centred at (j + .5, i + .5)."""

    def __init__(self, height=256, width=None):
        self.h = int(height)
        self.w = int(width or round(1.5 * height / 8) * 8)
        self.r = 0.3 * self.h
        self.c0 = np.array([0.62 * self.w, 0.45 * self.h], np.float32)
        jj, ii = np.meshgrid(np.arange(self.w, dtype=np.float32) + 0.5,
                             np.arange(self.h, dtype=np.float32) + 0.5)
        self.px, self.py = jj, ii

    def centre(self, t):
        return self.c0 + DRIFT * t

    def disc(self, t):
        c = self.centre(t)
        return (self.px - c[0]) ** 2 + (self.py - c[1]) ** 2 < self.r ** 2

    def backward_flow(self, t):
        """B_t(p) = M(p) - p, M(p) = the position in frame t-1 of what is at p in frame t."""
        flow = np.empty((self.h, self.w, 2), np.float32)
        flow[..., 0], flow[..., 1] = -PAN[0], -PAN[1]
        c, cp = self.centre(t), self.centre(t - 1)
        dx, dy = self.px - c[0], self.py - c[1]
        cs, sn = np.cos(-SPIN), np.sin(-SPIN)  # undo one frame of rotation
        mx = cp[0] + cs * dx - sn * dy
        my = cp[1] + sn * dx + cs * dy
        inside = self.disc(t)
        flow[..., 0] = np.where(inside, mx - self.px, flow[..., 0])
        flow[..., 1] = np.where(inside, my - self.py, flow[..., 1])
        return flow

    def revealed(self, t):
        """The background the disc uncovers at frame t: behind the disc in frame t-1."""
        c = self.centre(t - 1)
        was_under = (self.px - PAN[0] - c[0]) ** 2 + (self.py - PAN[1] - c[1]) ** 2 < self.r ** 2
        return was_under & ~self.disc(t)

    def image(self, t):
        """RGB uint8 frame t: content moves exactly as backward_flow says."""
        bx = self.px - PAN[0] * t
        by = self.py - PAN[1] * t
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (bx + 0.5 * by) / 48.0)
        base = np.stack([0.15 + 0.25 * stripes, 0.25 + 0.3 * stripes, 0.45 + 0.35 * stripes], -1)
        checker = ((np.floor(bx / 32) + np.floor(by / 32)) % 2)[..., None]
        img = base * (0.85 + 0.15 * checker)
        c = self.centre(t)
        dx, dy = self.px - c[0], self.py - c[1]
        ang = np.arctan2(dy, dx) - SPIN * t
        rad = np.sqrt(dx * dx + dy * dy) / self.r
        sectors = (np.floor(ang / (2 * np.pi) * 12) % 2)
        rings = 0.5 + 0.5 * np.cos(2 * np.pi * rad * 3)
        disc = np.stack([0.95 - 0.25 * sectors, 0.55 + 0.3 * rings * sectors, 0.2 + 0.1 * rings], -1)
        inside = self.disc(t)[..., None]
        img = np.where(inside, disc, img)
        return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def demo(outdir, frames=48, size=256, method="particle", supersample=1, force=False,
         progress=True, seed=0, channels=4, log=None):
    """Noise, previews (scene beside noise MP4, contact sheet, space-time slice) and a stats report."""
    import sys

    from .runner import warp_to_folder
    from .sources import ArraySource
    from .stats import report

    log = log or sys.stderr
    if frames < 2:
        raise ValueError("--frames must be at least 2")
    if size < 32:
        raise ValueError("--size must be at least 32")
    scene = Scene(size)
    source = ArraySource("demo scene", scene.h, scene.w, int(frames), scene.backward_flow,
                         scene.image, fps=24.0, revealed_fn=scene.revealed)
    outdir = os.fspath(outdir)
    summary = warp_to_folder(source, outdir, method=method, channels=channels, seed=seed,
                             supersample=supersample, formats=["npy", "png", "mp4"], resume=False,
                             force=force, progress=progress, save_flows=True, log=log)
    rep = report(os.path.join(outdir, "noise.npy"), os.path.join(outdir, "stats"),
                 flows=os.path.join(outdir, "flows.npy"), force=True)
    print(f"noisewarp: demo in {outdir}: preview.mp4 (scene | noise), frames.png, spacetime.png, "
          f"stats/overview.png\nnoisewarp: {rep['summary_line']}", file=log)
    return summary, rep
