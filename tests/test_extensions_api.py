"""Extensions through the A1111 REST API, against a real `python app.py --nowebui` server whose extensions
folder holds the built-in X/Y/Z plot, an extension with a callback, and a broken one."""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_api import post
from test_browser import start_server

webuiapi = pytest.importorskip("webuiapi")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def api_url(models_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext-api")
    extensions = tmp / "extensions"
    shutil.copytree(ROOT / "extensions" / "xyz_plot", extensions / "xyz_plot",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (extensions / "signer").mkdir()
    (extensions / "signer" / "extension.yaml").write_text("name: signer\nversion: '1'\n")
    (extensions / "signer" / "extension.py").write_text(
        "def setup(api):\n    api.on_before_save(lambda d: {'Signed': 'api'})\n")
    (extensions / "broken").mkdir()
    (extensions / "broken" / "extension.yaml").write_text("name: broken\n")
    (extensions / "broken" / "extension.py").write_text("raise RuntimeError('broken on purpose')\n")
    proc, url = start_server(models_dir, tmp, "--nowebui", "--extensions-dir", str(extensions))
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.fixture
def client(api_url):
    host, port = api_url.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler", steps=3)
    api.set_options({"sd_model_checkpoint": "tiny-sd1.safetensors"})
    return api


def get(url: str, path: str):
    with urllib.request.urlopen(url + path, timeout=60) as response:
        return json.loads(response.read())


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_scripts_are_listed_per_tab_with_their_arguments(api_url):
    assert get(api_url, "/sdapi/v1/scripts") == {"txt2img": ["x/y/z plot"], "img2img": ["x/y/z plot"]}
    info = get(api_url, "/sdapi/v1/script-info")
    txt2img = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    labels = [a["label"] for a in txt2img["args"]]
    assert labels[:3] == ["X type", "X values", "X values (list)"] and len(labels) == 18
    assert "Steps" in txt2img["args"][0]["choices"]


def test_xyz_plot_through_the_api_matches_single_generations(client):
    result = client.txt2img(prompt="a red circle", seed=77, width=64, height=64, steps=3, cfg_scale=7,
                            script_name="X/Y/Z Plot", script_args=[4, "2, 3", None, "Seed", "5, 6"])
    assert len(result.images) == 1 + 4
    grid = result.images[0]
    assert grid.width > 128 and grid.height > 128
    assert "X Type: Steps" in grid.info["parameters"] and "Signed: api" in grid.info["parameters"]
    for index, (seed, steps) in enumerate([(5, 2), (5, 3), (6, 2), (6, 3)]):
        cell = result.images[1 + index]
        assert f"Steps: {steps}," in cell.info["parameters"] and f"Seed: {seed}," in cell.info["parameters"]
        single = client.txt2img(prompt="a red circle", seed=seed, width=64, height=64, steps=steps, cfg_scale=7)
        assert np.array_equal(pixels(cell), pixels(single.image))
        column, row = index % 2, index // 2
        left, top = grid.width - 128, grid.height - 128
        crop = grid.crop((left + column * 64, top + row * 64, left + (column + 1) * 64, top + (row + 1) * 64))
        assert np.array_equal(pixels(crop), pixels(single.image))
    assert result.info["all_seeds"][1:] == [5, 5, 6, 6]


def test_xyz_plot_in_img2img_through_the_api(client):
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    result = client.img2img(images=[init], prompt="a blue square", seed=3, steps=4, width=64, height=64,
                            script_name="x/y/z plot", script_args=["Denoising", "0.25, 1"])
    assert len(result.images) == 3
    assert "Denoising strength: 0.25" in result.images[1].info["parameters"]
    assert "Denoising strength: 1" in result.images[2].info["parameters"]


def test_script_errors_are_a1111_422s(api_url):
    body = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": "tiny-sd1"}}
    status, error = post(api_url, "/sdapi/v1/txt2img", {**body, "script_name": "nope"})
    assert status == 422 and "script_name" in error["detail"] and "X/Y/Z plot" in error["detail"]
    assert set(error) == {"error", "detail", "body", "errors"}
    status, error = post(api_url, "/sdapi/v1/txt2img", {**body, "script_name": "x/y/z plot",
                                                        "script_args": ["Colour", "1"]})
    assert status == 422 and "unknown axis 'Colour'" in error["detail"]
    status, error = post(api_url, "/sdapi/v1/txt2img", {**body, "script_name": "x/y/z plot",
                                                        "script_args": ["Steps", "0, 500"]})
    assert status == 422 and "X values (Steps)" in error["detail"] and "between 1 and 150" in error["detail"]


def test_an_extension_callback_applies_to_plain_api_requests(client):
    result = client.txt2img(prompt="a red circle", seed=1, width=64, height=64, steps=2)
    assert "Signed: api" in result.image.info["parameters"]
