"""The MiDaS v3 "DPT-Hybrid" depth estimator that SD 2's ``512-depth-ema`` carries under
``depth_model.model.*``, converted in memory to transformers' ``DPTForDepthEstimation``.

The original layout is MiDaS' ``DPTDepthModel(backbone="vitb_rn50_384")``: timm's
``vit_base_resnet50_384`` (a BiT/ResNetV2 stem feeding a ViT-B/16) under ``pretrained.model.*``, the
readout and resize blocks ``pretrained.act_postprocess3/4.*`` (1 and 2 are identities in the hybrid:
those features come straight from the ResNet stages), and the fusion decoder ``scratch.*``. The
rename table below maps each tensor to its place in transformers' model; timm's fused ``attn.qkv`` is
split into query, key and value. transformers' ``models/dpt/convert_dpt_hybrid_to_pytorch.py``
(Apache-2.0) did the same conversion for ``Intel/dpt-hybrid-midas`` and served as a reference.

A bare MiDaS state dict (``dpt_hybrid-midas-501f0c75.pt``) has the same names without the prefix.
"""
from __future__ import annotations

import math
import re
from typing import Any

from .tensor_files import ModelFileError

PREFIX = "depth_model.model."
_BIT = "dpt.embeddings.backbone.bit."
_TIMM = "pretrained.model."
_STAGE = _TIMM + "patch_embed.backbone.stages.{s}.blocks.{b}."
_BLOCK = _TIMM + "blocks.{n}."
_QKV = (_BLOCK + "attn.qkv.{p}", "dpt.encoder.layer.{n}.attention.attention.{part}.{p}")
_QKV_PARTS = ("query", "key", "value")
IGNORED = (_TIMM + "head.weight", _TIMM + "head.bias")  # timm's ImageNet classifier, unused by MiDaS


def _rules() -> list[tuple[str, str]]:
    """(MiDaS name, transformers name) templates; ``{field}`` stands for one dotted name part."""
    rules = [
        (_TIMM + "cls_token", "dpt.embeddings.cls_token"),
        (_TIMM + "pos_embed", "dpt.embeddings.position_embeddings"),
        (_TIMM + "patch_embed.proj.{p}", "dpt.embeddings.projection.{p}"),
        (_TIMM + "patch_embed.backbone.stem.conv.weight", _BIT + "embedder.convolution.weight"),
        (_TIMM + "patch_embed.backbone.stem.norm.{p}", _BIT + "embedder.norm.{p}"),
        (_STAGE + "downsample.{m}.{p}", _BIT + "encoder.stages.{s}.layers.{b}.downsample.{m}.{p}"),
        (_STAGE + "{m}.{p}", _BIT + "encoder.stages.{s}.layers.{b}.{m}.{p}"),  # conv1..3, norm1..3
        (_BLOCK + "norm1.{p}", "dpt.encoder.layer.{n}.layernorm_before.{p}"),
        (_BLOCK + "norm2.{p}", "dpt.encoder.layer.{n}.layernorm_after.{p}"),
        (_BLOCK + "attn.proj.{p}", "dpt.encoder.layer.{n}.attention.output.dense.{p}"),
        (_BLOCK + "mlp.fc1.{p}", "dpt.encoder.layer.{n}.intermediate.dense.{p}"),
        (_BLOCK + "mlp.fc2.{p}", "dpt.encoder.layer.{n}.output.dense.{p}"),
        _QKV,
        (_TIMM + "norm.{p}", "dpt.layernorm.{p}"),
        ("pretrained.act_postprocess4.4.{p}", "neck.reassemble_stage.layers.3.resize.{p}"),  # stride-2 conv
        ("scratch.output_conv.{i}.{p}", "head.head.{i}.{p}"),  # conv, upsample, conv, ReLU, conv, ReLU
    ]
    for k in (3, 4):  # MiDaS counts from 1; the neck's stages from 0
        stage = f"neck.reassemble_stage.{{}}.{k - 1}."
        rules += [(f"pretrained.act_postprocess{k}.0.project.0.{{p}}", stage.format("readout_projects") + "0.{p}"),
                  (f"pretrained.act_postprocess{k}.3.{{p}}", stage.format("layers") + "projection.{p}")]
    for k in (1, 2, 3, 4):  # refinenet4 fuses first: it is transformers' fusion layer 0
        fusion = f"neck.fusion_stage.layers.{4 - k}."
        rules += [(f"scratch.layer{k}_rn.weight", f"neck.convs.{k - 1}.weight"),
                  (f"scratch.refinenet{k}.out_conv.{{p}}", fusion + "projection.{p}"),
                  (f"scratch.refinenet{k}.resConfUnit{{u}}.conv{{c}}.{{p}}",
                   fusion + "residual_layer{u}.convolution{c}.{p}")]
    return rules


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^.]+)" for i, p in enumerate(parts)) + "$")


RULES = [(_pattern(midas), midas, _pattern(hf), hf) for midas, hf in _rules()]


def transformers_names(midas_name: str) -> list[str] | None:
    """The transformers tensor names that ``midas_name`` (without the prefix) becomes; None if unknown."""
    for midas_rx, _, _, hf in RULES:
        if m := midas_rx.match(midas_name):
            if hf == _QKV[1]:
                return [hf.format(part=part, **m.groupdict()) for part in _QKV_PARTS]
            return [hf.format(**m.groupdict())]
    return None


def midas_name(hf_name: str) -> str:
    """The MiDaS name (with the checkpoint prefix) of a transformers tensor name, for messages."""
    for _, midas, hf_rx, _ in RULES:
        if m := hf_rx.match(hf_name):
            return PREFIX + midas.format(**m.groupdict())
    return hf_name


def strip_prefix(tensors: dict[str, Any]) -> dict[str, Any]:
    """The MiDaS tensors of a whole SD checkpoint (``depth_model.model.*``) or of a bare MiDaS file."""
    if any(k.startswith(PREFIX) for k in tensors):
        return {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    return dict(tensors)


def convert_midas_state_dict(tensors: dict[str, Any]) -> dict[str, Any]:
    """MiDaS DPT-Hybrid tensors (prefixed or bare) renamed to ``DPTForDepthEstimation``'s state dict.
    A tensor no rule knows is a clear error naming it; shapes are checked when the model loads it."""
    out: dict[str, Any] = {}
    for name, tensor in strip_prefix(tensors).items():
        if name in IGNORED:
            continue
        targets = transformers_names(name)
        if targets is None:
            raise ModelFileError(f"unexpected tensor {PREFIX}{name}: not part of a MiDaS DPT-Hybrid estimator")
        if len(targets) == 3:  # timm's fused attention projection: rows are query, key, value
            if tensor.shape[0] % 3:
                raise ModelFileError(f"{PREFIX}{name} has shape {list(tensor.shape)}: the fused query/key/value "
                                     f"projection needs a first dimension divisible by 3")
            out.update(zip(targets, tensor.chunk(3, dim=0)))
        else:
            out[targets[0]] = tensor
    return out


def midas_hybrid_config(**changes):
    """transformers' config of ``Intel/dpt-hybrid-midas``: the architecture of SD 2's MiDaS."""
    from transformers import DPTConfig

    fields: dict[str, Any] = dict(
        is_hybrid=True, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=384, patch_size=16, backbone_out_indices=[2, 5, 8, 11], readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5], neck_hidden_sizes=[256, 512, 768, 768], fusion_hidden_size=256,
        use_batch_norm_in_fusion_residual=False, neck_ignore_stages=[0, 1], backbone_featmap_shape=[1, 1024, 24, 24],
        backbone_config=dict(global_padding="same", layer_type="bottleneck", depths=[3, 4, 9], embedding_size=64,
                             hidden_sizes=[256, 512, 1024, 2048], num_groups=32, embedding_dynamic_padding=True,
                             out_features=["stage1", "stage2", "stage3"]))
    backbone = {**fields.pop("backbone_config"), **changes.pop("backbone_config", {})}
    return DPTConfig(**{**fields, **changes}, backbone_config=backbone)


def config_from_shapes(shapes: dict[str, tuple[int, ...]]):
    """``midas_hybrid_config()`` with the sizes read from the MiDaS tensors' shapes (names with or
    without the prefix), so fine-tuned or test-sized estimators load too. What shapes cannot tell
    is MiDaS': 64-wide attention heads, 32 normalisation groups, 16-pixel patches, bottleneck 1/4."""
    shapes = strip_prefix(shapes)

    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise ModelFileError(f"missing tensor {PREFIX}{name} (the MiDaS depth estimator is incomplete)")
        return tuple(shapes[name])

    def count(pattern: str) -> int:
        rx = re.compile(pattern)
        return len({m[1] for k in shapes if (m := rx.match(k))})

    hidden = shape(_TIMM + "cls_token")[-1]
    layers = count(re.escape(_TIMM) + r"blocks\.(\d+)\.")
    grid = math.isqrt(shape(_TIMM + "pos_embed")[1] - 1)
    stage = _TIMM + "patch_embed.backbone.stages.{}."
    depths = [count(re.escape(stage.format(s)) + r"blocks\.(\d+)\.") for s in range(3)]
    widths = [shape(stage.format(s) + "blocks.0.conv3.weight")[0] for s in range(3)]
    return midas_hybrid_config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
        intermediate_size=shape(_BLOCK.format(n=0) + "mlp.fc1.weight")[0], image_size=grid * 16,
        backbone_out_indices=[2, 5, layers - 4, layers - 1],  # only the last two are used by the hybrid
        neck_hidden_sizes=[widths[0], widths[1], shape("pretrained.act_postprocess3.3.weight")[0],
                           shape("pretrained.act_postprocess4.3.weight")[0]],
        fusion_hidden_size=shape("scratch.layer1_rn.weight")[0], backbone_featmap_shape=[1, widths[2], grid, grid],
        backbone_config=dict(depths=depths, hidden_sizes=widths + [2 * widths[2]],
                             embedding_size=shape(_TIMM + "patch_embed.backbone.stem.conv.weight")[0]))


def _fitted(state: dict[str, Any], config):
    """``DPTForDepthEstimation(config)`` on the meta device, after checking that the converted
    ``state`` fits it exactly; a missing, unexpected or mis-shaped tensor is named in one line."""
    import torch
    from transformers import DPTForDepthEstimation

    with torch.device("meta"):
        model = DPTForDepthEstimation(config)
    expected = model.state_dict()
    missing = [midas_name(k) for k in expected if k not in state]
    unexpected = [midas_name(k) for k in state if k not in expected]
    wrong = [f"{midas_name(k)} has shape {list(v.shape)}, expected {list(expected[k].shape)}"
             for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    problems = [f"missing {_few(missing)}"] if missing else []
    problems += [f"unexpected {_few(unexpected)}"] if unexpected else []
    problems += wrong[:3] + ([f"{len(wrong) - 3} more of other shapes"] if len(wrong) > 3 else [])
    if problems:
        raise ModelFileError("the MiDaS depth estimator does not fit DPT-Hybrid: " + "; ".join(problems))
    return model


def _few(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_midas(shapes: dict[str, tuple[int, ...]]):
    """The config of the MiDaS tensors with these shapes, after checking that every tensor fits
    (names and shapes only, nothing allocated); a ``ModelFileError`` names what does not."""
    import torch

    config = config_from_shapes(shapes)
    _fitted(convert_midas_state_dict({k: torch.empty(v, device="meta") for k, v in shapes.items()}), config)
    return config


def load_midas(tensors: dict[str, Any], config=None, dtype=None):
    """A ``DPTForDepthEstimation`` (eval mode, in ``dtype``) holding the MiDaS ``tensors`` (prefixed or
    bare); the config comes from their shapes unless given. Every tensor must fit exactly."""
    if config is None:
        config = config_from_shapes({k: tuple(v.shape) for k, v in tensors.items()})
    state = convert_midas_state_dict(tensors)
    model = _fitted(state, config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # anything the checks above did not foresee, on one line
        raise ModelFileError(f"the MiDaS depth estimator does not load: {' '.join(str(e).split())[:300]}") from None
    return (model.to(dtype) if dtype is not None else model).eval()
