"""Settings: command-line flags over ``config.yaml`` over defaults. Built once, passed down, frozen."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    models_dir: Path = ROOT / "models"
    ckpt_dir: Path | None = None  # default: models_dir / "Stable-diffusion"
    vae_dir: Path | None = None
    lora_dir: Path | None = None
    embeddings_dir: Path | None = None
    depth_dir: Path | None = None
    outputs_dir: Path = ROOT / "outputs"
    cache_dir: Path = ROOT / ".cache"
    config_file: Path = ROOT / "config.yaml"
    extensions_dir: Path = ROOT / "extensions"
    device: str = "auto"  # auto, cpu, cuda, cuda:1, mps
    precision: str = "auto"  # auto (fp16 on GPUs, fp32 on CPU), full, half
    xformers: bool = False
    threads: int = 0  # torch CPU threads; 0 = torch's default
    max_models: int = 1
    save_images: bool = True
    samples_format: str = "png"
    # web UI / API (used by the server)
    listen: bool = False
    port: int | None = None
    share: bool = False
    gradio_auth: str | None = None
    gradio_auth_path: Path | None = None
    api: bool = False
    nowebui: bool = False
    api_auth: str | None = None
    enable_insecure_extension_access: bool = False

    @property
    def paths(self):
        from .model_manager import ModelPaths

        return ModelPaths(
            checkpoints=self.ckpt_dir or self.models_dir / "Stable-diffusion",
            vae=self.vae_dir or self.models_dir / "VAE",
            lora=self.lora_dir or self.models_dir / "Lora",
            embeddings=self.embeddings_dir or self.models_dir / "embeddings",
            depth=self.depth_dir or self.models_dir / "depth",
        )


PATH_FLAGS = ("models_dir", "ckpt_dir", "vae_dir", "lora_dir", "embeddings_dir", "depth_dir", "outputs_dir",
              "cache_dir", "config_file", "gradio_auth_path", "extensions_dir")


def add_arguments(parser: argparse.ArgumentParser, suppress: bool = False) -> None:
    """Flags shared by every subcommand. With ``suppress``, unset flags leave no attribute behind
    (so a flag given before the subcommand is not overwritten by the subcommand's default)."""
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("paths and device")
    group.add_argument("--models-dir", type=Path, default=default, help="folder with A1111's model layout")
    group.add_argument("--ckpt-dir", type=Path, default=default, help="checkpoints (default MODELS/Stable-diffusion)")
    group.add_argument("--vae-dir", type=Path, default=default, help="VAE files (default MODELS/VAE)")
    group.add_argument("--lora-dir", type=Path, default=default, help="LoRA files (default MODELS/Lora)")
    group.add_argument("--embeddings-dir", type=Path, default=default, help="textual inversion (default MODELS/embeddings)")
    group.add_argument("--depth-dir", type=Path, default=default, help="depth estimators (default MODELS/depth)")
    group.add_argument("--outputs-dir", type=Path, default=default, help="where images are saved (default outputs/)")
    group.add_argument("--config-file", type=Path, default=default, help="settings file (default config.yaml)")
    group.add_argument("--cache-dir", type=Path, default=default, help="hash cache etc. (default .cache/)")
    group.add_argument("--extensions-dir", type=Path, default=default, help="extensions (default extensions/)")
    group.add_argument("--device", default=default, help="auto, cpu, cuda, cuda:N or mps")
    group.add_argument("--precision", choices=("auto", "full", "half"), default=default,
                       help="weights dtype: auto = fp16 on GPUs, fp32 on CPU")
    group.add_argument("--xformers", action="store_true", default=default, help="use xformers attention (CUDA)")
    group.add_argument("--threads", type=int, default=default, help="CPU threads for torch (0 = default)")
    group.add_argument("--max-models", type=int, default=default, help="checkpoints kept loaded (default 1)")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("web UI server")
    group.add_argument("--listen", action="store_true", default=None, help="serve on 0.0.0.0 (default 127.0.0.1 only)")
    group.add_argument("--port", type=int, default=None, help="port (default 7860)")
    group.add_argument("--share", action="store_true", default=None, help="create a public Gradio share link")
    group.add_argument("--gradio-auth", default=None, metavar="USER:PASS[,USER2:PASS2]", help="require a login")
    group.add_argument("--gradio-auth-path", type=Path, default=None, help="file with user:pass entries")
    group.add_argument("--api", action="store_true", default=None, help="serve the A1111 API (/sdapi/v1) too")
    group.add_argument("--nowebui", action="store_true", default=None, help="serve only the API (port 7861)")
    group.add_argument("--api-auth", default=None, metavar="USER:PASS[,...]", help="HTTP Basic auth for the API")
    group.add_argument("--enable-insecure-extension-access", action="store_true", default=None,
                       help="allow installing extensions from the UI even with --listen or --share")


def load_settings(args: argparse.Namespace) -> Settings:
    """Defaults, then ``config.yaml`` (if present), then the flags that were given."""
    import yaml

    values: dict[str, Any] = {}
    config_file = getattr(args, "config_file", None) or Settings.config_file
    if Path(config_file).is_file():
        try:
            document = yaml.safe_load(Path(config_file).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise SystemExit(f"error: {config_file}: invalid YAML ({e})") from None
        if not isinstance(document, dict):
            raise SystemExit(f"error: {config_file}: expected a mapping of settings")
        known = {f.name for f in fields(Settings)}
        values.update({k: v for k, v in document.items() if k in known})
    for f in fields(Settings):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    for name in PATH_FLAGS:
        if values.get(name) is not None:
            values[name] = Path(values[name]).expanduser()
    values["config_file"] = Path(config_file)
    return replace(Settings(), **values)
