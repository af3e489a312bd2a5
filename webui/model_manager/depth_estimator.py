"""Monocular depth estimators for depth-to-image: transformers' DPT (``DPTForDepthEstimation``, the
architecture of ``Intel/dpt-hybrid-midas`` and ``Intel/dpt-large``) loaded offline from a folder in
``models/depth/`` holding ``config.json``, the weights and, optionally, ``preprocessor_config.json``;
or the MiDaS DPT-Hybrid that SD 2's ``512-depth-ema`` carries under ``depth_model.*``, converted
at load time (see ``midas``).

The estimate is relative inverse depth as MiDaS gives it: larger = nearer. It is returned at the
input image's size; the engine normalises and resizes it for the UNet (see ``engine.depth``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .tensor_files import ModelFileError, open_tensor_file

log = logging.getLogger(__name__)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class DepthEstimator:
    def __init__(self, name: str, path: Path, model: Any, processor: Any, device, dtype):
        self.name, self.path = name, path
        self.model = model
        self.processor = processor
        self.device, self.dtype = device, dtype

    @classmethod
    def load(cls, folder: Path, name: str, device, dtype) -> "DepthEstimator":
        from transformers import DPTForDepthEstimation

        config_file = folder / "config.json"
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as e:
            raise ModelFileError(f"{name}: unreadable depth estimator config.json ({e})") from None
        if config.get("model_type") != "dpt":
            raise ModelFileError(f"{name}: model_type {config.get('model_type')!r} is not a DPT depth estimator "
                                 f"(expected the layout of Intel/dpt-hybrid-midas or Intel/dpt-large)")
        weights = [folder / w for w in WEIGHT_FILES if (folder / w).is_file()]
        if not weights:
            raise ModelFileError(f"{name}: no weights in the folder (expected {' or '.join(WEIGHT_FILES)})")
        if weights[0].suffix == ".safetensors":
            try:  # the header checked against the file size: truncation and corruption named here
                open_tensor_file(weights[0])
            except ModelFileError as e:
                raise ModelFileError(f"{name}/{e}") from None
        try:
            # .bin weights go through transformers' torch.load(weights_only=True): tensors only, no code
            model = DPTForDepthEstimation.from_pretrained(folder, local_files_only=True, torch_dtype=dtype,
                                                          use_safetensors=weights[0].suffix == ".safetensors")
        except Exception as e:  # noqa: BLE001 (safetensors, pickle and shape errors all mean a bad file)
            raise ModelFileError(f"{name}: cannot load depth estimator ({str(e).splitlines()[0]})") from None
        processor = None
        if (folder / "preprocessor_config.json").is_file():
            processor = _processor_class().from_pretrained(folder, local_files_only=True)
        processor = _square_processor(processor, model.config.image_size)
        log.info("loaded depth estimator %s", name)
        return cls(name, folder, model.to(device).eval(), processor, device, dtype)

    @classmethod
    def from_checkpoint(cls, path: Path, name: str, device, dtype) -> "DepthEstimator":
        """The MiDaS estimator inside a depth checkpoint (only its ``depth_model.*`` tensors are read;
        a ``.ckpt`` is loaded with ``weights_only=True``), as a transformers DPT-Hybrid."""
        from .midas import PREFIX, load_midas

        try:
            tensors = open_tensor_file(path)
            midas = {k: tensors.read(k) for k in tensors.keys() if k.startswith(PREFIX)}
            if not midas:
                raise ModelFileError(f"no {PREFIX}* tensors in {path.name}")
            model = load_midas(midas, dtype=dtype)
        except ModelFileError as e:
            raise ModelFileError(f"{name}: {e}") from None
        del midas
        processor = _square_processor(None, model.config.image_size)
        log.info("loaded depth estimator %s", name)
        return cls(name, path, model.to(device), processor, device, dtype)

    def estimate(self, image) -> Any:
        """Depth of a PIL image as a float32 tensor [H, W] at the image's size, larger = nearer."""
        import torch

        width, height = image.size
        pixels = self.processor(image.convert("RGB"), return_tensors="pt").pixel_values
        with torch.inference_mode():
            predicted = self.model(pixel_values=pixels.to(self.device, self.dtype)).predicted_depth
            depth = torch.nn.functional.interpolate(predicted[:, None].float(), size=(height, width),
                                                    mode="bicubic", align_corners=False)
        return depth[0, 0].cpu()


def _processor_class():
    import transformers

    # Without torchvision transformers falls back to the PIL processor; ask for it directly.
    return getattr(transformers, "DPTImageProcessorPil", None) or transformers.DPTImageProcessor


def _square_processor(processor, size: int):
    """transformers' DPT (ViT and hybrid) only takes square inputs of its configured size, as
    diffusers' depth2img pipeline feeds it; the estimate is resized back to the image afterwards.
    Without a saved processor: the DPT defaults (MiDaS), mean/std 0.5."""
    if processor is None:
        processor = _processor_class()(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.size, processor.keep_aspect_ratio = {"height": size, "width": size}, False
    return processor
