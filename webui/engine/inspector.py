"""Token inspector computations that need the model: nearest tokens in the text encoder's
token-embedding table, and how similar two words or prompts are before and after encoding."""
from __future__ import annotations

from typing import Any

from .conditioning import encode_prompts, tokenize


def nearest_tokens(components, word: str, count: int = 8) -> dict[str, Any]:
    """Tokens whose input embeddings are closest (cosine) to ``word``'s (the mean of its tokens)."""
    import torch

    tokenizer, table = components.tokenizer, components.text_encoder.embeddings.token_embedding.weight
    ids = tokenize(tokenizer, word)
    if not ids:
        raise ValueError("word: give a word or token to look up")
    with torch.no_grad():
        rows = table.float()
        query = rows[ids].mean(dim=0)
        similarity = torch.nn.functional.cosine_similarity(rows, query[None], dim=1)
        similarity[ids] = -2  # not the word itself
        best = similarity.topk(count)
    return {"word": word, "tokens": [{"id": i, "text": tokenizer.convert_ids_to_tokens(i)} for i in ids],
            "neighbours": [{"id": int(i), "text": tokenizer.convert_ids_to_tokens(int(i)),
                            "similarity": round(float(s), 4)} for s, i in zip(best.values, best.indices)]}


def compare(components, first: str, second: str, clip_skip: int = 1, embeddings: dict | None = None) -> dict[str, Any]:
    """Cosine similarity of two texts: of their mean token embeddings (what goes in) and of their
    encoded conditioning (what the UNet reads), both padded to the same number of chunks."""
    import torch

    tokenizer, table = components.tokenizer, components.text_encoder.embeddings.token_embedding.weight
    device = table.device
    with torch.no_grad():
        means = []
        for text in (first, second):
            ids = tokenize(tokenizer, text) or [tokenizer.eos_token_id]
            means.append(table[ids].float().mean(dim=0))
        token_similarity = torch.nn.functional.cosine_similarity(means[0], means[1], dim=0)
        # Encoding the two as prompt and "negative" pads them to equal length in one go.
        a, b = encode_prompts(components, first, second, clip_skip, 1, device, embeddings).at(1)
        conditioning_similarity = torch.nn.functional.cosine_similarity(a.flatten().float(), b.flatten().float(),
                                                                        dim=0)
    return {"first": first, "second": second, "token_similarity": round(float(token_similarity), 4),
            "conditioning_similarity": round(float(conditioning_similarity), 4)}
