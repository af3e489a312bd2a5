"""Depth maps for depth-to-image (SD 2 depth and the demo depth model).

A depth map is a float tensor [H, W] where larger means nearer (MiDaS' relative inverse depth, or an
uploaded grayscale image with near = bright). The UNet reads it as one extra input channel after the
4 latent channels, resized to the latent size and stretched to [-1, 1] per image, exactly as
diffusers' ``StableDiffusionDepth2ImgPipeline`` prepares it.
"""
from __future__ import annotations

from typing import Any


def depth_condition(depth, size: tuple[int, int]):
    """(B, 1, H, W) depth, larger = nearer -> (B, 1, h, w) in [-1, 1] at the latent size."""
    import torch
    import torch.nn.functional as F

    d = F.interpolate(depth, size=size, mode="bicubic", align_corners=False)
    lo = d.amin(dim=(1, 2, 3), keepdim=True)
    hi = d.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(hi - lo > 1e-6, 2.0 * (d - lo) / (hi - lo).clamp(min=1e-6) - 1.0, torch.zeros_like(d))


def depth_from_image(image) -> Any:
    """An uploaded depth map (any mode; grayscale near = bright) as a float tensor [H, W] in [0, 1]."""
    import numpy as np
    import torch

    gray = image.convert("I;16") if image.mode in ("I", "I;16", "F") else image.convert("L")
    array = np.asarray(gray, dtype=np.float32)
    top = 65535.0 if gray.mode.startswith("I") else 255.0
    return torch.from_numpy(array / top)


def depth_to_image(depth) -> Any:
    """A depth tensor [H, W] as an 8-bit grayscale picture, stretched to 0..255, near = bright."""
    import numpy as np
    from PIL import Image

    d = depth.float()
    lo, hi = float(d.min()), float(d.max())
    scaled = (d - lo) / (hi - lo) if hi - lo > 1e-6 else d * 0
    return Image.fromarray((scaled.clamp(0, 1).numpy() * 255).round().astype(np.uint8), mode="L")
