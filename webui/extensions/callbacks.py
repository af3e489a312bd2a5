"""The dispatcher the engine calls at its hook points (``Engine(hooks=...)``).

Every extension callback runs inside a guard: an exception (or a return value of the wrong kind)
turns that extension off for the rest of the run, is logged with its name and shows in the
Extensions tab; the generation goes on with the data as it was before that callback.
"""
from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from ..engine import infotext as infotext_module
from ..engine.request import GenerationRequest
from .api import DecodedImages, ImageSave, ModelInfo, StepInfo

if TYPE_CHECKING:
    from .loader import Extension, ExtensionManager

log = logging.getLogger("extensions")


class CallbackResultError(TypeError):
    """A callback returned something its hook point cannot use."""


class Callbacks:
    def __init__(self, manager: "ExtensionManager"):
        self.manager = manager
        self._last_model: weakref.ref | None = None  # the LoadedModel the previous generation got

    def _registered(self, kind: str) -> list[tuple["Extension", Any]]:
        return [(e, fn) for e in self.manager.active() for fn in e.callbacks.get(kind, ())]

    def has(self, kind: str) -> bool:
        return bool(self._registered(kind))

    def _call(self, extension: "Extension", kind: str, fn, *args: Any, check=None) -> Any:
        if not extension.active:  # turned off by an earlier failure in this same call chain
            return None
        try:
            value = fn(*args)
            if check is not None and value is not None:
                check(value)
            return value
        except Exception as e:  # noqa: BLE001 (any failure of an extension is isolated and reported)
            self.manager.fail(extension, f"{kind} callback {getattr(fn, '__name__', '?')}", e)
            return None

    # ---- hook points ----------------------------------------------------------------------
    def before_request(self, request: GenerationRequest) -> GenerationRequest:
        """Prompt-syntax hooks rewrite both prompts, then request callbacks may return a changed copy."""
        for extension, fn in self._registered("prompt_syntax"):
            def rewrite(req: GenerationRequest, _fn=fn) -> GenerationRequest:
                prompt, negative = _fn(req.prompt), _fn(req.negative_prompt)
                if not isinstance(prompt, str) or not isinstance(negative, str):
                    raise CallbackResultError("a prompt syntax hook must return text")
                return req.with_changes(prompt=prompt, negative_prompt=negative).validated()

            changed = self._call(extension, "prompt syntax", rewrite, request)
            request = changed if changed is not None else request
        for extension, fn in self._registered("before_request"):
            def apply(req: GenerationRequest, _fn=fn) -> GenerationRequest | None:
                value = _fn(req)
                if value is None:
                    return None
                if not isinstance(value, GenerationRequest):
                    raise CallbackResultError(f"before_request must return a GenerationRequest or None, "
                                              f"got {type(value).__name__}")
                return value.validated()  # an invalid change is the extension's error, not the user's

            changed = self._call(extension, "before_request", apply, request)
            request = changed if changed is not None else request
        return request

    def model_loaded(self, loaded: Any) -> None:
        if self._last_model is not None and self._last_model() is loaded:
            return
        try:
            self._last_model = weakref.ref(loaded)
        except TypeError:  # not weak-referenceable: fire every time rather than miss a switch
            self._last_model = None
        callbacks = self._registered("model_loaded")
        if not callbacks:
            return
        info = loaded.info
        model = ModelInfo(title=loaded.title, name=loaded.entry.name, short_hash=loaded.short_hash,
                          family=info.family, variant=info.variant, prediction=info.prediction,
                          path=loaded.entry.path, components=loaded.components)
        for extension, fn in callbacks:
            self._call(extension, "model_loaded", fn, model)

    def step(self, request: GenerationRequest, step: int, total: int, timestep: Any, latents: Any,
             batch_index: int, seeds: list[int]) -> bool:
        """True when a callback asked to interrupt the job."""
        callbacks = self._registered("step")
        if not callbacks:
            return False
        info = StepInfo(request=request, step=step, total=total, timestep=float(timestep),
                        latents=latents.detach().clone(), batch_index=batch_index, seeds=tuple(seeds))
        interrupt = False
        for extension, fn in callbacks:
            value = self._call(extension, "step", fn, info)
            if value is True or (isinstance(value, str) and value.lower() == "interrupt"):
                log.info("extension %s asked to interrupt at step %d/%d", extension.name, step, total)
                interrupt = True
        return interrupt

    def images_decoded(self, request: GenerationRequest, images: list, seeds: list[int], batch_index: int) -> list:
        for extension, fn in self._registered("images_decoded"):
            data = DecodedImages(request=request, images=tuple(images), seeds=tuple(seeds), batch_index=batch_index)

            def check(value, _count=len(images)):
                if not isinstance(value, (list, tuple)) or len(value) != _count or \
                        not all(hasattr(v, "size") and hasattr(v, "convert") for v in value):
                    raise CallbackResultError(f"images_decoded must return None or a list of {_count} PIL images")

            changed = self._call(extension, "images_decoded", fn, data, check=check)
            if changed is not None:
                images = list(changed)
        return images

    def before_save(self, request: GenerationRequest, image: Any, seed: int, text: str, will_save: bool) -> str:
        """The infotext with the fields callbacks added (existing fields are never replaced)."""
        for extension, fn in self._registered("before_save"):
            data = ImageSave(request=request, image=image, seed=seed, infotext=text, will_save=will_save)

            def check(value):
                if not isinstance(value, dict) or not all(isinstance(k, str) and k.strip() for k in value):
                    raise CallbackResultError("before_save must return None or a dict of infotext fields")

            fields = self._call(extension, "before_save", fn, data, check=check)
            if fields:
                text = add_infotext_fields(text, fields)
        return text


def add_infotext_fields(text: str, fields: dict[str, Any]) -> str:
    """Append ``Key: value`` pairs to an infotext's parameter line (quoted as A1111 does); keys that
    are already there keep their value."""
    present = infotext_module.parse(text)
    pairs = [(k.strip().replace(":", ""), v) for k, v in fields.items()
             if v is not None and k.strip().replace(":", "") not in present]
    if not pairs:
        return text
    addition = ", ".join(f"{k}: {infotext_module.quote(v)}" for k, v in pairs)
    head, _, last = text.rpartition("\n")
    if len(infotext_module._PARAM.findall(last)) < 3:  # no parameter line yet
        return f"{text}\n{addition}"
    return f"{head}\n{last}, {addition}" if head else f"{last}, {addition}"
