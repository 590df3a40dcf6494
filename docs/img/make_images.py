"""Regenerate the README pictures in docs/img (about a minute on 2 cores):

    .venv/bin/python docs/img/make_images.py [--video /work/shared/data/bikes.mp4]

Runs the same commands a user would (demo, warp, stats, compare) into a temporary folder and
keeps the pictures.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)


def nw(*args):
    subprocess.run([sys.executable, "-m", "noisewarp.cli", *args, "-q"], check=True, cwd=ROOT)


def _capture(video, start):
    import cv2

    cap = cv2.VideoCapture(video)
    for _ in range(start):
        cap.grab()
    return cap


def spacetime_figure(video, noise_path, out_png, frames, row, start=0, x0=0, width=256):
    """Video | warped noise | fresh noise, one row over time: warped noise follows the motion."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core2d import rng
    from noisewarp import io

    noise = np.load(noise_path, mmap_mode="r")
    cap = _capture(video, start)
    vid = []
    for _ in range(frames):
        ok, f = cap.read()
        vid.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB)[row])
    h, w = noise.shape[1:3]
    fresh = [io.noise_to_uint8(rng.gauss(7, t, rng.FRESH, np.arange(w), 0, 3)[None])[0] for t in range(frames)]
    panels = [np.stack(vid), np.stack([io.noise_to_uint8(np.asarray(noise[t][row][None], np.float32))[0]
                                       for t in range(frames)]), np.stack(fresh)]
    panels = [p[:, x0:x0 + width] for p in panels]
    titles = ["video", "warped noise (noisewarp)", "fresh noise every frame"]
    fig, axes = plt.subplots(1, 3, figsize=(3 * width / 60 + 1, 4.2), layout="constrained")
    for ax, p, t in zip(axes, panels, titles):
        ax.imshow(p, aspect="auto", interpolation="nearest", extent=[x0, x0 + p.shape[1], p.shape[0], 0])
        ax.set_title(t, fontsize=10)
        ax.set_xlabel(f"x along row {row}")
        ax.set_yticks([])
    axes[0].set_ylabel("time ↓")
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def frames_figure(video, noise_path, out_png, picks, start=0):
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from noisewarp import io

    noise = np.load(noise_path, mmap_mode="r")
    cap = _capture(video, start)
    imgs = {}
    for t in range(max(picks) + 1):
        ok, f = cap.read()
        if t in picks:
            imgs[t] = cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
    fig, axes = plt.subplots(2, len(picks), figsize=(4.2 * len(picks), 3.8), layout="constrained")
    for k, t in enumerate(picks):
        axes[0, k].imshow(imgs[t])
        axes[1, k].imshow(io.noise_to_uint8(np.asarray(noise[t], np.float32)), interpolation="nearest")
        axes[0, k].set_title(f"frame {start + t}", fontsize=10)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def demo_gif(demo_dir, out_gif, frames=24):
    import imageio.v3 as iio

    from noisewarp import io
    from noisewarp.demo import Scene

    noise = np.load(os.path.join(demo_dir, "noise.npy"), mmap_mode="r")
    scene = Scene(noise.shape[1])
    gap = np.full((scene.h, 4, 3), 255, np.uint8)
    def grey(x):  # one channel, 16 levels: GIFs of full-colour noise are megabytes
        g = io.noise_to_uint8(np.asarray(x[..., :1], np.float32))
        return (g // 16 * 17).astype(np.uint8)

    seq = [np.concatenate([scene.image(t), gap, grey(noise[t])], 1) for t in range(min(frames, noise.shape[0]))]
    iio.imwrite(out_gif, np.stack(seq), duration=60, loop=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default="/work/shared/data/bikes.mp4")
    ap.add_argument("--start", type=int, default=190, help="first frame (bikes.mp4: frames 187-241 pan along a fence)")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--row", type=int, default=150)
    ap.add_argument("--x0", type=int, default=200)
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_demo:
            d = os.path.join(tmp, "demo")
            nw("demo", "-o", d, "--size", "160")
            shutil.copy(os.path.join(d, "frames.png"), os.path.join(HERE, "demo_frames.png"))
            shutil.copy(os.path.join(d, "spacetime.png"), os.path.join(HERE, "demo_spacetime.png"))
            shutil.copy(os.path.join(d, "stats", "overview.png"), os.path.join(HERE, "demo_stats.png"))
            g = os.path.join(tmp, "demo_small")
            nw("demo", "-o", g, "--size", "128", "--frames", "24")
            demo_gif(g, os.path.join(HERE, "demo.gif"))
        if os.path.isfile(args.video):
            b = os.path.join(tmp, "bikes")
            nw("warp", args.video, "-o", b, "--frames", f"{args.start}:{args.start + args.frames}", "--save-flows")
            nw("stats", os.path.join(b, "noise.npy"), "--flows", os.path.join(b, "flows.npy"),
               "-o", os.path.join(b, "stats"))
            for name in ("overview", "histogram", "autocorrelation", "coherence", "lag_coherence", "per_frame"):
                shutil.copy(os.path.join(b, "stats", name + ".png"), os.path.join(HERE, f"bikes_stats_{name}.png"))
            frames_figure(args.video, os.path.join(b, "noise.npy"), os.path.join(HERE, "bikes_frames.png"),
                          [0, args.frames // 2, args.frames - 1], args.start)
            spacetime_figure(args.video, os.path.join(b, "noise.npy"), os.path.join(HERE, "bikes_spacetime.png"),
                             args.frames, args.row, args.start, args.x0)
            c = os.path.join(tmp, "compare")
            subprocess.run([sys.executable, "-m", "noisewarp.cli", "compare", args.video, "-o", c,
                            "--frames", f"{args.start}:{args.start + 24}", "--max-size", "160", "-q"], check=True, cwd=ROOT,
                           stdout=open(os.path.join(HERE, "compare_table.md"), "w"))
            shutil.copy(os.path.join(c, "side_by_side.png"), os.path.join(HERE, "compare_side_by_side.png"))


if __name__ == "__main__":
    main()
