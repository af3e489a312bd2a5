"""Take the README screenshot: start the app, generate once in txt2img, capture the page.

    python tools/screenshot.py [--out docs/screenshot.png] [--prompt "..."] [app.py flags...]

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
    parser.add_argument("--prompt", default="a large red circle at the top left on a blue background")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from test_browser import CHROMIUM, CHROMIUM_ARGS, set_number, start_server

    work = Path("/tmp/sdwebui-screenshot")
    work.mkdir(exist_ok=True)
    proc, url = start_server(args.models_dir, work)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.wait_for_selector("#txt2img_prompt textarea")
            page.locator("#txt2img_prompt textarea").fill(args.prompt)
            page.locator("#txt2img_neg_prompt textarea").fill("blurry")
            set_number(page, "txt2img_steps", args.steps)
            set_number(page, "txt2img_batch_size", 4)
            page.locator("#txt2img_seed input").fill("1")
            page.locator("#txt2img_generate").click()
            page.wait_for_function("document.querySelector('#txt2img_status').innerText.includes('Done')")
            time.sleep(1)
            page.evaluate("window.scrollTo(0, 0)")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=False)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
