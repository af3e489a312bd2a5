"""Prompt text -> the text encoder's output that the UNet reads through cross-attention.

A1111's rules: emphasis weights per token (``(word)``, ``[word]``, ``(word:1.5)``); the model sees
75 tokens at a time (77 with start and end), so longer prompts are cut into chunks, each encoded on
its own and concatenated; a chunk that fills up moves the words after its last comma (if within 20
tokens) to the next chunk; ``BREAK`` starts a new chunk. Each chunk's output is scaled per token by
its weight and the chunk's mean restored, so a weight of 1 changes nothing. Prompt editing and
alternation give a schedule of texts; each is encoded once and the loop switches between them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .prompt_parser import extract_lora_tags, is_break, parse_emphasis, prompt_schedule

CHUNK = 75
COMMA_BACKTRACK = 20


@dataclass
class TokenChunk:
    """Up to 75 tokens with their weights, the word each came from (for the inspector), and the
    textual-inversion vectors that replace some of them (``fixes``: token offset -> embedding)."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    fixes: list[tuple[int, Any]] = field(default_factory=list)

    def padded(self, bos: int, eos: int, pad: int) -> tuple[list[int], list[float]]:
        """The 77 ids the text encoder reads (start, tokens, end, padding) and their weights."""
        fill = CHUNK - len(self.tokens)
        return [bos] + self.tokens + [eos] + [pad] * fill, [1.0] + self.weights + [1.0] * (fill + 1)


def tokenize(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids


def tokenize_words(tokenizer, text: str) -> list[tuple[int, str]]:
    """Token ids with the whitespace-separated word each one comes from."""
    encoded = tokenizer(text, add_special_tokens=False, truncation=False, verbose=False,
                        return_offsets_mapping=True)
    out = []
    for token, (start, end) in zip(encoded.input_ids, encoded["offset_mapping"]):
        left = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
        right = min((i for i in (text.find(" ", end), text.find("\n", end)) if i != -1), default=len(text))
        out.append((token, text[left:right]))
    return out


def embedding_index(tokenizer, embeddings: dict | None) -> dict[int, list[tuple[tuple[int, ...], Any]]]:
    """First token id -> [(the name's token ids, embedding)], longest names first."""
    index: dict[int, list] = {}
    for name, embedding in (embeddings or {}).items():
        ids = tuple(tokenize(tokenizer, name))
        if ids:
            index.setdefault(ids[0], []).append((ids, embedding))
    for candidates in index.values():
        candidates.sort(key=lambda c: -len(c[0]))
    return index


def chunk_prompt(tokenizer, text: str, embeddings: dict | None = None) -> list[TokenChunk]:
    """A1111's chunking of one (already scheduled, LoRA-free) prompt text."""
    comma = tokenize(tokenizer, ",")[0]
    index = embedding_index(tokenizer, embeddings)
    chunks: list[TokenChunk] = []
    chunk = TokenChunk()
    last_comma = -1

    def next_chunk() -> None:
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk = TokenChunk()
        last_comma = -1

    for segment in parse_emphasis(text):
        if is_break(segment):
            next_chunk()
            continue
        piece, weight = segment
        words = tokenize_words(tokenizer, piece)
        ids = [token for token, _ in words]
        position = 0
        while position < len(words):
            token, word = words[position]
            if token == comma:
                last_comma = len(chunk.tokens)
            elif len(chunk.tokens) == CHUNK and last_comma != -1 and len(chunk.tokens) - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                moved = TokenChunk(chunk.tokens[cut:], chunk.weights[cut:], chunk.sources[cut:],
                                   [(offset - cut, e) for offset, e in chunk.fixes if offset >= cut])
                del chunk.tokens[cut:], chunk.weights[cut:], chunk.sources[cut:]
                chunk.fixes = [(offset, e) for offset, e in chunk.fixes if offset < cut]
                next_chunk()
                chunk = moved
            if len(chunk.tokens) == CHUNK:
                next_chunk()
            match = next(((name_ids, e) for name_ids, e in index.get(token, ())
                          if tuple(ids[position:position + len(name_ids)]) == name_ids), None)
            if match is not None:
                name_ids, embedding = match
                count = embedding.vectors.shape[0]
                if len(chunk.tokens) + count > CHUNK:  # an embedding is never split across chunks
                    next_chunk()
                chunk.fixes.append((len(chunk.tokens), embedding))
                chunk.tokens += [0] * count  # placeholders; their embeddings are replaced
                chunk.weights += [weight] * count
                chunk.sources += [f"<{embedding.name}>"] * count
                position += len(name_ids)
                continue
            chunk.tokens.append(token)
            chunk.weights.append(weight)
            chunk.sources.append(word)
            position += 1
    if chunk.tokens or not chunks:
        chunks.append(chunk)
    return chunks


def inspect_prompt(tokenizer, text: str, embeddings: dict | None = None) -> dict[str, Any]:
    """What the token inspector shows (``python app.py tokens``, the Tokens tab): every token of every
    chunk with its id, token text (``</w>`` = word end), source word and emphasis weight; vectors of a
    textual-inversion embedding show as ``<name>`` with ``"embedding": name``."""
    clean, loras = extract_lora_tags(text or "")
    chunks = chunk_prompt(tokenizer, clean, embeddings)

    def describe(token: int, weight: float, word: str) -> dict[str, Any]:
        if word.startswith("<") and word.endswith(">") and word[1:-1] in (embeddings or {}):
            return {"id": None, "text": word, "word": word[1:-1], "weight": round(weight, 6),
                    "embedding": word[1:-1]}
        return {"id": token, "text": tokenizer.convert_ids_to_tokens(token), "word": word, "weight": round(weight, 6)}

    described = [{"tokens": [describe(*t) for t in zip(c.tokens, c.weights, c.sources)], "count": len(c.tokens)}
                 for c in chunks]
    return {"chunks": described, "total": sum(c["count"] for c in described),
            "loras": [{"name": t.name, "te_weight": t.te_weight, "unet_weight": t.unet_weight} for t in loras]}


def count_tokens(tokenizer, text: str, steps: int = 150) -> tuple[int, int]:
    """(tokens, chunk capacity) for the live ``N/75`` counters: the longest scheduled variant."""
    clean, _ = extract_lora_tags(text or "")
    best = (0, CHUNK)
    for _, variant in prompt_schedule(clean, steps):
        chunks = chunk_prompt(tokenizer, variant)
        count = sum(len(c.tokens) for c in chunks)
        best = max(best, (count, len(chunks) * CHUNK))
    return best


def encode_chunks(components, chunks: list[TokenChunk], clip_skip: int, device):
    """[1, 77 * len(chunks), width]: each chunk encoded, weighted per token, its mean restored."""
    import torch

    tokenizer, text_encoder = components.tokenizer, components.text_encoder
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [c.padded(tokenizer.bos_token_id, tokenizer.eos_token_id, pad) for c in chunks]
    ids = torch.tensor([r[0] for r in rows], device=device)
    weights = torch.tensor([r[1] for r in rows], device=device)
    skip = max(1, min(clip_skip, text_encoder.config.num_hidden_layers))
    hook = None
    if any(c.fixes for c in chunks):
        def insert_embeddings(_module, _inputs, output):
            """Replace the placeholder rows with the textual-inversion vectors (after the start token)."""
            output = output.clone()
            for row, c in enumerate(chunks):
                for offset, embedding in c.fixes:
                    vectors = embedding.vectors.to(device=output.device, dtype=output.dtype)
                    output[row, 1 + offset:1 + offset + vectors.shape[0]] = vectors
            return output

        hook = text_encoder.embeddings.token_embedding.register_forward_hook(insert_embeddings)
    try:
        with torch.no_grad():
            if skip > 1:
                hidden = text_encoder(ids, output_hidden_states=True).hidden_states[-skip]
                hidden = text_encoder.final_layer_norm(hidden)
            else:
                hidden = text_encoder(ids).last_hidden_state
    finally:
        if hook is not None:
            hook.remove()
    with torch.no_grad():
        if bool((weights != 1).any()):
            original_mean = hidden.float().mean(dim=(1, 2), keepdim=True)
            hidden = hidden * weights[..., None].to(hidden.dtype)
            hidden = hidden * (original_mean / hidden.float().mean(dim=(1, 2), keepdim=True)).to(hidden.dtype)
    return hidden.reshape(1, -1, hidden.shape[-1])


@dataclass
class Conditioning:
    """Encoded prompt and negative prompt for every step: ``at(step)`` gives (cond, uncond)."""

    schedule: list[tuple[int, Any]]  # (end step, cond)
    negative_schedule: list[tuple[int, Any]]
    embeddings_used: list = field(default_factory=list)  # Embedding objects, in order of first use

    def at(self, step: int):
        """Conditioning for 1-based ``step``."""
        def pick(schedule):
            for end, value in schedule:
                if step <= end:
                    return value
            return schedule[-1][1]

        return pick(self.schedule), pick(self.negative_schedule)


def encode_prompts(components, prompt: str, negative_prompt: str, clip_skip: int, steps: int,
                   device, embeddings: dict | None = None) -> Conditioning:
    """Schedules for both prompts, each distinct text encoded once, padded to equal chunk counts."""
    import torch

    clean, _ = extract_lora_tags(prompt)
    negative_clean, _ = extract_lora_tags(negative_prompt)
    plans = []
    for text in (clean, negative_clean):
        plans.append([(end, chunk_prompt(components.tokenizer, variant, embeddings))
                      for end, variant in prompt_schedule(text, steps)])
    used: dict[str, Any] = {}
    for plan in plans:
        for _, chunks in plan:
            for c in chunks:
                used.update({e.name: e for _, e in c.fixes})
    longest = max(len(chunks) for plan in plans for _, chunks in plan)
    empty = encode_chunks(components, [TokenChunk()], clip_skip, device)
    cache: dict[tuple, Any] = {}

    def encode(chunks: list[TokenChunk]):
        key = tuple((tuple(c.tokens), tuple(c.weights), tuple((o, e.name) for o, e in c.fixes)) for c in chunks)
        if key not in cache:
            encoded = encode_chunks(components, chunks, clip_skip, device)
            missing = longest - len(chunks)
            cache[key] = torch.cat([encoded] + [empty] * missing, dim=1) if missing else encoded
        return cache[key]

    schedules = [[(end, encode(chunks)) for end, chunks in plan] for plan in plans]
    return Conditioning(schedules[0], schedules[1], list(used.values()))
