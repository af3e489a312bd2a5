"""Tiny random-weight Stable Diffusion models of the real architectures, saved as users' files are.

Each builder makes the real diffusers/transformers classes at a small size and writes them in the
original LDM single-file layout (``.safetensors`` or a ``.ckpt`` zip pickle), optionally with a
``NAME.yaml`` beside it, or as a diffusers folder. Deterministic given the seed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from webui.model_manager.ldm_layout import diffusers_to_ldm, write_model_yaml

CONTEXT = 32
TOKENIZER = Path(__file__).resolve().parents[1] / "webui" / "configs" / "clip_tokenizer"


def tiny_components(family: str = "sd1", variant: str = "normal", seed: int = 0, vae_levels: int = 2,
                    output_gain: float = 50.0):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    in_channels = {"normal": 4, "inpaint": 9, "depth": 5}[variant]
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CONTEXT, attention_head_dim=8 if family == "sd1" else [1, 1],
        use_linear_projection=family == "sd2", norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=(32, 64)[:vae_levels] if vae_levels <= 2 else (32, 32, 64)[:vae_levels],
                        down_block_types=("DownEncoderBlock2D",) * vae_levels,
                        up_block_types=("UpDecoderBlock2D",) * vae_levels, latent_channels=4, norm_num_groups=32,
                        layers_per_block=1)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=CONTEXT, intermediate_size=64, num_attention_heads=1, num_hidden_layers=2, vocab_size=49408,
        max_position_embeddings=77, hidden_act="quick_gelu" if family == "sd1" else "gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407 if family == "sd1" else 0))
    # Random init predicts almost no noise; a gain makes different inputs give visibly different images.
    with torch.no_grad():
        for p in unet.conv_out.parameters():
            p.mul_(output_gain)
    return unet.eval(), vae.eval(), text_encoder.eval()


def write_checkpoint(path: Path, family: str = "sd1", variant: str = "normal", seed: int = 0, with_yaml: bool = False,
                     prediction: str = "epsilon", dtype=torch.float16, output_gain: float = 50.0,
                     midas: dict | bool | None = None) -> Path:
    """``midas``: the ``depth_model.model.*`` tensors of a depth model (SD 2's 512-depth-ema carries its
    MiDaS estimator there): a dict of MiDaS tensors (see ``midas_tensors``), False for none, None for
    two stand-ins (not a usable estimator)."""
    unet, vae, text_encoder = tiny_components(family, variant, seed, output_gain=output_gain)
    state = {k: v.to(dtype) for k, v in diffusers_to_ldm(unet=unet, vae=vae, text_encoder=text_encoder,
                                                         family=family).items()}
    if isinstance(midas, dict):
        state.update({"depth_model.model." + k: v.to(dtype) for k, v in midas.items()})
    elif variant == "depth" and midas is None:
        generator = torch.Generator().manual_seed(seed)
        state["depth_model.model.pretrained.model.cls_token"] = torch.randn(1, 1, 16, generator=generator).to(dtype)
        state["depth_model.model.scratch.output_conv.4.weight"] = torch.randn(1, 8, 1, 1, generator=generator).to(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    if with_yaml:
        write_model_yaml(path.with_suffix(".yaml"), unet_config=dict(unet.config), vae_config=dict(vae.config),
                         text_encoder_config=text_encoder.config.to_dict(), family=family,
                         prediction_type=prediction)
    return path


def write_vae(path: Path, seed: int = 1, layout: str = "ldm") -> Path:
    """A standalone VAE file (``layout``: ``ldm`` as A1111's VAE files, or ``diffusers``)."""
    _, vae, _ = tiny_components(seed=seed)
    with torch.no_grad():
        for p in vae.decoder.conv_out.parameters():
            p.add_(0.5 * torch.randn_like(p))
    state = diffusers_to_ldm(vae=vae) if layout == "ldm" else vae.state_dict()
    state = {k.removeprefix("first_stage_model."): v.half().contiguous() for k, v in state.items()}
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_diffusers_folder(folder: Path, seed: int = 0) -> Path:
    from diffusers import PNDMScheduler

    unet, vae, text_encoder = tiny_components("sd1", "normal", seed)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    shutil.copytree(TOKENIZER, folder / "tokenizer", dirs_exist_ok=True)
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  steps_offset=1).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None], "safety_checker": [None, None],
        "requires_safety_checker": False, "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    return folder


LORA_TARGETS = {
    "unet": ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
             "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
             "up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", "down_blocks.0.resnets.0.conv1"],
    "text_encoder": ["encoder.layers.0.self_attn.q_proj", "encoder.layers.1.mlp.fc1"],
}


def lora_matrices(seed: int = 0, rank: int = 4):
    """Random LoRA matrices for the tiny SD 1.x models: {(kind, module name): (down, up)}."""
    unet, _, text_encoder = tiny_components("sd1")
    modules = {"unet": dict(unet.named_modules()), "text_encoder": dict(text_encoder.named_modules())}
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for kind, names in LORA_TARGETS.items():
        for name in names:
            weight = modules[kind][name].weight
            if weight.ndim == 4:
                down = torch.randn(rank, weight.shape[1], 3, 3, generator=generator) * 0.3
                up = torch.randn(weight.shape[0], rank, 1, 1, generator=generator) * 0.3
            else:
                down = torch.randn(rank, weight.shape[1], generator=generator) * 0.3
                up = torch.randn(weight.shape[0], rank, generator=generator) * 0.3
            out[(kind, name)] = (down, up)
    return out


def write_lora(path: Path, layout: str = "kohya", seed: int = 0, alpha: float = 2.0) -> Path:
    """A LoRA for the tiny SD 1.x models in kohya/A1111 (``lora_unet_*``) or PEFT (``unet.*.lora_A``) layout."""
    from safetensors.torch import save_file

    state = {}
    for (kind, name), (down, up) in lora_matrices(seed).items():
        if layout == "kohya":
            prefix = "lora_unet_" if kind == "unet" else "lora_te_text_model_"
            key = prefix + name.replace(".", "_")
            state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down, up
            state[f"{key}.alpha"] = torch.tensor(alpha)
        else:
            base = f"{kind}.{'text_model.' if kind == 'text_encoder' else ''}{name}"
            state[f"{base}.lora_A.weight"], state[f"{base}.lora_B.weight"] = down, up
            state[f"{base}.alpha"] = torch.tensor(alpha)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def token_rows(words: list[str], seed: int = 0):
    """The tiny SD 1.x text encoder's token-embedding rows for single-token words (as loaded: fp16)."""
    from webui.model_manager.loader import load_tokenizer

    tokenizer = load_tokenizer("sd1")
    _, _, text_encoder = tiny_components("sd1", seed=seed)
    ids = [tokenizer(w, add_special_tokens=False).input_ids[0] for w in words]
    return text_encoder.embeddings.token_embedding.weight[ids].detach().half().float()


def write_embedding(path: Path, vectors, layout: str) -> Path:
    """A textual-inversion file: ``a1111`` (.pt, string_to_param), ``diffusers`` (.bin), ``safetensors``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "a1111":
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.nn.Parameter(vectors.clone())},
                    "name": path.stem, "step": 100}, path)
    elif layout == "diffusers":
        torch.save({f"<{path.stem}>": vectors[0].clone()}, path)
    else:
        from safetensors.torch import save_file

        save_file({"emb_params": vectors.contiguous()}, str(path))
    return path


def write_depth_estimator(folder: Path, seed: int = 0, image_size: int = 32, with_processor: bool = True,
                          hybrid: bool = False) -> Path:
    """A tiny random-weight DPT (``DPTForDepthEstimation``: the dpt-large ViT architecture, or with
    ``hybrid`` dpt-hybrid-midas' BiT + ViT) saved as a transformers folder: config.json +
    model.safetensors (+ preprocessor_config.json)."""
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    torch.manual_seed(seed)
    if hybrid:  # the hybrid embedding expects 1024 BiT channels, as in dpt-hybrid-midas
        backbone = BitConfig(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1],
                             hidden_sizes=[16, 32, 1024], embedding_size=8, num_groups=4,
                             out_features=["stage1", "stage2", "stage3"])
        config = DPTConfig(is_hybrid=True, backbone_config=backbone, hidden_size=32, num_hidden_layers=4,
                           num_attention_heads=2, intermediate_size=64, image_size=image_size, patch_size=16,
                           neck_hidden_sizes=[16, 32, 32, 32], fusion_hidden_size=16,
                           reassemble_factors=[1, 1, 1, 0.5], backbone_out_indices=[0, 1, 2, 3],
                           readout_type="project", neck_ignore_stages=[0, 1],
                           backbone_featmap_shape=[1, 1024, image_size // 16, image_size // 16])
    else:
        config = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                           image_size=image_size, patch_size=8, neck_hidden_sizes=[8, 16, 32, 32],
                           fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5], backbone_out_indices=[0, 1, 2, 3])
    model = DPTForDepthEstimation(config).eval()
    # transformers' init (std 0.02, zero bias) makes a random DPT predict ~1e-9 everywhere; PyTorch's
    # default conv init and a positive output bias give a map that varies with the picture.
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.reset_parameters()
    torch.nn.init.constant_(model.head.head[-2].bias, 1.0)
    model.save_pretrained(folder)
    if with_processor:
        DPTImageProcessorPil(size={"height": image_size, "width": image_size}, keep_aspect_ratio=False,
                             image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(folder)
    return folder


MIDAS_FULL_SIZE = dict(hidden=768, layers=12, mlp=3072, grid=24, stem=64, widths=(256, 512, 1024), depths=(3, 4, 9),
                       neck=(768, 768), fusion=256, classes=1000)  # SD 2's MiDaS v3 DPT-Hybrid
MIDAS_TINY = dict(hidden=64, layers=4, mlp=128, grid=4, stem=32, widths=(128, 256, 512), depths=(1, 2, 1),
                  neck=(64, 48), fusion=32, classes=10)  # 64x64 input; widths/4 divisible by 32 norm groups


def midas_shapes(hidden, layers, mlp, grid, stem, widths, depths, neck, fusion, classes) -> dict[str, tuple]:
    """Names and shapes of a MiDaS v3 DPT-Hybrid state dict in MiDaS' own names, at any size: timm's
    ViT-hybrid (ResNetV2 stem and bottleneck stages, ViT blocks) as ``pretrained.model``, the readout
    blocks ``pretrained.act_postprocess3/4`` and the fusion decoder ``scratch``. At
    ``MIDAS_FULL_SIZE`` it equals tests/data/midas_dpt_hybrid_keys.txt (dumped from timm)."""
    shapes: dict[str, tuple] = {}

    def add(name, weight, bias=True):
        shapes[name + ".weight"] = tuple(weight)
        if bias:
            shapes[name + ".bias"] = (weight[0],)

    vit, resnet = "pretrained.model.", "pretrained.model.patch_embed.backbone."
    shapes[vit + "cls_token"], shapes[vit + "pos_embed"] = (1, 1, hidden), (1, grid * grid + 1, hidden)
    add(resnet + "stem.conv", (stem, 3, 7, 7), bias=False)
    add(resnet + "stem.norm", (stem,))
    channels = stem
    for s, (width, depth) in enumerate(zip(widths, depths)):
        for b in range(depth):
            block = f"{resnet}stages.{s}.blocks.{b}."
            if b == 0:
                add(block + "downsample.conv", (width, channels, 1, 1), bias=False)
                add(block + "downsample.norm", (width,))
            for i, (out, inp, k) in enumerate([(width // 4, channels, 1), (width // 4, width // 4, 3),
                                               (width, width // 4, 1)], 1):
                add(f"{block}conv{i}", (out, inp, k, k), bias=False)
                add(f"{block}norm{i}", (out,))
            channels = width
    add(vit + "patch_embed.proj", (hidden, channels, 1, 1))
    for n in range(layers):
        block = f"{vit}blocks.{n}."
        add(block + "norm1", (hidden,))
        add(block + "attn.qkv", (3 * hidden, hidden))
        add(block + "attn.proj", (hidden, hidden))
        add(block + "norm2", (hidden,))
        add(block + "mlp.fc1", (mlp, hidden))
        add(block + "mlp.fc2", (hidden, mlp))
    add(vit + "norm", (hidden,))
    add(vit + "head", (classes, hidden))
    for k, features in zip((3, 4), neck):
        add(f"pretrained.act_postprocess{k}.0.project.0", (hidden, 2 * hidden))
        add(f"pretrained.act_postprocess{k}.3", (features, hidden, 1, 1))
    add("pretrained.act_postprocess4.4", (neck[1], neck[1], 3, 3))
    for k, features in enumerate((widths[0], widths[1], *neck), 1):
        add(f"scratch.layer{k}_rn", (fusion, features, 3, 3), bias=False)
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in ("conv1", "conv2"):
                add(f"scratch.refinenet{k}.{unit}.{conv}", (fusion, fusion, 3, 3))
        add(f"scratch.refinenet{k}.out_conv", (fusion, fusion, 1, 1))
    add("scratch.output_conv.0", (fusion // 2, fusion, 3, 3))
    add("scratch.output_conv.2", (32, fusion // 2, 3, 3))
    add("scratch.output_conv.4", (1, 32, 1, 1))
    return shapes


def midas_tensors(seed: int = 0, **sizes) -> dict:
    """Random MiDaS DPT-Hybrid tensors (``midas_shapes``, default ``MIDAS_TINY``) whose depth varies
    with the picture: fan-in scaled weights, non-trivial norms and biases, a positive output bias."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in midas_shapes(**{**MIDAS_TINY, **sizes}).items():
        noise = torch.randn(shape, generator=generator)
        if len(shape) == 1:
            tensors[name] = (1.0 if "norm" in name and name.endswith(".weight") else 0.0) + 0.1 * noise
        elif name.endswith(("cls_token", "pos_embed")):
            tensors[name] = 0.5 * noise
        else:
            tensors[name] = noise / (torch.tensor(shape[1:]).prod().sqrt())
    tensors["scratch.output_conv.4.bias"] = torch.ones(1)
    return tensors
