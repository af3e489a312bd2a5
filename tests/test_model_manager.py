"""Scanning, probing, hashing and loading users' files; refusing bad ones without executing anything."""
import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch

from model_factory import tiny_components, write_checkpoint
from webui.model_manager import ModelFileError, ModelManager, ModelNotFound, ModelPaths


def manager_for(root: Path, cache: Path) -> ModelManager:
    return ModelManager(ModelPaths(root / "Stable-diffusion", root / "VAE", root / "Lora", root / "embeddings",
                                   root / "depth"), cache, include_demo=False)


@pytest.fixture(scope="module")
def manager(models_dir, tmp_path_factory):
    return manager_for(models_dir, tmp_path_factory.mktemp("mcache"))


def test_scan_lists_every_kind_in_a1111_layout(manager):
    names = {(e.kind, e.name) for e in manager.all_models()}
    assert ("checkpoint", "tiny-sd1.safetensors") in names
    assert ("checkpoint", "inpainting/tiny-sd1-inpainting.ckpt") in names
    assert ("checkpoint", "tiny-diffusers") in names
    assert ("vae", "tiny-vae.safetensors") in names
    # files inside a diffusers folder are part of it, not checkpoints of their own
    assert not any("tiny-diffusers/" in name for _, name in names)


@pytest.mark.parametrize("name, family, variant, prediction", [
    ("tiny-sd1.safetensors", "sd1", "normal", "epsilon"),
    ("inpainting/tiny-sd1-inpainting.ckpt", "sd1", "inpaint", "epsilon"),
    ("tiny-sd2-768-v.safetensors", "sd2", "normal", "v_prediction"),
    ("tiny-sd2-inpainting.safetensors", "sd2", "inpaint", "epsilon"),
    ("tiny-diffusers", "sd1", "normal", "epsilon"),
])
def test_probe_recognises_family_variant_prediction_and_hash(manager, name, family, variant, prediction):
    entry = manager.find(name)
    record = manager.describe(entry)
    assert (record["family"], record["variant"], record["prediction"]) == (family, variant, prediction)
    if not entry.path.is_dir():
        assert record["hash"] == hashlib.sha256(entry.path.read_bytes()).hexdigest()[:10]
    assert "error" not in record


def test_yaml_beside_checkpoint_overrides_prediction(tmp_path):
    root = tmp_path / "models"
    path = write_checkpoint(root / "Stable-diffusion" / "plain-sd2.safetensors", "sd2", with_yaml=True,
                            prediction="epsilon")
    m = manager_for(root, tmp_path / "cache")
    assert m.probe(m.find("plain-sd2")).prediction == "epsilon"
    path.with_suffix(".yaml").write_text("model:\n  params:\n    parameterization: v\n")
    m = manager_for(root, tmp_path / "cache")
    assert m.probe(m.find("plain-sd2")).prediction == "v_prediction"


def test_sdxl_is_recognised_and_refused_clearly(tmp_path):
    from safetensors.torch import save_file

    root = tmp_path / "models"
    (root / "Stable-diffusion").mkdir(parents=True)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
               "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(640, 2048),
               "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(8, 768)},
              str(root / "Stable-diffusion" / "xl.safetensors"))
    m = manager_for(root, tmp_path / "cache")
    record = m.describe(m.find("xl"))
    assert record["family"] == "sdxl" and "not supported yet" in record["error"]
    with pytest.raises(ModelFileError, match="SDXL"):
        m.get("xl")


def test_hash_is_cached_by_path_size_and_mtime(tmp_path):
    root = tmp_path / "models"
    path = write_checkpoint(root / "Stable-diffusion" / "a.safetensors", "sd1")
    m = manager_for(root, tmp_path / "cache")
    first = m.short_hash(m.find("a"))
    cache = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert cache[str(path.resolve())]["sha256"].startswith(first)
    # A stale cache entry with the same size and mtime is trusted (that is what makes it fast) ...
    cache[str(path.resolve())]["sha256"] = "f" * 64
    (tmp_path / "cache" / "hashes.json").write_text(json.dumps(cache))
    assert manager_for(root, tmp_path / "cache").short_hash(m.find("a")) == "f" * 10
    # ... and a changed file is hashed again.
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert manager_for(root, tmp_path / "cache").short_hash(m.find("a")) == first


def test_loaded_weights_equal_the_file(manager):
    loaded = manager.get("tiny-sd2-768-v")
    unet, vae, text_encoder = tiny_components("sd2", "normal", seed=2)
    for module, reference in ((loaded.components.unet, unet), (loaded.components.vae, vae),
                              (loaded.components.text_encoder, text_encoder)):
        got, want = module.state_dict(), reference.state_dict()
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key].half().float()), key
    assert loaded.components.scheduler_config["prediction_type"] == "v_prediction"
    assert loaded.components.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_names_resolve_by_title_name_stem_and_hash(manager):
    entry = manager.find("tiny-sd1.safetensors")
    short = manager.short_hash(entry)
    assert manager.find(f"tiny-sd1.safetensors [{short}]") == entry
    assert manager.find("tiny-sd1") == entry
    assert manager.find(short) == entry


@pytest.mark.parametrize("name", ["../../etc/passwd", "../VAE/tiny-vae.safetensors", "/etc/passwd",
                                  "inpainting/../../x", "nonexistent"])
def test_path_tricks_and_unknown_names_are_refused(manager, name):
    with pytest.raises(ModelNotFound) as error:
        manager.find(name)
    assert "tiny-sd1.safetensors" in str(error.value) or "invalid" in str(error.value)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp/sdwebui-pickle-was-executed")


def test_malicious_ckpt_is_refused_and_never_executed(tmp_path):
    MARKER.unlink(missing_ok=True)
    root = tmp_path / "models"
    folder = root / "Stable-diffusion"
    folder.mkdir(parents=True)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Exploit()}, folder / "evil.ckpt")
    with open(folder / "evil-plain.ckpt", "wb") as f:
        pickle.dump(_Exploit(), f)
    m = manager_for(root, tmp_path / "cache")
    for name in ("evil", "evil-plain"):
        record = m.describe(m.find(name))
        assert record["name"] in record["error"]
        assert "refused" in record["error"] or "corrupt" in record["error"]
        with pytest.raises(ModelFileError, match=name):
            m.get(name)
    assert not MARKER.exists(), "the pickle's code ran"


def test_truncated_and_corrupt_files_are_refused_with_their_name(tmp_path, models_dir):
    root = tmp_path / "models"
    folder = root / "Stable-diffusion"
    folder.mkdir(parents=True)
    data = (models_dir / "Stable-diffusion" / "tiny-sd1.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "garbage.safetensors").write_bytes(os.urandom(4096))
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "badheader.safetensors").write_bytes(struct.pack("<Q", 10) + b"{not json}")
    ckpt = (models_dir / "Stable-diffusion" / "inpainting" / "tiny-sd1-inpainting.ckpt").read_bytes()
    (folder / "truncated.ckpt").write_bytes(ckpt[: len(ckpt) // 3])
    m = manager_for(root, tmp_path / "cache")
    for entry in m.list("checkpoint"):
        record = m.describe(entry)
        assert entry.path.name in record["error"], record
        with pytest.raises(ModelFileError, match=entry.path.name.replace(".", r"\.")):
            m.get(entry.name)


def test_shape_mismatch_is_a_clear_error_not_a_partial_load(tmp_path):
    root = tmp_path / "models"
    path = write_checkpoint(root / "Stable-diffusion" / "odd.safetensors", "sd1", with_yaml=True)
    yaml_text = path.with_suffix(".yaml").read_text().replace("cross_attention_dim: 32", "cross_attention_dim: 48")
    path.with_suffix(".yaml").write_text(yaml_text)
    m = manager_for(root, tmp_path / "cache")
    with pytest.raises(ModelFileError, match=r"odd\.safetensors.*shape"):
        m.get("odd")
    assert m.resident() == []


def test_switching_models_keeps_one_resident_and_memory_flat(manager):
    import gc
    import resource  # noqa: F401

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    names = ["tiny-sd1", "tiny-sd2-768-v"]
    for name in names:  # warm up: first loads import code and allocate caches
        manager.get(name)
    gc.collect()
    before = rss_mb()
    for i in range(10):
        manager.get(names[i % 2])
        assert len(manager.resident()) == 1
    gc.collect()
    growth = rss_mb() - before
    assert growth < 25, f"RSS grew by {growth:.1f} MB across 10 switches (one model is ~20 MB)"


def test_old_text_encoder_key_spelling_loads(tmp_path):
    """Files written with old transformers keep the text encoder under cond_stage_model.transformer.*"""
    from safetensors.torch import load_file, save_file

    root = tmp_path / "models"
    path = write_checkpoint(root / "Stable-diffusion" / "old.safetensors", "sd1")
    state = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
             for k, v in load_file(str(path)).items()}
    save_file(state, str(path))
    m = manager_for(root, tmp_path / "cache")
    assert m.probe(m.find("old")).family == "sd1"
    loaded = m.get("old")
    _, _, text_encoder = tiny_components("sd1", seed=0)
    assert torch.equal(loaded.components.text_encoder.state_dict()["embeddings.token_embedding.weight"],
                       text_encoder.state_dict()["embeddings.token_embedding.weight"].half().float())
