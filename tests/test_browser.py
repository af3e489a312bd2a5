"""The web UI in a real browser: Playwright drives Debian's chromium against the real app
(a separate `python app.py` process on a free local port, tiny test models)."""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models_dir: Path, tmp: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp / f"server-{port}.log", "w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--models-dir", str(models_dir),
                             "--outputs-dir", str(tmp / "outputs"), "--config-file", str(tmp / "config.yaml"),
                             "--cache-dir", str(tmp / "cache"), "--threads", "1", "--port", str(port), *extra],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp / f"server-{port}.log").read_text())
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except urllib.error.HTTPError:  # it answered (401 behind auth, 404 at / for the API alone)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start: " + (tmp / f"server-{port}.log").read_text())


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    # Only plain tiny models: the UI's default checkpoint is the first one found.
    proc, url = start_server(models_dir, tmp)
    yield url, tmp
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    url, _ = server
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["clipboard-read"])
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#txt2img_prompt textarea")
    yield page
    context.close()


def set_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def choose(page, elem_id: str, value: str) -> None:
    field = page.locator(f"#{elem_id} input").first
    field.click()
    field.fill(value)
    page.locator("ul[role=listbox] li", has_text=value).first.click()


def gallery_image(page, tab: str, index: int = 0) -> tuple[Image.Image, bytes]:
    img = page.locator(f"#{tab}_gallery img").nth(index)
    try:
        img.wait_for()
    except Exception:
        raise AssertionError("no image; status: " + page.locator(f"#{tab}_status").inner_text()) from None
    src = img.get_attribute("src")
    data = page.request.get(src).body()
    return Image.open(io.BytesIO(data)), data


def small_settings(page, tab: str, seed: int, steps: int = 3) -> None:
    set_number(page, f"{tab}_steps", steps)
    set_number(page, f"{tab}_width", 64)
    set_number(page, f"{tab}_height", 64)
    page.locator(f"#{tab}_seed input").fill(str(seed))


def test_txt2img_generates_an_image_that_carries_prompt_and_seed(page):
    page.locator("#txt2img_prompt textarea").fill("a red circle at the top left")
    # live token counter
    page.wait_for_function("document.querySelector('#txt2img_token_counter')?.innerText.includes('7/75')")
    small_settings(page, "txt2img", 4242)
    page.locator("#txt2img_generate").click()
    image, data = gallery_image(page, "txt2img")
    assert image.size == (64, 64)
    params = image.info.get("parameters", "")
    assert params.startswith("a red circle at the top left\n") and "Seed: 4242," in params
    page.wait_for_function("document.querySelector('#txt2img_status')?.innerText.includes('Done')")
    assert "Seed: 4242" in page.locator("#html_info_txt2img textarea").input_value()


def test_img2img_from_an_uploaded_file(page, tmp_path):
    source = tmp_path / "source.png"
    Image.new("RGB", (64, 64), (20, 200, 20)).save(source)
    page.locator("#tab_img2img-button").click()
    page.locator("#img2img_image input[type=file]").set_input_files(str(source))
    page.wait_for_selector("#img2img_image img")  # uploaded before Generate is pressed
    page.locator("#img2img_prompt textarea").fill("a blue square")
    small_settings(page, "img2img", 7)
    set_number(page, "img2img_denoising_strength", 0.5)
    page.locator("#img2img_generate").click()
    image, _ = gallery_image(page, "img2img")
    assert image.size == (64, 64)
    assert "Denoising strength: 0.5" in image.info["parameters"]


EDITOR_BUTTON = ("Array.from(document.querySelectorAll('#inpaint_editor button'))"
                 ".some(b => (b.getAttribute('aria-label') || b.title) === '{label}'{extra})")


def upload_to_inpaint_editor(page, source: Path) -> None:
    """Upload a picture into the mask painter and wait until it has taken it.

    The editor mounts its canvas asynchronously after the tab opens; a file given before its
    toolbar exists can be lost, so wait for the toolbar first. It has taken the picture when
    Undo comes alive (the picture is the first history entry); under load, give it one retry."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.wait_for_function(EDITOR_BUTTON.format(label="Undo", extra=""))
    for attempt in range(2):
        page.locator("#inpaint_editor input[type=file]").first.set_input_files(str(source))
        try:
            page.wait_for_function(EDITOR_BUTTON.format(label="Undo", extra=" && !b.disabled"), timeout=30_000)
            return
        except PlaywrightTimeout:
            if attempt == 1:
                raise


def test_inpaint_stroke_changes_only_the_painted_area(page, tmp_path):
    source = tmp_path / "inpaint-source.png"
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    original.save(source)
    page.locator("#tab_inpaint-button").click()
    upload_to_inpaint_editor(page, source)
    canvas = page.locator("#inpaint_editor canvas").first
    time.sleep(1.0)
    box = canvas.bounding_box()
    # A short stroke across the middle of the picture.
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.5, steps=3)
    page.mouse.up()
    time.sleep(0.5)
    page.locator("#inpaint_prompt textarea").fill("a yellow triangle")
    small_settings(page, "inpaint", 9)
    set_number(page, "inpaint_mask_blur", 0)
    set_number(page, "inpaint_denoising_strength", 1)
    page.locator("#inpaint_generate").click()
    image, _ = gallery_image(page, "inpaint")
    assert "Mask blur: 0" in image.info["parameters"]
    out = np.asarray(image.convert("RGB"), dtype=np.int16)
    src = np.asarray(original, dtype=np.int16)
    corners = [(slice(0, 12), slice(0, 12)), (slice(52, 64), slice(52, 64)), (slice(0, 12), slice(52, 64))]
    for rows, cols in corners:  # far from the stroke: exactly the original
        assert np.array_equal(out[rows, cols], src[rows, cols])
    assert np.abs(out[28:36, 28:36] - src[28:36, 28:36]).mean() > 3  # under the stroke: repainted


def test_png_info_round_trip_fills_txt2img(page, server):
    page.locator("#txt2img_prompt textarea").fill("a purple square, small")
    small_settings(page, "txt2img", 3131, steps=2)
    page.locator("#txt2img_generate").click()
    _, data = gallery_image(page, "txt2img")
    _, tmp = server
    saved = tmp / "from-gallery.png"
    saved.write_bytes(data)
    page.locator("#txt2img_prompt textarea").fill("something else")
    page.locator("#txt2img_seed input").fill("-1")
    page.locator("#tab_pnginfo-button").click()
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(saved))
    page.wait_for_function("document.querySelector('#pnginfo_text textarea')?.value.includes('Seed: 3131')")
    page.locator("#pnginfo_send_to_txt2img").click()
    page.wait_for_function(
        "document.querySelector('#txt2img_prompt textarea')?.value === 'a purple square, small'")
    assert page.locator("#txt2img_seed input").input_value() == "3131"
    assert page.locator("#txt2img_steps input[type=number]").first.input_value() == "2"


def test_interrupt_stops_a_long_run(page):
    page.locator("#txt2img_prompt textarea").fill("a long run")
    small_settings(page, "txt2img", 5, steps=150)  # 150 steps take half a minute or more here
    set_number(page, "txt2img_width", 128)
    set_number(page, "txt2img_height", 128)
    page.locator("#txt2img_generate").click()
    page.wait_for_function("document.querySelector('#txt2img_status')?.innerText.includes('Step 2/')")
    page.wait_for_selector("#txt2img_preview img")  # the live preview (every 5 steps by default)
    assert "ETA" in page.locator("#txt2img_status").inner_text()
    started = time.time()
    page.locator("#txt2img_interrupt").click()
    page.wait_for_function("document.querySelector('#txt2img_status')?.innerText.includes('interrupted')",
                           timeout=30_000)
    assert time.time() - started < 30
    assert "Step 150/150" not in page.locator("#txt2img_status").inner_text()


def test_bad_input_shows_an_error_and_the_next_generation_works(page):
    page.locator("#txt2img_prompt textarea").fill("a green circle")
    small_settings(page, "txt2img", 1, steps=2)
    choose(page, "txt2img_sampling", "Euler a")
    choose(page, "txt2img_scheduler", "Karras")
    page.locator("#txt2img_generate").click()
    page.wait_for_selector("#txt2img_status .error-message")
    assert "not available with Euler a" in page.locator("#txt2img_status").inner_text()
    choose(page, "txt2img_scheduler", "Automatic")
    page.locator("#txt2img_generate").click()
    image, _ = gallery_image(page, "txt2img")
    assert "Sampler: Euler a" in image.info["parameters"]


def test_auth_blocks_an_unauthenticated_page_load(browser, models_dir, tmp_path):
    proc, url = start_server(models_dir, tmp_path, "--gradio-auth", "artist:s3cret")
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("input[type=password]", timeout=60_000)
        assert page.locator("#txt2img_prompt").count() == 0
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(url + "/config", timeout=10)
        assert error.value.code in (401, 403)
        page.locator("input[type=text]").first.fill("artist")
        page.locator("input[type=password]").fill("s3cret")
        page.locator("button[type=submit], button:has-text('Login')").first.click()
        page.wait_for_selector("#txt2img_prompt textarea", timeout=60_000)
        context.close()
    finally:
        proc.terminate()
        proc.wait(20)


def test_tokens_tab_shows_tokens_and_model_neighbours(page):
    page.locator("#tab_tokens-button").click()
    page.locator("#tokens_prompt textarea").fill("a (red:1.5) circle, BREAK square")
    page.locator("#tokens_run").click()
    page.wait_for_function("document.querySelector('#tokens_summary')?.innerText.includes('5 tokens in 2 chunk')")
    assert "1.5" in page.locator("#tokens_table").inner_text()
    page.locator("#tokens_neighbours_word textarea").fill("cat")
    page.locator("#tokens_neighbours_run").click()
    page.wait_for_function("document.querySelector('#tokens_model_result')?.innerText.includes('similarity')")


def test_send_to_inpaint_and_img2img_carry_image_and_settings(page):
    page.locator("#txt2img_prompt textarea").fill("a green triangle")
    small_settings(page, "txt2img", 777, steps=2)
    page.locator("#txt2img_generate").click()
    gallery_image(page, "txt2img")
    page.locator("#txt2img_send_to_img2img").click()
    page.wait_for_function("document.querySelector('#img2img_prompt textarea')?.value === 'a green triangle'")
    assert page.locator("#img2img_seed input").input_value() == "777"
    page.wait_for_selector("#img2img_image img")
    page.locator("#tab_txt2img-button").click()
    page.locator("#txt2img_send_to_inpaint").click()
    page.wait_for_function("document.querySelector('#inpaint_prompt textarea')?.value === 'a green triangle'")
    page.wait_for_selector("#inpaint_editor canvas")
    page.locator("#tab_txt2img-button").click()
    page.locator("#txt2img_send_to_depth").click()
    page.wait_for_function("document.querySelector('#depth_prompt textarea')?.value === 'a green triangle'")
    assert page.locator("#depth_seed input").input_value() == "777"
    page.wait_for_selector("#depth_image img")


def test_depth_tab_estimates_the_map_and_generates_with_it(page, tmp_path):
    # The shipped demo pair (demo-shapes-depth + models/depth/demo-dpt) is there on every install.
    source = tmp_path / "depth-source.png"
    picture = Image.new("RGB", (64, 64), (255, 255, 255))
    picture.paste((220, 30, 30), (6, 20, 30, 44))  # a red square at the left on white
    picture.save(source)
    page.locator("#tab_depth-button").click()
    page.wait_for_function("document.querySelector('#depth_checkpoint input')?.value.includes('demo-shapes-depth')")
    page.locator("#depth_image input[type=file]").set_input_files(str(source))
    page.wait_for_selector("#depth_image img")
    page.locator("#depth_estimate").click()
    page.wait_for_selector("#depth_map_view img")
    data = page.request.get(page.locator("#depth_map_view img").get_attribute("src")).body()
    shown = Image.open(io.BytesIO(data)).convert("L")
    assert shown.width >= 256  # the 64x64 map is enlarged for display
    estimated = np.asarray(shown.resize((64, 64), Image.NEAREST), dtype=np.int16)
    assert estimated[32, 18] - estimated[32, 50] > 100  # the square is near (bright), the ground far
    page.locator("#depth_prompt textarea").fill("a blue square on a yellow background")
    set_number(page, "depth_steps", 12)
    page.locator("#depth_seed input").fill("21")
    set_number(page, "depth_denoising_strength", 1)
    page.locator("#depth_generate").click()
    image, _ = gallery_image(page, "depth")
    params = image.info["parameters"]
    assert "Model: demo-shapes-depth" in params and "Depth source: demo-dpt" in params
    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    # the new picture keeps the layout: something other than the background where the square was
    assert np.abs(pixels[28:36, 12:24] - pixels[28:36, 44:56].mean(axis=(0, 1))).sum(axis=2).mean() > 100
