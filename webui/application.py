"""The one application object: settings, model manager, engine, outputs and the generation queue.
Everything that lives for the whole process hangs here; nothing else is global."""
from __future__ import annotations

import logging
from functools import cached_property

from .config import Settings
from .extensions.scripts import SCRIPT_KEY, make_script_context, script_mode

log = logging.getLogger(__name__)


class App:
    def __init__(self, settings: Settings):
        from .engine import Engine
        from .extensions import ExtensionManager
        from .model_manager import ModelManager
        from .options import OptionsStore
        from .outputs import OutputWriter

        self.settings = settings
        self.options_store = OptionsStore(settings.config_file)
        if settings.threads:
            import torch

            torch.set_num_threads(settings.threads)
        self.models = ModelManager(settings.paths, settings.cache_dir, device=settings.device,
                                   precision=settings.precision,
                                   attention="xformers" if settings.xformers else "sdpa",
                                   max_models=settings.max_models)
        self.outputs = OutputWriter(settings.outputs_dir)
        self.extensions = ExtensionManager(settings.extensions_dir, self.options.disabled_extensions,
                                           save_disabled=self._save_disabled_extensions)
        self.extensions.load_all()
        self.engine = Engine(self.models, self.outputs, hooks=self.extensions.callbacks)

    @property
    def options(self):
        return self.options_store.options

    @cached_property
    def queue(self):
        """The single worker that owns the device; UI and API submit jobs here."""
        from .engine import GenerationQueue

        return GenerationQueue(self._run_job)

    def _run_job(self, job):
        """A generation request, or a small model task (a callable taking the App), on the worker."""
        if callable(job.request):
            return job.request(self)
        if SCRIPT_KEY in (getattr(job.request, "extra", None) or {}):  # a script (X/Y/Z plot, ...) takes over the run
            context = make_script_context(self, job, script_mode(job.request.mode))
            return self.extensions.run_script(job.request, context)
        return self.engine.generate(job.request, job)

    def _save_disabled_extensions(self, names: list[str]) -> None:
        self.options.disabled_extensions = list(names)
        self.options_store.save()
