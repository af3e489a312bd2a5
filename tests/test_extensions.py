"""Extensions: loading, every callback kind with its effect, isolation of broken extensions, enable/disable,
install from a local git repository, the README's example, and the built-in X/Y/Z plot (grid layout,
labels, cells equal to single generations)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]

RECORDER = '''
import numpy as np
from PIL import ImageOps

CALLS = []  # what the callbacks saw, for the test to read


def setup(api):
    CALLS.append(("setup", api.name, api.version))

    @api.add_prompt_syntax
    def colour(text):
        return text.replace("__colour__", "red")

    @api.on_before_request
    def before(request):
        CALLS.append(("before_request", request.prompt, request.steps))
        if "FEW STEPS" in request.prompt:
            return request.with_changes(steps=2)
        return None

    @api.on_model_loaded
    def model(info):
        CALLS.append(("model_loaded", info.name, info.family, info.variant, info.short_hash))

    @api.on_step
    def step(info):
        CALLS.append(("step", info.step, info.total, tuple(info.latents.shape), info.seeds))
        info.latents.mul_(0)  # a copy: changing it must change nothing
        if info.request.extra.get("stop_at") == info.step:
            return "interrupt"
        return None

    @api.on_images_decoded
    def decoded(data):
        CALLS.append(("images_decoded", len(data.images), data.seeds))
        if data.request.extra.get("invert"):
            return [ImageOps.invert(image.convert("RGB")) for image in data.images]
        return None

    @api.on_before_save
    def before_save(data):
        CALLS.append(("before_save", data.seed, data.will_save, "Seed: %d" % data.seed in data.infotext))
        return {"Recorder": "seen seed %d" % data.seed}
'''


def write_extension(folder: Path, name: str, code: str, manifest: dict | None = None, module: str = "extension.py"):
    import yaml

    path = folder / name
    path.mkdir(parents=True, exist_ok=True)
    document = {"name": name, "version": "1.2.3", "description": f"test extension {name}", "api_version": 1}
    document.update(manifest or {})
    (path / "extension.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    (path / module).write_text(textwrap.dedent(code), encoding="utf-8")
    return path


def engine_with(app, folder: Path, outputs: Path | None = None, disabled=()):
    from webui.engine import Engine
    from webui.extensions import ExtensionManager
    from webui.outputs import OutputWriter

    manager = ExtensionManager(folder, list(disabled))
    manager.load_all()
    return manager, Engine(app.models, OutputWriter(outputs) if outputs else None, hooks=manager.callbacks)


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def recorder(app, tmp_path_factory):
    folder = tmp_path_factory.mktemp("extensions")
    write_extension(folder, "recorder", RECORDER)
    outputs = tmp_path_factory.mktemp("ext-outputs")
    manager, engine = engine_with(app, folder, outputs)
    extension = manager.get("recorder")
    assert extension.status == "loaded", extension.error
    return manager, engine, extension.module.CALLS, outputs


def test_every_callback_fires_with_the_right_data_and_its_changes_take_effect(app, recorder, base_request):
    manager, engine, calls, outputs = recorder
    calls.clear()
    result = engine.generate(base_request.with_changes(prompt="a __colour__ circle FEW STEPS", steps=4, save_images=True))
    kinds = [c[0] for c in calls]
    assert kinds[0] == "before_request" and calls[0] == ("before_request", "a red circle FEW STEPS", 4)
    assert ("model_loaded", "tiny-sd1.safetensors", "sd1", "normal", app.models.short_hash(app.models.find("tiny-sd1"))) in calls
    steps = [c for c in calls if c[0] == "step"]
    assert [(s[1], s[2]) for s in steps] == [(1, 2), (2, 2)]  # the before_request change: 2 steps, not 4
    assert steps[0][3] == (1, 4, 32, 32) and steps[0][4] == (1234,)
    assert ("images_decoded", 1, (1234,)) in calls and ("before_save", 1234, True, True) in calls
    text = result.infotexts[0]
    assert text.startswith("a red circle FEW STEPS\n") and "Steps: 2," in text
    assert "Recorder: seen seed 1234" in text
    with Image.open(result.paths[0]) as saved:  # the saved file carries the added field too
        assert "Recorder: seen seed 1234" in saved.info["parameters"]
        assert np.array_equal(pixels(saved), pixels(result.images[0]))
    # model_loaded fires on a change of checkpoint only
    calls.clear()
    engine.generate(base_request.with_changes(steps=1))
    assert not [c for c in calls if c[0] == "model_loaded"]
    engine.generate(base_request.with_changes(steps=1, model="tiny-sd1-calm"))
    engine.generate(base_request.with_changes(steps=1))
    assert [c[1] for c in calls if c[0] == "model_loaded"] == ["tiny-sd1-calm.safetensors", "tiny-sd1.safetensors"]


def test_decoded_images_can_be_replaced_and_step_latents_are_copies(app, recorder, base_request):
    _, engine, calls, _ = recorder
    plain = app.engine.generate(base_request)  # no recorder here
    inverted = engine.generate(base_request.with_changes(extra={"invert": True}))
    assert np.array_equal(pixels(inverted.images[0]), pixels(ImageOps.invert(plain.images[0].convert("RGB"))))
    same = engine.generate(base_request)  # the step callback zeroed its copy of the latents: no effect
    assert np.array_equal(pixels(same.images[0]), pixels(plain.images[0]))


def test_a_step_callback_can_interrupt(recorder, base_request):
    _, engine, calls, _ = recorder
    calls.clear()
    result = engine.generate(base_request.with_changes(steps=6, n_iter=2, extra={"stop_at": 2}))
    assert result.interrupted and len(result.images) == 1  # the second batch never starts
    assert [c[1] for c in calls if c[0] == "step"] == [1, 2]


BROKEN = {
    "syntax": ("def setup(api)\n    pass\n", {}),
    "needs_pkg": ("def setup(api):\n    pass\n", {"requirements": ["surely-not-installed-pkg-4711>=1.0", "numpy"]}),
    "future_api": ("def setup(api):\n    pass\n", {"api_version": 99}),
    "setup_raises": ("def setup(api):\n    api.add_script(object())\n", {}),
    "no_setup": ("X = 1\n", {}),
    "bad_import": ("import surely_not_a_module_4711\n\ndef setup(api):\n    pass\n", {}),
    "raises_in_callback": ('''
        COUNT = []

        def setup(api):
            @api.on_before_request
            def boom(request):
                COUNT.append(1)
                return 1 / 0
        ''', {}),
    "wrong_return": ('''
        def setup(api):
            api.on_images_decoded(lambda data: "not images")
            api.on_before_save(lambda data: ["not", "a", "dict"])
        ''', {}),
    "good": ('''
        def setup(api):
            api.on_before_save(lambda data: {"Good": "yes"})
        ''', {}),
}


@pytest.fixture(scope="module")
def broken_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken-extensions")
    for name, (code, manifest) in BROKEN.items():
        write_extension(folder, name, code, manifest)
    (folder / "not_an_extension").mkdir()  # no extension.yaml: ignored
    (folder / "bad_yaml").mkdir()
    (folder / "bad_yaml" / "extension.yaml").write_text("name: [unclosed\n")
    return folder


def test_broken_extensions_are_reported_by_name_and_isolated(app, broken_folder, base_request, caplog):
    manager, engine = engine_with(app, broken_folder)
    status = {e.name: (e.status, e.error) for e in manager.extensions}
    assert "not_an_extension" not in status
    assert status["syntax"][0] == "error" and "SyntaxError" in status["syntax"][1]
    assert "surely-not-installed-pkg-4711>=1.0" in status["needs_pkg"][1] and "numpy" not in status["needs_pkg"][1]
    assert "needs extension API version 99" in status["future_api"][1]
    assert "setup failed: TypeError" in status["setup_raises"][1]
    assert "no setup(api)" in status["no_setup"][1]
    assert "ModuleNotFoundError" in status["bad_import"][1]
    assert "extension.yaml" in status["bad_yaml"][1]
    assert all(status[n] == ("loaded", None) for n in ("raises_in_callback", "wrong_return", "good"))

    caplog.clear()
    result = engine.generate(base_request)  # the failing callbacks do not stop the generation
    assert len(result.images) == 1 and "Good: yes" in result.infotexts[0]
    failing = manager.get("raises_in_callback")
    assert failing.status == "error" and "ZeroDivisionError" in failing.error and "extension.py line" in failing.error
    assert manager.get("wrong_return").status == "error" and "images_decoded" in manager.get("wrong_return").error
    assert "raises_in_callback" in caplog.text
    plain = app.engine.generate(base_request)
    assert np.array_equal(pixels(result.images[0]), pixels(plain.images[0]))  # bad returns were ignored
    engine.generate(base_request)
    assert len(failing.module.COUNT) == 1  # off for the rest of the run
    assert "Good: yes" in engine.generate(base_request).infotexts[0]


SCRIPTS = '''
from webui.extensions import Script, ScriptArg


class Twice(Script):
    title = "Twice"
    modes = ("txt2img",)
    arguments = (ScriptArg("Steps", 2),)

    def run(self, ctx, request, steps):
        first = ctx.generate(request.with_changes(steps=steps))
        second = ctx.generate(request.with_changes(steps=steps, seed=request.seed + 1))
        first.images += second.images
        first.seeds += second.seeds
        first.subseeds += second.subseeds
        first.infotexts += second.infotexts
        return first


class Crash(Script):
    title = "Crash"

    def run(self, ctx, request):
        return {}["missing"]


class Picky(Script):
    title = "Picky"

    def run(self, ctx, request):
        raise ValueError("needs a prompt with a dog")


def setup(api):
    api.add_script(Twice())
    api.add_script(Crash())
    api.add_script(Picky())
'''


def test_scripts_run_on_the_job_and_a_crashing_script_is_isolated(app, tmp_path, base_request):
    from types import SimpleNamespace

    from webui.engine import Job, RequestError
    from webui.extensions import ExtensionError
    from webui.extensions.scripts import make_script_context

    write_extension(tmp_path, "scripts", SCRIPTS)
    manager, engine = engine_with(app, tmp_path)
    assert [s.title for _, s in manager.scripts("txt2img")] == ["Twice", "Crash", "Picky"]
    assert [s.title for _, s in manager.scripts("img2img")] == ["Crash", "Picky"]
    host = SimpleNamespace(engine=engine, outputs=None, models=app.models)

    def run(title, args=()):
        request = base_request.with_changes(extra={"script": manager.script_call(title, "txt2img", list(args))})
        job = Job(request)
        return manager.run_script(request, make_script_context(host, job, "txt2img")), job

    result, job = run("twice")  # any case; the missing argument takes its default (2 steps)
    assert result.seeds == [1234, 1235] and all("Steps: 2," in t for t in result.infotexts)
    progress = job.progress  # both generations reported on the script's job, as one run
    assert progress.step == progress.total == 2 and (progress.image_index, progress.image_count) == (1, 2)
    assert progress.fraction == 1.0
    job = Job(base_request)
    job.interrupt()  # an interrupted job reaches the script's generations
    request = base_request.with_changes(extra={"script": manager.script_call("Twice", "txt2img", [])})
    stopped = manager.run_script(request, make_script_context(host, job, "txt2img"))
    assert stopped.images == [] and stopped.interrupted
    with pytest.raises(RequestError, match="script_args: Picky: needs a prompt with a dog"):
        run("Picky")
    assert manager.get("scripts").status == "loaded"
    with pytest.raises(ExtensionError, match="script 'Crash' failed: KeyError"):
        run("Crash")
    assert manager.get("scripts").status == "error" and "KeyError" in manager.get("scripts").error
    with pytest.raises(RequestError, match="script_name"):
        manager.script_call("Twice", "txt2img", [])


def test_disabled_extensions_are_skipped_and_enabling_loads_them(app, tmp_path, base_request):
    write_extension(tmp_path, "signer", 'def setup(api):\n    api.on_before_save(lambda d: {"Signed": "x"})\n')
    saved = []
    from webui.engine import Engine
    from webui.extensions import ExtensionManager

    manager = ExtensionManager(tmp_path, ["signer"], save_disabled=saved.append)
    manager.load_all()
    engine = Engine(app.models, None, hooks=manager.callbacks)
    assert manager.get("signer").status == "disabled" and manager.get("signer").module is None
    assert "Signed" not in engine.generate(base_request).infotexts[0]
    manager.set_enabled("signer", True)
    assert saved[-1] == [] and manager.get("signer").status == "loaded"
    assert "Signed: x" in engine.generate(base_request).infotexts[0]
    manager.set_enabled("signer", False)
    assert saved[-1] == ["signer"] and "Signed" not in engine.generate(base_request).infotexts[0]


def test_cli_lists_extensions_and_persists_enable_disable(broken_folder, tmp_path):
    config = tmp_path / "config.yaml"
    base = [sys.executable, str(ROOT / "app.py"), "extensions", "--extensions-dir", str(broken_folder),
            "--config-file", str(config)]
    out = subprocess.run(base + ["--json", "--disable", "good"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    records = {r["name"]: r for r in json.loads(out.stdout)["extensions"]}
    assert records["good"]["enabled"] is False and records["good"]["status"] == "disabled"
    assert records["syntax"]["status"] == "error" and "SyntaxError" in records["syntax"]["error"]
    assert set(records["good"]) >= {"name", "version", "enabled", "status", "error"}
    assert "disabled_extensions:\n  - good" in config.read_text() or "- good" in config.read_text()
    text = subprocess.run(base, capture_output=True, text=True, timeout=120)
    lines = {line.split()[0]: line for line in text.stdout.splitlines()}
    assert re.match(r"good\s+1\.2\.3\s+disabled\s+disabled", lines["good"])
    assert "loaded" in lines["raises_in_callback"] and "error" in lines["needs_pkg"]
    wrong = subprocess.run(base + ["--enable", "nope"], capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "no extension named 'nope'" in wrong.stderr


def make_git_repo(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    subprocess.run(git + ["init", "-q"], cwd=path, check=True)
    subprocess.run(git + ["add", "."], cwd=path, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "extension"], cwd=path, check=True)
    return path


def test_install_from_a_local_git_repository(app, tmp_path, base_request):
    from webui.config import Settings
    from webui.engine import Engine
    from webui.extensions import ExtensionError, ExtensionManager
    from webui.extensions.loader import install_refusal

    repo = make_git_repo(tmp_path / "src" / "stamp-ext.git", {
        "extension.yaml": "name: stamp\nversion: 2.0.0\napi_version: 1\n",
        "extension.py": "from .helpers import FIELDS\n\ndef setup(api):\n    api.on_before_save(lambda d: FIELDS)\n",
        "helpers.py": "FIELDS = {'Stamp': 'from git'}\n"})
    folder = tmp_path / "extensions"
    manager = ExtensionManager(folder)
    manager.load_all()
    extension = manager.install(str(repo))
    assert extension.name == "stamp" and extension.status == "loaded", extension.error
    assert (folder / "stamp-ext" / ".git").is_dir()  # the folder name comes from the URL
    assert "Stamp: from git" in Engine(app.models, None, hooks=manager.callbacks).generate(base_request).infotexts[0]
    with pytest.raises(ExtensionError, match="already exists"):
        manager.install(str(repo))
    not_extension = make_git_repo(tmp_path / "src" / "plain", {"README.md": "hi\n"})
    with pytest.raises(ExtensionError, match="no extension.yaml"):
        manager.install(str(not_extension))
    assert not (folder / "plain").exists()
    with pytest.raises(ExtensionError, match="git clone failed"):
        manager.install(str(tmp_path / "missing-repo"))
    with pytest.raises(ExtensionError, match="not a URL"):
        manager.install("--upload-pack=touch /tmp/x")
    # a second manager (a restart) finds it
    again = ExtensionManager(folder)
    assert [e.name for e in again.load_all()] == ["stamp"] and again.get("stamp").status == "loaded"
    assert install_refusal(Settings(listen=True)) and "--listen" in install_refusal(Settings(listen=True))
    assert "--share" in install_refusal(Settings(share=True))
    assert install_refusal(Settings(listen=True, enable_insecure_extension_access=True)) is None
    assert install_refusal(Settings()) is None


def readme_example() -> dict[str, str]:
    """The files of the README's "Write an extension" example, by the path in their first line."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Write an extension", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```(?:yaml|python)\n(.*?)```", section, flags=re.S):
        first, _, body = block.partition("\n")
        assert first.startswith("# extensions/"), first
        files[first[2:].strip()] = block
    return files


def test_readme_example_loads_as_printed_and_works(app, tmp_path, base_request):
    files = readme_example()
    assert set(files) == {"extensions/hello/extension.yaml", "extensions/hello/extension.py"}
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text, encoding="utf-8")
    manager, engine = engine_with(app, tmp_path / "extensions")
    hello = manager.get("hello")
    assert hello.status == "loaded" and hello.version == "0.1.0", hello.error
    result = engine.generate(base_request.with_changes(steps=1))
    assert "Signed: hello" in result.infotexts[0] and "Steps: 2," in result.infotexts[0]


# ---- X/Y/Z plot -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def xyz(app):
    extension = app.extensions.get("xyz_plot")
    assert extension is not None and extension.status == "loaded", extension and extension.error
    return sys.modules[extension.module.__name__.rsplit(".", 1)[0] + ".axes"]


def test_xyz_value_syntax(xyz, base_request):
    from webui.engine import RequestError

    def values(axis, text, request=base_request):
        return xyz.parse_values(xyz.find_axis(axis, "x_type"), text, None, None, request, "X values")

    assert values("Steps", "1-5") == [1, 2, 3, 4, 5]
    assert values("steps", "1-5 (+2)") == [1, 3, 5]
    assert values(4, "10-30 [5]") == [10, 15, 20, 25, 30]
    assert values("Seed", "7, 9, 11, -1") == [7, 9, 11, -1]
    assert values("CFG Scale", "5-9 (+1.5)") == [5.0, 6.5, 8.0]
    assert values("cfg", "1-2 [3], 7") == [1.0, 1.5, 2.0, 7.0]
    assert values("Size", "64x64, 128 x 64") == [(64, 64), (128, 64)]
    assert values("Prompt S/R", "red, blue, \"green, big\"") == ["red", "blue", "green, big"]
    assert values("Sampler", "euler a, DDIM") == ["Euler a", "DDIM"]
    for axis, text, message in (("Steps", "0-2", "between 1 and 150"), ("Steps", "a", "not a whole number"),
                                ("Steps", "", "no values"), ("Prompt S/R", "dog, cat", "neither the prompt"),
                                ("Sampler", "Nope", "unknown sampler"), ("Width", "65", "multiple of 8"),
                                ("Steps", "5-1 (+1)", "empty range")):
        with pytest.raises(RequestError, match=message) as error:
            values(axis, text)
        assert error.value.field == "script_args" and "X values" in str(error.value)
    with pytest.raises(ValueError, match="unknown axis 'Colour'"):
        xyz.find_axis("Colour", "x_type")


def cell_boxes(grid: Image.Image, columns: int, rows: int, size: int = 64):
    """Labels are above and left, so the cells fill the bottom-right corner (no margins)."""
    left, top = grid.width - columns * size, grid.height - rows * size
    return left, top, {(c, r): (left + c * size, top + r * size, left + (c + 1) * size, top + (r + 1) * size)
                       for c in range(columns) for r in range(rows)}


def test_xyz_grid_has_labelled_cells_equal_to_single_generations(app, base_request, tmp_path):
    from webui.extensions import ScriptCall

    call = app.extensions.script_call("X/Y/Z PLOT", "txt2img", ["Steps", "2, 3", None, "CFG Scale", "1, 7"])
    assert isinstance(call, ScriptCall)
    request = base_request.with_changes(seed=-1, save_images=True, extra={"script": call})
    job = app.queue.submit(request)
    result = job.wait(300)
    assert len(result.images) == 1 + 4 and len(result.paths) == 5 and len(result.infotexts) == 5
    assert (job.progress.image_index, job.progress.image_count, job.progress.fraction) == (3, 4, 1.0)
    grid = result.images[0]
    assert "txt2img-grids" in result.paths[0] and all("txt2img-images" in p for p in result.paths[1:])
    left, top, boxes = cell_boxes(grid, 2, 2)
    assert left > 0 and top > 0  # room for the row and column labels
    seed = result.seeds[1]
    assert seed != -1 and result.seeds[1:] == [seed] * 4  # one random seed for every cell
    cells = {}
    for cfg_index, cfg in enumerate((1, 7)):
        for steps_index, steps in enumerate((2, 3)):
            single = app.engine.generate(base_request.with_changes(seed=seed, steps=steps, cfg_scale=cfg))
            cell = result.images[1 + cfg_index * 2 + steps_index]
            text = result.infotexts[1 + cfg_index * 2 + steps_index]
            assert f"Steps: {steps}," in text and f"CFG scale: {cfg}," in text
            assert np.array_equal(pixels(cell), pixels(single.images[0]))
            crop = grid.crop(boxes[(steps_index, cfg_index)])
            assert np.array_equal(pixels(crop), pixels(single.images[0]))
            cells[(steps, cfg)] = pixels(cell)
    assert not np.array_equal(cells[(2, 1)], cells[(3, 1)]) and not np.array_equal(cells[(2, 1)], cells[(2, 7)])
    array = pixels(grid)
    for c in range(2):  # every column label is drawn over its own column, every row label beside its row
        assert (array[:top, left + c * 64:left + (c + 1) * 64] < 100).any()
    for r in range(2):
        assert (array[top + r * 64:top + (r + 1) * 64, :left] < 100).any()
    assert (array[:top, :left] == 255).all()  # the corner stays blank
    assert "X Type: Steps, X Values: \"2, 3\", Y Type: CFG Scale, Y Values: \"1, 7\"" in result.infotexts[0]
    with Image.open(result.paths[0]) as saved:
        assert saved.size == grid.size and "Script: X/Y/Z plot" in saved.info["parameters"]


def test_xyz_interrupt_stops_the_remaining_cells(app, base_request):
    call = app.extensions.script_call("x/y/z plot", "txt2img", ["Seed", "1, 2", None, "Seed", "3, 4"])

    def interrupt_in_second_cell(job):
        if job.progress.image_index == 1 and job.progress.step == 1:
            job.interrupt()

    job = app.queue.submit(base_request.with_changes(extra={"script": call}), on_step=interrupt_in_second_cell)
    result = job.wait(300)
    assert result.interrupted and len(result.images) == 1 + 2  # the grid, the first cell, the stopped second
    grid = pixels(result.images[0])
    assert (grid[-64:, -128:] == 255).all()  # the bottom row was never made: blank


def test_xyz_from_the_command_line(models_dir, tmp_path):
    command = [sys.executable, str(ROOT / "app.py"), "generate", "--models-dir", str(models_dir), "--outputs-dir",
               str(tmp_path / "out"), "--config-file", str(tmp_path / "c.yaml"), "--cache-dir", str(tmp_path / "cache"),
               "--threads", "1", "--model", "tiny-sd1", "--prompt", "a red circle", "--steps", "2", "--width", "64",
               "--height", "64", "--seed", "8", "--json", "--script", "x/y/z plot"]
    done = subprocess.run(command + ["--script-args", '["CFG Scale", "1, 7"]'], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert len(document["images"]) == 3 and "txt2img-grids" in document["images"][0]
    with Image.open(document["images"][0]) as grid:
        assert grid.width == 128 and grid.height > 64 and "X Type: CFG Scale" in grid.info["parameters"]
    wrong = subprocess.run(command + ["--script-args", '["Steps", "0"]'], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "error: script_args: X values (Steps)" in wrong.stderr


def test_xyz_labels_are_the_axis_values(app, xyz, base_request):
    """The label bands hold exactly the text the grid module draws for these values (same font)."""
    grid_module = sys.modules[xyz.__name__.rsplit(".", 1)[0] + ".grid"]
    cell = Image.new("RGB", (64, 64), (128, 128, 128))
    grid, layout = grid_module.draw_grid([[cell, cell]], ["Steps: 2", "Steps: 3"], [""])
    other, _ = grid_module.draw_grid([[cell, cell]], ["Steps: 2", "Steps: 9"], [""])
    band = pixels(grid)[:layout.top]
    assert layout.left == 0 and layout.top > 0 and grid.size == (128, layout.top + 64)
    assert np.array_equal(band[:, :64], pixels(other)[:layout.top, :64])  # same label, same pixels
    assert not np.array_equal(band[:, 64:], pixels(other)[:layout.top, 64:])


def test_xyz_z_axis_prompt_sr_and_sampler(app, base_request):
    call = app.extensions.script_call("x/y/z plot", "txt2img", [
        "Prompt S/R", ["red", "blue"], None, "Nothing", "", None, "Sampler", "", ["Euler", "DDIM"]])
    result = app.queue.submit(base_request.with_changes(steps=2, extra={"script": call})).wait(300)
    assert len(result.images) == 1 + 4
    prompts = [t.split("\n")[0] for t in result.infotexts[1:]]
    samplers = [re.search(r"Sampler: ([^,]+),", t)[1] for t in result.infotexts[1:]]
    assert prompts == ["a red circle", "a blue circle"] * 2 and samplers == ["Euler"] * 2 + ["DDIM"] * 2
    grid = result.images[0]  # two sub-grids side by side, under the Z labels (samplers) and X labels (prompts)
    assert grid.width == 2 * 2 * 64 and grid.height > 64
    cells = [pixels(image) for image in result.images[1:]]
    for index in range(4):
        x = index * 64
        assert np.array_equal(pixels(grid)[grid.height - 64:, x:x + 64], cells[index])


def test_xyz_in_img2img_with_denoising(app, base_request):
    init = Image.new("RGB", (64, 64), (30, 160, 40))
    request = base_request.with_changes(init_image=init, steps=4)
    call = app.extensions.script_call("x/y/z plot", "img2img", ["Denoising", "0.5, 1", None])
    result = app.queue.submit(request.with_changes(extra={"script": call})).wait(300)
    assert len(result.images) == 3
    for index, strength in enumerate((0.5, 1.0)):
        single = app.engine.generate(request.with_changes(denoising_strength=strength))
        assert np.array_equal(pixels(result.images[1 + index]), pixels(single.images[0]))
        assert f"Denoising strength: {strength:g}" in result.infotexts[1 + index]


def test_xyz_bad_arguments_name_the_problem(app, base_request):
    from webui.engine import RequestError

    with pytest.raises(RequestError, match="script_name.*not available for txt2img.*X/Y/Z plot"):
        app.extensions.script_call("no such script", "txt2img", [])
    with pytest.raises(RequestError, match="unknown axis 'Colour'"):
        app.extensions.script_call("x/y/z plot", "txt2img", ["Colour", "1"])
    call = app.extensions.script_call("x/y/z plot", "txt2img", ["Checkpoint name", "tiny-sd1, nope-model"])
    with pytest.raises(RequestError, match="unknown checkpoint 'nope-model'"):
        app.queue.submit(base_request.with_changes(extra={"script": call})).wait(300)
    assert app.extensions.get("xyz_plot").status == "loaded"  # the user's mistake is not the extension's


def test_xyz_axis_indices_are_a1111s_for_each_tab(xyz, app):
    # what an A1111 client sends: integer axis types from A1111's dropdown of that tab
    assert [xyz.find_axis(i, "x_type", "txt2img").name for i in (0, 1, 4, 6, 7, 9, 11, 17, 22)] == [
        "Nothing", "Seed", "Steps", "CFG Scale", "Prompt S/R", "Sampler", "Checkpoint name", "Schedule type",
        "Clip skip"]
    assert [xyz.find_axis(i, "x_type", "img2img").name for i in (5, 9, 10, 22)] == [
        "CFG Scale", "Sampler", "Checkpoint name", "Denoising"]
    with pytest.raises(ValueError, match="A1111's axis 5 \\('Hires steps'\\) is not available"):
        xyz.find_axis(5, "x_type", "txt2img")
    with pytest.raises(ValueError, match="out of range"):
        xyz.find_axis(99, "x_type")
    call = app.extensions.script_call("x/y/z plot", "img2img", [22, "0.5, 1"])
    assert call.args[0] == "Denoising"
