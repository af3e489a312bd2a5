"""Recognise a checkpoint's architecture from tensor names and shapes, and derive its configs.

Probing reads only names and shapes (the safetensors header), never the weights. The family comes
from the text-encoder layout and the UNet's cross-attention width (768 = SD 1.x, 1024 = SD 2.x,
2048 + ``conditioner.`` keys = SDXL); the variant from the UNet's input channels (4 normal,
9 inpainting, 5 depth). Configs for diffusers/transformers modules are derived from the shapes, with
the family's defaults for what shapes cannot tell (attention heads, group-norm groups), and a
``NAME.yaml`` beside the file overrides both (A1111's LDM yaml, or our ``diffusers:`` section).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .ldm_layout import OPENCLIP_PREFIX, UNET_PREFIX, VAE_PREFIX, clip_prefix_of
from .tensor_files import ModelFileError, PickledFile, SafetensorsFile

Family = Literal["sd1", "sd2", "sdxl", "unknown"]
Variant = Literal["normal", "inpaint", "depth"]
Prediction = Literal["epsilon", "v_prediction"]

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
                "steps_offset": 1, "prediction_type": "epsilon", "timestep_spacing": "leading"}


@dataclass(frozen=True)
class CheckpointInfo:
    family: Family
    variant: Variant
    prediction: Prediction
    in_channels: int
    context_dim: int
    native_size: int
    vae_scale: int
    depth_estimator: bool = False  # carries a MiDaS depth estimator under depth_model.* (SD 2's 512-depth-ema)
    configs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def supported(self) -> bool:
        return self.family in ("sd1", "sd2")


def read_yaml_beside(path: Path) -> dict[str, Any]:
    """A1111 lets ``NAME.yaml`` beside ``NAME.safetensors`` describe the model."""
    import yaml

    candidate = path.with_suffix(".yaml")
    if not candidate.is_file():
        return {}
    try:
        document = yaml.safe_load(candidate.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ModelFileError(f"{candidate.name}: invalid YAML ({e})") from None
    if not isinstance(document, dict):
        raise ModelFileError(f"{candidate.name}: expected a mapping at the top level")
    return document


def _shape(tensors, key: str) -> tuple[int, ...] | None:
    return tensors.info(key).shape if key in tensors else None


def _indices(keys: list[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m[1]) for k in keys if (m := rx.match(k))})


def probe_tensors(tensors: SafetensorsFile | PickledFile, path: Path) -> CheckpointInfo:
    keys = tensors.keys()
    yaml_doc = read_yaml_beside(path)
    conv_in = _shape(tensors, UNET_PREFIX + "input_blocks.0.0.weight")
    context_dim = 0
    for k in keys:
        if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight"):
            context_dim = tensors.info(k).shape[1]
            break
    if any(k.startswith("conditioner.embedders.") for k in keys) or context_dim == 2048:
        family: Family = "sdxl"
    elif OPENCLIP_PREFIX + "token_embedding.weight" in tensors:
        family = "sd2"
    elif clip_prefix_of(keys) + "embeddings.token_embedding.weight" in tensors:
        family = "sd1"
    else:
        family = "unknown"
    if conv_in is None:
        family = "unknown"
    in_channels = conv_in[1] if conv_in else 0
    if in_channels == 9:
        variant: Variant = "inpaint"
    elif in_channels == 5 or any(k.startswith("depth_model.") for k in keys):
        variant = "depth"
    else:
        variant = "normal"

    prediction = _prediction(family, variant, path, tensors, yaml_doc)
    vae_scale = 2 ** max(0, len(_indices(keys, re.escape(VAE_PREFIX) + r"encoder\.down\.(\d+)\.")) - 1)
    latent_size = (yaml_doc.get("diffusers") or {}).get("unet", {}).get("sample_size")
    if not latent_size:
        latent_size = 96 if family == "sd2" and prediction == "v_prediction" else 64
    return CheckpointInfo(family, variant, prediction, in_channels, context_dim, int(latent_size) * vae_scale,
                          vae_scale, any(k.startswith("depth_model.") for k in keys), configs={"yaml": yaml_doc})


def _prediction(family: str, variant: str, path: Path, tensors, yaml_doc: dict[str, Any]) -> Prediction:
    params = (yaml_doc.get("model") or {}).get("params") or {}
    if "parameterization" in params:
        return "v_prediction" if params["parameterization"] == "v" else "epsilon"
    if "v_pred" in tensors:
        return "v_prediction"
    declared = tensors.metadata.get("modelspec.prediction_type", "")
    if declared:
        return "v_prediction" if declared.startswith("v") else "epsilon"
    if family != "sd2" or variant != "normal":
        return "epsilon"
    # SD 2.x 768 models predict v; the 512 base model predicts noise. The architecture is the same,
    # so the file name is the remaining hint (as in stabilityai's "512-base-ema" / "768-v-ema").
    name = path.stem.lower()
    return "epsilon" if ("512" in name or "base" in name) else "v_prediction"


def derive_configs(tensors: SafetensorsFile | PickledFile, info: CheckpointInfo) -> dict[str, Any]:
    """diffusers/transformers configs for the UNet, VAE, text encoder and scheduler."""
    keys = tensors.keys()
    yaml_doc = info.configs.get("yaml", {})
    override = yaml_doc.get("diffusers") or {}
    ldm_params = ((yaml_doc.get("model") or {}).get("params") or {})
    family = family_configs(info.family)
    unet = _unet_config(tensors, keys, info, (ldm_params.get("unet_config") or {}).get("params") or {},
                        family.get("unet", {}))
    vae = _vae_config(tensors, keys, ldm_params)
    text = _text_config(tensors, keys, info.family, family.get("text_encoder", {}))
    scheduler = dict(SD_SCHEDULER, prediction_type=info.prediction)
    # What the shapes tell wins; the family's published config fills in what they cannot.
    configs = {"unet": {**family.get("unet", {}), **unet}, "vae": {**family.get("vae", {}), **vae},
               "text_encoder": {**family.get("text_encoder", {}), **text}, "scheduler": scheduler}
    for name in configs:
        if isinstance(override.get(name), dict):
            configs[name] = {**configs[name], **override[name]}
    configs["scheduler"]["prediction_type"] = info.prediction
    return configs


def family_configs(family: str) -> dict[str, dict[str, Any]]:
    """The published configs shipped in ``webui/configs/<family>/`` (see tools/make_family_configs.py)."""
    import json

    folder = CONFIGS_DIR / family
    files = {"unet": "unet/config.json", "vae": "vae/config.json", "text_encoder": "text_encoder/config.json"}
    out: dict[str, dict[str, Any]] = {}
    for name, relative in files.items():
        path = folder / relative
        if path.is_file():
            out[name] = {k: v for k, v in json.loads(path.read_text()).items()
                         if not k.startswith("_") and k not in ("architectures", "model_type")}
    return out


def _unet_config(tensors, keys: list[str], info: CheckpointInfo, ldm_unet: dict[str, Any],
                 family: dict[str, Any]) -> dict[str, Any]:
    p = UNET_PREFIX
    model_channels, in_channels = tensors.info(p + "input_blocks.0.0.weight").shape[:2]
    blocks = _indices(keys, re.escape(p) + r"input_blocks\.(\d+)\.")
    levels: list[dict[str, Any]] = [{"channels": 0, "resnets": 0, "attention": False}]
    for k in blocks[1:]:
        if p + f"input_blocks.{k}.0.op.weight" in tensors:
            levels.append({"channels": 0, "resnets": 0, "attention": False})
            continue
        level = levels[-1]
        level["resnets"] += 1
        level["channels"] = tensors.info(p + f"input_blocks.{k}.0.out_layers.3.weight").shape[0]
        level["attention"] |= any(key.startswith(p + f"input_blocks.{k}.1.") for key in keys)
    layers = levels[0]["resnets"]
    if any(level["resnets"] != layers for level in levels):
        raise ModelFileError("UNet levels have different numbers of resnet blocks; not an SD layout")
    channels = [level["channels"] for level in levels]
    attention = [level["attention"] for level in levels]
    depth = len(_indices(keys, re.escape(p) + r"input_blocks\.\d+\.1\.transformer_blocks\.(\d+)\.")) or 1
    proj_in = next((k for k in keys if k.startswith(p) and k.endswith(".proj_in.weight")), None)
    linear = bool(proj_in) and len(tensors.info(proj_in).shape) == 2

    if "num_head_channels" in ldm_unet and int(ldm_unet["num_head_channels"]) > 0:
        heads: Any = [max(1, c // int(ldm_unet["num_head_channels"])) for c in channels]
    elif "num_heads" in ldm_unet and int(ldm_unet["num_heads"]) > 0:
        heads = int(ldm_unet["num_heads"])
    elif family.get("block_out_channels") == channels:
        heads = family["attention_head_dim"]
    elif info.family == "sd2" and all(c % 64 == 0 for c in channels):
        heads = [c // 64 for c in channels]  # SD 2.x: 64 channels per head
    else:
        heads = 8 if all(c % 8 == 0 for c in channels) else 1  # SD 1.x: 8 heads
    config: dict[str, Any] = {
        "sample_size": info.native_size // info.vae_scale,
        "in_channels": in_channels,
        "out_channels": tensors.info(p + "out.2.weight").shape[0],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "cross_attention_dim": info.context_dim,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": depth,
        "upcast_attention": info.family == "sd2" and info.prediction == "v_prediction",
        "norm_num_groups": 32,
    }
    time_dim = tensors.info(p + "time_embed.0.weight").shape[0]
    if time_dim != model_channels * 4:
        config["time_embedding_dim"] = time_dim
    if p + "text_pool_embed.proj.weight" in tensors:
        config["addition_embed_type"] = "text"
    if p + "label_emb.0.0.weight" in tensors:
        config["class_embed_type"] = "projection"
        config["projection_class_embeddings_input_dim"] = tensors.info(p + "label_emb.0.0.weight").shape[1]
    return config


def _vae_config(tensors, keys: list[str], ldm_params: dict[str, Any]) -> dict[str, Any]:
    p = VAE_PREFIX
    levels = _indices(keys, re.escape(p) + r"encoder\.down\.(\d+)\.")
    channels = [tensors.info(p + f"encoder.down.{i}.block.0.conv1.weight").shape[0] for i in levels]
    layers = len(_indices(keys, re.escape(p) + r"encoder\.down\.0\.block\.(\d+)\."))
    return {
        "in_channels": tensors.info(p + "encoder.conv_in.weight").shape[1],
        "out_channels": tensors.info(p + "decoder.conv_out.weight").shape[0],
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": channels,
        "layers_per_block": layers,
        "latent_channels": tensors.info(p + "post_quant_conv.weight").shape[0],
        "norm_num_groups": 32,
        "mid_block_add_attention": p + "encoder.mid.attn_1.q.weight" in tensors,
        "scaling_factor": float(ldm_params.get("scale_factor", 0.18215)),
        "sample_size": 512,
    }


def _text_config(tensors, keys: list[str], family: str, published: dict[str, Any]) -> dict[str, Any]:
    if family == "sd2":
        p = OPENCLIP_PREFIX
        vocab, width = tensors.info(p + "token_embedding.weight").shape
        positions = tensors.info(p + "positional_embedding").shape[0]
        # SD 2.x reads OpenCLIP's penultimate layer: the last resblock in the file is unused.
        layers = len(_indices(keys, re.escape(p) + r"transformer\.resblocks\.(\d+)\.")) - 1
        intermediate = tensors.info(p + "transformer.resblocks.0.mlp.c_fc.weight").shape[0]
        act, pad = "gelu", 0
    else:
        p = clip_prefix_of(keys)
        vocab, width = tensors.info(p + "embeddings.token_embedding.weight").shape
        positions = tensors.info(p + "embeddings.position_embedding.weight").shape[0]
        layers = len(_indices(keys, re.escape(p) + r"encoder\.layers\.(\d+)\."))
        intermediate = tensors.info(p + "encoder.layers.0.mlp.fc1.weight").shape[0]
        act, pad = "quick_gelu", 49407
    if published.get("hidden_size") == width:
        heads = published["num_attention_heads"]
    else:
        heads = width // 64 if width % 64 == 0 else 1
    return {"vocab_size": vocab, "hidden_size": width, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "max_position_embeddings": positions, "hidden_act": act, "projection_dim": width,
            "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": pad}
