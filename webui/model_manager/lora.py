"""LoRA files (kohya/A1111 and diffusers/PEFT formats) applied as removable weight patches.

A LoRA stores, per adapted layer, two small matrices (``down``: rank x in, ``up``: out x rank) and
optionally ``alpha``; the layer's weight changes by ``up @ down * alpha / rank * multiplier``.
Patching adds that delta in place and keeps a copy of each original weight it touched, so removing
the patch restores the exact original bits; applying the same set again costs nothing.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tensor_files import ModelFileError, open_tensor_file

log = logging.getLogger(__name__)


@dataclass
class LoraLayer:
    down: Any
    up: Any
    alpha: float | None

    def delta(self, multiplier: float, shape, dtype):
        import torch

        down, up = self.down.float(), self.up.float()
        rank = down.shape[0]
        scale = multiplier * ((self.alpha / rank) if self.alpha else 1.0)
        if down.ndim == 4:  # convolution LoRA (LoCon): down [rank, in, k, k], up [out, rank, 1, 1]
            result = torch.einsum("or,rikl->oikl", up.flatten(1), down)
        else:
            result = up @ down
        return (result.reshape(shape) * scale).to(dtype)


@dataclass
class LoraFile:
    """Layers keyed by ("unet" | "text_encoder", module name in our diffusers/transformers modules)."""

    name: str
    layers: dict[tuple[str, str], LoraLayer] = field(default_factory=dict)


_KOHYA = re.compile(r"^lora_(unet|te)_(.+?)\.(lora_down|lora_up|alpha)(?:\.weight)?$")
_PEFT = re.compile(r"^(?:base_model\.model\.)?(unet|text_encoder)\.(.+?)\.(lora_A|lora_B|lora\.down|lora\.up|lora_down|"
                   r"lora_up)(?:\.default)?\.weight$")
_PEFT_ALPHA = re.compile(r"^(?:base_model\.model\.)?(unet|text_encoder)\.(.+?)\.alpha$")


def read_lora(path: Path, name: str) -> LoraFile:
    """Parse a LoRA file; raises ModelFileError (naming the file) when it is not a LoRA."""
    tensors = open_tensor_file(path)
    parts: dict[tuple[str, str], dict[str, Any]] = {}
    for key in tensors.keys():
        m = _KOHYA.match(key)
        if m:
            target = ("unet" if m[1] == "unet" else "text_encoder", "kohya:" + m[2])
            part = {"lora_down": "down", "lora_up": "up", "alpha": "alpha"}[m[3]]
        elif (m := _PEFT.match(key)) is not None:
            target = (m[1], m[2].removeprefix("text_model.") if m[1] == "text_encoder" else m[2])
            part = "down" if m[3] in ("lora_A", "lora.down", "lora_down") else "up"
        elif (m := _PEFT_ALPHA.match(key)) is not None:
            target = (m[1], m[2].removeprefix("text_model.") if m[1] == "text_encoder" else m[2])
            part = "alpha"
        else:
            continue
        parts.setdefault(target, {})[part] = tensors.read(key)
    layers = {}
    for target, found in parts.items():
        if "down" not in found or "up" not in found:
            raise ModelFileError(f"{path.name}: incomplete LoRA layer {target[1]!r} (needs both matrices)")
        alpha = found.get("alpha")
        layers[target] = LoraLayer(found["down"], found["up"], float(alpha) if alpha is not None else None)
    if not layers:
        raise ModelFileError(f"{path.name}: no LoRA layers found (expected kohya 'lora_unet_*'/'lora_te_*' or "
                             f"diffusers/PEFT 'unet.*.lora_A' keys)")
    return LoraFile(name, layers)


def _module_index(module, te: bool) -> dict[str, tuple[str, Any]]:
    """Adaptable layers by their kohya name (dots as underscores) and by their own name."""
    import torch

    index: dict[str, tuple[str, Any]] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, (torch.nn.Linear, torch.nn.Conv2d)):
            index[name] = (name, sub)
            kohya = ("text_model_" if te else "") + name.replace(".", "_")
            index["kohya:" + kohya] = (name, sub)
    return index


class LoraPatcher:
    """The LoRA set currently merged into one loaded model, and the originals to undo it."""

    def __init__(self):
        self.applied: tuple = ()
        self.backups: dict[tuple[str, str], Any] = {}

    def apply(self, components, loras: list[tuple[LoraFile, float, float]]) -> None:
        """Make the model carry exactly ``loras`` ((file, te_weight, unet_weight), ...)."""
        wanted = tuple((lora.name, te, unet) for lora, te, unet in loras if te or unet)
        if wanted == self.applied:
            return
        self.restore(components)
        try:
            self._merge(components, loras)
        except BaseException:
            self.restore(components)  # never leave a half-applied set behind
            raise
        self.applied = wanted

    def _merge(self, components, loras) -> None:
        import torch

        modules = {"unet": components.unet, "text_encoder": components.text_encoder}
        indexes = {key: _module_index(module, key == "text_encoder") for key, module in modules.items()}
        with torch.no_grad():
            for lora, te_weight, unet_weight in loras:
                missing = 0
                for (kind, layer_name), layer in lora.layers.items():
                    multiplier = te_weight if kind == "text_encoder" else unet_weight
                    if not multiplier:
                        continue
                    found = indexes[kind].get(layer_name)
                    if found is None:
                        missing += 1
                        continue
                    name, module = found
                    weight = module.weight
                    if layer.up.shape[0] * layer.down[0].numel() != weight.numel():
                        raise ModelFileError(f"LoRA {lora.name}: layer {name} does not fit the model's shape "
                                             f"{list(weight.shape)} (made for another model?)")
                    delta = layer.delta(multiplier, weight.shape, weight.dtype).to(weight.device)
                    if (kind, name) not in self.backups:
                        self.backups[(kind, name)] = weight.detach().clone()
                    weight.add_(delta)
                if missing:
                    log.warning("LoRA %s: %d of %d layers have no match in this model", lora.name, missing,
                                len(lora.layers))

    def restore(self, components) -> None:
        """Put back the original weights, bit for bit."""
        import torch

        if not self.backups:
            self.applied = ()
            return
        modules = {"unet": dict(components.unet.named_modules()),
                   "text_encoder": dict(components.text_encoder.named_modules())}
        with torch.no_grad():
            for (kind, name), original in self.backups.items():
                modules[kind][name].weight.copy_(original)
        self.backups.clear()
        self.applied = ()
