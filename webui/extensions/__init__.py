"""Extensions: folders under ``extensions/`` with an ``extension.yaml`` and a module exposing
``setup(api)``. This package is their whole public surface:

- :class:`ExtensionAPI` (the ``api`` given to ``setup``): add tabs and scripts, register callbacks;
- :class:`Script`, :class:`ScriptArg`, :class:`ScriptContext`, :class:`ScriptUIContext`, :class:`TabContext`;
- the callback data (:class:`StepInfo`, :class:`DecodedImages`, :class:`ImageSave`, :class:`ModelInfo`);
- :class:`GenerationRequest` / :class:`GenerationResult` (build changed requests with ``with_changes``);
- infotext helpers: :func:`parse_infotext`, :func:`add_infotext_fields`.

Importing it is cheap (no torch, no Gradio), so extensions load fast in ``python app.py extensions``.
"""
from ..engine.infotext import parse as parse_infotext
from ..engine.request import GenerationRequest, GenerationResult, RequestError
from .api import API_VERSION, DecodedImages, ExtensionAPI, ImageSave, ModelInfo, StepInfo
from .callbacks import add_infotext_fields
from .loader import Extension, ExtensionError, ExtensionManager
from .scripts import Script, ScriptArg, ScriptCall, ScriptContext, ScriptUIContext, TabContext, script_mode

__all__ = ["API_VERSION", "DecodedImages", "Extension", "ExtensionAPI", "ExtensionError", "ExtensionManager",
           "GenerationRequest", "GenerationResult", "ImageSave", "ModelInfo", "RequestError", "Script", "ScriptArg",
           "ScriptCall", "ScriptContext", "ScriptUIContext", "StepInfo", "TabContext", "add_infotext_fields",
           "parse_infotext", "script_mode"]
