"""Take the README screenshots: start the app, generate once, capture the page.

    python tools/screenshot.py [--out docs/screenshot.png] [--prompt "..."]
    python tools/screenshot.py --tab depth --out docs/screenshot-depth.png

Uses Debian's chromium through Playwright, like the browser tests.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--prompt", default="a large red circle on a blue background")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tab", choices=["txt2img", "depth"], default="txt2img")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM, CHROMIUM_ARGS, set_number, start_server

    work = Path("/tmp/sdwebui-screenshot")
    work.mkdir(exist_ok=True)
    proc, url = start_server(args.models_dir, work)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1400 if args.tab == "depth" else 900})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.wait_for_selector("#txt2img_prompt textarea")
            if args.tab == "depth":
                depth_tab(page, work, args.steps)
            else:
                page.locator("#txt2img_prompt textarea").fill(args.prompt)
                page.locator("#txt2img_neg_prompt textarea").fill("blurry")
                set_number(page, "txt2img_steps", args.steps)
                generate_four(page, "txt2img")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=False)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    print("wrote", args.out)


def depth_tab(page, work: Path, steps: int) -> None:
    """A demo-world scene in, its estimated depth map beside it, and the same layout re-coloured."""
    sys.path.insert(0, str(ROOT / "tools"))
    from PIL import Image

    from demo_world import render, sample_scene
    from test_browser import set_number

    rgb, _ = render(sample_scene(10_000_158, two_shape_prob=0.0))  # held out: a black triangle at the left
    source = work / "depth-source.png"
    Image.fromarray(rgb).resize((256, 256), Image.NEAREST).save(source)
    page.locator("#tab_depth-button").click()
    page.locator("#depth_image input[type=file]").set_input_files(str(source))
    page.wait_for_selector("#depth_image img")
    page.locator("#depth_estimate").click()
    page.wait_for_selector("#depth_map_view img")
    page.locator("#depth_prompt textarea").fill("a yellow triangle on a blue background")
    set_number(page, "depth_steps", steps)
    set_number(page, "depth_width", 64)
    set_number(page, "depth_height", 64)
    set_number(page, "depth_denoising_strength", 1)
    generate_four(page, "depth")


def generate_four(page, tab: str) -> None:
    """A batch of four with seed 5 on ``tab``, then back to the top of the page."""
    from test_browser import set_number

    set_number(page, f"{tab}_batch_size", 4)
    page.locator(f"#{tab}_seed input").fill("5")
    page.locator(f"#{tab}_generate").click()
    page.wait_for_function(f"document.querySelector('#{tab}_status').innerText.includes('Done')")
    time.sleep(1)
    page.evaluate("window.scrollTo(0, 0)")


if __name__ == "__main__":
    main()
