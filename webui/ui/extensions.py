"""Extensions tab: what is installed and its status (errors by name), enable/disable, install from git;
and the tabs extensions add. No extension code runs here except an extension tab's own ``build``."""
from __future__ import annotations

import html
import logging
import re

import gradio as gr

from ..extensions import ExtensionError, TabContext
from ..extensions.loader import install_refusal

log = logging.getLogger(__name__)


def table_html(manager) -> str:
    rows = []
    for e in manager.extensions:
        status = e.status if e.enabled or e.status == "error" else "disabled"
        error = f"<div class='error-message'>{html.escape(e.error)}</div>" if e.error else ""
        what = ", ".join([f"script: {html.escape(s.title)}" for s in e.scripts] +
                         [f"tab: {html.escape(t)}" for t, _ in e.tabs] +
                         [f"{html.escape(k)} callback" for k, v in sorted(e.callbacks.items()) if v])
        rows.append(f"<tr data-extension='{html.escape(e.name)}'><td><b>{html.escape(e.name)}</b><br>"
                    f"<small>{html.escape(e.description)}</small></td><td>{html.escape(e.version or '-')}</td>"
                    f"<td>{'yes' if e.enabled else 'no'}</td><td class='ext-status'>{html.escape(status)}{error}</td>"
                    f"<td><small>{what}</small></td></tr>")
    if not rows:
        return f"<p>No extensions in <code>{html.escape(str(manager.folder))}</code>.</p>"
    return ("<table class='extensions-table'><thead><tr><th>Extension</th><th>Version</th><th>Enabled</th>"
            "<th>Status</th><th>Adds</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def build(ui) -> dict:
    manager = ui.app.extensions
    gr.Markdown(f"Extensions live in `{manager.folder}`: one folder each with an `extension.yaml`. "
                "An extension that fails (import error, an exception in a callback) is turned off and its "
                "error is shown here; the rest keep working.")
    table = gr.HTML(table_html(manager), elem_id="extensions_table")
    with gr.Row():
        enabled = gr.CheckboxGroup([e.name for e in manager.extensions],
                                   value=[e.name for e in manager.extensions if e.enabled],
                                   label="Enabled extensions", elem_id="extensions_enabled", scale=4)
        with gr.Column(scale=1, min_width=160):
            apply = gr.Button("Apply", variant="primary", elem_id="extensions_apply")
            refresh = gr.Button("Refresh status", elem_id="extensions_refresh", size="sm")
    message = gr.HTML("", elem_id="extensions_message")
    refusal = install_refusal(ui.app.settings)
    with gr.Accordion("Install from URL", open=True, elem_id="extensions_install"):
        url = gr.Textbox(label="URL of the extension's git repository (or a local path to one)",
                         elem_id="extensions_install_url", interactive=refusal is None)
        folder = gr.Textbox(label="Folder name (optional; default: from the URL)",
                            elem_id="extensions_install_dirname", interactive=refusal is None)
        install = gr.Button("Install", elem_id="extensions_install_button", interactive=refusal is None)
        result = gr.HTML(f"<div class='error-message'>{html.escape(refusal)}</div>" if refusal else "",
                         elem_id="extensions_install_result")

    def checkbox_update():
        return gr.update(choices=[e.name for e in manager.extensions],
                         value=[e.name for e in manager.extensions if e.enabled])

    def do_apply(names):
        names = set(names or [])
        changed = []
        for extension in list(manager.extensions):
            wanted = extension.name in names
            if extension.enabled != wanted:
                try:
                    manager.set_enabled(extension.name, wanted)
                except ExtensionError as e:
                    return table_html(manager), checkbox_update(), f"<div class='error-message'>{html.escape(str(e))}</div>"
                changed.append(f"{extension.name} {'enabled' if wanted else 'disabled'}")
        if not changed:
            return table_html(manager), checkbox_update(), "<div class='progress-text'>Nothing changed.</div>"
        return (table_html(manager), checkbox_update(),
                f"<div class='progress-text'>Saved: {html.escape(', '.join(changed))}. Callbacks and scripts follow "
                f"now; tabs and script panels in this page change after a restart.</div>")

    def do_install(address, name):
        refused = install_refusal(ui.app.settings)
        if refused:
            return table_html(manager), checkbox_update(), f"<div class='error-message'>{html.escape(refused)}</div>"
        try:
            extension = manager.install(address, name)
        except ExtensionError as e:
            return table_html(manager), checkbox_update(), f"<div class='error-message'>{html.escape(str(e))}</div>"
        if extension.status == "error":
            note = f"<div class='error-message'>Installed {html.escape(extension.name)}, but it failed to load: " \
                   f"{html.escape(extension.error or '')}</div>"
        else:
            note = (f"<div class='progress-text'>Installed {html.escape(extension.name)} "
                    f"{html.escape(extension.version)} into {html.escape(str(extension.path))} ({extension.status}). "
                    f"Its callbacks and API scripts work now; restart for its tabs and script panels.</div>")
        return table_html(manager), checkbox_update(), note

    apply.click(do_apply, enabled, [table, enabled, message])
    refresh.click(lambda: (table_html(manager), checkbox_update()), None, [table, enabled], queue=False)
    install.click(do_install, [url, folder], [table, enabled, result])
    return {"table": table, "enabled": enabled, "apply": apply, "install": install, "url": url}


def build_extension_tabs(ui) -> None:
    """The tabs extensions registered, each built by its extension; a failing build shows its error there."""
    manager = ui.app.extensions
    for extension in manager.active():
        for index, (title, build_tab) in enumerate(extension.tabs):
            slug = re.sub(r"[^a-z0-9]+", "_", f"{extension.name}_{title}".lower()).strip("_")
            with gr.Tab(title, id=f"ext_{slug}_{index}", elem_id=f"tab_ext_{slug}"):
                context = TabContext(extension.name, lambda request: ui.app.queue.submit(request).wait(),
                                     ui.model_choices)
                try:
                    build_tab(context)
                except Exception as e:  # noqa: BLE001
                    manager.fail(extension, f"tab {title!r}", e)
                    gr.HTML(f"<div class='error-message'>Extension {html.escape(extension.name)}: this tab failed "
                            f"to build: {html.escape(type(e).__name__)}: {html.escape(str(e))}</div>")
