"""The Script dropdown of txt2img / img2img / Inpaint: one panel of controls per script (built by the
script's own ``ui``), shown when chosen; on Generate the chosen script and its control values go into
the request as a ``ScriptCall``, run on the worker like any generation."""
from __future__ import annotations

import html
import logging
from typing import Any

import gradio as gr

from ..extensions.scripts import SCRIPT_KEY, ScriptUIContext

log = logging.getLogger(__name__)
NONE = "None"
TAB_MODES = {"txt2img": "txt2img", "img2img": "img2img", "inpaint": "img2img"}


def build_script_controls(ui, tab) -> None:
    """The dropdown and the panels, for the tabs scripts are offered in; nothing when no script is."""
    mode = TAB_MODES.get(tab.name)
    if mode is None:
        return
    scripts = ui.app.extensions.scripts(mode)
    if not scripts:
        return
    dropdown = gr.Dropdown([NONE] + [s.title for _, s in scripts], value=NONE, label="Script",
                           elem_id=f"{tab.name}_script")
    panels = []
    for extension, script in scripts:
        with gr.Column(visible=False, variant="panel", elem_id=f"{tab.name}_script_{script.slug}") as panel:
            ctx = ScriptUIContext(tab.name, mode, script, checkpoints=ui.model_choices)
            try:
                controls = list(script.ui(ctx) or [])
            except Exception as e:  # noqa: BLE001 (the extension's bug: reported, the page still builds)
                ui.app.extensions.fail(extension, f"script {script.title!r} ui", e)
                gr.HTML(f"<div class='error-message'>{html.escape(extension.name)}: the controls of "
                        f"{html.escape(script.title)} failed to build: {html.escape(str(e))}</div>")
                controls = None
        panels.append(panel)
        if controls is not None:
            tab.scripts[script.title] = controls
            for i, control in enumerate(controls):
                tab.extra_inputs[f"script:{script.title}:{i}"] = control
    tab.extra_inputs["script"] = dropdown
    titles = [s.title for _, s in scripts]

    def show(name):
        updates = [gr.update(visible=name == t) for t in titles]
        return updates[0] if len(updates) == 1 else updates  # one output takes the value itself

    dropdown.change(show, dropdown, panels, queue=False, show_progress="hidden")


def script_fields(ui, tab, data: dict) -> dict[str, Any]:
    """Request fields for the chosen script (``extra={"script": ScriptCall}``), or none."""
    dropdown = tab.extra_inputs.get("script")
    name = data.get(dropdown) if dropdown is not None else None
    if not name or name == NONE:
        return {}
    controls = tab.scripts.get(name)
    if controls is None:
        raise ValueError(f"script_name: the controls of {name!r} failed to build (see the Extensions tab)")
    call = ui.app.extensions.script_call(name, TAB_MODES[tab.name], [data.get(c) for c in controls])
    return {"extra": {SCRIPT_KEY: call}}
