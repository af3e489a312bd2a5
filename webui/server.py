"""The web UI server (Gradio tabs over the engine). Not built yet: see the README's roadmap."""
from __future__ import annotations

import logging

from .config import Settings

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    log.error("The web UI is not part of this version yet. Use the command line meanwhile:\n"
              "  python app.py generate --prompt 'a red circle' \n  python app.py --help")
    return 2
