"""Pixel work around the loop: resize modes, masks, masked-content fill, crop for "only masked",
and pasting the original back outside the mask. PIL and numpy only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


def resize_image(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """A1111's resize modes: 0 just resize, 1 crop and resize, 2 resize and fill, 3 as 0."""
    if image.size == (width, height):
        return image
    if mode in (0, 3):
        return image.resize((width, height), Image.LANCZOS)
    scale_cover = max(width / image.width, height / image.height)
    scale_fit = min(width / image.width, height / image.height)
    if mode == 1:
        w, h = max(width, round(image.width * scale_cover)), max(height, round(image.height * scale_cover))
        resized = image.resize((w, h), Image.LANCZOS)
        left, top = (w - width) // 2, (h - height) // 2
        return resized.crop((left, top, left + width, top + height))
    w, h = max(1, round(image.width * scale_fit)), max(1, round(image.height * scale_fit))
    background = image.resize((width, height), Image.LANCZOS).filter(ImageFilter.GaussianBlur(max(width, height) / 16))
    background.paste(image.resize((w, h), Image.LANCZOS), ((width - w) // 2, (height - h) // 2))
    return background


def prepare_mask(mask: Image.Image, invert: bool) -> Image.Image:
    """Single-channel mask, white = repaint. Alpha masks (painted strokes) count where opaque."""
    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1][0] < 255:
        gray = mask.getchannel("A")
    else:
        gray = mask.convert("L")
    if invert:
        gray = Image.eval(gray, lambda v: 255 - v)
    return gray


def blur_mask(mask: Image.Image, radius: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": the masked area takes the colours around it, smeared inwards."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    keep = (np.asarray(mask, dtype=np.float32) < 128)[..., None].astype(np.float32)
    if keep.sum() == 0:
        return Image.new("RGB", image.size, (127, 127, 127))
    filled = rgb * keep
    weight = keep.copy()
    out = rgb.copy()
    for radius in (256, 64, 16, 4, 2, 1):
        blurred = np.asarray(Image.fromarray(np.clip(filled, 0, 255).astype(np.uint8)).filter(
            ImageFilter.BoxBlur(radius)), dtype=np.float32)
        blurred_w = np.asarray(Image.fromarray((weight[..., 0] * 255).astype(np.uint8)).filter(
            ImageFilter.BoxBlur(radius)), dtype=np.float32)[..., None] / 255
        estimate = blurred / np.maximum(blurred_w, 1e-3)
        out = np.where(blurred_w > 1e-3, estimate, out)
    result = rgb * keep + out * (1 - keep)
    return Image.fromarray(np.clip(result, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class CropRegion:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom

    @property
    def size(self) -> tuple[int, int]:
        return self.right - self.left, self.bottom - self.top


def masked_region(mask: Image.Image, padding: int, width: int, height: int) -> CropRegion | None:
    """Bounding box of the mask plus padding, grown to the output's aspect ratio (inside the image)."""
    box = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    iw, ih = mask.size
    left, top = max(0, box[0] - padding), max(0, box[1] - padding)
    right, bottom = min(iw, box[2] + padding), min(ih, box[3] + padding)
    target = width / height
    w, h = right - left, bottom - top
    if w / h < target:
        grow = min(iw, round(h * target)) - w
        left, right = left - grow // 2, right + grow - grow // 2
    else:
        grow = min(ih, round(w / target)) - h
        top, bottom = top - grow // 2, bottom + grow - grow // 2
    if left < 0:
        left, right = 0, right - left
    if right > iw:
        left, right = max(0, left - (right - iw)), iw
    if top < 0:
        top, bottom = 0, bottom - top
    if bottom > ih:
        top, bottom = max(0, top - (bottom - ih)), ih
    return CropRegion(left, top, right, bottom)


def paste_back(generated: Image.Image, original: Image.Image, blurred_mask: Image.Image,
               region: CropRegion | None) -> Image.Image:
    """The original outside the (blurred) mask, the generated pixels inside it."""
    base = original.convert("RGB")
    if region is not None:
        placed = base.copy()
        placed.paste(generated.resize(region.size, Image.LANCZOS), region.box[:2])
        generated = placed
    elif generated.size != base.size:
        generated = generated.resize(base.size, Image.LANCZOS)
    return Image.composite(generated.convert("RGB"), base, blurred_mask)


def to_tensor(image: Image.Image):
    """PIL RGB -> float tensor [1, 3, H, W] in [-1, 1]."""
    import torch

    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def to_images(batch) -> list[Image.Image]:
    """Float tensor [N, 3, H, W] in [-1, 1] -> PIL images."""
    import torch

    array = ((batch.float().clamp(-1, 1) + 1) * 127.5).round().to(dtype=torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).cpu().numpy()) for a in array]
