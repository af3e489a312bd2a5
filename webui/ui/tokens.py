"""Tokens: how the CLIP tokenizer cuts a prompt (ids, token text, 75-token chunks)."""
from __future__ import annotations

import gradio as gr

from ..engine.conditioning import CHUNK, tokenize


def token_rows(tokenizer, text: str) -> list[list]:
    ids = tokenize(tokenizer, text or "")
    rows = []
    for i, token_id in enumerate(ids):
        piece = tokenizer.convert_ids_to_tokens(token_id).replace("</w>", "␣")
        rows.append([i + 1, i // CHUNK + 1, token_id, piece])
    return rows


def build(ui):
    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="tokens_prompt")
    button = gr.Button("Tokenize", elem_id="tokens_run")
    summary = gr.HTML("", elem_id="tokens_summary")
    table = gr.Dataframe(headers=["#", "chunk", "id", "token (␣ = word end)"], elem_id="tokens_table",
                         interactive=False, wrap=True)
    gr.Markdown("The model reads 75 tokens at a time (plus start and end tokens); longer prompts are split "
                "into chunks that are encoded separately. Emphasis, LoRA tags and embeddings come with the "
                "prompt features milestone.")

    def run(text: str):
        rows = token_rows(ui.tokenizer, text)
        chunks = max(1, -(-len(rows) // CHUNK))
        return f"{len(rows)} tokens in {chunks} chunk(s) of {CHUNK}", rows

    button.click(run, prompt, [summary, table], queue=False)
    prompt.submit(run, prompt, [summary, table], queue=False)
    return {"prompt": prompt}
