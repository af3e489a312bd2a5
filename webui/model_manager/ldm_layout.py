"""The original LDM key layout of single-file Stable Diffusion checkpoints, both directions.

A1111/civitai checkpoints store the UNet under ``model.diffusion_model.``, the VAE under
``first_stage_model.`` and the text encoder under ``cond_stage_model.`` with the names of the
original CompVis code. We build diffusers/transformers modules, so every parameter of those modules
has exactly one place in the file. This module computes that place from the parameter's diffusers
name and the module config: one naming function per component, used to load (file -> module) and to
export (module -> file, for our own demo model and test fixtures). A :class:`Source` names the file
key and how the tensor is reshaped between the two layouts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."
OLD_CLIP_PREFIX = "cond_stage_model.transformer."  # files saved with transformers < 4.20 lack "text_model."
OPENCLIP_PREFIX = "cond_stage_model.model."

Transform = Literal["same", "conv1x1", "qkv"]


@dataclass(frozen=True)
class Source:
    """Where a diffusers parameter lives in an LDM file.

    ``conv1x1``: the file holds a [C, C, 1, 1] convolution where diffusers has a [C, C] linear.
    ``qkv``: the file holds q, k and v stacked in one tensor; ``part`` (0, 1, 2) selects ours.
    """

    key: str
    transform: Transform = "same"
    part: int = 0


class LayoutError(ValueError):
    """A parameter name that has no place in the LDM layout (a config/layout mismatch)."""


_RESNET_UNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _layers_per_block(config: Mapping[str, Any]) -> int:
    layers = config["layers_per_block"]
    if isinstance(layers, (list, tuple)):
        if len(set(layers)) != 1:
            raise LayoutError("the LDM layout needs the same layers_per_block at every level")
        layers = layers[0]
    return int(layers)


def _replace_prefix(name: str, table: Mapping[str, str]) -> str:
    for old, new in table.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return name


def unet_source(name: str, config: Mapping[str, Any]) -> Source:
    """LDM key of a ``UNet2DConditionModel`` parameter."""
    per = _layers_per_block(config) + 1  # LDM counts each down level's resnets plus its downsampler
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if m:
        side, i, kind, j, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        block = f"input_blocks.{1 + i * per + j}" if side == "down" else f"output_blocks.{i * per + j}"
        if kind == "resnets":
            return Source(f"{UNET_PREFIX}{block}.0.{_replace_prefix(rest, _RESNET_UNET)}")
        return Source(f"{UNET_PREFIX}{block}.1.{rest}")
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name)
    if m:
        return Source(f"{UNET_PREFIX}input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}")
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name)
    if m:
        i = int(m[1])
        return Source(f"{UNET_PREFIX}output_blocks.{i * per + per - 1}.{2 if up_has_attention[i] else 1}.conv.{m[2]}")
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if m:
        kind, j, rest = m[1], int(m[2]), m[3]
        if kind == "resnets":
            return Source(f"{UNET_PREFIX}middle_block.{2 * j}.{_replace_prefix(rest, _RESNET_UNET)}")
        return Source(f"{UNET_PREFIX}middle_block.1.{rest}")
    fixed = {
        "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
        "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2",
        # Not in CompVis' code: the attention-pooled text embedding added to the time embedding
        # (diffusers' addition_embed_type="text"), used by our demo model.
        "add_embedding": "text_pool_embed",
    }
    renamed = _replace_prefix(name, fixed)
    if renamed == name:
        raise LayoutError(f"UNet parameter {name!r} has no place in the LDM layout")
    return Source(UNET_PREFIX + renamed)


def vae_source(name: str, config: Mapping[str, Any]) -> Source:
    """LDM key of an ``AutoencoderKL`` parameter."""
    levels = len(config["block_out_channels"])
    m = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if m:
        part, kind, j, rest = m[1], m[2], int(m[3]), m[4]
        if kind == "resnets":
            return Source(f"{VAE_PREFIX}{part}.mid.block_{j + 1}.{_replace_prefix(rest, {'conv_shortcut': 'nin_shortcut'})}")
        renamed = _replace_prefix(rest, _VAE_ATTENTION)
        transform: Transform = "conv1x1" if renamed.endswith(".weight") and not renamed.startswith("norm.") else "same"
        return Source(f"{VAE_PREFIX}{part}.mid.attn_1.{renamed}", transform)
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name)
    if m:
        return Source(f"{VAE_PREFIX}encoder.down.{m[1]}.block.{m[2]}.{_replace_prefix(m[3], {'conv_shortcut': 'nin_shortcut'})}")
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name)
    if m:
        return Source(f"{VAE_PREFIX}encoder.down.{m[1]}.downsample.conv.{m[2]}")
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name)
    if m:
        level = levels - 1 - int(m[1])
        return Source(f"{VAE_PREFIX}decoder.up.{level}.block.{m[2]}.{_replace_prefix(m[3], {'conv_shortcut': 'nin_shortcut'})}")
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name)
    if m:
        return Source(f"{VAE_PREFIX}decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}")
    renamed = _replace_prefix(name, {"encoder.conv_norm_out": "encoder.norm_out", "decoder.conv_norm_out": "decoder.norm_out"})
    if not re.match(r"(encoder\.(conv_in|conv_out|norm_out)|decoder\.(conv_in|conv_out|norm_out)|quant_conv|post_quant_conv)\.", renamed):
        raise LayoutError(f"VAE parameter {name!r} has no place in the LDM layout")
    return Source(VAE_PREFIX + renamed)


def clip_source(name: str, prefix: str = CLIP_PREFIX) -> Source:
    """LDM key of an SD 1.x ``CLIPTextModel`` parameter (OpenAI CLIP, stored under HF names)."""
    return Source(prefix + name)


def openclip_source(name: str) -> Source:
    """LDM key of an SD 2.x text-encoder parameter (OpenCLIP's own names, q/k/v stacked)."""
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm": "ln_final"}
    renamed = _replace_prefix(name, fixed)
    if renamed != name:
        return Source(OPENCLIP_PREFIX + renamed)
    m = re.match(r"encoder\.layers\.(\d+)\.(.+)", name)
    if not m:
        raise LayoutError(f"text encoder parameter {name!r} has no place in the OpenCLIP layout")
    block, rest = f"{OPENCLIP_PREFIX}transformer.resblocks.{m[1]}.", m[2]
    m = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
    if m:
        return Source(f"{block}attn.in_proj_{m[2]}", "qkv", "qkv".index(m[1]))
    renamed = _replace_prefix(rest, {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                                     "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"})
    if renamed == rest:
        raise LayoutError(f"text encoder parameter {name!r} has no place in the OpenCLIP layout")
    return Source(block + renamed)


def text_encoder_source(name: str, family: str, clip_prefix: str = CLIP_PREFIX) -> Source:
    return openclip_source(name) if family == "sd2" else clip_source(name, clip_prefix)


def clip_prefix_of(keys) -> str:
    """Where an SD 1.x file keeps its text encoder (two spellings exist in the wild)."""
    keys = set(keys)
    if CLIP_PREFIX + "embeddings.token_embedding.weight" in keys:
        return CLIP_PREFIX
    return OLD_CLIP_PREFIX


def to_file_tensor(tensor, source: Source):
    """Reshape a module tensor to its file shape (the q/k/v stacking is done by the caller)."""
    return tensor[:, :, None, None] if source.transform == "conv1x1" else tensor


def from_file_tensor(tensor, source: Source):
    """Cut and reshape a file tensor to the module's shape."""
    if source.transform == "conv1x1":
        return tensor.reshape(tensor.shape[0], tensor.shape[1]) if tensor.ndim == 4 else tensor
    if source.transform == "qkv":
        return tensor.chunk(3, dim=0)[source.part]
    return tensor


def _export(state: Mapping[str, Any], locate) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    stacked: dict[str, list] = {}
    for name, tensor in state.items():
        source = locate(name)
        if source.transform == "qkv":
            stacked.setdefault(source.key, [None, None, None])[source.part] = tensor
        else:
            out[source.key] = to_file_tensor(tensor, source)
    for key, parts in stacked.items():
        out[key] = torch.cat(parts, dim=0)
    return out


def diffusers_to_ldm(unet=None, vae=None, text_encoder=None, family: str = "sd1") -> dict[str, Any]:
    """State dict in the LDM layout for the given modules (contiguous tensors, ready to save).

    For SD 2.x the file gets what real SD 2 files have beyond our modules: OpenCLIP's last
    resblock (unused: SD 2 reads the penultimate layer, so zeros) and ``text_projection``.
    """
    import torch

    out: dict[str, Any] = {}
    if unet is not None:
        out.update(_export(unet.state_dict(), lambda n: unet_source(n, unet.config)))
    if vae is not None:
        out.update(_export(vae.state_dict(), lambda n: vae_source(n, vae.config)))
    if text_encoder is not None:
        state = text_encoder.state_dict()
        out.update(_export(state, lambda n: text_encoder_source(n, family)))
        if family == "sd2":
            last = text_encoder.config.num_hidden_layers
            block = f"{OPENCLIP_PREFIX}transformer.resblocks.{last}."
            template = {k[len("encoder.layers.0."):]: v for k, v in state.items() if k.startswith("encoder.layers.0.")}
            for name, tensor in _export(template, lambda n: openclip_source("encoder.layers.0." + n)).items():
                out[block + name.split(".resblocks.0.", 1)[1]] = torch.zeros_like(tensor)
            width = text_encoder.config.hidden_size
            out[f"{OPENCLIP_PREFIX}text_projection"] = torch.zeros(width, width, dtype=state["final_layer_norm.weight"].dtype)
    return {k: v.contiguous() for k, v in out.items()}


def write_model_yaml(path: str | Path, *, unet_config: Mapping[str, Any], vae_config: Mapping[str, Any],
                     text_encoder_config: Mapping[str, Any], scheduler_config: Mapping[str, Any] | None = None,
                     scaling_factor: float | None = None, family: str = "sd1",
                     prediction_type: str = "epsilon") -> None:
    """Write ``NAME.yaml`` beside a checkpoint with the exact configs needed to rebuild it offline.

    The ``model.params.parameterization`` entry is the one A1111's LDM yaml files carry; the
    ``diffusers`` section holds our component configs (A1111 has no place for a custom text encoder).
    """
    import yaml

    def clean(config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items()
                if not k.startswith("_") and k not in ("transformers_version", "architectures")}

    vae = clean(vae_config)
    if scaling_factor is not None:
        vae["scaling_factor"] = float(scaling_factor)
    document = {
        "model": {"params": {"parameterization": "v" if prediction_type == "v_prediction" else "eps",
                             "scale_factor": float(vae.get("scaling_factor", 0.18215))}},
        "diffusers": {"family": family, "unet": clean(unet_config), "vae": vae,
                      "text_encoder": clean(text_encoder_config)},
    }
    if scheduler_config is not None:
        document["diffusers"]["scheduler"] = clean(scheduler_config)
    Path(path).write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def expected_keys(sources: Iterable[Source]) -> set[str]:
    return {s.key for s in sources}
