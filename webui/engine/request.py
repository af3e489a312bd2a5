"""The one typed request that UI, API and CLI build, and the result the engine gives back.

``GenerationRequest`` is frozen and validated before any model work: every error names the field
and what is allowed. Field names follow A1111's API where one exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from .prompt_parser import extract_lora_tags
from .samplers import UnknownSampler, resolve

MAX_SIZE = 2048
MAX_SEED = 2**32 - 1
INPAINTING_FILL = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
RESIZE_MODES = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill", 3: "Just resize (latent upscale)"}


class RequestError(ValueError):
    """A request field with a value that cannot be used; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    prompt: str = ""
    negative_prompt: str = ""
    model: str | None = None  # title, name or short hash; None = the current/default checkpoint
    vae: str | None = None  # None/"Automatic": the checkpoint's own (or NAME.vae.* beside it); "None": own
    sampler: str = "DPM++ 2M"
    schedule: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    width: int | None = None  # None: the model's native size (or the init image's size)
    height: int | None = None
    batch_size: int = 1
    n_iter: int = 1
    clip_skip: int = 1
    # image-to-image
    init_image: Any = None  # PIL.Image
    denoising_strength: float = 0.75
    resize_mode: int = 0
    # inpainting (needs init_image)
    mask: Any = None  # PIL.Image: white = repaint
    mask_blur: int = 4
    inpainting_fill: int = 1
    inpaint_full_res: bool = False
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: bool = False
    # depth-to-image (needs a depth checkpoint; the depth map comes from init_image unless given)
    depth_map: Any = None  # PIL.Image, grayscale, near = bright; overrides the estimator
    depth_model: str | None = None  # depth estimator folder in models/depth/; None = the default one
    # output
    save_images: bool = True
    output_format: str = "png"
    extra: dict[str, Any] = field(default_factory=dict)  # for extensions' and modes' own fields

    @property
    def mode(self) -> str:
        if self.init_image is None:
            return "txt2img"
        return "inpaint" if self.mask is not None else "img2img"

    def with_changes(self, **changes: Any) -> "GenerationRequest":
        return replace(self, **changes)

    def validated(self) -> "GenerationRequest":
        validate(self)
        return self

    def summary(self) -> dict[str, Any]:
        """JSON-friendly view (images described by size)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "size") and hasattr(value, "mode"):
                value = f"<image {value.size[0]}x{value.size[1]}>"
            out[f.name] = value
        return out


def _int(request: GenerationRequest, name: str, low: int, high: int) -> None:
    value = getattr(request, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, f"must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise RequestError(name, f"must be between {low} and {high}, got {value}")


def _float(request: GenerationRequest, name: str, low: float, high: float) -> None:
    value = getattr(request, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise RequestError(name, f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise RequestError(name, f"must be between {low} and {high}, got {value}")


def validate(request: GenerationRequest) -> None:
    for name in ("prompt", "negative_prompt"):
        if not isinstance(getattr(request, name), str):
            raise RequestError(name, "must be text")
        try:
            extract_lora_tags(getattr(request, name))
        except ValueError as e:
            raise RequestError(name, str(e)) from None
    for name in ("width", "height"):
        value = getattr(request, name)
        if value is None:
            continue
        _int(request, name, 64, MAX_SIZE)
        if value % 8:
            raise RequestError(name, f"must be a multiple of 8 (64 to {MAX_SIZE}), got {value}")
    _int(request, "steps", 1, 150)
    _float(request, "cfg_scale", 0.0, 30.0)
    for name in ("seed", "subseed"):
        _int(request, name, -1, MAX_SEED)
    _float(request, "subseed_strength", 0.0, 1.0)
    _int(request, "batch_size", 1, 8)
    _int(request, "n_iter", 1, 100)
    _int(request, "clip_skip", 1, 12)
    try:
        resolve(request.sampler, request.schedule)
    except UnknownSampler as e:
        raise RequestError("sampler" if "schedule type" not in str(e) else "schedule", str(e)) from None
    _float(request, "denoising_strength", 0.0, 1.0)
    _int(request, "resize_mode", 0, 3)
    _int(request, "mask_blur", 0, 64)
    _int(request, "inpaint_full_res_padding", 0, 256)
    if request.inpainting_fill not in INPAINTING_FILL:
        raise RequestError("inpainting_fill", "must be one of " + ", ".join(
            f"{k} ({v})" for k, v in INPAINTING_FILL.items()))
    if request.output_format not in ("png", "jpg", "jpeg", "webp"):
        raise RequestError("output_format", f"must be png, jpg or webp, got {request.output_format!r}")
    for name in ("init_image", "mask", "depth_map"):
        value = getattr(request, name)
        if value is not None and not (hasattr(value, "size") and hasattr(value, "convert")):
            raise RequestError(name, "must be an image")
    for name in ("init_image", "depth_map"):
        image = getattr(request, name)
        if image is not None:
            w, h = image.size
            if w < 8 or h < 8 or w > 8192 or h > 8192:
                raise RequestError(name, f"size {w}x{h} is outside 8..8192 pixels")
    if request.depth_model is not None and not isinstance(request.depth_model, str):
        raise RequestError("depth_model", "must be the name of a depth estimator folder")
    if request.mask is not None:
        if request.init_image is None:
            raise RequestError("mask", "a mask needs an init_image to inpaint")
        if request.mask.size != request.init_image.size:
            raise RequestError("mask", f"size {request.mask.size[0]}x{request.mask.size[1]} differs from the "
                                       f"init image's {request.init_image.size[0]}x{request.init_image.size[1]}")


@dataclass
class GenerationResult:
    images: list[Any]  # PIL images, in order
    seeds: list[int]
    subseeds: list[int]
    infotexts: list[str]
    paths: list[str] = field(default_factory=list)  # saved files, when saving
    timings: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    model_title: str = ""
    request: GenerationRequest | None = None
    depth_map: Any = None  # depth-to-image: the depth map used (PIL L, near = bright)

    @property
    def info(self) -> dict[str, Any]:
        return {"seeds": self.seeds, "subseeds": self.subseeds, "infotexts": self.infotexts,
                "paths": self.paths, "timings": self.timings, "interrupted": self.interrupted,
                "model": self.model_title}
