"""Scripts (A1111's Script dropdown): a panel of controls under the generation controls that takes over
the run, e.g. X/Y/Z plot. A script runs on the generation worker with the job of the request, so
progress, interrupt and skip work for every image it makes.

The UI passes the values of the controls ``ui()`` returned, in order; the API passes ``script_args``
in the same order. ``arguments`` describes that order (label, default, choices) so missing API
arguments get defaults and ``/sdapi/v1/script-info`` can show them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..engine.request import GenerationRequest, GenerationResult

MODES = ("txt2img", "img2img")
SCRIPT_KEY = "script"  # GenerationRequest.extra key holding the ScriptCall


@dataclass(frozen=True)
class ScriptArg:
    """One positional argument: what the API's ``script_args[i]`` and the i-th UI control mean."""

    label: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None


class Script:
    """Subclass, set ``title`` (and ``modes``), and implement ``run``; ``ui`` builds the controls."""

    title: str = ""
    modes: tuple[str, ...] = MODES  # where it is offered: "txt2img", "img2img" (img2img includes inpaint)
    arguments: tuple[ScriptArg, ...] = ()

    def ui(self, ctx: "ScriptUIContext") -> list[Any]:
        """Create Gradio components (inside the script's panel) and return them in ``arguments`` order."""
        return []

    def parse_args(self, args: list[Any], mode: str = "txt2img") -> list[Any]:
        """API/UI values for a run in ``mode`` -> the values ``run`` gets; raise ``ValueError`` naming the
        argument if one is unusable. The default fills missing trailing arguments from ``arguments``."""
        args = list(args)
        if len(args) > len(self.arguments) and self.arguments:
            args = args[: len(self.arguments)]
        for spec in self.arguments[len(args):]:
            args.append(spec.default)
        return args

    def run(self, context: "ScriptContext", request: GenerationRequest, *args: Any) -> GenerationResult:
        raise NotImplementedError

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.title.lower()).strip("_") or "script"


@dataclass(frozen=True)
class ScriptCall:
    """Which script a request runs, with its parsed arguments (lives in ``request.extra["script"]``)."""

    title: str
    args: tuple[Any, ...] = ()


@dataclass
class ScriptUIContext:
    """What ``Script.ui`` may use: the tab it is drawn in and the installed checkpoints."""

    tab: str  # txt2img, img2img, inpaint
    mode: str  # txt2img or img2img
    script: Script
    checkpoints: Callable[[], list[str]] = list

    def elem_id(self, name: str) -> str:
        """A page-unique element id for one of the script's controls (``txt2img_xyz_plot_x_type``)."""
        return f"{self.tab}_{self.script.slug}_{name}"


@dataclass
class ScriptContext:
    """What ``Script.run`` may use while it runs on the worker."""

    mode: str  # txt2img or img2img
    _generate: Callable[[GenerationRequest, Any], GenerationResult]  # (request, job) -> result
    _save: Callable[[Any, str, str, int, str], str]
    _find_checkpoint: Callable[[str], str]
    _checkpoints: Callable[[], list[str]]
    _job: Any = None
    engine_errors: list[BaseException] = field(default_factory=list)
    _expected: int = 0  # generations announced with set_total
    _batches_done: int = 0

    def set_total(self, generations: int) -> None:
        """Announce how many ``generate`` calls will follow, so progress and ETA cover the whole run."""
        self._expected = max(0, int(generations))

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run one generation on the current job: its progress shows on the job as part of the whole
        script run; the job's interrupt and skip reach it."""
        from ..engine.jobs import Job

        extra = {k: v for k, v in request.extra.items() if k != SCRIPT_KEY}
        request = request.with_changes(extra=extra)
        parent = self._job
        child = None
        if parent is not None:
            child = Job(request, id=parent.id, preview_every=parent.preview_every, preview_full=parent.preview_full,
                        on_step=lambda job, _n=request.n_iter: self._relay(job, _n))
            child.interrupted = parent.interrupted
        try:
            result = self._generate(request, child)
        except BaseException as e:  # the engine's error (bad value, unknown model): not the script's fault
            self.engine_errors.append(e)
            raise
        if child is not None:
            self._batches_done += request.n_iter
            if child.interrupted:  # asked for by an extension's step callback
                parent.interrupt()
        return result

    def _relay(self, child: Any, n_iter: int) -> None:
        """One generation's step -> the script's job: overall progress, ETA, preview; interrupt/skip back."""
        import time

        parent = self._job
        if parent.interrupted:
            child.interrupted = True
        if parent.skipped:
            child.skipped, parent.skipped = True, False
        p, c = parent.progress, child.progress
        p.step, p.total, p.preview = c.step, c.total, c.preview
        p.image_index = self._batches_done + c.image_index
        p.image_count = max(self._expected * n_iter, self._batches_done + c.image_count)
        now = time.perf_counter()
        if not p.started:
            p.started = now
        done = p.fraction
        p.eta = (now - p.started) / done * (1 - done) if done > 0 else None
        if parent.on_step is not None:
            parent.on_step(parent)

    @property
    def interrupted(self) -> bool:
        return bool(self._job is not None and self._job.interrupted)

    def save_grid(self, image: Any, infotext: str, request: GenerationRequest, seed: int) -> str | None:
        """Save a grid to ``outputs/<mode>-grids/DATE/`` when the request saves images; returns the path."""
        if not request.save_images:
            return None
        return self._save(image, infotext, f"{self.mode}-grid", seed, request.output_format)

    def find_checkpoint(self, name: str) -> str:
        """The installed checkpoint a name, title or short hash means (its name); ValueError if none."""
        return self._find_checkpoint(name)

    def checkpoints(self) -> list[str]:
        return self._checkpoints()


@dataclass
class TabContext:
    """What an extension tab's ``build(ctx)`` may use."""

    extension: str
    _generate: Callable[[GenerationRequest], GenerationResult]
    _checkpoints: Callable[[], list[str]]

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Queue a generation (shared with the UI and API) and wait for its result."""
        return self._generate(request)

    def checkpoints(self) -> list[str]:
        return self._checkpoints()


def script_mode(request_mode: str) -> str:
    """Scripts are offered per A1111 tab: txt2img, or img2img (which covers inpaint and depth)."""
    return "txt2img" if request_mode == "txt2img" else "img2img"


def make_script_context(app: Any, job: Any, mode: str) -> ScriptContext:
    """The context a script runs with on the worker: the engine with this job, the outputs, the models."""
    from ..model_manager import ModelNotFound

    def find_checkpoint(name: str) -> str:
        try:
            return app.models.find(name).name
        except ModelNotFound as e:
            raise ValueError(str(e)) from None

    return ScriptContext(
        mode=mode, _generate=app.engine.generate,
        _save=lambda image, text, kind, seed, fmt: str(app.outputs.save(image, text, kind, seed, fmt)),
        _find_checkpoint=find_checkpoint, _checkpoints=lambda: [e.name for e in app.models.list("checkpoint")],
        _job=job)
