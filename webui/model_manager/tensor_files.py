"""Read tensors from model files one at a time, without executing anything.

``.safetensors``: we parse the header ourselves (8-byte length, JSON table of name -> dtype, shape,
byte range) and read each tensor with one positioned read, so probing touches only the header and
loading never holds a second copy of the weights. ``.ckpt``/``.pt``/``.bin``: ``torch.load`` with
``weights_only=True`` (and ``mmap``), which refuses any pickle that would build anything but tensors
and plain containers; such files are refused with the file named.
"""
from __future__ import annotations

import json
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
           "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_ITEM_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
              "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_MAX_HEADER = 100 * 1024 * 1024


class ModelFileError(ValueError):
    """A model file that cannot be read safely; the message names the file and the reason."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


class SafetensorsFile:
    """Header-first access to a ``.safetensors`` file; tensors are read on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ModelFileError(f"{self.path.name}: not a safetensors file (only {size} bytes)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > min(_MAX_HEADER, size - 8):
                raise ModelFileError(f"{self.path.name}: not a safetensors file or truncated "
                                     f"(header claims {header_len} bytes, file has {size})")
            try:
                header = json.loads(f.read(header_len))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ModelFileError(f"{self.path.name}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise ModelFileError(f"{self.path.name}: corrupt safetensors header")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self._data_start = 8 + header_len
        self._entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        data_size = size - self._data_start
        for name, entry in header.items():
            try:
                dtype, shape, (begin, end) = entry["dtype"], tuple(int(d) for d in entry["shape"]), entry["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ModelFileError(f"{self.path.name}: corrupt safetensors header entry {name!r}") from None
            if dtype not in _DTYPES:
                raise ModelFileError(f"{self.path.name}: tensor {name!r} has unsupported dtype {dtype}")
            count = 1
            for d in shape:
                count *= d
            if end - begin != count * _ITEM_SIZE[dtype] or begin < 0:
                raise ModelFileError(f"{self.path.name}: corrupt safetensors header: tensor {name!r} "
                                     f"has {end - begin} bytes for shape {list(shape)}")
            if end > data_size:
                raise ModelFileError(f"{self.path.name}: file is truncated: tensor {name!r} ends at byte "
                                     f"{self._data_start + end}, file has {size}")
            self._entries[name] = (dtype, shape, begin, end)

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def info(self, key: str) -> TensorInfo:
        dtype, shape, _, _ = self._entries[key]
        return TensorInfo(_DTYPES[dtype], shape)

    def nbytes(self, key: str) -> int:
        _, _, begin, end = self._entries[key]
        return end - begin

    def read(self, key: str, scratch=None):
        """One tensor in its stored dtype, read with plain file reads (no mapping of the file).

        With ``scratch`` (a uint8 tensor of at least ``nbytes(key)``) the result is a view of it, valid
        until the next read into it: loading reuses one aligned buffer instead of allocating per
        tensor, and converting from an aligned buffer takes the vectorised path.
        """
        import torch

        dtype, shape, begin, end = self._entries[key]
        size = end - begin
        torch_dtype = getattr(torch, _DTYPES[dtype])
        if not size:
            return torch.empty(shape, dtype=torch_dtype)
        buffer = scratch[:size] if scratch is not None else torch.empty(size, dtype=torch.uint8)
        view = memoryview(buffer.numpy()).cast("B")
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self._data_start + begin)
            got = 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    raise ModelFileError(f"{self.path.name}: file is truncated while reading {key!r}")
                got += n
        return buffer.view(torch_dtype).reshape(shape)


class PickledFile:
    """A ``.ckpt``-style file loaded with ``weights_only=True``; tensors mapped, not copied."""

    def __init__(self, path: str | Path):
        import torch

        self.path = Path(path)
        state = load_pickle(self.path)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ModelFileError(f"{self.path.name}: no state dict inside (found {type(state).__name__})")
        self._tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        self.metadata: dict[str, str] = {}

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: str) -> bool:
        return key in self._tensors

    def info(self, key: str) -> TensorInfo:
        t = self._tensors[key]
        return TensorInfo(str(t.dtype).removeprefix("torch."), tuple(t.shape))

    def nbytes(self, key: str) -> int:
        t = self._tensors[key]
        return t.numel() * t.element_size()

    def read(self, key: str, scratch=None):
        return self._tensors[key]


def load_pickle(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only; anything else is refused
    with the file named, and never executed."""
    import pickle
    import zipfile

    import torch

    if path.stat().st_size == 0:
        raise ModelFileError(f"{path.name}: file is empty")
    try:
        mmap = zipfile.is_zipfile(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": we refuse or load, quietly
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        reason = str(e).split("\n")[0]
        if "Weights only load failed" in reason or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise ModelFileError(
                f"{path.name}: refused: this pickle needs more than tensors to load (it may run code); "
                f"only weights are loaded from pickled files. Convert it to .safetensors if you trust it. "
                f"Detail: {_unsafe_detail(str(e))}") from None
        raise ModelFileError(f"{path.name}: corrupt or truncated file ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path.name}: corrupt or truncated file ({str(e).splitlines()[0]})") from None


def _unsafe_detail(message: str) -> str:
    for line in message.splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip()[:200]
    return message.splitlines()[0][:200]


def open_tensor_file(path: str | Path) -> SafetensorsFile | PickledFile:
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return SafetensorsFile(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return PickledFile(path)
    raise ModelFileError(f"{path.name}: unknown model file type {path.suffix!r} "
                         f"(expected .safetensors, .ckpt, .pt or .bin)")


def iter_files(folder: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Model files under ``folder`` (recursively, sorted, hidden files skipped)."""
    if not folder.is_dir():
        return
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(suffixes):
                yield Path(root) / name
