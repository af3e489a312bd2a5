"""SD 2's 512-depth-ema carries its own MiDaS (DPT-Hybrid) under ``depth_model.model.*``: it is
converted at load time to transformers' DPTForDepthEstimation and is the depth checkpoint's default
estimator. Tiny depth checkpoints in the original layout carry tiny MiDaS tensors in the real names
(``model_factory.midas_tensors``); the full-size names are checked against the list dumped from timm."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from midas_reference import midas_forward
from model_factory import MIDAS_FULL_SIZE, midas_shapes, midas_tensors, write_checkpoint, write_depth_estimator
from test_depth import depth_app, run_cli  # noqa: F401 (depth_app: an App over this module's depth_models)
from webui.engine import GenerationRequest
from webui.model_manager import ModelFileError
from webui.model_manager.midas import IGNORED, check_midas, convert_midas_state_dict, load_midas, midas_hybrid_config, \
    transformers_names

KEYS_FILE = Path(__file__).resolve().parent / "data" / "midas_dpt_hybrid_keys.txt"
GOOD, MISSING = "tiny-depth-midas.safetensors", "tiny-depth-midas-missing.ckpt"
GARBLED = "tiny-depth-midas-garbled.safetensors"
MISSING_KEY = "pretrained.model.blocks.1.attn.proj.weight"
GARBLED_KEY = "scratch.refinenet2.resConfUnit1.conv2.weight"


def embedded(checkpoint: str) -> str:
    return f"{checkpoint} [embedded MiDaS]"


@pytest.fixture(scope="module")
def depth_models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("midas-models")
    ckpt = root / "Stable-diffusion"
    write_checkpoint(ckpt / GOOD, "sd2", "depth", seed=11, midas=midas_tensors(seed=1))
    missing = midas_tensors(seed=2)
    del missing[MISSING_KEY]
    write_checkpoint(ckpt / MISSING, "sd2", "depth", seed=12, midas=missing)
    write_checkpoint(ckpt / GARBLED, "sd2", "depth", seed=13,
                     midas={**midas_tensors(seed=3), GARBLED_KEY: torch.zeros(32, 32, 1, 1)})
    write_checkpoint(ckpt / "tiny-depth-pruned.safetensors", "sd2", "depth", seed=14, midas=False)
    write_depth_estimator(root / "depth" / "tiny-dpt", seed=1)
    return root


def read_keys_file() -> dict[str, tuple[int, ...]]:
    """tests/data/midas_dpt_hybrid_keys.txt: ``NAME SHAPE`` lines, written by
    ``tools/midas_reference.py keys`` from timm's vit_base_r50_s16_384 plus the MiDaS v3 head."""
    lines = KEYS_FILE.read_text().split("\n")
    return {name: tuple(int(d) for d in shape.split(",")) for name, shape in (line.split() for line in lines if line)}


def test_full_size_names_and_shapes_match_midas_and_transformers():
    real = read_keys_file()
    assert len(real) == 368 and all(k.startswith("depth_model.model.") for k in real)
    # the tiny checkpoints' generator, at full size, gives exactly the real names and shapes
    assert midas_shapes(**MIDAS_FULL_SIZE) == {k.removeprefix("depth_model.model."): v for k, v in real.items()}
    # every real name maps to the full-size transformers model (built on the meta device), covering it
    from transformers import DPTForDepthEstimation

    with torch.device("meta"):
        model = DPTForDepthEstimation(midas_hybrid_config())
    mapped = [t for k in real if k.removeprefix("depth_model.model.") not in IGNORED
              for t in transformers_names(k.removeprefix("depth_model.model."))]
    assert sorted(mapped) == sorted(model.state_dict())
    # and every shape fits: the config read from the shapes is Intel/dpt-hybrid-midas'
    assert check_midas(real).to_dict() == midas_hybrid_config().to_dict()


def test_conversion_is_exact_against_a_reference_forward():
    tensors = midas_tensors(seed=5)
    model = load_midas({"depth_model.model." + k: v for k, v in tensors.items()}, dtype=torch.float32)
    assert (model.config.image_size, model.config.backbone_config.depths) == (64, [1, 2, 1])
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        reference = midas_forward(tensors, pixels)
        ours = model.dpt(pixels, output_hidden_states=True)
        depth = model(pixel_values=pixels).predicted_depth
    pairs = list(zip(ours.intermediate_activations, reference["stages"][:2])) + \
        list(zip(ours.hidden_states[1:], reference["hidden_states"])) + [(depth, reference["depth"])]
    for got, want in pairs:  # transformers' LayerNorm eps is 1e-12 (Intel/dpt-hybrid-midas), timm's 1e-6
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 1e-4 * max(1.0, want.abs().max())
    assert reference["depth"].std() > 0.05  # a map that varies, not all zeros
    # a bare MiDaS state dict (dpt_hybrid-midas-501f0c75.pt) converts the same
    bare, prefixed = convert_midas_state_dict(tensors), convert_midas_state_dict({"depth_model.model." + k: v
                                                                                  for k, v in tensors.items()})
    assert bare.keys() == prefixed.keys() and all(torch.equal(bare[k], prefixed[k]) for k in bare)


def test_the_embedded_estimator_is_listed_and_the_default_for_its_checkpoint(depth_app):
    models = depth_app.models
    names = [e.name for e in models.list("depth")]
    assert embedded(GOOD) in names and embedded(MISSING) in names and "tiny-dpt" in names
    assert not any("pruned" in n for n in names)  # no depth_model.* tensors: nothing embedded to offer
    estimator = models.depth_estimator(None, models.find(GOOD))
    assert estimator.name == embedded(GOOD)
    depth = estimator.estimate(Image.new("RGB", (72, 40), (200, 30, 30)))
    assert tuple(depth.shape) == (40, 72) and np.isfinite(depth.numpy()).all()
    # the loaded estimator is the checkpoint's MiDaS: same output as the reference on its (fp16) tensors
    pixels = estimator.processor(Image.new("RGB", (64, 64), (10, 120, 240)), return_tensors="pt").pixel_values
    tensors = {k: v.half().float() for k, v in midas_tensors(seed=1).items()}
    with torch.no_grad():
        got = estimator.model(pixel_values=pixels).predicted_depth
        assert torch.allclose(got, midas_forward(tensors, pixels)["depth"], atol=1e-4)
    # the user's explicit choice wins; by name or by the full name, as the UI and API send it
    assert models.depth_estimator("tiny-dpt", models.find(GOOD)).name == "tiny-dpt"
    assert models.depth_estimator(embedded(GOOD), models.find("tiny-depth-pruned")).name == embedded(GOOD)
    # a depth checkpoint without its own MiDaS falls back to the user's folder; the demo pair keeps its own
    assert models.depth_estimator(None, models.find("tiny-depth-pruned")).name == "tiny-dpt"
    assert models.depth_estimator(None, models.find("demo-shapes-depth")).name == "demo-dpt"
    record = models.describe(models.find(embedded(GOOD), "depth"))
    assert (record["architecture"], record["hybrid"], record["image_size"], record["embedded_in"]) == \
        ("dpt", True, 64, GOOD) and "error" not in record


def test_depth_to_image_uses_the_embedded_estimator_by_default(depth_app):
    image = Image.new("RGB", (64, 64), (180, 40, 40))
    image.paste((20, 200, 90), (36, 10, 60, 40))
    result = depth_app.engine.generate(GenerationRequest(prompt="a cat", model="tiny-depth-midas", steps=3, seed=5,
                                                         init_image=image, denoising_strength=0.9, save_images=False))
    assert f"Depth source: {embedded(GOOD)}" in result.infotexts[0]
    assert result.depth_map.size == (64, 64)


def test_a_broken_embedded_estimator_names_the_tensor_and_uploads_still_work(depth_app):
    models = depth_app.models
    with pytest.raises(ModelFileError, match=rf"{MISSING} \[embedded MiDaS\]: .*missing depth_model\.model\."
                                             rf"{MISSING_KEY.replace('.', '[.]')}$"):
        models.depth_estimator(None, models.find(MISSING))
    with pytest.raises(ModelFileError, match=rf"depth_model\.model\.{GARBLED_KEY.replace('.', '[.]')} has shape "
                                             rf"\[32, 32, 1, 1\], expected \[32, 32, 3, 3\]"):
        models.depth_estimator(embedded(GARBLED))
    record = models.describe(models.find(embedded(MISSING), "depth"))
    assert MISSING_KEY in record["error"] and "\n" not in record["error"]
    depth_map = Image.new("L", (64, 64), 0)
    depth_map.paste(255, (8, 8, 40, 40))
    result = depth_app.engine.generate(GenerationRequest(
        prompt="a dog", model=MISSING, steps=3, seed=1, save_images=False, depth_map=depth_map,
        init_image=Image.new("RGB", (64, 64), (20, 90, 200)), denoising_strength=0.8))
    assert "Depth source: uploaded" in result.infotexts[0]


def test_cli_models_lists_the_embedded_estimator(depth_models):
    proc = run_cli("models", "--models-dir", str(depth_models))
    assert proc.returncode == 0, proc.stderr
    good, = [line for line in proc.stdout.splitlines() if line.endswith(embedded(GOOD))]
    assert good.startswith("depth") and "dpt hybrid 64px" in good
    broken, = [line for line in proc.stdout.splitlines() if embedded(MISSING) + "  ! " in line]
    assert broken.endswith("missing depth_model.model." + MISSING_KEY)
