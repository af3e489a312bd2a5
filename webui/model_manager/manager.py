"""The model manager: scan the model folders, probe and hash what is there, load and cache models.

Names come from the scan: a request names a model by its title (``name.safetensors [hash]``), its
name (path relative to its folder, with or without extension) or its short hash, and only files
found by the scan can be opened, so ``../`` tricks have nothing to reach.
"""
from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .hashes import HashCache, hashed_file
from .embeddings import Embedding, EmbeddingLibrary
from .lora import LoraFile, LoraPatcher, read_lora
from .probe import CheckpointInfo, derive_configs, probe_tensors
from .tensor_files import SAFETENSORS_SUFFIXES, ModelFileError, iter_files, open_tensor_file

log = logging.getLogger(__name__)
Kind = Literal["checkpoint", "vae", "lora", "embedding", "depth"]
_SHIPPED = Path(__file__).resolve().parents[2] / "models"
DEMO_CHECKPOINT = _SHIPPED / "Stable-diffusion" / "demo-shapes.safetensors"
DEMO_DEPTH_CHECKPOINT = _SHIPPED / "Stable-diffusion" / "demo-shapes-depth.safetensors"
DEMO_DEPTH_ESTIMATOR = _SHIPPED / "depth" / "demo-dpt"
DEMO_FILES = (DEMO_CHECKPOINT, DEMO_DEPTH_CHECKPOINT, DEMO_DEPTH_ESTIMATOR)
NO_DEPTH_MODEL = ("no depth checkpoint installed: put a depth model with a 5-channel UNet (Stable Diffusion 2's "
                  "512-depth-ema.safetensors) in {folder}")
NO_DEPTH_ESTIMATOR = ("no depth estimator installed: put a DPT model folder (config.json + model.safetensors, e.g. "
                      "Intel/dpt-hybrid-midas or Intel/dpt-large) in {folder}, use a depth checkpoint that carries "
                      "its own MiDaS (SD 2's 512-depth-ema), or upload a depth map")
EMBEDDED_ESTIMATOR = "{checkpoint} [embedded MiDaS]"  # the name of a depth checkpoint's own estimator
MODEL_SUFFIXES = SAFETENSORS_SUFFIXES + (".ckpt",)


class ModelNotFound(ValueError):
    """A model name that matches no scanned file; the message lists what exists."""


@dataclass(frozen=True)
class ModelPaths:
    checkpoints: Path
    vae: Path
    lora: Path
    embeddings: Path
    depth: Path


@dataclass(frozen=True)
class ModelEntry:
    name: str  # path relative to its folder, with extension: what A1111 shows
    path: Path
    kind: Kind
    embedded: bool = False  # a depth estimator inside the checkpoint file ``path``

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if not (self.path.is_dir() or self.embedded) else self.name


@dataclass
class LoadedModel:
    entry: ModelEntry
    info: CheckpointInfo
    hash_result: Future  # the short hash, computed in the background while the first image renders
    components: Any  # loader.Components
    own_vae: Any
    vae_name: str | None = None  # None: the checkpoint's own VAE
    extra: dict[str, Any] = field(default_factory=dict)
    loras: LoraPatcher = field(default_factory=LoraPatcher)

    @property
    def short_hash(self) -> str:
        return self.hash_result.result()

    @property
    def title(self) -> str:
        return f"{self.entry.name} [{self.short_hash}]"


class ModelManager:
    def __init__(self, paths: ModelPaths, cache_dir: Path, device: str = "auto", precision: str = "auto",
                 attention: str = "sdpa", max_models: int = 1, include_demo: bool = True):
        self.paths = paths
        self.hashes = HashCache(cache_dir / "hashes.json")
        self.device_name, self.precision = device, precision
        self.attention = attention
        self.max_models = max(1, max_models)
        self.include_demo = include_demo
        self._probes: dict[tuple[str, int, float], CheckpointInfo] = {}
        self._resident: OrderedDict[Path, LoadedModel] = OrderedDict()
        self._lora_files: dict[tuple[str, float], LoraFile] = {}
        self._embeddings = EmbeddingLibrary()
        self._depth_estimator = None  # the one resident DepthEstimator
        self._lock = threading.RLock()

    # ---- scanning -------------------------------------------------------------------------
    def list(self, kind: Kind) -> list[ModelEntry]:
        if kind == "checkpoint":
            return self._checkpoints()
        folder, suffixes = {
            "vae": (self.paths.vae, MODEL_SUFFIXES + (".pt",)),
            "lora": (self.paths.lora, SAFETENSORS_SUFFIXES + (".pt", ".ckpt")),
            "embedding": (self.paths.embeddings, SAFETENSORS_SUFFIXES + (".pt", ".bin")),
            "depth": (self.paths.depth, SAFETENSORS_SUFFIXES + (".bin", ".pt")),
        }[kind]
        entries = [ModelEntry(_relative(p, folder), p, kind) for p in iter_files(folder, suffixes)]
        if kind == "depth":  # transformers folders (config.json + weights)
            entries = [e for e in entries if e.path.parent == folder]
            if folder.is_dir():
                entries += [ModelEntry(c.parent.name, c.parent, kind) for c in sorted(folder.glob("*/config.json"))]
            entries += [ModelEntry(EMBEDDED_ESTIMATOR.format(checkpoint=c.name), c.path, kind, embedded=True)
                        for c in self.depth_checkpoints() if self.probe(c).depth_estimator]
            if self.include_demo:
                entries += self._demo_entries([DEMO_DEPTH_ESTIMATOR], entries, kind)
        return entries

    @staticmethod
    def _demo_entries(demo_paths, entries, kind: Kind) -> list[ModelEntry]:
        """The shipped demo files, listed after the user's own unless already found there."""
        have = {e.path.resolve() for e in entries}
        return [ModelEntry(p.name, p, kind) for p in demo_paths
                if (p.is_file() or (p / "config.json").is_file()) and p.resolve() not in have]

    def _checkpoints(self) -> list[ModelEntry]:
        folder = self.paths.checkpoints
        pipelines = sorted(i.parent for i in folder.rglob("model_index.json")) if folder.is_dir() else []
        entries = [ModelEntry(_relative(p, folder), p, "checkpoint") for p in iter_files(folder, MODEL_SUFFIXES)
                   if not any(pipeline in p.parents for pipeline in pipelines)]
        entries += [ModelEntry(_relative(p, folder), p, "checkpoint") for p in pipelines]
        if self.include_demo:
            entries += self._demo_entries([DEMO_CHECKPOINT, DEMO_DEPTH_CHECKPOINT], entries, "checkpoint")
        return entries

    def all_models(self) -> list[ModelEntry]:
        return [e for kind in ("checkpoint", "vae", "lora", "embedding", "depth") for e in self.list(kind)]

    def short_hash(self, entry: ModelEntry) -> str:
        return self.hashes.short(hashed_file(entry.path))

    def probe(self, entry: ModelEntry) -> CheckpointInfo:
        stat = entry.path.stat()
        key = (str(entry.path.resolve()), stat.st_size, stat.st_mtime)
        if key not in self._probes:
            if entry.path.is_dir():
                self._probes[key] = _probe_diffusers_folder(entry.path)
            else:
                self._probes[key] = probe_tensors(open_tensor_file(entry.path), entry.path)
        return self._probes[key]

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        """What ``python app.py models`` shows for one file; unreadable files say why."""
        record: dict[str, Any] = {"name": entry.name, "path": str(entry.path), "kind": entry.kind}
        try:
            record["hash"] = self.short_hash(entry)
            if entry.kind == "checkpoint":
                info = self.probe(entry)
                record.update(family=info.family, variant=info.variant, prediction=info.prediction,
                              native_size=info.native_size, title=f"{entry.name} [{record['hash']}]")
                if not info.supported:
                    record["error"] = f"{info.family} checkpoints are not supported yet" if info.family == "sdxl" \
                        else "not a recognised Stable Diffusion checkpoint"
            elif entry.embedded:
                from .midas import PREFIX, check_midas

                tensors = open_tensor_file(entry.path)
                config = check_midas({k: tensors.info(k).shape for k in tensors.keys() if k.startswith(PREFIX)})
                record.update(architecture="dpt", hybrid=True, image_size=config.image_size,
                              embedded_in=entry.path.name)
            elif entry.kind == "depth" and entry.path.is_dir():
                import json

                config = json.loads((entry.path / "config.json").read_text())
                record.update(architecture=config.get("model_type"), hybrid=bool(config.get("is_hybrid")),
                              image_size=config.get("image_size"))
            elif entry.kind == "embedding":
                from .embeddings import read_embedding_vectors

                vectors = read_embedding_vectors(entry.path)
                record.update(vectors=int(vectors.shape[0]), width=int(vectors.shape[1]))
        except (ModelFileError, OSError) as e:
            record["error"] = str(e)
        return record

    # ---- name resolution ------------------------------------------------------------------
    def find(self, name: str, kind: Kind = "checkpoint") -> ModelEntry:
        """Resolve a user-given name to a scanned file; anything else is refused."""
        if not name or not isinstance(name, str):
            raise ModelNotFound(f"no {kind} name given")
        wanted = name.strip()
        if "\x00" in wanted or any(part == ".." for part in Path(wanted.replace("\\", "/")).parts):
            raise ModelNotFound(f"invalid {kind} name {name!r}: names are files inside the {kind} folder")
        title_hash = None
        entries = self.list(kind)
        if wanted.endswith("]") and " [" in wanted and not any(e.name == wanted for e in entries):
            wanted, title_hash = wanted[:-1].rsplit(" [", 1)
        for entry in entries:
            if wanted in (entry.name, entry.stem, entry.path.name, Path(entry.name).stem):
                return entry
        candidates = [wanted.lower()] + ([title_hash.lower()] if title_hash else [])
        for entry in entries:  # a short hash, as A1111 accepts
            if any(len(c) >= 8 and all(ch in "0123456789abcdef" for ch in c) for c in candidates):
                if self.short_hash(entry) in candidates or any(self.hashes.sha256(hashed_file(entry.path)).startswith(c)
                                                               for c in candidates if len(c) >= 8):
                    return entry
        known = ", ".join(e.name for e in entries) or "none found"
        raise ModelNotFound(f"unknown {kind} {name!r}; available: {known}")

    def default_checkpoint(self) -> ModelEntry:
        """The first usable checkpoint of the user's own that is not a depth model, else the demo model."""
        entries = [e for e in self.list("checkpoint")]
        if not entries:
            raise ModelNotFound(f"no checkpoints found in {self.paths.checkpoints}; put a .safetensors file "
                                f"there or pass --ckpt-dir")
        demos = {p.resolve() for p in DEMO_FILES}
        own = [e for e in entries if e.path.resolve() not in demos]
        for entry in own:
            try:
                info = self.probe(entry)
            except (ModelFileError, OSError):
                continue
            if info.supported and info.variant != "depth":
                return entry
        demo = [e for e in entries if e.path.resolve() == DEMO_CHECKPOINT.resolve()]
        return demo[0] if demo else (own or entries)[0]

    def depth_checkpoints(self) -> list[ModelEntry]:
        """Checkpoints with a depth-conditioned UNet, the user's own first, the demo one last."""
        found = []
        for entry in self.list("checkpoint"):
            try:
                info = self.probe(entry)
            except (ModelFileError, OSError):
                continue
            if info.supported and info.variant == "depth":
                found.append(entry)
        return found

    def default_depth_checkpoint(self) -> ModelEntry:
        found = self.depth_checkpoints()
        if not found:
            raise ModelNotFound(NO_DEPTH_MODEL.format(folder=self.paths.checkpoints))
        return found[0]

    def depth_estimator(self, name: str | None = None, for_checkpoint: ModelEntry | None = None):
        """The loaded DPT estimator ``name``. By default, as in A1111, the MiDaS that ``for_checkpoint``
        carries (SD 2's 512-depth-ema), the demo estimator for the demo depth model; else the user's
        own folder, another checkpoint's MiDaS, the demo estimator. One stays resident."""
        from .depth_estimator import DepthEstimator

        with self._lock:
            entry = self.find(name, "depth") if name else self._default_depth_estimator(for_checkpoint)
            if not (entry.path.is_dir() or entry.embedded):
                raise ModelFileError(f"{entry.name}: a depth estimator is a folder with config.json and weights "
                                     f"(a transformers DPT model), not a single file")
            current = self._depth_estimator
            if current is None or (current.name, current.path) != (entry.name, entry.path):
                self._depth_estimator = None
                device, dtype = self.device_and_dtype()
                load = DepthEstimator.from_checkpoint if entry.embedded else DepthEstimator.load
                self._depth_estimator = load(entry.path, entry.name, device, dtype)
            return self._depth_estimator

    def _default_depth_estimator(self, for_checkpoint: ModelEntry | None) -> ModelEntry:
        entries = self.list("depth")
        if not entries:
            raise ModelNotFound(NO_DEPTH_ESTIMATOR.format(folder=self.paths.depth))
        demo = [e for e in entries if e.path.resolve() == DEMO_DEPTH_ESTIMATOR.resolve()]
        embedded = [e for e in entries if e.embedded]
        folders = [e for e in entries if e.path.is_dir() and e not in demo]
        if for_checkpoint is not None:
            if for_checkpoint.path.resolve() == DEMO_DEPTH_CHECKPOINT.resolve() and demo:
                return demo[0]
            own = [e for e in embedded if e.path == for_checkpoint.path]
            if own:
                return own[0]
        return (folders or embedded or demo or entries)[0]

    # ---- loading --------------------------------------------------------------------------
    def device_and_dtype(self):
        import torch

        if self.device_name == "auto":
            if torch.cuda.is_available():
                device = torch.device("cuda")
            elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
                device = torch.device("mps")
            else:
                device = torch.device("cpu")
        else:
            device = torch.device(self.device_name)
        half = self.precision == "half" or (self.precision == "auto" and device.type in ("cuda", "mps"))
        return device, (torch.float16 if half else torch.float32)

    def resident(self) -> list[LoadedModel]:
        return list(self._resident.values())

    def get(self, name: str | None = None, vae: str | None = None) -> LoadedModel:
        """The loaded model for ``name`` (default: the default checkpoint) with the VAE asked for."""
        with self._lock:
            entry = self.find(name) if name else self.default_checkpoint()
            loaded = self._resident.get(entry.path)
            if loaded is None:
                loaded = self._load(entry)
            self._resident.move_to_end(entry.path)
            self._apply_vae(loaded, vae)
            return loaded

    def _load(self, entry: ModelEntry) -> LoadedModel:
        import time

        from .loader import build_components, load_diffusers_folder

        info = self.probe(entry)
        if not info.supported:
            if info.family == "sdxl":
                raise ModelFileError(f"{entry.name}: SDXL checkpoints are recognised but not supported yet")
            raise ModelFileError(f"{entry.name}: not a recognised Stable Diffusion 1.x/2.x checkpoint")
        while len(self._resident) >= self.max_models:
            self.unload(next(iter(self._resident)))
        device, dtype = self.device_and_dtype()
        started = time.perf_counter()
        # Hash in the background (hashlib releases the GIL): the infotext needs it only once the
        # first image is done, so hashing a multi-GB file never delays loading or sampling.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-hash")
        hashing = pool.submit(self.short_hash, entry)
        pool.shutdown(wait=False)
        if entry.path.is_dir():
            components = load_diffusers_folder(entry.path, dtype, device)
        else:
            tensors = open_tensor_file(entry.path)
            configs = derive_configs(tensors, info)
            components = build_components(tensors, configs, info.family, entry.name, dtype, device)
            del tensors
        if self.attention == "xformers":
            self._enable_xformers(components, device)
        loaded = LoadedModel(entry, info, hashing, components, components.vae)
        self._resident[entry.path] = loaded
        log.info("loaded %s (%s %s, %s) in %.1f s on %s %s", entry.name, info.family, info.variant,
                 info.prediction, time.perf_counter() - started, device, str(dtype).removeprefix("torch."))
        return loaded

    @staticmethod
    def _enable_xformers(components, device) -> None:
        import importlib.util

        if device.type != "cuda" or importlib.util.find_spec("xformers") is None:
            log.warning("--xformers asked for but xformers/CUDA is not available; using PyTorch SDPA")
            return
        components.unet.enable_xformers_memory_efficient_attention()
        components.vae.enable_xformers_memory_efficient_attention()

    def unload(self, path: Path) -> None:
        loaded = self._resident.pop(path, None)
        if loaded is None:
            return
        loaded.components = None
        loaded.own_vae = None
        del loaded
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def unload_all(self) -> None:
        for path in list(self._resident):
            self.unload(path)

    def embeddings_for(self, loaded: LoadedModel) -> tuple[dict[str, Embedding], dict[str, str]]:
        """Textual-inversion embeddings usable with ``loaded`` and those skipped, with the reason."""
        return self.embeddings_for_width(loaded.components.text_encoder.config.hidden_size)

    def embeddings_for_width(self, width: int) -> tuple[dict[str, Embedding], dict[str, str]]:
        return self._embeddings.for_width(self.list("embedding"), width, self.hashes)

    def apply_loras(self, loaded: LoadedModel, tags) -> list[tuple[str, str]]:
        """Merge exactly the LoRAs named by ``tags`` (prompt ``<lora:...>`` tags) into ``loaded``;
        an empty list restores the original weights. Returns (name, short hash) for the infotext."""
        files, hashes = [], []
        for tag in tags:
            entry = self.find(tag.name, "lora")
            key = (str(entry.path.resolve()), entry.path.stat().st_mtime)
            if key not in self._lora_files:
                if len(self._lora_files) > 16:
                    self._lora_files.clear()
                self._lora_files[key] = read_lora(entry.path, entry.stem)
            files.append((self._lora_files[key], tag.te_weight, tag.unet_weight))
            hashes.append((tag.name, self.hashes.sha256(entry.path)[:12]))
        loaded.loras.apply(loaded.components, files)
        return hashes

    def _apply_vae(self, loaded: LoadedModel, vae: str | None) -> None:
        """None/"Automatic": a NAME.vae.* beside the checkpoint, else its own; "None": its own;
        anything else: a file from the VAE folder."""
        if vae in (None, "Automatic"):
            path = _vae_beside(loaded.entry.path)
            label = path.name if path else None
        elif vae in ("None", ""):
            path = label = None
        else:
            entry = self.find(vae, "vae")
            path, label = entry.path, entry.name
        if label == loaded.vae_name:
            return
        if path is None:
            loaded.components.vae = loaded.own_vae
            loaded.vae_name = None
            return
        from .loader import build_vae

        device, dtype = self.device_and_dtype()
        override = build_vae(open_tensor_file(path), dict(loaded.own_vae.config), label, dtype, device)
        loaded.components.vae = override
        loaded.vae_name = label
        loaded.extra["vae_hash"] = self.hashes.short(path)
        log.info("VAE %s applied to %s", label, loaded.entry.name)


def _relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _vae_beside(checkpoint: Path) -> Path | None:
    if checkpoint.is_dir():
        return None
    for suffix in (".vae.safetensors", ".vae.pt", ".vae.ckpt"):
        candidate = checkpoint.with_name(checkpoint.name.rsplit(".", 1)[0] + suffix)
        if candidate.is_file():
            return candidate
    return None


def _probe_diffusers_folder(folder: Path) -> CheckpointInfo:
    import json

    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        scheduler_file = folder / "scheduler" / "scheduler_config.json"
        scheduler = json.loads(scheduler_file.read_text()) if scheduler_file.is_file() else {}
        vae_file = folder / "vae" / "config.json"
        vae = json.loads(vae_file.read_text()) if vae_file.is_file() else {}
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{folder.name}: unreadable diffusers folder ({e})") from None
    context = unet.get("cross_attention_dim", 0)
    context = context[0] if isinstance(context, list) else context
    family = {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(context)
    if family is None:
        text = folder / "text_encoder" / "config.json"
        act = json.loads(text.read_text()).get("hidden_act") if text.is_file() else None
        family = "sd2" if act == "gelu" else "sd1"
    in_channels = unet.get("in_channels", 4)
    variant = {9: "inpaint", 5: "depth"}.get(in_channels, "normal")
    prediction = "v_prediction" if scheduler.get("prediction_type") == "v_prediction" else "epsilon"
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    return CheckpointInfo(family, variant, prediction, in_channels, context, unet.get("sample_size", 64) * scale,
                          scale)
