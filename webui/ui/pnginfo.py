"""PNG Info: the A1111 parameters stored in an image, as text and fields."""
from __future__ import annotations

import gradio as gr
from PIL import Image, UnidentifiedImageError

from ..engine import infotext


def read(path: str | None) -> tuple[str, dict]:
    if not path:
        return "", {}
    try:
        with Image.open(path) as image:
            text = infotext.read_image_parameters(image)
    except (OSError, UnidentifiedImageError) as e:
        return f"Not a readable image: {e}", {}
    if not text:
        return "No generation parameters found in this image.", {}
    return text, infotext.parse(text)


def build(ui):
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Source", type="filepath", elem_id="pnginfo_image", sources=["upload", "clipboard"],
                             height=360)
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=6, interactive=False, elem_id="pnginfo_text")
            fields = gr.JSON(label="Fields", elem_id="pnginfo_fields")
            with gr.Row():
                to_txt2img = gr.Button("Send to txt2img", elem_id="pnginfo_send_to_txt2img")
                to_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_to_img2img")
    image.change(read, image, [text, fields], queue=False)
    return {"image": image, "text": text, "fields": fields, "to_txt2img": to_txt2img, "to_img2img": to_img2img}
