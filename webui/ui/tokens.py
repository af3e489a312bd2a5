"""Tokens: how the CLIP tokenizer cuts a prompt (ids, token text, weights, 75-token chunks)."""
from __future__ import annotations

import gradio as gr

from ..engine.conditioning import CHUNK, chunk_prompt
from ..engine.prompt_parser import extract_lora_tags


def token_rows(tokenizer, text: str) -> tuple[list[list], int]:
    clean, _ = extract_lora_tags(text or "")
    chunks = chunk_prompt(tokenizer, clean)
    rows = []
    for number, chunk in enumerate(chunks, 1):
        for token_id, weight, source in zip(chunk.tokens, chunk.weights, chunk.sources):
            piece = tokenizer.convert_ids_to_tokens(token_id).replace("</w>", "␣")
            rows.append([len(rows) + 1, number, token_id, piece, round(weight, 4), source.strip()])
    return rows, len(chunks)


def build(ui):
    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="tokens_prompt")
    button = gr.Button("Tokenize", elem_id="tokens_run")
    summary = gr.HTML("", elem_id="tokens_summary")
    table = gr.Dataframe(headers=["#", "chunk", "id", "token (␣ = word end)", "weight", "from text"],
                         elem_id="tokens_table", interactive=False, wrap=True)
    gr.Markdown("The model reads 75 tokens at a time (plus start and end tokens); longer prompts are split "
                "into chunks encoded separately, a full chunk moves the words after its last comma to the "
                "next one, and `BREAK` starts a new chunk. Weights come from `(emphasis)`, `[de-emphasis]` "
                "and `(word:1.5)`.")

    def run(text: str):
        rows, chunks = token_rows(ui.tokenizer, text)
        return f"{len(rows)} tokens in {chunks} chunk(s) of {CHUNK}", rows

    button.click(run, prompt, [summary, table], queue=False)
    prompt.submit(run, prompt, [summary, table], queue=False)
    return {"prompt": prompt}
