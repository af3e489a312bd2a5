"""The command line as a user runs it: real processes, JSON on stdout, one-line errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def flags(models_dir, tmp_path_factory):
    return ["--models-dir", str(models_dir), "--outputs-dir", str(tmp_path_factory.mktemp("cli-out")),
            "--threads", "1"]


def test_models_json_lists_every_file_with_probe_fields(flags):
    proc = run("models", "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    models = {m["name"]: m for m in json.loads(proc.stdout)["models"]}
    sd2 = models["tiny-sd2-768-v.safetensors"]
    assert (sd2["kind"], sd2["family"], sd2["variant"], sd2["prediction"]) == ("checkpoint", "sd2", "normal",
                                                                                "v_prediction")
    assert len(sd2["hash"]) == 10 and int(sd2["hash"], 16) >= 0
    assert models["inpainting/tiny-sd1-inpainting.ckpt"]["variant"] == "inpaint"
    assert models["tiny-vae.safetensors"]["kind"] == "vae"


def test_flags_work_before_the_subcommand_too(flags):
    proc = run(*flags[:2], "models", "--json")
    assert proc.returncode == 0 and "tiny-sd1.safetensors" in proc.stdout


def test_samplers_json(flags):
    data = json.loads(run("samplers", "--json").stdout)
    names = {s["name"]: s for s in data["samplers"]}
    assert names["DPM++ 2M"]["available"] and names["DPM++ 2M"]["default_schedule"] == "Karras"
    assert not names["DPM++ 2S a"]["available"] and names["DPM++ 2S a"]["unavailable_reason"]
    assert {s["label"] for s in data["schedules"]} == {"Automatic", "Uniform", "Karras", "Exponential", "SGM Uniform"}


def test_generate_then_pnginfo_round_trip(flags, tmp_path):
    proc = run("generate", *flags, "--model", "tiny-sd1", "--prompt", "a red circle, big", "--negative-prompt",
               "blue", "--steps", "3", "--seed", "42", "--width", "64", "--height", "64", "--batch-size", "2",
               "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["seeds"] == [42, 43] and len(out["images"]) == 2
    assert all(Path(p).is_file() for p in out["images"])
    info = json.loads(run("pnginfo", out["images"][1], "--json").stdout)
    assert info["parameters"] == out["infotexts"][1]
    fields = info["fields"]
    assert fields["Prompt"] == "a red circle, big" and fields["Negative prompt"] == "blue"
    assert (fields["Steps"], fields["Seed"], fields["Size-1"], fields["Size-2"]) == ("3", "43", "64", "64")
    assert fields["Model"] == "tiny-sd1" and len(fields["Model hash"]) == 10


def test_img2img_inpaint_and_prompts_file(flags, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (10, 200, 10)).save(init)
    mask = tmp_path / "mask.png"
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (0, 0, 32, 32))
    m.save(mask)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square\n")
    proc = run("generate", *flags, "--model", "tiny-sd1", "--prompts-file", str(prompts), "--steps", "2",
               "--seed", "1", "--init-image", str(init), "--mask", str(mask), "--mask-blur", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["images"]) == 2 and "/img2img-images/" in out["images"][0]
    assert out["infotexts"][1].startswith("a blue square\n")
    with Image.open(out["images"][0]) as image:
        assert image.getpixel((60, 60)) == (10, 200, 10)  # outside the mask: the original


@pytest.mark.parametrize("args, message", [
    (["--model", "nope"], "unknown checkpoint 'nope'"),
    (["--model", "../../etc/passwd"], "invalid checkpoint name"),
    (["--width", "100"], "width: must be a multiple of 8"),
    (["--width", "100000"], "width: must be between 64 and 2048"),
    (["--steps", "0"], "steps: must be between 1 and 150"),
    (["--sampler", "Bogus"], "unknown sampler 'Bogus'"),
    (["--sampler", "Euler a", "--schedule", "Karras"], "not available with Euler a"),
    (["--cfg-scale", "99"], "cfg_scale: must be between 0.0 and 30.0"),
    (["--init-image", "/nonexistent.png"], "no such file"),
    (["--denoising-strength", "2"], "denoising_strength"),
])
def test_user_mistakes_are_one_clear_line(flags, args, message):
    proc = run("generate", *flags, "--prompt", "x", "--steps", "2", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_corrupt_model_and_pnginfo_without_parameters(tmp_path):
    folder = tmp_path / "m" / "Stable-diffusion"
    folder.mkdir(parents=True)
    (folder / "broken.safetensors").write_bytes(b"\x00" * 100)
    proc = run("generate", "--models-dir", str(tmp_path / "m"), "--model", "broken", "--prompt", "x")
    assert proc.returncode == 2 and "broken.safetensors" in proc.stderr and "Traceback" not in proc.stderr
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    proc = run("pnginfo", str(plain))
    assert proc.returncode == 2 and "no generation parameters" in proc.stderr
    listing = run("models", "--json", "--models-dir", str(tmp_path / "m"))
    entry = [m for m in json.loads(listing.stdout)["models"] if m["name"] == "broken.safetensors"][0]
    assert "broken.safetensors" in entry["error"]


def test_tokens_json_shows_chunks_words_weights_and_literal_escapes():
    proc = run("tokens", r"a (red:1.5) \(circle\) " + "cat " * 80 + "BREAK dog <lora:style:0.5>", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    first = report["chunks"][0]["tokens"]
    assert first[0] == {"id": 320, "text": "a</w>", "word": "a", "weight": 1.0}
    assert first[1]["text"] == "red</w>" and first[1]["weight"] == 1.5
    assert first[2]["text"] == "(</w>" and first[2]["weight"] == 1.0  # escaped: a literal bracket
    assert [c["count"] for c in report["chunks"]] == [75, 10, 1] and report["total"] == 86
    assert report["chunks"][-1]["tokens"][0]["word"] == "dog"  # BREAK started a new chunk
    assert report["loras"] == [{"name": "style", "te_weight": 0.5, "unet_weight": 0.5}]


def test_tokens_with_a_model_shows_its_embeddings(flags):
    proc = run("tokens", "a tri-emb", "--model", "tiny-sd1", "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [t.get("embedding") for t in report["chunks"][0]["tokens"]] == [None, "tri-emb", "tri-emb", "tri-emb"]
    assert "wide-emb" in report["embeddings_skipped"]
    listing = {m["name"]: m for m in json.loads(run("models", "--json", *flags).stdout)["models"]}
    assert listing["tri-emb.safetensors"]["vectors"] == 3 and "error" in listing["bad-emb.pt"]


def test_tokens_neighbours_and_compare(flags):
    proc = run("tokens", "a red circle", "--model", "tiny-sd1", "--neighbours", "red", "--count", "5",
               "--compare", "a red circle", "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    neighbours = report["neighbours"]["neighbours"]
    similarities = [n["similarity"] for n in neighbours]
    assert len(neighbours) == 5 and similarities == sorted(similarities, reverse=True)
    assert all(n["text"] != "red</w>" for n in neighbours)  # the word itself is not its own neighbour
    assert report["compare"]["token_similarity"] == 1.0 and report["compare"]["conditioning_similarity"] == 1.0
    other = json.loads(run("tokens", "a red circle", "--model", "tiny-sd1", "--compare", "blue square dog",
                           "--json", *flags).stdout)["compare"]
    assert other["token_similarity"] < 0.99 and other["conditioning_similarity"] < 0.999
