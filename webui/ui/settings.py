"""Settings tab: options persisted to config.yaml."""
from __future__ import annotations

import gradio as gr

from ..engine.samplers import SCHEDULES, available_sampler_names


def build(ui):
    o = ui.app.options
    c = {
        "save_images": gr.Checkbox(o.save_images, label="Always save all generated images", elem_id="setting_save_images"),
        "samples_format": gr.Dropdown(["png", "jpg", "webp"], value=o.samples_format, label="File format for images",
                                      elem_id="setting_samples_format"),
        "live_previews_enable": gr.Checkbox(o.live_previews_enable, label="Show live previews",
                                            elem_id="setting_live_previews_enable"),
        "show_progress_every_n_steps": gr.Slider(1, 32, value=o.show_progress_every_n_steps, step=1,
                                                 label="Live preview every N sampling steps",
                                                 elem_id="setting_show_progress_every_n_steps"),
        "live_preview_content": gr.Radio(["Approx cheap", "Full"], value=o.live_preview_content,
                                         label="Live preview method (Full = VAE decode, slower)",
                                         elem_id="setting_live_preview_content"),
        "CLIP_stop_at_last_layers": gr.Slider(1, 12, value=o.CLIP_stop_at_last_layers, step=1, label="Clip skip",
                                              elem_id="setting_CLIP_stop_at_last_layers"),
        "default_sampler": gr.Dropdown(available_sampler_names(), value=o.default_sampler, label="Default sampler"),
        "default_schedule": gr.Dropdown([s.label for s in SCHEDULES.values()], value=o.default_schedule,
                                        label="Default schedule type"),
        "default_steps": gr.Slider(1, 150, value=o.default_steps, step=1, label="Default steps"),
        "default_cfg_scale": gr.Slider(0, 30, value=o.default_cfg_scale, step=0.5, label="Default CFG scale"),
        "default_width": gr.Slider(0, 2048, value=o.default_width, step=8, label="Default width (0 = native)"),
        "default_height": gr.Slider(0, 2048, value=o.default_height, step=8, label="Default height (0 = native)"),
    }
    apply = gr.Button("Apply settings", variant="primary", elem_id="settings_submit")
    result = gr.HTML("", elem_id="settings_result")
    names = list(c)

    def save(*values):
        ui.app.options.update(dict(zip(names, values)))
        ui.app.options_store.save()
        return f"Saved {len(names)} settings to {ui.app.options_store.path.name}. Defaults apply after a page reload."

    apply.click(save, [c[n] for n in names], result, queue=False)
    return c
