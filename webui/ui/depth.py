"""Depth: placeholder until depth-to-image lands. The image input works; nothing is faked."""
from __future__ import annotations

import gradio as gr


def build(ui):
    gr.Markdown(
        "### Depth-to-image (coming next)\n"
        "Depth-to-image is img2img with one more condition: a depth map of your picture (estimated by a "
        "MiDaS/DPT model from `models/depth/`, or uploaded) steers the denoiser, so the new image keeps the "
        "old one's 3-D layout while the prompt changes what is in it. It needs a depth checkpoint "
        "(5-channel UNet, like SD 2's `512-depth-ema`). This tab will generate once that support lands; "
        "until then it only holds your image.")
    image = gr.Image(label="Image for depth-to-image", type="pil", elem_id="depth_image",
                     sources=["upload", "clipboard"], image_mode="RGB", height=360)
    prompt = gr.Textbox(label="Prompt", lines=2, elem_id="depth_prompt")
    return {"image": image, "prompt": prompt}
