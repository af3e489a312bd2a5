"""Write the diffusers/transformers configs of the standard SD families into webui/configs/<family>/.

These are the published architectures (SD 1.x: CLIP ViT-L/14 text encoder, 768-wide cross-attention,
8 heads; SD 2.x: OpenCLIP ViT-H/14 penultimate layer, 1024-wide, 64 channels per head, linear
projections), written from the library classes so nothing is downloaded:

    python tools/make_family_configs.py
"""
from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "webui" / "configs"

SCHEDULER = {"_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
             "prediction_type": "epsilon", "timestep_spacing": "leading", "skip_prk_steps": True}
VAE = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
       "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
       "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
       "sample_size": 512, "scaling_factor": 0.18215}
UNET = {"_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 4, "out_channels": 4,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "norm_num_groups": 32,
        "transformer_layers_per_block": 1}
FAMILIES = {
    "sd1": {
        "unet": {**UNET, "cross_attention_dim": 768, "attention_head_dim": 8, "use_linear_projection": False},
        "text_encoder": {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408,
                         "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                         "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                         "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1},
    },
    "sd2": {
        "unet": {**UNET, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
                 "use_linear_projection": True},
        "text_encoder": {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408,
                         "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23,
                         "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu",
                         "projection_dim": 512, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1},
    },
}
MODEL_INDEX = {"_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None],
               "safety_checker": [None, None], "requires_safety_checker": False,
               "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
               "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
               "vae": ["diffusers", "AutoencoderKL"]}


def main() -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    for family, parts in FAMILIES.items():
        folder = CONFIGS / family
        for name, config in (("unet", parts["unet"]), ("vae", VAE)):
            cls = UNet2DConditionModel if name == "unet" else AutoencoderKL
            cls.from_config({k: v for k, v in config.items() if k != "_class_name"})  # validates
            write(folder / name / "config.json", config)
        CLIPTextConfig(**parts["text_encoder"])  # validates
        write(folder / "text_encoder" / "config.json", parts["text_encoder"])
        write(folder / "scheduler" / "scheduler_config.json", SCHEDULER)
        write(folder / "model_index.json", MODEL_INDEX)
        print("wrote", folder)


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
