"""Textual-inversion embeddings: learned token vectors used by writing the file's name in a prompt.

Formats: A1111 ``.pt`` (``string_to_param``), diffusers ``.bin`` (``{"<token>": tensor}``) and
``.safetensors`` (``emb_params`` or a single tensor). An embedding made for another text-encoder
width (768 = SD 1.x, 1024 = SD 2.x) is skipped with the reason, as is an unreadable file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tensor_files import ModelFileError, SafetensorsFile, load_pickle


@dataclass(frozen=True)
class Embedding:
    name: str  # the word that triggers it in a prompt: the file name without extension
    vectors: Any  # float tensor [n, width]
    short_hash: str  # first 12 hex of the file's sha256, as A1111's "TI hashes"

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])


def read_embedding_vectors(path: Path):
    """The [n, width] vectors of one embedding file."""
    import torch

    if path.suffix.lower() == ".safetensors":
        tensors = SafetensorsFile(path)
        keys = tensors.keys()
        key = "emb_params" if "emb_params" in keys else (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ModelFileError(f"{path.name}: not a textual-inversion embedding (keys: {', '.join(keys[:4])}; "
                                 f"SDXL embeddings with clip_l/clip_g are not supported)")
        vectors = tensors.read(key)
    else:
        data = load_pickle(path)
        if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
            vectors = next(iter(data["string_to_param"].values()), None)
        elif isinstance(data, dict) and isinstance(data.get("emb_params"), torch.Tensor):
            vectors = data["emb_params"]
        elif isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), torch.Tensor):
            vectors = next(iter(data.values()))  # diffusers: {"<token>": tensor}
        elif isinstance(data, torch.Tensor):
            vectors = data
        else:
            vectors = None
        if not isinstance(vectors, torch.Tensor):
            raise ModelFileError(f"{path.name}: not a textual-inversion embedding")
    vectors = vectors.detach().float()
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[0] > 75:
        raise ModelFileError(f"{path.name}: embedding has shape {list(vectors.shape)}, expected [vectors, width]")
    return vectors.contiguous()


class EmbeddingLibrary:
    """Embeddings from the embeddings folder, read once per file version."""

    def __init__(self):
        self._cache: dict[tuple[str, float], Embedding | str] = {}

    def for_width(self, entries, width: int, hashes) -> tuple[dict[str, Embedding], dict[str, str]]:
        """(usable by name, skipped name -> reason) for a text encoder of ``width``."""
        usable: dict[str, Embedding] = {}
        skipped: dict[str, str] = {}
        for entry in entries:
            name = Path(entry.name).stem
            key = (str(entry.path.resolve()), entry.path.stat().st_mtime)
            if key not in self._cache:
                try:
                    vectors = read_embedding_vectors(entry.path)
                    self._cache[key] = Embedding(name, vectors, hashes.sha256(entry.path)[:12])
                except (ModelFileError, OSError) as e:
                    self._cache[key] = str(e)
            found = self._cache[key]
            if isinstance(found, str):
                skipped[name] = found
            elif found.width != width:
                skipped[name] = (f"made for a {found.width}-wide text encoder "
                                 f"({'SD 2.x' if found.width == 1024 else 'SD 1.x' if found.width == 768 else 'another model'}); "
                                 f"this model's is {width}")
            else:
                usable[name] = found
        return usable, skipped
