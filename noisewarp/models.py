"""Video-model presets (`--model`) and the recipe from noise.npy to a pipeline's `latents=`.

Each preset is the VAE's latent layout (channels, spatial factor 8, temporal factor), the
pipeline's default size and frame count, and the axis order its `latents` argument takes.
Facts from the diffusers pipelines and VAE configs (docs/cli.md cites each); no torch here:
`latents_for` returns a NumPy array, the caller wraps it (`torch.from_numpy`).

Temporal latents keep frames, they never average them: a causal video VAE encodes frame 0
alone and then groups of `temporal_factor` frames, so latent frame k takes the noise of video
frame k·temporal_factor (0, 4, 8, ... 48 for 49 frames: 13 latent frames). Each is one
warped noise frame, exactly white; an average of correlated frames would not be N(0, 1).
"""
import json
import os

import numpy as np

from . import io

MODELS = {
    "cogvideox": dict(
        title="CogVideoX 2B / 5B (1.0)", channels=16, latent_factor=8, temporal_factor=4,
        size=(720, 480), num_frames=49, multiple=16, layout="tchw", dtype="float32",
        latents_axes="BTCHW", pipeline="CogVideoXPipeline"),
    "wan": dict(
        title="Wan 2.1 (T2V 1.3B / 14B)", channels=16, latent_factor=8, temporal_factor=4,
        size=(832, 480), num_frames=81, multiple=16, layout="cthw", dtype="float32",
        latents_axes="BCTHW", pipeline="WanPipeline"),
    "hunyuan": dict(
        title="HunyuanVideo", channels=16, latent_factor=8, temporal_factor=4,
        size=(1280, 720), num_frames=129, multiple=16, layout="cthw", dtype="float32",
        latents_axes="BCTHW", pipeline="HunyuanVideoPipeline"),
    "gwtf": dict(
        title="Go-with-the-Flow (CogVideoX-5B LoRAs)", channels=16, latent_factor=8, temporal_factor=1,
        size=(720, 480), num_frames=49, multiple=16, layout="thwc", dtype="float16",
        latents_axes="BTCHW", pipeline="CogVideoXPipeline / CogVideoXImageToVideoPipeline",
        latent_stride=4),   # their noises.npy keeps all 49 frames; inference takes every 4th
}
DEFAULTS = dict(channels=4, latent_factor=1, temporal_factor=1, layout="thwc", dtype="float32")


def preset(name):
    if name is None:
        return None
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r} (choose from {', '.join(MODELS)})")
    return MODELS[name]


def latent_frames(num_frames, temporal_factor):
    """Latent frames of a causal video VAE: the first frame alone, then groups (49, 4 -> 13)."""
    return (int(num_frames) - 1) // int(temporal_factor) + 1


def check_size(model, width, height):
    m = preset(model)
    if m and (width % m["multiple"] or height % m["multiple"]):
        raise ValueError(f"{m['title']} needs a width and height divisible by {m['multiple']} "
                         f"(VAE factor 8 × patch 2), got {width}x{height}: pick another --size")


def latents_for(noise, model=None, layout=None, batch=1):
    """noise.npy (a path, its run.json beside it naming layout and model) or an array -> the
    model pipeline's `latents` as a float32 NumPy array with the batch axis in front:
    CogVideoX [B, T, C, H, W], Wan / HunyuanVideo [B, C, T, H, W].

        lat = latents_for("out/noise.npy")
        video = pipe(prompt, latents=torch.from_numpy(lat).to("cuda", torch.bfloat16), ...)
    """
    if isinstance(noise, (str, os.PathLike)):
        path = os.fspath(noise)
        meta = os.path.join(os.path.dirname(os.path.abspath(path)), "run.json")
        if os.path.isfile(meta):
            with open(meta) as f:
                run = json.load(f)
            layout = layout or run.get("layout")
            model = model or run.get("config", {}).get("model")
        noise = io.load_npy(path)
    if model is None:
        raise ValueError("latents_for: which model? (pass model='cogvideox', 'wan', 'hunyuan' or 'gwtf')")
    m = preset(model)
    layout = layout or m["layout"]
    x = io.to_thwc(np.asarray(noise), layout)                 # [T, H, W, C]
    if x.ndim != 4:
        raise ValueError(f"expected a noise stack with 4 axes, got shape {x.shape}")
    if x.shape[-1] != m["channels"]:
        raise ValueError(f"{m['title']} takes {m['channels']} latent channels, the noise has {x.shape[-1]}")
    x = x[::m.get("latent_stride", 1)]                         # Go-with-the-Flow: frames 0, 4, 8, ...
    order = {"BTCHW": (0, 3, 1, 2), "BCTHW": (3, 0, 1, 2)}[m["latents_axes"]]
    out = np.transpose(x, order)[None].astype(np.float32)
    return np.ascontiguousarray(np.repeat(out, int(batch), axis=0) if batch != 1 else out)
