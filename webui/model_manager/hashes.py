"""SHA-256 of model files, as A1111 shows them (first 10 hex digits), computed once per file version.

The cache is keyed by absolute path and remembers size and modification time, so a replaced file
is hashed again and an unchanged one never is.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path


class HashCache:
    def __init__(self, cache_file: Path):
        self.cache_file = cache_file
        self._lock = threading.Lock()
        self._entries: dict[str, dict] | None = None

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            try:
                self._entries = json.loads(self.cache_file.read_text(encoding="utf-8"))
                if not isinstance(self._entries, dict):
                    self._entries = {}
            except (OSError, ValueError):
                self._entries = {}
        return self._entries

    def sha256(self, path: Path) -> str:
        path = path.resolve()
        stat = path.stat()
        key = str(path)
        with self._lock:
            entry = self._load().get(key)
            if entry and entry.get("size") == stat.st_size and entry.get("mtime") == stat.st_mtime:
                return entry["sha256"]
        digest = file_sha256(path)
        with self._lock:
            self._load()[key] = {"size": stat.st_size, "mtime": stat.st_mtime, "sha256": digest}
            self._save()
        return digest

    def short(self, path: Path) -> str:
        return self.sha256(path)[:10]

    def _save(self) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(f".{self.cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._entries, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.cache_file)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()



def hashed_file(path: Path) -> Path:
    """The file whose hash names a model: the file itself, a diffusers folder's UNet weights, or a
    transformers folder's weights (depth estimators)."""
    if path.is_dir():
        for candidate in sorted((path / "unet").glob("diffusion_pytorch_model*")):
            return candidate
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return path / name
        return path / "model_index.json"
    return path
