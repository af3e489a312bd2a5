"""Semantic checks with the shipped demo model (models/Stable-diffusion/demo-shapes.safetensors):
prompts are obeyed, CFG matters, img2img keeps or changes the layout with the strength, inpainting
paints only the masked region. Judged by the world's own objective checker (tools/demo_world.py)."""
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from demo_world import COLOURS, check_image, render  # noqa: E402

from webui.engine import GenerationRequest  # noqa: E402

DEMO = "demo-shapes"


@pytest.fixture(scope="module", autouse=True)
def _demo_model_ships(demo_app):
    assert demo_app.models.find(DEMO).path.is_file(), "the demo model ships with the repository"


def request(prompt: str, **changes) -> GenerationRequest:
    fields = dict(model=DEMO, steps=20, seed=1000, batch_size=4, save_images=False)
    return GenerationRequest(prompt=prompt, **{**fields, **changes})


def measured(result) -> list[dict]:
    return [check_image(np.asarray(image)) for image in result.images]


def test_a_red_circle_is_red_and_round(demo_app):
    result = demo_app.engine.generate(request("a large red circle on a blue background"))
    found = measured(result)
    assert result.images[0].size == (64, 64)  # the model's native size
    assert all(m["background"] == "blue" for m in found), found
    assert all(m["shapes"] and m["shapes"][0]["colour"] == "red" for m in found), found
    assert sum(m["shapes"][0]["shape"] == "circle" for m in found) >= 3, found


def test_guidance_scale_matters(demo_app):
    """CFG 7 follows the prompt; CFG 0 is the unconditional model (the prompt is ignored); CFG 1
    (no unconditional pass) and 7 give different pictures from the same noise."""
    prompts = [("a small purple triangle on an orange background", "purple", "orange"),
               ("a large yellow square on a black background", "yellow", "black"),
               ("a small white circle on a green background", "white", "green")]

    def correct(cfg: float) -> int:
        total = 0
        for prompt, shape_colour, background in prompts:
            for m in measured(demo_app.engine.generate(request(prompt, cfg_scale=cfg))):
                total += m["background"] == background
                total += bool(m["shapes"]) and m["shapes"][0]["colour"] == shape_colour
        return total

    guided, unconditional = correct(7.0), correct(0.0)
    assert guided >= 20 and unconditional <= guided - 12, (guided, unconditional)  # out of 24
    one = demo_app.engine.generate(request(prompts[0][0], cfg_scale=1.0, batch_size=1)).images[0]
    seven = demo_app.engine.generate(request(prompts[0][0], cfg_scale=7.0, batch_size=1)).images[0]
    assert np.abs(np.asarray(one, dtype=int) - np.asarray(seven, dtype=int)).mean() > 2


def scene_image() -> Image.Image:
    attrs = {"background": "white", "shapes": [{"shape": "circle", "colour": "red", "size": "large",
                                                "position": "at the left", "cx": 16, "cy": 32, "half": 15}]}
    rgb, _ = render(attrs)
    return Image.fromarray(rgb)


def test_img2img_low_strength_keeps_the_scene_high_strength_follows_the_prompt(demo_app):
    init = scene_image()
    prompt = "a large blue square on a green background"
    kept = measured(demo_app.engine.generate(request(prompt, init_image=init, denoising_strength=0.3)))
    changed = measured(demo_app.engine.generate(request(prompt, init_image=init, denoising_strength=0.95)))
    assert sum(m["background"] == "white" and m["shapes"] and m["shapes"][0]["colour"] == "red"
               for m in kept) >= 3, kept
    assert sum(m["background"] == "green" for m in changed) >= 3, changed


def test_inpainting_repaints_the_masked_shape_with_the_prompt_and_keeps_the_rest(demo_app):
    init = scene_image()  # a large red circle at the left on white
    mask = Image.new("L", init.size, 0)
    mask.paste(255, (0, 0, 36, 64))  # the left part, with the circle
    result = demo_app.engine.generate(request("a large blue circle on a white background", init_image=init, mask=mask,
                                              mask_blur=0, denoising_strength=1.0))
    original = np.asarray(init, dtype=np.int16)
    outside = np.asarray(mask) == 0
    blue_images = 0
    for image in result.images:
        pixels = np.asarray(image, dtype=np.int16)
        assert np.array_equal(pixels[outside], original[outside])  # the rest is as it was
        region = pixels[:, :36].reshape(-1, 3)
        near = {name: (np.abs(region - np.array(COLOURS[name])).sum(axis=1) < 120).mean() for name in ("red", "blue")}
        assert near["red"] < 0.02  # the red circle is gone
        blue_images += near["blue"] > 0.1
    assert blue_images >= 2  # the prompt's colour appears where the mask allowed it
