"""User preferences that change while the app runs (A1111's "options"), saved in ``config.yaml``.

Start-up flags live in :class:`webui.config.Settings` (frozen); these are what the Settings tab and
``/sdapi/v1/options`` read and write. Per-request choices never come from here implicitly: a tab
puts the current model, VAE and sampler into its request.
"""
from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SECTION = "options"


@dataclass
class Options:
    sd_model_checkpoint: str | None = None  # title of the model chosen in the UI; None = default
    sd_vae: str = "Automatic"
    save_images: bool = True
    samples_format: str = "png"
    live_previews_enable: bool = True
    show_progress_every_n_steps: int = 5
    live_preview_content: str = "Approx cheap"  # or "Full" (VAE decode)
    CLIP_stop_at_last_layers: int = 1
    default_sampler: str = "DPM++ 2M"
    default_schedule: str = "Automatic"
    default_steps: int = 20
    default_cfg_scale: float = 7.0
    default_width: int = 0  # 0 = the model's native size
    default_height: int = 0
    disabled_extensions: list[str] = field(default_factory=list)  # names from extension.yaml

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, values: dict[str, Any]) -> list[str]:
        """Apply known keys with type checks; returns the names of unknown keys (left untouched)."""
        known = {f.name: f for f in fields(self)}
        unknown = []
        for key, value in values.items():
            if key not in known:
                unknown.append(key)
                continue
            current = getattr(self, key)
            if isinstance(current, bool):
                value = bool(value)
            elif isinstance(current, int) and not isinstance(current, bool) and value is not None:
                value = int(value)
            elif isinstance(current, float) and value is not None:
                value = float(value)
            setattr(self, key, value)
        return unknown


class OptionsStore:
    """Options plus the file they persist to; writes are atomic and keep the file's other keys."""

    def __init__(self, path: Path):
        self.path = path
        self.options = Options()
        self._lock = threading.Lock()
        self.load()

    def load(self) -> None:
        import yaml

        if not self.path.is_file():
            return
        try:
            document = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            return
        section = document.get(SECTION) if isinstance(document, dict) else None
        if isinstance(section, dict):
            try:
                self.options.update(section)
            except (TypeError, ValueError):
                pass

    def save(self) -> None:
        import yaml

        with self._lock:
            document: dict[str, Any] = {}
            if self.path.is_file():
                try:
                    loaded = yaml.safe_load(self.path.read_text(encoding="utf-8"))
                    document = loaded if isinstance(loaded, dict) else {}
                except (OSError, yaml.YAMLError):
                    document = {}
            document[SECTION] = self.options.as_dict()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
            os.replace(tmp, self.path)
