"""The controls every generation tab shares, and the one handler that turns them into a request,
submits it to the app's queue and streams progress back. No generation logic lives here."""
from __future__ import annotations

import html
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gradio as gr
from PIL import Image

from ..engine import GenerationRequest, RequestError
from ..engine.conditioning import count_tokens
from ..engine.samplers import SCHEDULES, available_sampler_names
from ..outputs import write_image
from .scripts import build_script_controls, script_fields

log = logging.getLogger(__name__)
POLL_SECONDS = 0.4


@dataclass
class GenerationTab:
    """Components of one generation tab (txt2img, img2img, inpaint, depth)."""

    name: str
    prompt: Any = None
    negative_prompt: Any = None
    prompt_counter: Any = None
    negative_counter: Any = None
    sampler: Any = None
    schedule: Any = None
    steps: Any = None
    cfg_scale: Any = None
    width: Any = None
    height: Any = None
    batch_count: Any = None
    batch_size: Any = None
    seed: Any = None
    subseed: Any = None
    subseed_strength: Any = None
    generate: Any = None
    interrupt: Any = None
    skip: Any = None
    gallery: Any = None
    infotext: Any = None
    status: Any = None
    preview: Any = None
    depth_view: Any = None  # depth tab: the depth map the generation used
    results: Any = None  # gr.State: {"paths": [...], "infotexts": [...], "seeds": [...], "selected": i}
    send_buttons: dict[str, Any] = field(default_factory=dict)
    extra_inputs: dict[str, Any] = field(default_factory=dict)  # mode-specific components
    scripts: dict[str, list] = field(default_factory=dict)  # script title -> its controls, in argument order

    def inputs(self) -> set:
        core = {self.prompt, self.negative_prompt, self.sampler, self.schedule, self.steps, self.cfg_scale,
                self.width, self.height, self.batch_count, self.batch_size, self.seed, self.subseed,
                self.subseed_strength}
        return core | set(self.extra_inputs.values())


def token_counter_html(ui, text: str) -> str:
    count, limit = count_tokens(ui.tokenizer, text or "")
    return f"<span class='token-counter'>{count}/{limit}</span>"


def build_prompt_row(ui, tab: GenerationTab) -> None:
    with gr.Row():
        with gr.Column(scale=6):
            tab.prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{tab.name}_prompt",
                                    placeholder="Prompt (Ctrl+Enter to generate)")
            tab.prompt_counter = gr.HTML(token_counter_html(ui, ""), elem_id=f"{tab.name}_token_counter")
            tab.negative_prompt = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{tab.name}_neg_prompt")
            tab.negative_counter = gr.HTML(token_counter_html(ui, ""), elem_id=f"{tab.name}_negative_token_counter")
        with gr.Column(scale=1, min_width=160):
            tab.generate = gr.Button("Generate", variant="primary", elem_id=f"{tab.name}_generate")
            with gr.Row():
                tab.interrupt = gr.Button("Interrupt", elem_id=f"{tab.name}_interrupt", min_width=60)
                tab.skip = gr.Button("Skip", elem_id=f"{tab.name}_skip", min_width=60)
    tab.prompt.change(lambda t: token_counter_html(ui, t), tab.prompt, tab.prompt_counter, show_progress="hidden",
                      queue=False)
    tab.negative_prompt.change(lambda t: token_counter_html(ui, t), tab.negative_prompt, tab.negative_counter,
                               show_progress="hidden", queue=False)


def build_sampling_controls(ui, tab: GenerationTab) -> None:
    options = ui.app.options
    with gr.Row():
        tab.sampler = gr.Dropdown(available_sampler_names(), value=options.default_sampler, label="Sampling method",
                                  elem_id=f"{tab.name}_sampling")
        tab.schedule = gr.Dropdown([s.label for s in SCHEDULES.values()], value=options.default_schedule,
                                   label="Schedule type", elem_id=f"{tab.name}_scheduler")
        tab.steps = gr.Slider(1, 150, value=options.default_steps, step=1, label="Sampling steps",
                              elem_id=f"{tab.name}_steps")
    with gr.Row():
        tab.width = gr.Slider(0, 2048, value=options.default_width, step=8, label="Width (0 = model's native)",
                              elem_id=f"{tab.name}_width")
        tab.height = gr.Slider(0, 2048, value=options.default_height, step=8, label="Height (0 = model's native)",
                               elem_id=f"{tab.name}_height")
    with gr.Row():
        tab.batch_count = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{tab.name}_batch_count")
        tab.batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{tab.name}_batch_size")
        tab.cfg_scale = gr.Slider(0, 30, value=options.default_cfg_scale, step=0.5, label="CFG Scale",
                                  elem_id=f"{tab.name}_cfg_scale")
    with gr.Row():
        tab.seed = gr.Number(-1, label="Seed", precision=0, elem_id=f"{tab.name}_seed")
        random_seed = gr.Button("🎲", elem_id=f"{tab.name}_random_seed", min_width=40, scale=0)
        reuse_seed = gr.Button("♻️", elem_id=f"{tab.name}_reuse_seed", min_width=40, scale=0)
    with gr.Accordion("Variation seed", open=False, elem_id=f"{tab.name}_subseed_accordion"):
        with gr.Row():
            tab.subseed = gr.Number(-1, label="Variation seed", precision=0, elem_id=f"{tab.name}_subseed")
            tab.subseed_strength = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                             elem_id=f"{tab.name}_subseed_strength")
    tab.results = gr.State({})
    random_seed.click(lambda: -1, None, tab.seed, queue=False, show_progress="hidden")
    reuse_seed.click(lambda r: _selected_seed(r), tab.results, tab.seed, queue=False, show_progress="hidden")
    build_script_controls(ui, tab)  # the Script dropdown (X/Y/Z plot, ...) where scripts are offered


def _selected_seed(results: dict) -> int:
    seeds = results.get("seeds") or [-1]
    index = results.get("selected") or 0
    return seeds[index] if index < len(seeds) else seeds[0]


def build_results(ui, tab: GenerationTab, send_targets: list[str]) -> None:
    tab.status = gr.HTML("", elem_id=f"{tab.name}_status")
    tab.preview = gr.Image(label="Preview", visible=False, interactive=False, elem_id=f"{tab.name}_preview",
                           height=160, format="png")
    tab.gallery = gr.Gallery(label="Output", elem_id=f"{tab.name}_gallery", columns=4, height=420, format="png",
                             interactive=False)
    with gr.Row():
        for target in send_targets:
            label = {"img2img": "🖼️ Send to img2img", "inpaint": "🎨 Send to inpaint", "depth": "⛰️ Send to depth",
                     "pnginfo": "ℹ️ Send to PNG Info"}[target]
            tab.send_buttons[target] = gr.Button(label, elem_id=f"{tab.name}_send_to_{target}", size="sm")
    tab.infotext = gr.Textbox(label="Generation info", lines=3, interactive=False, elem_id=f"html_info_{tab.name}")

    def on_select(results: dict, evt: gr.SelectData):
        results = dict(results or {})
        results["selected"] = evt.index
        infotexts = results.get("infotexts") or []
        return results, infotexts[evt.index] if evt.index < len(infotexts) else ""

    tab.gallery.select(on_select, tab.results, [tab.results, tab.infotext], queue=False, show_progress="hidden")


def request_from(tab: GenerationTab, data: dict, app, extra: dict[str, Any]) -> GenerationRequest:
    options = app.options

    def number(component, kind=int):
        value = data.get(component)
        return kind(value) if value is not None else None

    width, height = number(tab.width), number(tab.height)
    fields = dict(
        prompt=data.get(tab.prompt) or "", negative_prompt=data.get(tab.negative_prompt) or "",
        model=options.sd_model_checkpoint or None, vae=options.sd_vae or None,
        sampler=data.get(tab.sampler) or options.default_sampler,
        schedule=data.get(tab.schedule) or "Automatic", steps=number(tab.steps), cfg_scale=number(tab.cfg_scale, float),
        seed=number(tab.seed), subseed=number(tab.subseed), subseed_strength=number(tab.subseed_strength, float),
        width=width or None, height=height or None, batch_size=number(tab.batch_size),
        n_iter=number(tab.batch_count), clip_skip=options.CLIP_stop_at_last_layers,
        save_images=options.save_images, output_format=options.samples_format)
    return GenerationRequest(**{**fields, **extra}).validated()


def enlarged(image, at_least: int = 256):
    """A small picture (the demo model's 64x64 depth map) scaled up by whole pixels for display."""
    if image is None or max(image.size) >= at_least:
        return image
    factor = -(-at_least // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def progress_html(job, position: int) -> str:
    if position > 0:
        return f"<div class='progress-text'>Waiting in queue: position {position}</div>"
    p = job.progress
    if not p.total:
        return "<div class='progress-text'>Loading model / preparing…</div>"
    percent = round(p.fraction * 100)
    eta = f", ETA {p.eta:.0f}s" if p.eta is not None else ""
    batch = f" (batch {p.image_index + 1}/{p.image_count})" if p.image_count > 1 else ""
    return (f"<div class='progress-bar'><div class='progress-fill' style='width:{percent}%'></div></div>"
            f"<div class='progress-text'>Step {p.step}/{p.total}{batch}, {percent}%{eta}</div>")


def error_html(error: BaseException) -> str:
    return f"<div class='error-message' role='alert'>Error: {html.escape(str(error))}</div>"


def gallery_files(ui, result) -> list[str]:
    """Files with the infotext inside: the saved outputs, or temporary PNGs when saving is off."""
    if result.paths:
        return list(result.paths)
    folder = Path(tempfile.mkdtemp(prefix="results-", dir=ui.temp_dir))
    files = []
    for i, (image, text) in enumerate(zip(result.images, result.infotexts)):
        path = folder / f"{i:05d}-{result.seeds[i]}.png"
        write_image(image, text, path, "png")
        files.append(str(path))
    return files


def make_run_handler(ui, tab: GenerationTab, build_extra: Callable[[dict], dict[str, Any]]):
    """The Generate handler: validate -> submit to the shared queue -> stream progress -> results."""
    app = ui.app

    def run(data: dict, request: gr.Request):
        outputs_idle = {tab.preview: gr.update(value=None, visible=False)}
        try:
            fields = build_extra(data)
            script = script_fields(ui, tab, data)
            if script:
                fields = {**fields, "extra": {**fields.get("extra", {}), **script["extra"]}}
            generation_request = request_from(tab, data, app, fields)
        except (RequestError, ValueError, TypeError) as e:
            yield {tab.status: error_html(e), **outputs_idle}
            return
        options = app.options
        job = app.queue.submit(generation_request,
                               preview_every=options.show_progress_every_n_steps if options.live_previews_enable else 0,
                               preview_full=options.live_preview_content == "Full")
        ui.jobs[_session(request)] = job
        shown_preview = None
        while not job.done.wait(POLL_SECONDS):
            update = {tab.status: progress_html(job, app.queue.position(job))}
            if job.progress.preview is not None and job.progress.preview is not shown_preview:
                shown_preview = job.progress.preview
                update[tab.preview] = gr.update(value=shown_preview, visible=True)
            yield update
        ui.jobs.pop(_session(request), None)
        try:
            result = job.wait()
        except Exception as e:  # validation, model and memory errors: shown, the server keeps serving
            log.warning("generation failed: %s", e)
            yield {tab.status: error_html(e), **outputs_idle}
            return
        if result is None:  # interrupted while still waiting in the queue
            yield {tab.status: "<div class='progress-text done'>Interrupted before it started</div>", **outputs_idle}
            return
        files = gallery_files(ui, result)
        results = {"paths": files, "infotexts": result.infotexts, "seeds": result.seeds, "selected": 0}
        note = " (interrupted)" if result.interrupted else ""
        timing = result.timings.get("total", 0)
        if tab.depth_view is not None:
            outputs_idle[tab.depth_view] = enlarged(result.depth_map)
        yield {**outputs_idle, tab.gallery: files, tab.infotext: result.infotexts[0] if result.infotexts else "",
               tab.results: results, tab.preview: gr.update(value=None, visible=False),
               tab.status: f"<div class='progress-text done'>Done{note}: {len(files)} image(s) in {timing:.1f}s</div>"}

    return run


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def wire_generation(ui, tab: GenerationTab, build_extra: Callable[[dict], dict[str, Any]]) -> None:
    run = make_run_handler(ui, tab, build_extra)
    outputs = [tab.gallery, tab.infotext, tab.results, tab.preview, tab.status]
    if tab.depth_view is not None:
        outputs.append(tab.depth_view)
    tab.generate.click(run, tab.inputs(), outputs, show_progress="hidden", concurrency_limit=None)
    tab.prompt.submit(run, tab.inputs(), outputs, show_progress="hidden", concurrency_limit=None)

    def control(action: str):
        def handler(request: gr.Request):
            job = ui.jobs.get(_session(request))
            log.info("%s requested by session %s: %s", action, _session(request), "running job" if job else "no job")
            if job is not None:
                getattr(job, action)()
        return handler

    # Queued (with no concurrency limit, so they never wait) so that they carry the session of the page.
    tab.interrupt.click(control("interrupt"), None, None, show_progress="hidden", concurrency_limit=None)
    tab.skip.click(control("skip"), None, None, show_progress="hidden", concurrency_limit=None)
