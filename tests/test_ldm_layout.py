"""Our LDM key layout agrees with diffusers' own single-file converter, key for key and value for value."""
import json
import shutil

import pytest
import torch

from model_factory import TOKENIZER, tiny_components
from webui.model_manager.ldm_layout import diffusers_to_ldm


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_exported_file_loads_identically_in_diffusers(tmp_path, family):
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from safetensors.torch import save_file

    unet, vae, text_encoder = tiny_components(family, "normal", seed=3)
    save_file(diffusers_to_ldm(unet=unet, vae=vae, text_encoder=text_encoder, family=family),
              str(tmp_path / "model.safetensors"))
    config = tmp_path / "config"
    unet.save_config(config / "unet")
    vae.save_config(config / "vae")
    text_encoder.config.save_pretrained(config / "text_encoder")
    shutil.copytree(TOKENIZER, config / "tokenizer")
    PNDMScheduler(beta_schedule="scaled_linear").save_config(config / "scheduler")
    (config / "model_index.json").write_text(json.dumps(json.loads(
        (TOKENIZER.parent / "sd1" / "model_index.json").read_text())))
    pipe = StableDiffusionPipeline.from_single_file(str(tmp_path / "model.safetensors"), config=str(config),
                                                    local_files_only=True)
    for ours, theirs in ((unet, pipe.unet), (vae, pipe.vae), (text_encoder, pipe.text_encoder)):
        want, got = ours.state_dict(), theirs.state_dict()
        assert want.keys() <= got.keys()
        for key in want:
            assert torch.equal(want[key], got[key].to(want[key].dtype)), key


def test_family_configs_build_the_published_architectures():
    from webui.model_manager.probe import family_configs

    sd1, sd2 = family_configs("sd1"), family_configs("sd2")
    assert sd1["unet"]["cross_attention_dim"] == 768 and sd2["unet"]["cross_attention_dim"] == 1024
    assert sd1["text_encoder"]["num_hidden_layers"] == 12 and sd2["text_encoder"]["num_hidden_layers"] == 23
    assert sd2["unet"]["use_linear_projection"] and not sd1["unet"]["use_linear_projection"]
