"""Depth: img2img with one more condition. A depth map of the input (estimated by a DPT model from
``models/depth/`` or by the MiDaS inside the depth checkpoint, or uploaded) steers a depth
checkpoint, so the new picture keeps the old one's 3-D layout while the prompt changes what is in it."""
from __future__ import annotations

import html

import gradio as gr

from ..engine.depth import depth_to_image
from ..model_manager import ModelFileError, ModelNotFound
from ..model_manager.manager import NO_DEPTH_MODEL
from .generation import GenerationTab, build_prompt_row, build_results, build_sampling_controls, enlarged, \
    error_html, wire_generation
from .img2img import _image_controls

AUTOMATIC = "Automatic"


def depth_checkpoint_choices(ui) -> list[str]:
    return [e.name for e in ui.app.models.depth_checkpoints()]


def estimator_choices(ui) -> list[str]:
    return [AUTOMATIC] + [e.name for e in ui.app.models.list("depth") if e.path.is_dir() or e.embedded]


def missing_model_html(ui) -> str:
    if depth_checkpoint_choices(ui):
        return ""
    message = NO_DEPTH_MODEL.format(folder=ui.app.settings.paths.checkpoints)
    return f"<div class='error-message' role='alert'>{html.escape(message)}, then press 🔄.</div>"


def build(ui) -> GenerationTab:
    tab = GenerationTab("depth")
    build_prompt_row(ui, tab)
    x = tab.extra_inputs
    checkpoints = depth_checkpoint_choices(ui)
    notice = gr.HTML(missing_model_html(ui), elem_id="depth_model_notice")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                x["checkpoint"] = gr.Dropdown(checkpoints, value=checkpoints[0] if checkpoints else None,
                                              label="Depth checkpoint", elem_id="depth_checkpoint", scale=3)
                x["estimator"] = gr.Dropdown(estimator_choices(ui), value=AUTOMATIC, label="Depth estimator",
                                             elem_id="depth_estimator", scale=2)
                refresh = gr.Button("🔄", elem_id="depth_refresh", scale=0, min_width=40)
            with gr.Row():
                x["image"] = gr.Image(label="Image for depth-to-image", type="pil", elem_id="depth_image",
                                      sources=["upload", "clipboard"], image_mode="RGB", height=300)
                x["depth_map"] = gr.Image(label="Depth map (optional; near = bright; overrides the estimator)",
                                          type="pil", elem_id="depth_map_upload", sources=["upload", "clipboard"],
                                          image_mode="L", height=300)
            estimate = gr.Button("Estimate depth map", elem_id="depth_estimate", size="sm")
            _image_controls(tab)
            build_sampling_controls(ui, tab)
        with gr.Column():
            tab.depth_view = gr.Image(label="Depth map used", type="pil", interactive=False, format="png",
                                      elem_id="depth_map_view", height=200, buttons=["download", "fullscreen"])
            build_results(ui, tab, ["img2img", "inpaint", "pnginfo"])

    def extra(data: dict) -> dict:
        checkpoint = data.get(x["checkpoint"])
        if not checkpoint:
            raise ValueError(NO_DEPTH_MODEL.format(folder=ui.app.settings.paths.checkpoints))
        image, depth_map = data.get(x["image"]), data.get(x["depth_map"])
        if image is None and depth_map is None:
            raise ValueError("init_image: upload, paste or drop an image (or a depth map) first")
        estimator = data.get(x["estimator"])
        fields = {"model": checkpoint, "depth_map": depth_map,
                  "depth_model": None if estimator in (None, AUTOMATIC) else estimator,
                  "resize_mode": int(data[x["resize_mode"]] or 0)}
        if image is not None:
            fields.update(init_image=image, denoising_strength=float(data[x["denoising_strength"]]))
        return fields

    def estimate_depth(image, checkpoint, estimator):
        if image is None:
            return None, error_html(ValueError("upload, paste or drop an image to estimate its depth"))
        name = None if estimator in (None, AUTOMATIC) else estimator

        def task(app):
            entry = app.models.find(checkpoint) if checkpoint else None
            return app.models.depth_estimator(name, entry).estimate(image)

        try:
            depth = ui.app.queue.submit(task).wait()
        except (ModelNotFound, ModelFileError, ValueError) as e:
            return None, error_html(e)
        return enlarged(depth_to_image(depth)), ""

    def do_refresh():
        choices = depth_checkpoint_choices(ui)
        return (gr.update(choices=choices, value=choices[0] if choices else None),
                gr.update(choices=estimator_choices(ui)), missing_model_html(ui))

    estimate.click(estimate_depth, [x["image"], x["checkpoint"], x["estimator"]], [tab.depth_view, notice],
                   concurrency_limit=None)
    refresh.click(do_refresh, None, [x["checkpoint"], x["estimator"], notice], queue=False)
    wire_generation(ui, tab, extra)
    return tab
