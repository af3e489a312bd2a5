"""The Gradio front end: tabs that map widgets to a GenerationRequest and render results.

No torch and no generation logic here; everything goes through ``app.queue`` (the engine's single
worker) so UI and API requests never overlap on the model.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from ..engine import infotext
from . import depth, extensions, img2img, pnginfo, settings, tokens, txt2img
from .generation import GenerationTab

CSS = """
.token-counter { float: right; font-size: 0.8em; opacity: 0.7; }
.progress-bar { width: 100%; height: 10px; background: var(--block-background-fill); border-radius: 5px;
                overflow: hidden; border: 1px solid var(--border-color-primary); }
.progress-fill { height: 100%; background: var(--color-accent); transition: width 0.3s; }
.progress-text { font-size: 0.9em; margin: 4px 0; }
.extensions-table td, .extensions-table th { padding: 4px 8px; vertical-align: top; text-align: left; }
.error-message { color: #b91c1c; background: #fee2e2; border: 1px solid #fca5a5; padding: 8px; border-radius: 6px; }
"""


class WebUI:
    def __init__(self, app):
        from ..model_manager.loader import load_tokenizer

        self.app = app
        self.tokenizer = load_tokenizer("sd1")  # same BPE for SD 1.x and 2.x: counts and token views
        self.jobs: dict[str, Any] = {}  # session -> running job (for Interrupt / Skip)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="sdwebui-ui-"))
        self.tabs: dict[str, Any] = {}

    def model_choices(self) -> list[str]:
        return [e.name for e in self.app.models.list("checkpoint")]

    def vae_choices(self) -> list[str]:
        return ["Automatic", "None"] + [e.name for e in self.app.models.list("vae")]

    def embeddings(self) -> dict:
        """Textual-inversion embeddings that fit the chosen checkpoint (from its probe: no loading)."""
        from ..model_manager import ModelFileError, ModelNotFound

        try:
            name = self.current_model()
            info = self.app.models.probe(self.app.models.find(name)) if name else None
        except (ModelNotFound, ModelFileError, OSError):
            info = None
        return self.app.models.embeddings_for_width(info.context_dim)[0] if info else {}

    def current_model(self) -> str | None:
        chosen = self.app.options.sd_model_checkpoint
        if chosen:
            return chosen
        try:
            return self.app.models.default_checkpoint().name
        except ValueError:
            return None

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="sdwebui", analytics_enabled=False) as demo:
            with gr.Row(elem_id="quicksettings"):
                checkpoint = gr.Dropdown(self.model_choices(), value=self.current_model(), label="Stable Diffusion checkpoint",
                                         elem_id="setting_sd_model_checkpoint", scale=4)
                vae = gr.Dropdown(self.vae_choices(), value=self.app.options.sd_vae, label="SD VAE",
                                  elem_id="setting_sd_vae", scale=2)
                refresh = gr.Button("🔄", elem_id="refresh_sd_model_checkpoint", scale=0, min_width=40)
            model_note = gr.HTML(self._model_note(), elem_id="model_note")
            with gr.Tabs(elem_id="tabs") as tabs:
                with gr.Tab("txt2img", id="txt2img", elem_id="tab_txt2img"):
                    self.tabs["txt2img"] = txt2img.build(self)
                with gr.Tab("img2img", id="img2img", elem_id="tab_img2img"):
                    self.tabs["img2img"] = img2img.build_img2img(self)
                with gr.Tab("Inpaint", id="inpaint", elem_id="tab_inpaint"):
                    self.tabs["inpaint"] = img2img.build_inpaint(self)
                with gr.Tab("Depth", id="depth", elem_id="tab_depth"):
                    self.tabs["depth"] = depth.build(self)
                with gr.Tab("Tokens", id="tokens", elem_id="tab_tokens"):
                    self.tabs["tokens"] = tokens.build(self)
                with gr.Tab("PNG Info", id="pnginfo", elem_id="tab_pnginfo"):
                    self.tabs["pnginfo"] = pnginfo.build(self)
                extensions.build_extension_tabs(self)  # tabs added by extensions
                with gr.Tab("Settings", id="settings", elem_id="tab_settings"):
                    self.tabs["settings"] = settings.build(self)
                with gr.Tab("Extensions", id="extensions", elem_id="tab_extensions"):
                    self.tabs["extensions"] = extensions.build(self)
            self._wire_models(checkpoint, vae, refresh, model_note)
            self._wire_send_to(tabs, checkpoint)
        return demo

    def _model_note(self) -> str:
        from ..model_manager.manager import DEMO_CHECKPOINT

        current = self.current_model()
        if current and current == DEMO_CHECKPOINT.name:
            return ("<div class='progress-text'>Using the built-in demo model (coloured shapes, 64x64). Put SD 1.x/2.x "
                    "checkpoints in <code>models/Stable-diffusion/</code> and press 🔄.</div>")
        if current is None:
            return "<div class='error-message'>No checkpoint found in models/Stable-diffusion/.</div>"
        return ""

    def _wire_models(self, checkpoint, vae, refresh, note) -> None:
        store = self.app.options_store

        def choose_model(name):
            store.options.sd_model_checkpoint = name
            store.save()
            return self._model_note()

        def choose_vae(name):
            store.options.sd_vae = name or "Automatic"
            store.save()

        def do_refresh():
            return (gr.update(choices=self.model_choices(), value=self.current_model()),
                    gr.update(choices=self.vae_choices()), self._model_note())

        checkpoint.change(choose_model, checkpoint, note, queue=False, show_progress="hidden")
        vae.change(choose_vae, vae, None, queue=False, show_progress="hidden")
        refresh.click(do_refresh, None, [checkpoint, vae, note], queue=False)

    def _wire_send_to(self, tabs, checkpoint) -> None:
        generation_tabs = {k: v for k, v in self.tabs.items() if isinstance(v, GenerationTab)}

        def fields_updates(target: GenerationTab, fields: dict) -> dict:
            values = infotext.request_fields(fields)
            mapping = {target.prompt: "prompt", target.negative_prompt: "negative_prompt", target.steps: "steps",
                       target.sampler: "sampler", target.schedule: "schedule", target.cfg_scale: "cfg_scale",
                       target.seed: "seed", target.width: "width", target.height: "height",
                       target.subseed: "subseed", target.subseed_strength: "subseed_strength"}
            strength = target.extra_inputs.get("denoising_strength")
            if strength is not None:
                mapping[strength] = "denoising_strength"
            return {component: values[key] for component, key in mapping.items() if key in values}

        def image_component(target_name: str):
            if target_name == "inpaint":
                return self.tabs["inpaint"].extra_inputs["editor"]
            if target_name == "img2img":
                return self.tabs["img2img"].extra_inputs["image"]
            if target_name == "depth":
                return self.tabs["depth"].extra_inputs["image"]
            return self.tabs["pnginfo"]["image"]

        for source in generation_tabs.values():
            for target_name, button in source.send_buttons.items():
                target = generation_tabs.get(target_name)
                image_out = image_component(target_name)
                outputs = [tabs, image_out]
                if target is not None:
                    outputs += [target.prompt, target.negative_prompt, target.steps, target.sampler, target.schedule,
                                target.cfg_scale, target.seed, target.width, target.height, target.subseed,
                                target.subseed_strength]

                def send(results, _target=target, _name=target_name, _image=image_out):
                    paths = (results or {}).get("paths") or []
                    if not paths:
                        raise gr.Error("Generate an image first")
                    index = min((results or {}).get("selected") or 0, len(paths) - 1)
                    path = paths[index]
                    text = ((results or {}).get("infotexts") or [""])[index]
                    update: dict = {tabs: gr.Tabs(selected=_name)}
                    if _name == "pnginfo":
                        update[_image] = path
                    else:
                        with Image.open(path) as image:
                            picture = image.convert("RGB")
                        update[_image] = {"background": picture, "layers": [], "composite": picture} \
                            if _name == "inpaint" else picture
                    fields = infotext.parse(text)
                    if _target is not None:
                        update.update(fields_updates(_target, fields))
                    return update

                button.click(send, source.results, outputs, queue=False, show_progress="hidden")

        info = self.tabs["pnginfo"]
        for target_name in ("txt2img", "img2img"):
            target = generation_tabs[target_name]
            outputs = [tabs, checkpoint, target.prompt, target.negative_prompt, target.steps, target.sampler,
                       target.schedule, target.cfg_scale, target.seed, target.width, target.height, target.subseed,
                       target.subseed_strength]
            if target_name == "img2img":
                outputs += [target.extra_inputs["image"], target.extra_inputs["denoising_strength"]]

            def send_info(path, _target=target, _name=target_name):
                text, fields = pnginfo.read(path)
                if not fields:
                    raise gr.Error("Drop an image with generation parameters first")
                update: dict = {tabs: gr.Tabs(selected=_name)}
                update.update(fields_updates(_target, fields))
                model = self._installed_model(fields)
                if model:
                    update[checkpoint] = model
                if _name == "img2img" and path:
                    with Image.open(path) as image:
                        update[_target.extra_inputs["image"]] = image.convert("RGB")
                return update

            button = info["to_txt2img" if target_name == "txt2img" else "to_img2img"]
            button.click(send_info, info["image"], outputs, queue=False, show_progress="hidden")

    def _installed_model(self, fields: dict) -> str | None:
        """The installed checkpoint an infotext names (by hash first, then by name), if any."""
        from ..model_manager import ModelNotFound

        for key in ("Model", "Model hash"):
            if fields.get(key):
                try:
                    return self.app.models.find(fields[key]).name
                except ModelNotFound:
                    continue
        return None


def build_ui(app) -> tuple[gr.Blocks, WebUI]:
    ui = WebUI(app)
    return ui.build(), ui
