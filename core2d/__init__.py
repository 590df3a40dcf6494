"""core2d: 2D integral noise warping (particle, grid, and the papers' baselines).

    import core2d
    w = core2d.NoiseWarper(256, 256, channels=4, method="particle", seed=0)
    y = w.step(flow)                     # flow [H, W, 2] (dx, dy), backward by default
    seq = core2d.warp_sequence(flows)    # [T+1, H, W, C]
"""
from .ops import degrade, pool, upsample_flow
from .warper import BACKENDS, METHODS, NoiseWarper, invert_flow, warp_sequence

__all__ = ["NoiseWarper", "warp_sequence", "invert_flow", "pool", "degrade", "upsample_flow",
           "METHODS", "BACKENDS"]
__version__ = "0.1.0"
