"""An independent reference for the embedded MiDaS: MiDaS v3 DPT-Hybrid's forward pass (MIT-licensed
structure, written here from scratch as plain tensor operations) straight on a MiDaS state dict in
its own names, at any size. Plain torch only: ``tools/midas_reference.py`` checks it against timm's
``vit_base_r50_s16_384`` plus the MiDaS head, and the tests check our transformers conversion
against it.

timm's pieces, as MiDaS used them: a ResNetV2 stem and three bottleneck stages with weight-
standardised convolutions (eps 1e-8) and TF "same" padding, GroupNorm(32) + ReLU; a ViT whose
hidden states after blocks ``L-4`` and ``L-1`` (8 and 11 of 12) are read out, LayerNorm eps 1e-6.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GROUPS = 32


def _pad_same(x, kernel: int, stride: int, value: float = 0.0):
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def _std_conv(sd, name, x, stride=1):
    weight = sd[name + ".weight"]
    flat = weight.reshape(weight.shape[0], -1)
    flat = (flat - flat.mean(1, keepdim=True)) / torch.sqrt(flat.var(1, unbiased=False, keepdim=True) + 1e-8)
    return F.conv2d(_pad_same(x, weight.shape[-1], stride), flat.reshape_as(weight), stride=stride)


def _group_norm(sd, name, x, relu=True):
    x = F.group_norm(x, GROUPS, sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)
    return F.relu(x) if relu else x


def _conv(sd, name, x, padding=0, stride=1):
    return F.conv2d(x, sd[name + ".weight"], sd.get(name + ".bias"), stride=stride, padding=padding)


def _linear(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])


def resnet_stages(sd, pixels):
    """The ResNetV2 stem and stages: the outputs of stages 0, 1 and 2."""
    prefix = "pretrained.model.patch_embed.backbone."
    x = _group_norm(sd, prefix + "stem.norm", _std_conv(sd, prefix + "stem.conv", pixels, stride=2))
    x = F.max_pool2d(_pad_same(x, 3, 2, value=float("-inf")), 3, 2)
    outputs = []
    for s in range(3):
        b = 0
        while f"{prefix}stages.{s}.blocks.{b}.conv1.weight" in sd:
            block = f"{prefix}stages.{s}.blocks.{b}."
            stride = 2 if s > 0 and b == 0 else 1
            shortcut = x
            if block + "downsample.conv.weight" in sd:
                shortcut = _group_norm(sd, block + "downsample.norm", _std_conv(sd, block + "downsample.conv", x,
                                                                                 stride), relu=False)
            y = _group_norm(sd, block + "norm1", _std_conv(sd, block + "conv1", x))
            y = _group_norm(sd, block + "norm2", _std_conv(sd, block + "conv2", y, stride))
            y = _group_norm(sd, block + "norm3", _std_conv(sd, block + "conv3", y), relu=False)
            x = F.relu(y + shortcut)
            b += 1
        outputs.append(x)
    return outputs


def vit_hidden_states(sd, features):
    """The ViT on the stage-2 features: the hidden state after every block (before the final norm)."""
    prefix = "pretrained.model."
    x = _conv(sd, prefix + "patch_embed.proj", features).flatten(2).transpose(1, 2)
    cls = sd[prefix + "cls_token"].expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + sd[prefix + "pos_embed"]
    hidden = x.shape[-1]
    heads = max(1, hidden // 64)
    states, n = [], 0
    while f"{prefix}blocks.{n}.norm1.weight" in sd:
        block = f"{prefix}blocks.{n}."
        y = F.layer_norm(x, (hidden,), sd[block + "norm1.weight"], sd[block + "norm1.bias"], eps=1e-6)
        qkv = _linear(sd, block + "attn.qkv", y).reshape(x.shape[0], x.shape[1], 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        y = (attention @ v).transpose(1, 2).reshape(x.shape)
        x = x + _linear(sd, block + "attn.proj", y)
        y = F.layer_norm(x, (hidden,), sd[block + "norm2.weight"], sd[block + "norm2.bias"], eps=1e-6)
        x = x + _linear(sd, block + "mlp.fc2", F.gelu(_linear(sd, block + "mlp.fc1", y)))
        states.append(x)
        n += 1
    return states


def _readout(sd, k, tokens, grid):
    """act_postprocess{k}: project the class token into every patch token, then 1x1 conv (and resize)."""
    name = f"pretrained.act_postprocess{k}."
    patches = tokens[:, 1:]
    readout = tokens[:, :1].expand_as(patches)
    x = F.gelu(_linear(sd, name + "0.project.0", torch.cat([patches, readout], dim=-1)))
    x = _conv(sd, name + "3", x.transpose(1, 2).unflatten(2, grid))
    return _conv(sd, name + "4", x, padding=1, stride=2) if name + "4.weight" in sd else x


def _residual_unit(sd, name, x):
    y = _conv(sd, name + "conv1", F.relu(x), padding=1)
    return _conv(sd, name + "conv2", F.relu(y), padding=1) + x


def _fuse(sd, k, x, skip=None):
    name = f"scratch.refinenet{k}."
    if skip is not None:
        x = x + _residual_unit(sd, name + "resConfUnit1.", skip)
    x = _residual_unit(sd, name + "resConfUnit2.", x)
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return _conv(sd, name + "out_conv", x)


def midas_forward(sd: dict, pixels: torch.Tensor) -> dict:
    """Relative inverse depth [B, H, W] of ``pixels`` (normalised to [-1, 1]) and the features on the way."""
    stages = resnet_stages(sd, pixels)
    states = vit_hidden_states(sd, stages[2])
    grid = (pixels.shape[-2] // 16, pixels.shape[-1] // 16)
    layers = [stages[0], stages[1], _readout(sd, 3, states[-4], grid), _readout(sd, 4, states[-1], grid)]
    layers = [_conv(sd, f"scratch.layer{k}_rn", x, padding=1) for k, x in enumerate(layers, 1)]
    path = _fuse(sd, 4, layers[3])
    for k in (3, 2, 1):
        path = _fuse(sd, k, path, layers[k - 1])
    x = _conv(sd, "scratch.output_conv.0", path, padding=1)
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    x = F.relu(_conv(sd, "scratch.output_conv.2", x, padding=1))
    depth = F.relu(_conv(sd, "scratch.output_conv.4", x)).squeeze(1)
    return {"stages": stages, "hidden_states": states, "fused": path, "depth": depth}
