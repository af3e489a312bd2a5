"""Build diffusers/transformers modules from configs and fill them from a checkpoint file.

Modules are created with empty (meta) parameters, then each parameter is read from the file,
cast to the target dtype and assigned, one tensor at a time: peak memory is the model plus one
tensor, never a second copy of the weights. Every parameter must be found with the right shape;
anything missing, misshapen or left over in the UNet/VAE is a clear error, never a partial load.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .ldm_layout import UNET_PREFIX, VAE_PREFIX, LayoutError, Source, clip_prefix_of, from_file_tensor, \
    text_encoder_source, unet_source, vae_source
from .probe import CONFIGS_DIR, SD_SCHEDULER
from .tensor_files import ModelFileError, PickledFile, SafetensorsFile

log = logging.getLogger(__name__)


@dataclass
class Components:
    """The modules of one Stable Diffusion model, ready on their device."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    family: str


def load_tokenizer(family: str):
    from transformers import CLIPTokenizer

    folder = CONFIGS_DIR / "clip_tokenizer"
    if family == "sd2":
        return CLIPTokenizer.from_pretrained(folder, pad_token="!")
    return CLIPTokenizer.from_pretrained(folder)


def _empty_module(factory: Callable[[], Any]):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return factory()


def fill_module(module, tensors: SafetensorsFile | PickledFile, locate: Callable[[str], Source], dtype,
                file_name: str, component: str) -> set[str]:
    """Assign every parameter of ``module`` from ``tensors``; returns the file keys used."""
    import torch

    expected = module.state_dict()
    state: dict[str, Any] = {}
    used: set[str] = set()
    missing: list[str] = []
    sources: dict[str, Source] = {}
    for name in expected:
        try:
            sources[name] = locate(name)
        except LayoutError as e:
            raise ModelFileError(f"{file_name}: {e}") from None
    present = [s.key for s in sources.values() if s.key in tensors]
    scratch = torch.empty(max((tensors.nbytes(k) for k in present), default=0), dtype=torch.uint8)
    # All floating-point parameters live in one allocation: one large block instead of a thousand
    # small ones faults its pages in far faster and leaves nothing to fragment.
    floating = [n for n, t in expected.items() if t.is_floating_point()]
    storage = torch.empty(sum(expected[n].numel() for n in floating), dtype=dtype)
    offsets, position = {}, 0
    for n in floating:
        offsets[n] = position
        position += expected[n].numel()
    for name, target in expected.items():
        source = sources[name]
        if source.key not in tensors:
            missing.append(source.key)
            continue
        tensor = from_file_tensor(tensors.read(source.key, scratch), source)
        if tuple(tensor.shape) != tuple(target.shape):
            raise ModelFileError(f"{file_name}: {component} tensor {source.key} has shape {list(tensor.shape)}, "
                                 f"the model config expects {list(target.shape)}")
        if name in offsets:
            start = offsets[name]
            state[name] = storage[start:start + target.numel()].view(target.shape).copy_(tensor)
        else:
            state[name] = tensor.clone()
        used.add(source.key)
        del tensor
    if missing:
        raise ModelFileError(f"{file_name}: {component} incomplete: {len(missing)} tensors missing, "
                             f"e.g. {', '.join(missing[:3])}")
    module.load_state_dict(state, strict=True, assign=True)
    del state
    # Non-persistent buffers were created for real; make sure no parameter stayed on meta.
    leftover = [n for n, p in module.named_parameters() if p.is_meta]
    if leftover:
        raise ModelFileError(f"{file_name}: {component} parameters not loaded: {leftover[:3]}")
    with torch.no_grad():
        module.eval()
    return used


def build_components(tensors: SafetensorsFile | PickledFile, configs: dict[str, Any], family: str,
                     file_name: str, dtype, device) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = _empty_module(lambda: UNet2DConditionModel.from_config(configs["unet"]))
    used = fill_module(unet, tensors, lambda n: unet_source(n, unet.config), dtype, file_name, "UNet")
    vae = _empty_module(lambda: AutoencoderKL.from_config(configs["vae"]))
    used |= fill_module(vae, tensors, lambda n: vae_source(n, vae.config), dtype, file_name, "VAE")
    text_config = CLIPTextConfig(**configs["text_encoder"])
    text_encoder = _empty_module(lambda: CLIPTextModel(text_config))
    clip_prefix = clip_prefix_of(tensors.keys())
    used |= fill_module(text_encoder, tensors, lambda n: text_encoder_source(n, family, clip_prefix), dtype,
                        file_name, "text encoder")
    leftover = [k for k in tensors.keys() if k not in used and (
        k.startswith(UNET_PREFIX) or k.startswith(VAE_PREFIX + "encoder.") or k.startswith(VAE_PREFIX + "decoder."))]
    if leftover:
        raise ModelFileError(f"{file_name}: {len(leftover)} tensors do not fit the model config "
                             f"(e.g. {', '.join(leftover[:3])}); the architecture was not recognised correctly")
    return Components(unet.to(device), vae.to(device), text_encoder.to(device), load_tokenizer(family),
                      dict(configs["scheduler"]), family)


def build_vae(tensors: SafetensorsFile | PickledFile, config: dict[str, Any], file_name: str, dtype, device):
    """A standalone VAE file, in the LDM layout (with or without ``first_stage_model.``) or diffusers'."""
    from diffusers import AutoencoderKL

    vae = _empty_module(lambda: AutoencoderKL.from_config(config))
    keys = set(tensors.keys())
    if "encoder.conv_in.weight" in keys and "encoder.down_blocks.0.resnets.0.conv1.weight" in keys:
        locate = lambda n: Source(n)  # diffusers layout  # noqa: E731
    elif "encoder.down.0.block.0.conv1.weight" in keys:
        locate = lambda n: Source(vae_source(n, vae.config).key[len(VAE_PREFIX):], vae_source(n, vae.config).transform)  # noqa: E731
    elif VAE_PREFIX + "encoder.down.0.block.0.conv1.weight" in keys:
        locate = lambda n: vae_source(n, vae.config)  # noqa: E731
    else:
        raise ModelFileError(f"{file_name}: not a VAE (no encoder/decoder tensors in a known layout)")
    fill_module(vae, tensors, locate, dtype, file_name, "VAE")
    return vae.to(device)


def load_diffusers_folder(folder: Path, dtype, device) -> Components:
    """A diffusers pipeline folder (``model_index.json``), loaded offline from its own files."""
    import json

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    kwargs = {"torch_dtype": dtype, "local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{folder.name}: cannot load diffusers folder ({str(e).splitlines()[0]})") from None
    family = "sd2" if text_encoder.config.hidden_act == "gelu" else "sd1"
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    scheduler = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else {}
    scheduler = {**SD_SCHEDULER, **{k: v for k, v in scheduler.items() if not k.startswith("_")}}
    tokenizer_folder = folder / "tokenizer"
    if (tokenizer_folder / "vocab.json").is_file() or (tokenizer_folder / "tokenizer.json").is_file():
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder)
    else:
        tokenizer = load_tokenizer(family)
    return Components(unet.to(device).eval(), vae.to(device).eval(), text_encoder.to(device).eval(), tokenizer,
                      scheduler, family)
