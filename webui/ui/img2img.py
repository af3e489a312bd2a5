"""img2img and Inpaint: the same generation controls, starting from an image (and a mask)."""
from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from ..engine.request import INPAINTING_FILL, RESIZE_MODES
from .generation import GenerationTab, build_prompt_row, build_results, build_sampling_controls, wire_generation


def _image_controls(tab: GenerationTab) -> None:
    tab.extra_inputs["resize_mode"] = gr.Radio(list(RESIZE_MODES.values()), value=RESIZE_MODES[0], type="index",
                                               label="Resize mode", elem_id=f"{tab.name}_resize_mode")
    tab.extra_inputs["denoising_strength"] = gr.Slider(0, 1, value=0.75, step=0.01, label="Denoising strength",
                                                       elem_id=f"{tab.name}_denoising_strength")


def build_img2img(ui) -> GenerationTab:
    tab = GenerationTab("img2img")
    build_prompt_row(ui, tab)
    with gr.Row():
        with gr.Column():
            tab.extra_inputs["image"] = gr.Image(label="Image for img2img", type="pil", elem_id="img2img_image",
                                                 sources=["upload", "clipboard"], image_mode="RGB", height=360)
            _image_controls(tab)
            build_sampling_controls(ui, tab)
        with gr.Column():
            build_results(ui, tab, ["inpaint", "depth", "pnginfo"])

    def extra(data: dict) -> dict:
        image = data.get(tab.extra_inputs["image"])
        if image is None:
            raise ValueError("init_image: upload, paste or drop an image first")
        return {"init_image": image, "denoising_strength": float(data[tab.extra_inputs["denoising_strength"]]),
                "resize_mode": int(data[tab.extra_inputs["resize_mode"]] or 0)}

    wire_generation(ui, tab, extra)
    return tab


def mask_from_editor(value) -> tuple[Image.Image | None, Image.Image | None]:
    """Gradio's ImageEditor value -> (image, mask): painted pixels in any layer are the mask."""
    if not value or value.get("background") is None:
        return None, None
    background = value["background"]
    image = background.convert("RGB")
    mask = Image.new("L", image.size, 0)
    for layer in value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != image.size:
            alpha = alpha.resize(image.size)
        mask = Image.fromarray(np.maximum(np.asarray(mask), np.asarray(alpha)))
    return image, mask.point(lambda v: 255 if v > 0 else 0)


def build_inpaint(ui) -> GenerationTab:
    tab = GenerationTab("inpaint")
    build_prompt_row(ui, tab)
    with gr.Row():
        with gr.Column():
            source = gr.Radio(["Paint mask", "Upload mask"], value="Paint mask", label="Mask source",
                              elem_id="inpaint_mask_source")
            tab.extra_inputs["mask_source"] = source
            tab.extra_inputs["editor"] = gr.ImageEditor(
                label="Image: paint over the area to repaint", type="pil", elem_id="inpaint_editor",
                sources=["upload", "clipboard"], image_mode="RGBA", height=400, layers=False,
                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=12),
                eraser=gr.Eraser(default_size=12), transforms=())
            with gr.Row(visible=False) as upload_row:
                tab.extra_inputs["upload_image"] = gr.Image(label="Image", type="pil", elem_id="inpaint_upload_image",
                                                            sources=["upload", "clipboard"], image_mode="RGB")
                tab.extra_inputs["upload_mask"] = gr.Image(label="Mask (white = repaint)", type="pil",
                                                           elem_id="inpaint_upload_mask", sources=["upload", "clipboard"])
            source.change(lambda s: (gr.update(visible=s == "Paint mask"), gr.update(visible=s == "Upload mask")),
                          source, [tab.extra_inputs["editor"], upload_row], queue=False, show_progress="hidden")
            with gr.Row():
                tab.extra_inputs["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur",
                                                          elem_id="inpaint_mask_blur")
                tab.extra_inputs["invert"] = gr.Radio(["Inpaint masked", "Inpaint not masked"], value="Inpaint masked",
                                                      type="index", label="Mask mode", elem_id="inpaint_mask_mode")
            tab.extra_inputs["fill"] = gr.Radio(list(INPAINTING_FILL.values()), value=INPAINTING_FILL[1], type="index",
                                                label="Masked content", elem_id="inpaint_inpainting_fill")
            with gr.Row():
                tab.extra_inputs["area"] = gr.Radio(["Whole picture", "Only masked"], value="Whole picture",
                                                    type="index", label="Inpaint area", elem_id="inpaint_full_res")
                tab.extra_inputs["padding"] = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                        elem_id="inpaint_full_res_padding")
            _image_controls(tab)
            build_sampling_controls(ui, tab)
        with gr.Column():
            build_results(ui, tab, ["img2img", "depth", "pnginfo"])

    def extra(data: dict) -> dict:
        x = tab.extra_inputs
        if data.get(x["mask_source"]) == "Upload mask":
            image, mask = data.get(x["upload_image"]), data.get(x["upload_mask"])
            if image is None or mask is None:
                raise ValueError("mask: upload both an image and a mask")
        else:
            image, mask = mask_from_editor(data.get(x["editor"]))
            if image is None:
                raise ValueError("init_image: upload, paste or drop an image into the editor first")
            if mask.getbbox() is None:
                raise ValueError("mask: paint over the area to repaint first")
        return {"init_image": image, "mask": mask, "mask_blur": int(data[x["mask_blur"]]),
                "inpainting_mask_invert": bool(data[x["invert"]]), "inpainting_fill": int(data[x["fill"]]),
                "inpaint_full_res": bool(data[x["area"]]), "inpaint_full_res_padding": int(data[x["padding"]]),
                "denoising_strength": float(data[x["denoising_strength"]]),
                "resize_mode": int(data[x["resize_mode"]] or 0)}

    wire_generation(ui, tab, extra)
    return tab
