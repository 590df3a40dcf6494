"""Pictures to judge a noise stack by eye: the video beside its noise (preview.mp4), three
frames with the video above the noise (frames.png), and one row over time (spacetime.png:
video / warped noise / fresh noise: warped noise draws the motion's trajectories, fresh noise
has no structure in time). Frames are read one at a time; only one row per frame is kept.
"""
import os

import numpy as np

from . import io

GAP = 4


def _grow(pic, k):
    return pic if k == 1 else np.repeat(np.repeat(pic, k, axis=0), k, axis=1)


def write_previews(frames, total, outdir, fps=24.0, seed=0, row=None, min_size=256, mp4=True, pictures=True):
    """frames: `total` pairs (noise [h, w, C], RGB image [H, W, 3] or None), H = k·h.

    Writes OUTDIR/preview.mp4 (image | noise, or the noise alone), frames.png and spacetime.png
    (each atomically); returns their names.
    """
    from core2d import rng

    frames = iter(frames)
    picks = {0, (total - 1) // 2, total - 1}
    white = 255
    rows_img, rows_noise, rows_fresh, sheet = [], [], [], {}
    written = []
    mp4w = io.Mp4Writer(os.path.join(outdir, "preview.mp4"), fps=fps) if mp4 else None
    ok = False
    n = 0
    try:
        for t, (noise, image) in enumerate(frames):
            noise = np.asarray(noise, np.float32)
            h, w = noise.shape[:2]
            if image is not None:
                k = max(1, image.shape[0] // h)
            else:
                k = max(1, int(np.ceil(min_size / max(1, min(h, w)))))
            pic = _grow(io.noise_to_uint8(noise), k)
            r = (pic.shape[0] // 2 if row is None else int(row)) // k
            if mp4w is not None:
                if image is not None:
                    gap = np.full((pic.shape[0], GAP, 3), white, np.uint8)
                    mp4w.append(np.concatenate([image, gap, pic], axis=1))
                else:
                    mp4w.append(pic)
            if pictures:
                fresh = rng.gauss(int(seed) + 1, t, rng.FRESH, np.arange(w), 0, 3)[None]
                rows_noise.append(np.repeat(io.noise_to_uint8(noise[r][None])[0], k, axis=0))
                rows_fresh.append(np.repeat(io.noise_to_uint8(fresh)[0], k, axis=0))
                if image is not None:
                    rows_img.append(image[r * k + k // 2])
                if t in picks:
                    sheet[t] = (image, pic)
            n = t + 1
        ok = True
    finally:
        if mp4w is not None:
            mp4w.close(ok=ok)
    if mp4w is not None:
        written.append("preview.mp4")
    if pictures and n:
        _frames_png(sheet, outdir)
        _spacetime_png(rows_img, rows_noise, rows_fresh, outdir)
        written += ["frames.png", "spacetime.png"]
    return written


def _frames_png(sheet, outdir):
    cols = []
    for t in sorted(sheet):
        image, pic = sheet[t]
        col = pic if image is None else np.concatenate(
            [image, np.full((GAP, pic.shape[1], 3), 255, np.uint8), pic], axis=0)
        cols += [col, np.full((col.shape[0], GAP, 3), 255, np.uint8)]
    io.write_png(os.path.join(outdir, "frames.png"), np.concatenate(cols[:-1], axis=1))


def _spacetime_png(rows_img, rows_noise, rows_fresh, outdir):
    strips = [np.stack(r) for r in (rows_img, rows_noise, rows_fresh) if r]
    k = max(1, int(np.ceil(96 / len(rows_noise))))
    strips = [np.repeat(s, k, axis=0) for s in strips]
    sep = np.full((GAP, strips[0].shape[1], 3), 255, np.uint8)
    out = [strips[0]]
    for s in strips[1:]:
        out += [sep, s]
    io.write_png(os.path.join(outdir, "spacetime.png"), np.concatenate(out, axis=0))
