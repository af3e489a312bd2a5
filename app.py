"""Entry point: ``python app.py`` (web UI) or ``python app.py COMMAND`` (generate, models, samplers,
pnginfo). See ``python app.py --help``."""
import os
import sys

# Nothing here downloads: models load from local files and configs shipped in webui/configs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from webui.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
