"""Depth-to-image with tiny random models in the real layouts: an SD 2 depth checkpoint (5-channel
UNet, OpenCLIP text encoder, ``depth_model.*`` tensors as in 512-depth-ema) and a DPT estimator folder
(config.json + model.safetensors + preprocessor_config.json, as Intel/dpt-large ships)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webui.engine import GenerationRequest, RequestError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def depth_models(tmp_path_factory) -> Path:
    from model_factory import write_checkpoint, write_depth_estimator

    root = tmp_path_factory.mktemp("depth-models")
    write_checkpoint(root / "Stable-diffusion" / "tiny-sd2-depth.safetensors", "sd2", "depth", seed=11)
    write_checkpoint(root / "Stable-diffusion" / "tiny-sd1.safetensors", "sd1", seed=0)
    write_depth_estimator(root / "depth" / "tiny-dpt", seed=1)
    write_depth_estimator(root / "depth" / "tiny-dpt-noproc", seed=2, with_processor=False)
    write_depth_estimator(root / "depth" / "tiny-dpt-hybrid", seed=3, image_size=64, hybrid=True)
    (root / "depth" / "not-a-folder.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}      ")
    truncated = write_depth_estimator(root / "depth" / "truncated-dpt", seed=4)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    bad = root / "depth" / "wrong-type"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return root


@pytest.fixture(scope="module")
def depth_app(depth_models, tmp_path_factory):
    from webui.application import App
    from webui.config import Settings

    tmp = tmp_path_factory.mktemp("depth-app")
    return App(Settings(models_dir=depth_models, outputs_dir=tmp / "out", cache_dir=tmp / "cache",
                        config_file=tmp / "none.yaml", threads=1))


def scene(near_left: bool = True) -> Image.Image:
    """An RGB picture and, separately, its depth: a bright (near) square on a dark (far) ground."""
    depth = np.zeros((64, 64), np.uint8)
    if near_left:
        depth[16:48, 4:30] = 255
    else:
        depth[16:48, 34:60] = 255
    return Image.fromarray(depth, "L")


def picture() -> Image.Image:
    image = Image.new("RGB", (64, 64), (180, 40, 40))
    image.paste((20, 200, 90), (36, 10, 60, 40))
    return image


def request(**changes) -> GenerationRequest:
    fields = dict(prompt="a cat", model="tiny-sd2-depth", steps=4, seed=5, save_images=False,
                  init_image=picture(), denoising_strength=0.9)
    return GenerationRequest(**{**fields, **changes})


def test_depth_checkpoint_is_probed_from_its_tensors(depth_app):
    record = depth_app.models.describe(depth_app.models.find("tiny-sd2-depth"))
    assert (record["family"], record["variant"], record["prediction"]) == ("sd2", "depth", "epsilon")
    # a depth model is never the default for txt2img; it is the default depth model
    assert depth_app.models.default_checkpoint().name == "tiny-sd1.safetensors"
    assert depth_app.models.default_depth_checkpoint().name == "tiny-sd2-depth.safetensors"


def test_estimator_loads_from_a_folder_and_returns_a_map_at_the_image_size(depth_app):
    estimator = depth_app.models.depth_estimator("tiny-dpt")
    depth = estimator.estimate(Image.new("RGB", (80, 48), (10, 200, 30)))
    assert tuple(depth.shape) == (48, 80)
    assert np.isfinite(depth.numpy()).all()
    # without preprocessor_config.json the DPT defaults (config image size, mean/std 0.5) are used
    plain = depth_app.models.depth_estimator("tiny-dpt-noproc").estimate(Image.new("RGB", (40, 40)))
    assert tuple(plain.shape) == (40, 40)
    # the hybrid (BiT + ViT) architecture of Intel/dpt-hybrid-midas, on a non-square picture
    hybrid = depth_app.models.depth_estimator("tiny-dpt-hybrid").estimate(Image.new("RGB", (72, 40), (9, 9, 200)))
    assert tuple(hybrid.shape) == (40, 72)


def test_models_lists_estimators_with_hash_and_architecture(depth_app):
    records = {r["name"]: r for r in map(depth_app.models.describe, depth_app.models.list("depth"))}
    hybrid = records["tiny-dpt-hybrid"]
    assert (hybrid["architecture"], hybrid["hybrid"], hybrid["image_size"]) == ("dpt", True, 64)
    assert len(hybrid["hash"]) == 10 and "error" not in hybrid


def test_bad_estimators_are_refused_with_the_reason(depth_app):
    from webui.model_manager import ModelFileError

    with pytest.raises(ModelFileError, match="not a DPT depth estimator"):
        depth_app.models.depth_estimator("wrong-type")
    with pytest.raises(ModelFileError, match="truncated-dpt"):
        depth_app.models.depth_estimator("truncated-dpt")
    with pytest.raises(ModelFileError, match="is a folder with config.json"):
        depth_app.models.depth_estimator("not-a-folder.safetensors")
    with pytest.raises(ValueError, match="invalid depth name"):
        depth_app.models.depth_estimator("../Stable-diffusion/tiny-sd1")


def test_depth_to_image_uses_the_estimated_depth_and_records_it(depth_app):
    result = depth_app.engine.generate(request(depth_model="tiny-dpt"))
    assert "Depth source: tiny-dpt" in result.infotexts[0]
    assert result.depth_map.size == (64, 64) and result.depth_map.mode == "L"
    again = depth_app.engine.generate(request(depth_model="tiny-dpt"))
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(again.images[0]))  # same seed, same image
    other = depth_app.engine.generate(request(depth_model="tiny-dpt-noproc"))
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(other.images[0]))


def test_an_uploaded_depth_map_overrides_the_estimator(depth_app):
    left = depth_app.engine.generate(request(depth_map=scene(True), depth_model="tiny-dpt"))
    assert "Depth source: uploaded" in left.infotexts[0]
    # the estimator is not consulted: another estimator gives the same picture
    same = depth_app.engine.generate(request(depth_map=scene(True), depth_model="tiny-dpt-noproc"))
    assert np.array_equal(np.asarray(left.images[0]), np.asarray(same.images[0]))
    right = depth_app.engine.generate(request(depth_map=scene(False)))
    assert not np.array_equal(np.asarray(left.images[0]), np.asarray(right.images[0]))
    shown = np.asarray(left.depth_map)
    assert shown[32, 10] == 255 and shown[32, 50] == 0  # the map used: near = bright, where it was uploaded


def test_a_depth_map_alone_starts_from_noise_at_its_size(depth_app):
    result = depth_app.engine.generate(request(init_image=None, depth_map=scene(True).resize((96, 64))))
    assert result.images[0].size == (96, 64)
    assert "Denoising strength" not in result.infotexts[0]


def test_depth_with_an_inpainting_mask(depth_app):
    init = Image.new("RGB", (64, 64), (180, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    result = depth_app.engine.generate(request(init_image=init, mask=mask, mask_blur=0, depth_map=scene(False)))
    pixels = np.asarray(result.images[0]).astype(int)
    assert np.abs(pixels[:, :24] - (180, 40, 40)).max() <= 2  # outside the mask: the original
    assert np.abs(pixels[:, 40:] - (180, 40, 40)).max() > 20  # inside: repainted


def test_mistakes_name_what_is_missing(depth_app):
    with pytest.raises(RequestError, match="depth model: give it an image"):
        depth_app.engine.generate(request(init_image=None))
    with pytest.raises(RequestError, match="not a depth model"):
        depth_app.engine.generate(request(model="tiny-sd1", depth_map=scene()))
    with pytest.raises(RequestError, match="depth_map: must be an image"):
        request(depth_map="depth.png").validated()


def test_without_depth_models_the_message_says_what_to_install(tmp_path):
    from model_factory import write_checkpoint

    from webui.model_manager import ModelManager, ModelNotFound, ModelPaths

    # pruned of its depth_model.* tensors: no MiDaS of its own to fall back on
    write_checkpoint(tmp_path / "ckpt" / "tiny-sd2-depth.safetensors", "sd2", "depth", seed=11, midas=False)
    paths = ModelPaths(tmp_path / "none", tmp_path / "vae", tmp_path / "lora", tmp_path / "emb", tmp_path / "depth")
    bare = ModelManager(paths, tmp_path / "cache", include_demo=False)
    with pytest.raises(ModelNotFound, match="512-depth-ema"):
        bare.default_depth_checkpoint()
    with_checkpoint = ModelManager(paths.__class__(tmp_path / "ckpt", *list(paths.__dict__.values())[1:]),
                                   tmp_path / "cache", include_demo=False)
    with pytest.raises(ModelNotFound, match="Intel/dpt-hybrid-midas"):
        with_checkpoint.depth_estimator()


def run_cli(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_generate_mode_depth(depth_models, tmp_path):
    init, depth = tmp_path / "in.png", tmp_path / "depth.png"
    Image.new("RGB", (64, 64), (20, 90, 200)).save(init)
    scene(True).save(depth)
    flags = ["--models-dir", str(depth_models), "--outputs-dir", str(tmp_path / "out"), "--threads", "1"]
    proc = run_cli("generate", "--mode", "depth", "--init-image", str(init), "--depth-map", str(depth),
                   "--prompt", "a dog", "--steps", "3", "--seed", "7", "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "Model: tiny-sd2-depth" in out["infotexts"][0] and "Depth source: uploaded" in out["infotexts"][0]
    assert Path(out["images"][0]).is_file()
    proc = run_cli("generate", "--mode", "depth", "--prompt", "x", *flags)
    assert proc.returncode == 2 and "needs --init-image or --depth-map" in proc.stderr
    proc = run_cli("generate", "--mode", "depth", "--model", "tiny-sd1", "--init-image", str(init), *flags)
    assert proc.returncode == 2 and "not a depth model" in proc.stderr
