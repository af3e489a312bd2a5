"""Prompt text -> the text encoder's output that the UNet reads through cross-attention.

The model sees 75 tokens at a time (77 with the start and end tokens): longer prompts are cut into
chunks of 75, each encoded on its own, and the results concatenated along the token axis.
Positive and negative prompts are padded with empty chunks to the same length so CFG can batch them.
"""
from __future__ import annotations

from dataclasses import dataclass

CHUNK = 75


@dataclass(frozen=True)
class TokenChunk:
    ids: tuple[int, ...]  # exactly 77: start, up to 75 tokens, end, padding


def tokenize(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids


def chunk_tokens(tokenizer, tokens: list[int]) -> list[TokenChunk]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    pieces = [tokens[i:i + CHUNK] for i in range(0, len(tokens), CHUNK)] or [[]]
    return [TokenChunk(tuple([bos] + p + [eos] + [pad] * (CHUNK - len(p)))) for p in pieces]


def encode_chunks(text_encoder, chunks: list[TokenChunk], clip_skip: int, device):
    """[1, 77 * len(chunks), width]"""
    import torch

    ids = torch.tensor([c.ids for c in chunks], device=device)
    with torch.no_grad():
        if clip_skip > 1:
            out = text_encoder(ids, output_hidden_states=True)
            hidden = out.hidden_states[-clip_skip]
            hidden = text_encoder.final_layer_norm(hidden)
        else:
            hidden = text_encoder(ids).last_hidden_state
    return hidden.reshape(1, -1, hidden.shape[-1])


def encode_pair(components, prompt: str, negative_prompt: str, clip_skip: int, device):
    """Conditioning for (prompt, negative prompt), padded to the same number of chunks."""
    tokenizer = components.tokenizer
    positive = chunk_tokens(tokenizer, tokenize(tokenizer, prompt))
    negative = chunk_tokens(tokenizer, tokenize(tokenizer, negative_prompt))
    empty = chunk_tokens(tokenizer, [])[0]
    count = max(len(positive), len(negative))
    positive += [empty] * (count - len(positive))
    negative += [empty] * (count - len(negative))
    skip = min(clip_skip, components.text_encoder.config.num_hidden_layers)
    return (encode_chunks(components.text_encoder, positive, skip, device),
            encode_chunks(components.text_encoder, negative, skip, device))
