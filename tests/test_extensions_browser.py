"""Extensions in a real browser: the X/Y/Z plot from the Script dropdown, the Extensions tab (status,
errors, enable/disable, install from a local git repository) and a tab added by an extension."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from test_browser import CHROMIUM, browser, choose, gallery_image, small_settings, start_server  # noqa: F401
from test_extensions import make_git_repo

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")

TAB_EXTENSION = '''
def setup(api):
    def build(ctx):
        import gradio as gr

        gr.Markdown("Hello from an extension tab", elem_id="hello_tab_text")

    api.add_tab("Hello tab", build)
    api.on_before_save(lambda data: {"Signed": "browser"})
'''


@pytest.fixture(scope="module")
def ext_server(models_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext-ui")
    extensions = tmp / "extensions"
    shutil.copytree(ROOT / "extensions" / "xyz_plot", extensions / "xyz_plot",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (extensions / "hello").mkdir()
    (extensions / "hello" / "extension.yaml").write_text("name: hello\nversion: 0.3.0\n")
    (extensions / "hello" / "extension.py").write_text(textwrap.dedent(TAB_EXTENSION))
    (extensions / "broken").mkdir()
    (extensions / "broken" / "extension.yaml").write_text("name: broken\nrequirements: [surely-absent-pkg-4711]\n")
    (extensions / "broken" / "extension.py").write_text("def setup(api):\n    pass\n")
    proc, url = start_server(models_dir, tmp, "--extensions-dir", str(extensions))
    yield url, tmp
    proc.terminate()
    proc.wait(20)


@pytest.fixture
def page(browser, ext_server):
    url, _ = ext_server
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#txt2img_prompt textarea")
    yield page
    context.close()


def test_xyz_plot_from_the_script_dropdown(page):
    page.locator("#txt2img_prompt textarea").fill("a red circle")
    small_settings(page, "txt2img", 99, steps=2)
    choose(page, "txt2img_script", "X/Y/Z plot")
    page.wait_for_selector("#txt2img_x_y_z_plot_x_type", state="visible")
    choose(page, "txt2img_x_y_z_plot_x_type", "Sampler")
    page.wait_for_selector("#txt2img_x_y_z_plot_x_values_dropdown", state="visible")
    choose(page, "txt2img_x_y_z_plot_x_values_dropdown", "DDIM")
    choose(page, "txt2img_x_y_z_plot_x_values_dropdown", "LMS")
    choose(page, "txt2img_x_y_z_plot_y_type", "Steps")
    page.wait_for_selector("#txt2img_x_y_z_plot_y_values textarea, #txt2img_x_y_z_plot_y_values input",
                           state="visible")
    page.locator("#txt2img_x_y_z_plot_y_values textarea, #txt2img_x_y_z_plot_y_values input").first.fill("2, 3")
    page.locator("#txt2img_generate").click()
    page.wait_for_function("document.querySelector('#txt2img_status')?.innerText.includes('Done')")
    assert "5 image(s)" in page.locator("#txt2img_status").inner_text()
    grid, _ = gallery_image(page, "txt2img", 0)
    assert grid.width > 128 and grid.height > 128
    params = grid.info["parameters"]
    assert "X Type: Sampler, X Values: \"DDIM, LMS\", Y Type: Steps, Y Values: \"2, 3\"" in params
    assert "Signed: browser" in params
    cell, _ = gallery_image(page, "txt2img", 4)
    assert cell.size == (64, 64) and "Sampler: LMS" in cell.info["parameters"] and "Steps: 3," in cell.info["parameters"]
    # back to no script: one plain image
    choose(page, "txt2img_script", "None")
    page.locator("#txt2img_generate").click()
    page.wait_for_function("document.querySelector('#txt2img_status')?.innerText.includes('1 image(s)')")


def test_extensions_tab_lists_enables_and_installs(page, ext_server, tmp_path):
    page.locator("#tab_ext_hello_hello_tab-button").click()
    page.wait_for_function("document.querySelector('#hello_tab_text')?.innerText.includes('Hello from an extension')")
    page.locator("#tab_extensions-button").click()
    table = page.locator("#extensions_table")
    table.wait_for()
    assert "xyz_plot" in table.inner_text() and "loaded" in page.locator("tr[data-extension=xyz_plot]").inner_text()
    broken = page.locator("tr[data-extension=broken]").inner_text()
    assert "error" in broken and "surely-absent-pkg-4711" in broken
    # disable hello: its callback stops at once
    page.locator("#extensions_enabled label", has_text="hello").click()
    page.locator("#extensions_apply").click()
    page.wait_for_function("document.querySelector('#extensions_message')?.innerText.includes('hello disabled')")
    assert "disabled" in page.locator("tr[data-extension=hello]").inner_text()
    _, tmp = ext_server
    assert "- hello" in (tmp / "config.yaml").read_text()
    # install from a local git repository
    repo = make_git_repo(tmp_path / "stamp-repo", {"extension.yaml": "name: stamp\nversion: 4.5.6\n",
                                                   "extension.py": "def setup(api):\n    pass\n"})
    page.locator("#extensions_install_url textarea, #extensions_install_url input").first.fill(str(repo))
    page.locator("#extensions_install_button").click()
    page.wait_for_function("document.querySelector('#extensions_install_result')?.innerText.includes('Installed stamp')")
    assert "4.5.6" in page.locator("tr[data-extension=stamp]").inner_text()
    assert (tmp / "extensions" / "stamp-repo" / "extension.yaml").is_file()
    # re-enable hello for the other tests
    page.locator("#extensions_enabled label", has_text="hello").click()
    page.locator("#extensions_apply").click()
    page.wait_for_function("document.querySelector('#extensions_message')?.innerText.includes('hello enabled')")
