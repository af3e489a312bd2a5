"""What an extension sees: the ``api`` object its ``setup(api)`` receives, and the data its callbacks get.

Registration only, no internals: an extension adds tabs and scripts and registers callbacks. Callbacks
receive immutable data and *return* their changes (a new request, new images, extra infotext fields,
a request to interrupt); they never reach into the engine. ``API_VERSION`` goes up only when something
here changes in a way that breaks existing extensions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..engine.request import GenerationRequest

if TYPE_CHECKING:
    from .loader import Extension
    from .scripts import Script

API_VERSION = 1
CALLBACK_KINDS = ("before_request", "step", "images_decoded", "before_save", "model_loaded", "prompt_syntax")


@dataclass(frozen=True)
class StepInfo:
    """One finished denoising step. ``latents`` is a copy: reading it is fine, changing it changes nothing."""

    request: GenerationRequest
    step: int  # 1-based, of ``total`` steps that run (img2img runs fewer than request.steps)
    total: int
    timestep: float
    latents: Any  # torch tensor [batch, channels, h/8, w/8]
    batch_index: int  # which batch of the request's n_iter
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class DecodedImages:
    """One batch straight after the VAE decode (before inpainting's paste-back, before infotext and saving)."""

    request: GenerationRequest
    images: tuple[Any, ...]  # PIL images; return a list of the same length to replace them
    seeds: tuple[int, ...]
    batch_index: int


@dataclass(frozen=True)
class ImageSave:
    """One finished image about to get its infotext and be saved (``will_save`` False: returned only)."""

    request: GenerationRequest
    image: Any  # PIL image
    seed: int
    infotext: str
    will_save: bool


@dataclass(frozen=True)
class ModelInfo:
    """The checkpoint a generation got, when it differs from the previous one (first load or a switch)."""

    title: str  # name.safetensors [hash]
    name: str
    short_hash: str
    family: str  # sd1, sd2
    variant: str  # normal, inpaint, depth
    prediction: str  # epsilon, v_prediction
    path: Path
    components: Any  # the diffusers modules (unet, vae, text_encoder, ...): read them, never change them


class ExtensionAPI:
    """Handed to one extension's ``setup(api)``; everything it registers is recorded under its name.

    Callback signatures (each may return ``None`` for "no change"):

    - ``on_before_request(fn(request) -> GenerationRequest | None)``: return ``request.with_changes(...)``
    - ``on_step(fn(StepInfo) -> bool | str | None)``: return ``True`` or ``"interrupt"`` to stop the job
    - ``on_images_decoded(fn(DecodedImages) -> list[PIL.Image] | None)``: replacement images, same count
    - ``on_before_save(fn(ImageSave) -> dict[str, Any] | None)``: extra infotext fields for that image
    - ``on_model_loaded(fn(ModelInfo) -> None)``
    - ``add_prompt_syntax(fn(text) -> str)``: rewrites the prompt and the negative prompt before anything
      else reads them (what wildcard-style extensions do); the result is what the infotext records
    """

    version = API_VERSION

    def __init__(self, extension: "Extension"):
        self._extension = extension
        self.name = extension.name
        self.path = extension.path  # the extension's folder, for its own data files
        self.log = logging.getLogger(f"extensions.{extension.name}")

    # ---- UI and scripts -------------------------------------------------------------------
    def add_tab(self, title: str, build: Callable[[Any], None]) -> None:
        """A tab in the web UI. ``build(ctx)`` runs inside ``gr.Tab(title)`` and creates Gradio
        components; ``ctx`` is a :class:`webui.extensions.TabContext` (run generations, list models)."""
        if not callable(build):
            raise TypeError("add_tab: build must be callable")
        self._extension.tabs.append((str(title), build))

    def add_script(self, script: "Script") -> None:
        """A script for the Script dropdown of txt2img/img2img and the API's ``script_name``."""
        from .scripts import Script

        if not isinstance(script, Script):
            raise TypeError("add_script: expected an instance of webui.extensions.Script")
        if not script.title:
            raise ValueError("add_script: the script needs a title")
        self._extension.scripts.append(script)

    # ---- callbacks ------------------------------------------------------------------------
    def _add(self, kind: str, fn: Callable) -> Callable:
        if not callable(fn):
            raise TypeError(f"{kind}: expected a function")
        self._extension.callbacks.setdefault(kind, []).append(fn)
        return fn  # usable as a decorator

    def on_before_request(self, fn: Callable[[GenerationRequest], GenerationRequest | None]) -> Callable:
        return self._add("before_request", fn)

    def on_step(self, fn: Callable[[StepInfo], Any]) -> Callable:
        return self._add("step", fn)

    def on_images_decoded(self, fn: Callable[[DecodedImages], Any]) -> Callable:
        return self._add("images_decoded", fn)

    def on_before_save(self, fn: Callable[[ImageSave], dict[str, Any] | None]) -> Callable:
        return self._add("before_save", fn)

    def on_model_loaded(self, fn: Callable[[ModelInfo], None]) -> Callable:
        return self._add("model_loaded", fn)

    def add_prompt_syntax(self, fn: Callable[[str], str]) -> Callable:
        return self._add("prompt_syntax", fn)

    # ---- read-only facts ------------------------------------------------------------------
    @staticmethod
    def samplers() -> list[str]:
        """Sampler names a request accepts."""
        from ..engine.samplers import available_sampler_names

        return available_sampler_names()

    @staticmethod
    def schedule_types() -> list[str]:
        from ..engine.samplers import SCHEDULES

        return [s.label for s in SCHEDULES.values()]
