"""LoRA as removable patches: weight 0 = none, the effect = the merged delta, removal is bit-exact."""
import numpy as np
import pytest
import torch

from model_factory import lora_matrices
from webui.model_manager import ModelFileError, ModelNotFound


def pixels(result):
    return np.asarray(result.images[0], dtype=np.int16)


def test_weight_zero_equals_no_lora_and_removal_restores_bit_identical(app, base_request):
    plain = pixels(app.engine.generate(base_request))
    zero = pixels(app.engine.generate(base_request.with_changes(prompt="a red circle <lora:tiny-lora:0>")))
    with_lora = app.engine.generate(base_request.with_changes(prompt="a red circle <lora:tiny-lora:1>"))
    after = pixels(app.engine.generate(base_request))
    assert np.array_equal(plain, zero)
    assert np.abs(pixels(with_lora) - plain).mean() > 1
    assert np.array_equal(plain, after)
    assert 'Lora hashes: "tiny-lora: ' in with_lora.infotexts[0]
    assert with_lora.infotexts[0].startswith("a red circle <lora:tiny-lora:1>\n")  # the prompt as written


def test_lora_effect_equals_merging_its_delta(app, base_request):
    loaded = app.models.get("tiny-sd1")
    unet = dict(loaded.components.unet.named_modules())
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    original = unet[name].weight.detach().clone()
    app.engine.generate(base_request.with_changes(prompt="x <lora:tiny-lora:0.5:0.7>"))
    down, up = lora_matrices()[("unet", name)]
    expected = original + (up @ down) * (2.0 / 4) * 0.7
    assert torch.allclose(unet[name].weight, expected, atol=1e-6)
    te = dict(loaded.components.text_encoder.named_modules())["encoder.layers.0.self_attn.q_proj"].weight
    down, up = lora_matrices()[("text_encoder", "encoder.layers.0.self_attn.q_proj")]
    assert te.shape == (up @ down).shape
    app.engine.generate(base_request)
    assert torch.equal(unet[name].weight, original)


def test_peft_layout_gives_the_same_patch_as_kohya(app, base_request):
    kohya = pixels(app.engine.generate(base_request.with_changes(prompt="a red circle <lora:tiny-lora:0.8>")))
    peft = pixels(app.engine.generate(base_request.with_changes(prompt="a red circle <lora:tiny-lora-peft:0.8>")))
    assert np.abs(kohya - peft).max() <= 1


def test_bad_lora_files_and_names_are_clear_errors_and_the_engine_keeps_working(app, base_request):
    with pytest.raises(ModelFileError, match="broken.safetensors"):
        app.engine.generate(base_request.with_changes(prompt="x <lora:broken:1>"))
    with pytest.raises(ModelNotFound, match="tiny-lora"):
        app.engine.generate(base_request.with_changes(prompt="x <lora:nope:1>"))
    with pytest.raises(ModelNotFound):
        app.engine.generate(base_request.with_changes(prompt="x <lora:../Stable-diffusion/tiny-sd1:1>"))
    assert app.engine.generate(base_request).images


def test_lora_that_does_not_fit_is_refused_and_leaves_the_model_untouched(app, base_request, models_dir):
    from safetensors.torch import load_file, save_file

    state = load_file(str(models_dir / "Lora" / "tiny-lora.safetensors"))
    key = "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_2.lora_down.weight"
    state[key] = torch.zeros(4, 7)  # wrong input width: made for another model
    save_file(state, str(models_dir / "Lora" / "misfit.safetensors"))
    plain = pixels(app.engine.generate(base_request))
    with pytest.raises(ModelFileError, match="misfit"):
        app.engine.generate(base_request.with_changes(prompt="x <lora:misfit:1>"))
    assert np.array_equal(plain, pixels(app.engine.generate(base_request)))
