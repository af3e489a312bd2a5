"""Shared fixtures: tiny random-weight checkpoints of the real architectures in a temporary A1111
folder layout, and an App over them. Built once per test session."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # Two busy threads on two cores (with anything else running) are several times slower than one.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    from model_factory import token_rows, write_checkpoint, write_diffusers_folder, write_embedding, write_lora, \
        write_vae

    import torch

    root = tmp_path_factory.mktemp("models")
    ckpt = root / "Stable-diffusion"
    write_checkpoint(ckpt / "tiny-sd1.safetensors", "sd1", seed=0)
    write_checkpoint(ckpt / "tiny-sd1-calm.safetensors", "sd1", seed=7, output_gain=1.0)
    write_checkpoint(ckpt / "inpainting" / "tiny-sd1-inpainting.ckpt", "sd1", "inpaint", seed=1)
    write_checkpoint(ckpt / "tiny-sd2-768-v.safetensors", "sd2", seed=2, with_yaml=True, prediction="v_prediction")
    write_checkpoint(ckpt / "tiny-sd2-inpainting.safetensors", "sd2", "inpaint", seed=3)
    write_diffusers_folder(ckpt / "tiny-diffusers", seed=4)
    write_vae(root / "VAE" / "tiny-vae.safetensors", seed=5)
    write_vae(root / "VAE" / "tiny-vae-diffusers.safetensors", seed=5, layout="diffusers")
    write_lora(root / "Lora" / "tiny-lora.safetensors", "kohya")
    write_lora(root / "Lora" / "peft" / "tiny-lora-peft.safetensors", "peft")
    (root / "Lora" / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    embeddings = root / "embeddings"
    write_embedding(embeddings / "kitty-style.pt", token_rows(["cat"]), "a1111")
    write_embedding(embeddings / "tri-emb.safetensors", token_rows(["red", "circle", "big"]), "safetensors")
    write_embedding(embeddings / "sub" / "bin-emb.bin", token_rows(["dog"]), "diffusers")
    write_embedding(embeddings / "wide-emb.safetensors", torch.zeros(2, 1024), "safetensors")
    (embeddings / "bad-emb.pt").write_bytes(b"not a pickle")
    (root / "depth").mkdir()
    return root


@pytest.fixture(scope="session")
def settings(models_dir, tmp_path_factory):
    from webui.config import Settings

    return Settings(models_dir=models_dir, outputs_dir=tmp_path_factory.mktemp("outputs"),
                    cache_dir=tmp_path_factory.mktemp("cache"), config_file=models_dir / "no-config.yaml",
                    threads=1)


@pytest.fixture(scope="session")
def app(settings):
    from webui.application import App

    return App(settings)


@pytest.fixture
def base_request():
    from webui.engine import GenerationRequest

    return GenerationRequest(prompt="a red circle", model="tiny-sd1", steps=4, seed=1234, width=64, height=64,
                             save_images=False)


@pytest.fixture(scope="session")
def demo_app(tmp_path_factory):
    """An App over the repository's own models/ folder: the shipped demo models, nothing else."""
    from webui.application import App
    from webui.config import Settings

    tmp = tmp_path_factory.mktemp("demo")
    return App(Settings(outputs_dir=tmp / "out", cache_dir=tmp / "cache", config_file=tmp / "none.yaml", threads=1))
