"""The A1111 API driven by the real `webuiapi` client (and plain HTTP for error shapes), against a
real `python app.py --nowebui` server on a free local port with tiny models."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from test_browser import free_port  # noqa: F401  (same helpers as the browser tests)
from test_browser import start_server

webuiapi = pytest.importorskip("webuiapi")


@pytest.fixture(scope="module")
def api_server(models_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    proc, url = start_server(models_dir, tmp, "--nowebui")
    yield url
    proc.terminate()
    proc.wait(20)


@pytest.fixture
def client(api_server):
    host, port = api_server.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler", steps=3)
    api.set_options({"sd_model_checkpoint": "tiny-sd1.safetensors"})
    return api


def post(url: str, path: str, body: dict, auth: tuple[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_txt2img_returns_pngs_with_infotext_and_info(client):
    result = client.txt2img(prompt="a red circle", seed=321, width=64, height=64, batch_size=2, steps=3)
    assert len(result.images) == 2 and result.images[0].size == (64, 64)
    assert "Seed: 321," in result.images[0].info["parameters"]
    assert result.info["all_seeds"] == [321, 322] and result.info["sd_model_name"] == "tiny-sd1"
    assert result.parameters["prompt"] == "a red circle"


def test_img2img_and_inpainting_with_a_mask(client):
    init = Image.new("RGB", (64, 64), (10, 200, 10))
    out = client.img2img(images=[init], prompt="a blue square", denoising_strength=0.5, seed=3, steps=3,
                         width=64, height=64)
    assert out.image.size == (64, 64) and "Denoising strength: 0.5" in out.image.info["parameters"]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 32))
    painted = client.img2img(images=[init], mask_image=mask, prompt="a red circle", denoising_strength=1.0,
                             inpainting_fill=1, inpaint_full_res=False, mask_blur=0, seed=4, steps=3,
                             width=64, height=64)
    pixels = np.asarray(painted.image.convert("RGB"))
    assert (pixels[40:, 40:] == (10, 200, 10)).all()  # outside the mask: the original


def test_options_round_trip_and_model_switch_per_request(client):
    client.set_options({"sd_model_checkpoint": "tiny-sd2-768-v", "CLIP_stop_at_last_layers": 2})
    options = client.get_options()
    assert options["sd_model_checkpoint"] == "tiny-sd2-768-v.safetensors" and options["CLIP_stop_at_last_layers"] == 2
    assert client.txt2img(prompt="x", seed=1, width=64, height=64, steps=2).info["sd_model_name"] == "tiny-sd2-768-v"
    overridden = client.txt2img(prompt="x", seed=1, width=64, height=64, steps=2,
                                override_settings={"sd_model_checkpoint": "tiny-sd1"})
    assert overridden.info["sd_model_name"] == "tiny-sd1"
    assert client.get_options()["sd_model_checkpoint"] == "tiny-sd2-768-v.safetensors"  # override was per request
    client.set_options({"CLIP_stop_at_last_layers": 1})


def test_png_info_and_listings(client):
    image = client.txt2img(prompt="a purple square", seed=9, width=64, height=64, steps=2).image
    info = client.png_info(image)
    assert "Seed: 9," in info.info
    titles = [m["title"] for m in client.get_sd_models()]
    assert any(t.startswith("tiny-sd1.safetensors [") for t in titles)
    assert "Euler a" in [s["name"] for s in client.get_samplers()]
    assert {"automatic", "karras"} <= {s["name"] for s in client.get_schedulers()}
    assert "tiny-lora" in [lora["name"] for lora in client.get_loras()]
    embeddings = client.get_embeddings()
    assert "tri-emb" in embeddings["loaded"] and "wide-emb" in embeddings["skipped"]
    assert client.get_hypernetworks() == [] and client.get_face_restorers() == []
    assert client.get_upscalers()[0]["name"] == "None"


def test_progress_during_a_run_and_interrupt(client, api_server):
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=client.txt2img(
        prompt="long", seed=2, width=128, height=128, steps=150)))
    worker.start()
    seen = None
    for _ in range(600):
        progress = client.get_progress()
        if progress["state"]["sampling_step"] >= 2:
            seen = progress
            break
        time.sleep(0.1)
    assert seen and seen["state"]["sampling_steps"] == 150 and 0 < seen["progress"] < 1
    client.interrupt()
    worker.join(60)
    assert not worker.is_alive() and outcome["result"].info["interrupted"]


def test_concurrent_requests_each_get_their_own_seed_and_model(client, api_server):
    results = {}

    def run(seed, model):
        results[seed] = client.txt2img(prompt="a cat", seed=seed, width=64, height=64, steps=2,
                                       override_settings={"sd_model_checkpoint": model})

    threads = [threading.Thread(target=run, args=(100 + i, "tiny-sd1" if i % 2 else "tiny-sd2-768-v"))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(results) == [100, 101, 102, 103]
    for seed, result in results.items():
        assert result.info["all_seeds"] == [seed]
        assert result.info["sd_model_name"] == ("tiny-sd1" if (seed - 100) % 2 else "tiny-sd2-768-v")


@pytest.mark.parametrize("body, status, field", [
    ({"prompt": "x", "width": 65}, 422, "width"),
    ({"prompt": "x", "sampler_name": "Bogus"}, 400, "sampler"),
    ({"prompt": "x", "scheduler": "karras", "sampler_name": "Euler a"}, 400, "schedule"),
    ({"prompt": "x", "override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}, 404, "invalid checkpoint"),
    ({"prompt": "x", "override_settings": {"sd_model_checkpoint": "nope"}}, 404, "unknown checkpoint"),
])
def test_errors_have_a1111_shape(api_server, body, status, field):
    code, payload = post(api_server, "/sdapi/v1/txt2img", {"steps": 2, **body})
    assert code == status
    assert set(payload) == {"error", "detail", "body", "errors"} and field in payload["detail"]


def test_bad_images_are_clear_4xx(api_server):
    code, payload = post(api_server, "/sdapi/v1/img2img", {"init_images": ["not base64!!"], "steps": 2})
    assert code == 422 and "init_images" in payload["detail"]
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    good = base64.b64encode(buffer.getvalue()).decode()
    small = io.BytesIO()
    Image.new("L", (32, 32)).save(small, format="PNG")
    code, payload = post(api_server, "/sdapi/v1/img2img", {"init_images": [good], "steps": 2, "width": 64,
                                                          "height": 64,
                                                          "mask": base64.b64encode(small.getvalue()).decode()})
    assert code == 422 and "mask" in payload["detail"]


def test_api_auth_rejects_wrong_credentials(models_dir, tmp_path):
    proc, url = start_server(models_dir, tmp_path, "--nowebui", "--api-auth", "bot:pw")
    try:
        request = urllib.request.Request(url + "/sdapi/v1/samplers")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=10)
        assert error.value.code == 401
        request.add_header("Authorization", "Basic " + base64.b64encode(b"bot:wrong").decode())
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=10)
        request = urllib.request.Request(url + "/sdapi/v1/samplers")
        request.add_header("Authorization", "Basic " + base64.b64encode(b"bot:pw").decode())
        assert urllib.request.urlopen(request, timeout=10).status == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_infotext_field_fills_what_the_request_leaves_out(api_server):
    text = "a green triangle\nNegative prompt: blurry\nSteps: 2, Sampler: DDIM, CFG scale: 5, Seed: 77, Size: 64x64"
    code, payload = post(api_server, "/sdapi/v1/txt2img", {"infotext": text, "seed": 78})
    assert code == 200, payload
    info = json.loads(payload["info"])
    assert info["prompt"] == "a green triangle" and info["negative_prompt"] == "blurry"
    assert info["all_seeds"] == [78] and info["sampler_name"] == "DDIM" and info["steps"] == 2


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_img2img_with_a_depth_checkpoint(api_server):
    # the shipped demo depth pair is on every install; A1111's way: choose the checkpoint per request
    scene = Image.new("RGB", (64, 64), (245, 245, 245))
    scene.paste((220, 30, 30), (6, 20, 30, 44))
    body = {"init_images": [png_base64(scene)], "prompt": "a blue square on a yellow background", "steps": 6,
            "seed": 8, "denoising_strength": 1.0, "width": 64, "height": 64, "sampler_name": "DPM++ 2M",
            "override_settings": {"sd_model_checkpoint": "demo-shapes-depth"}}
    code, estimated = post(api_server, "/sdapi/v1/img2img", body)
    assert code == 200, estimated
    assert "Depth source: demo-dpt" in json.loads(estimated["info"])["infotexts"][0]
    near_right = Image.new("L", (64, 64), 0)
    near_right.paste(255, (36, 20, 60, 44))
    code, uploaded = post(api_server, "/sdapi/v1/img2img", {**body, "depth_map": png_base64(near_right)})
    assert code == 200 and "Depth source: uploaded" in json.loads(uploaded["info"])["infotexts"][0]
    assert uploaded["images"][0] != estimated["images"][0]
    code, payload = post(api_server, "/sdapi/v1/img2img", {**body, "depth_map": "not an image"})
    assert code == 422 and "depth_map" in payload["detail"]
