"""Build the CLIP tokenizer files in webui/configs/ from the real CLIP BPE vocabulary.

The vocabulary (OpenAI's ``bpe_simple_vocab_16e6.txt.gz``) ships inside the PyPI package
``clip-anytorch``. Install it without its dependencies (it would pull torchvision) and run:

    pip download --no-deps clip-anytorch==2.6.0 -d /tmp/clip && \
        python tools/make_clip_tokenizer.py /tmp/clip/clip_anytorch-2.6.0-py3-none-any.whl

Writes ``vocab.json`` and ``merges.txt`` (49,408 tokens) and the SD 1.x tokenizer config
(pad = <|endoftext|>); SD 2.x's OpenCLIP uses the same files with pad = "!" (set at load time).
Then checks known ids.
"""
from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "webui" / "configs"
BPE_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"
MERGE_COUNT = 49152 - 256 - 2  # the merges CLIP actually uses


def byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order (printable bytes first) defines the first 256 ids


def build(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    merges = bpe_text.split("\n")[1:MERGE_COUNT + 1]
    symbols = list(byte_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def tokenizer_config(pad_token: str) -> dict:
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "do_lower_case": True,
        "errors": "replace",
        "clean_up_tokenization_spaces": False,
    }


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        bpe_text = gzip.decompress(zf.read(BPE_MEMBER)).decode("utf-8")
    vocab, merges = build(bpe_text)
    assert len(vocab) == 49408, len(vocab)
    pad = "<|endoftext|>"
    folder = CONFIGS / "clip_tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(pad), indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>", "pad_token": pad}, indent=2) + "\n")

    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(CONFIGS / "clip_tokenizer")
    ids = tok("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    print("wrote", folder, "ids check ok:", ids)


if __name__ == "__main__":
    main(sys.argv[1])
