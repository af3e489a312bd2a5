"""txt2img: prompt -> image."""
from __future__ import annotations

import gradio as gr

from .generation import GenerationTab, build_prompt_row, build_results, build_sampling_controls, wire_generation


def build(ui) -> GenerationTab:
    tab = GenerationTab("txt2img")
    build_prompt_row(ui, tab)
    with gr.Row():
        with gr.Column():
            build_sampling_controls(ui, tab)
        with gr.Column():
            build_results(ui, tab, ["img2img", "inpaint", "depth", "pnginfo"])
    wire_generation(ui, tab, lambda data: {})
    return tab
