"""Our tokenization against an independent implementation of OpenAI's CLIP BPE tokenizer.

The reference below follows the algorithm of OpenAI's ``simple_tokenizer`` (byte-level BPE over the
same ``merges``, words found by the same regular expression, ``</w>`` marking a word's end,
lower-cased, whitespace collapsed) written from the description, and reads the vocabulary files we
ship. The ids must agree exactly; those are the ids real SD checkpoints were trained with.
"""
import json
import pytest
import regex

from webui.engine.conditioning import CHUNK, chunk_prompt, tokenize
from webui.model_manager.loader import CONFIGS_DIR, load_tokenizer

WORDS = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                      regex.IGNORECASE)


class ReferenceClipTokenizer:
    def __init__(self):
        folder = CONFIGS_DIR / "clip_tokenizer"
        self.encoder = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        merges = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(m for m in merges if m)}
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        table, extra = {b: chr(b) for b in printable}, 0
        for b in range(256):
            if b not in table:
                table[b] = chr(256 + extra)
                extra += 1
        self.byte_chars = table

    def bpe(self, word: str) -> list[str]:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = [(self.ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
            rank, _ = min(pairs)
            if rank == float("inf"):
                break
            first, second = next((symbols[i], symbols[i + 1]) for r, i in pairs if r == rank)
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def encode(self, text: str) -> list[int]:
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for word in WORDS.findall(text):
            chars = "".join(self.byte_chars[b] for b in word.encode("utf-8"))
            ids += [self.encoder[piece] for piece in self.bpe(chars)]
        return ids


@pytest.fixture(scope="module")
def reference():
    return ReferenceClipTokenizer()


PROMPTS = [
    "a photo of a cat",
    "masterpiece, best quality, 1girl, solo, looking at viewer, (detailed eyes:1.2)",
    "Hello, World!!! What's up? It's 3:45pm -- isn't it?",
    "café déjà vu, naïve Zoë, Ærøskøbing, straße",
    "日本の桜と富士山, 中文提示词, 한국어",
    "emoji 😀🎨🚀 and symbols #@$%^&* ~ | \\ / <> {}",
    "numbers 12345 3.14159 1e10 2026-11-29 100%",
    "   multiple    spaces\tand\nnew lines   ",
    "UPPER lower MiXeD",
    "a " + "very long prompt with many words, " * 20,
]


@pytest.mark.parametrize("text", PROMPTS)
def test_ids_match_the_reference_clip_tokenizer(reference, text):
    assert tokenize(load_tokenizer("sd1"), text) == reference.encode(text)


def test_long_prompts_and_break_keep_every_reference_token(reference):
    tokenizer = load_tokenizer("sd1")
    text = PROMPTS[-1]
    chunks = chunk_prompt(tokenizer, text)
    assert [t for c in chunks for t in c.tokens] == reference.encode(text)
    assert all(len(c.tokens) <= CHUNK for c in chunks) and len(chunks) == 2  # 141 tokens
    left, right = "a castle on a hill", "a dragon in the sky"
    chunks = chunk_prompt(tokenizer, f"{left} BREAK {right}")
    assert [c.tokens for c in chunks] == [reference.encode(left), reference.encode(right)]
