"""Serve the web UI: build the App and the Gradio Blocks, launch, print where it is."""
from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path

from .config import Settings

log = logging.getLogger(__name__)
DEFAULT_PORT = 7860


def parse_auth(text: str | None, path: Path | None) -> list[tuple[str, str]]:
    """``user:pass,user2:pass2`` and/or a file of the same (commas or new lines)."""
    entries: list[str] = []
    if text:
        entries += text.split(",")
    if path:
        entries += path.read_text(encoding="utf-8").replace("\n", ",").split(",")
    pairs = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        if ":" not in entry:
            raise SystemExit(f"error: --gradio-auth entry {entry!r} is not user:password")
        user, password = entry.split(":", 1)
        pairs.append((user, password))
    return pairs


def serve(settings: Settings, block: bool = True):
    """Start the UI. Returns (demo, local_url) when ``block`` is False (tests), else runs until stopped."""
    import gradio as gr  # noqa: F401  (imported here: ~5 s, only when serving)

    from .application import App
    from .model_manager.manager import DEMO_CHECKPOINT, DEMO_FILES
    from .ui import CSS, build_ui

    started = time.perf_counter()
    app = App(settings)
    checkpoints = app.models.list("checkpoint")
    if not checkpoints:
        log.warning("no checkpoints found in %s", settings.paths.checkpoints)
    elif all(e.path.resolve() in {p.resolve() for p in DEMO_FILES} for e in checkpoints):
        log.info("no checkpoints of your own in %s: using the built-in demo model %s",
                 settings.paths.checkpoints, DEMO_CHECKPOINT.name)
    api_auth = parse_auth(settings.api_auth, None)
    if settings.nowebui:
        return serve_api_only(app, settings, api_auth, started, block)
    auth = parse_auth(settings.gradio_auth, settings.gradio_auth_path)
    if (settings.listen or settings.share) and not auth:
        log.warning("WARNING: the UI is exposed (%s) without --gradio-auth: anyone who can reach it can use it",
                    "--share" if settings.share else "--listen")
    demo, ui = build_ui(app)
    demo.queue(default_concurrency_limit=None)
    port = settings.port or DEFAULT_PORT
    gradio_output = io.StringIO()
    # Gradio prints a long download guide when the share tunnel cannot be made; we say it in one line.
    with contextlib.redirect_stdout(gradio_output):
        server_app, local_url, share_url = demo.launch(
            server_name="0.0.0.0" if settings.listen else "127.0.0.1", server_port=port, share=settings.share,
            auth=auth or None, prevent_thread_lock=True, quiet=True, show_error=True, css=CSS,
            allowed_paths=[str(settings.outputs_dir.resolve()), str(ui.temp_dir)], footer_links=[])
    if settings.api:
        from .api import install_api

        install_api(server_app, app, api_auth)
        log.info("API: %s/sdapi/v1", local_url.rstrip("/"))
    log.info("Running on local URL:  http://%s:%d (ready in %.1f s)",
             "0.0.0.0" if settings.listen else "127.0.0.1", port, time.perf_counter() - started)
    if settings.share:
        if share_url:
            log.info("Running on public URL: %s", share_url)
        else:
            log.error("--share: could not create a public share link (no internet connection?); "
                      "the UI keeps running locally at %s", local_url)
    if not block:
        return demo, local_url
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


def serve_api_only(app, settings: Settings, auth, started: float, block: bool):
    """``--nowebui``: the A1111 API alone (FastAPI + uvicorn), port 7861 by default as in A1111."""
    import threading

    import uvicorn
    from fastapi import FastAPI

    from .api import install_api

    api = FastAPI(title="sdwebui API", version="1")
    install_api(api, app, auth)
    host = "0.0.0.0" if settings.listen else "127.0.0.1"
    port = settings.port or 7861
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    log.info("API running on http://%s:%d/sdapi/v1 (docs at /docs; ready in %.1f s)", host, port,
             time.perf_counter() - started)
    if not block:
        return server, f"http://{host}:{port}"
    try:
        thread.join()
    except KeyboardInterrupt:
        server.should_exit = True
    return 0
