"""Dev-time checks of the embedded-MiDaS conversion (webui/model_manager/midas.py) against timm.

timm is not a dependency of the app: install it in a scratch venv and run the first two commands
there, the last one with the project's Python:

    python3.11 -m venv /tmp/timmvenv && /tmp/timmvenv/bin/pip install torch timm
    /tmp/timmvenv/bin/python tools/midas_reference.py keys > tests/data/midas_dpt_hybrid_keys.txt
    /tmp/timmvenv/bin/python tools/midas_reference.py reference /tmp/midas-reference.pt
    .venv/bin/python tools/midas_reference.py compare /tmp/midas-reference.pt

``keys`` lists the tensors (names and shapes) of SD 2's ``depth_model.model.*``: timm's
``vit_base_r50_s16_384`` (formerly ``vit_base_resnet50_384``) as ``pretrained.model``, plus the MiDaS
v3 DPT-Hybrid head built below with MiDaS' module names (MiDaS is MIT-licensed; this is a small
re-implementation of its structure, not its code). ``reference`` runs that model with random
weights on a random picture and saves weights, input and features; it also checks the plain-torch
reference of tests/midas_reference.py against it. ``compare`` loads the saved weights through our
conversion into transformers' DPTForDepthEstimation and prints the largest differences.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "depth_model.model."
HOOKS = (8, 11)  # MiDaS reads the ViT after these blocks (and the ResNet after stages 0 and 1)


class ProjectReadout(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())

    def forward(self, tokens):
        patches = tokens[:, 1:]
        return self.project(torch.cat([patches, tokens[:, :1].expand_as(patches)], dim=-1))


class Transpose(nn.Module):
    def forward(self, x):
        return x.transpose(1, 2)


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(torch.relu(x)))) + x


class FeatureFusionBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)  # noqa: N815 (MiDaS' names)
        self.resConfUnit2 = ResidualConvUnit(features)  # noqa: N815
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x, skip=None):
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = nn.functional.interpolate(self.resConfUnit2(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class MidasHybrid(nn.Module):
    """MiDaS v3 DPTDepthModel(backbone="vitb_rn50_384", non_negative=True) around a timm model."""

    def __init__(self, vit, features=(256, 512, 768, 768), fusion=256, grid=(24, 24)):
        super().__init__()
        width = vit.embed_dim
        self.pretrained = nn.Module()
        self.pretrained.model = vit
        for k in (1, 2):  # the hybrid takes layers 1 and 2 from the ResNet stages as they are
            setattr(self.pretrained, f"act_postprocess{k}", nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity()))
        for k, resize in ((3, []), (4, [nn.Conv2d(features[3], features[3], 3, stride=2, padding=1)])):
            setattr(self.pretrained, f"act_postprocess{k}", nn.Sequential(
                ProjectReadout(width), Transpose(), nn.Unflatten(2, grid), nn.Conv2d(width, features[k - 1], 1),
                *resize))
        self.scratch = nn.Module()
        for k in (1, 2, 3, 4):
            setattr(self.scratch, f"layer{k}_rn", nn.Conv2d(features[k - 1], fusion, 3, padding=1, bias=False))
            setattr(self.scratch, f"refinenet{k}", FeatureFusionBlock(fusion))
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(fusion, fusion // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(fusion // 2, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1), nn.ReLU(), nn.Identity())

    def forward(self, pixels):
        vit, seen = self.pretrained.model, {}
        modules = {"stage0": vit.patch_embed.backbone.stages[0], "stage1": vit.patch_embed.backbone.stages[1],
                   **{f"block{n}": vit.blocks[n] for n in HOOKS}}
        handles = [m.register_forward_hook(lambda _m, _i, out, key=key: seen.__setitem__(key, out))
                   for key, m in modules.items()]
        vit.forward_features(pixels)
        for h in handles:
            h.remove()
        layers = [seen["stage0"], seen["stage1"], self.pretrained.act_postprocess3(seen[f"block{HOOKS[0]}"]),
                  self.pretrained.act_postprocess4(seen[f"block{HOOKS[1]}"])]
        layers = [getattr(self.scratch, f"layer{k}_rn")(x) for k, x in enumerate(layers, 1)]
        path = self.scratch.refinenet4(layers[3])
        for k in (3, 2, 1):
            path = getattr(self.scratch, f"refinenet{k}")(path, layers[k - 1])
        seen["fused"] = path
        seen["depth"] = self.scratch.output_conv(path).squeeze(1)
        return seen


def build_midas():
    import timm

    return MidasHybrid(timm.create_model("vit_base_r50_s16_384", pretrained=False)).eval()


def cmd_keys(_args):
    for name, tensor in build_midas().state_dict().items():
        print(f"{PREFIX}{name} {','.join(map(str, tensor.shape))}")


def max_difference(a, b) -> str:
    return f"max |diff| {(a - b).abs().max().item():.3g} (max |value| {b.abs().max().item():.3g})"


def cmd_reference(args):
    sys.path.insert(0, str(ROOT / "tests"))
    from midas_reference import midas_forward

    torch.manual_seed(args.seed)
    model = build_midas()
    with torch.no_grad():
        for name, p in model.named_parameters():  # non-trivial norms and biases, so any swap shows
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
        model.scratch.output_conv[4].bias.fill_(1.0)
        pixels = torch.rand(1, 3, 384, 384) * 2 - 1
        seen = model(pixels)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        ours = midas_forward(state, pixels)
    for label, a, b in (("stage 0", ours["stages"][0], seen["stage0"]), ("stage 1", ours["stages"][1], seen["stage1"]),
                        (f"block {HOOKS[0]}", ours["hidden_states"][HOOKS[0]], seen[f"block{HOOKS[0]}"]),
                        (f"block {HOOKS[1]}", ours["hidden_states"][HOOKS[1]], seen[f"block{HOOKS[1]}"]),
                        ("fused", ours["fused"], seen["fused"]), ("depth", ours["depth"], seen["depth"])):
        print(f"plain-torch reference vs timm MiDaS, {label}: {max_difference(a, b)}")
    torch.save({"state": {PREFIX + k: v for k, v in state.items()}, "pixels": pixels,
                "features": {k: v for k, v in seen.items()}}, args.out)


def cmd_compare(args):
    sys.path.insert(0, str(ROOT))
    from webui.model_manager.midas import load_midas, midas_hybrid_config

    saved = torch.load(args.file, weights_only=True)
    model = load_midas(saved["state"], midas_hybrid_config(), torch.float32)
    pixels, seen = saved["pixels"], saved["features"]
    with torch.no_grad():
        out = model.dpt(pixels, output_hidden_states=True)
        fused = []
        handle = model.neck.fusion_stage.register_forward_hook(lambda _m, _i, o: fused.append(o[-1]))
        depth = model(pixel_values=pixels).predicted_depth
        handle.remove()
    for label, a, b in (("stage 0", out.intermediate_activations[0], seen["stage0"]),
                        ("stage 1", out.intermediate_activations[1], seen["stage1"]),
                        (f"block {HOOKS[0]}", out.hidden_states[HOOKS[0] + 1], seen[f"block{HOOKS[0]}"]),
                        (f"block {HOOKS[1]}", out.hidden_states[HOOKS[1] + 1], seen[f"block{HOOKS[1]}"]),
                        ("fused", fused[0], seen["fused"]), ("depth", depth, seen["depth"])):
        print(f"transformers (converted) vs timm MiDaS, {label}: {max_difference(a, b)}")


def main():
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keys").set_defaults(run=cmd_keys)
    reference = sub.add_parser("reference")
    reference.add_argument("out", type=Path)
    reference.add_argument("--seed", type=int, default=0)
    reference.set_defaults(run=cmd_reference)
    compare = sub.add_parser("compare")
    compare.add_argument("file", type=Path)
    compare.set_defaults(run=cmd_compare)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
