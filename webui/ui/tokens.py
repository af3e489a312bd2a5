"""Tokens: how the CLIP tokenizer cuts a prompt (ids, token text, weights, 75-token chunks)."""
from __future__ import annotations

import gradio as gr

from ..engine.conditioning import CHUNK, inspect_prompt


def token_rows(tokenizer, text: str, embeddings: dict | None = None) -> tuple[list[list], int]:
    report = inspect_prompt(tokenizer, text, embeddings)
    rows = []
    for number, chunk in enumerate(report["chunks"], 1):
        for token in chunk["tokens"]:
            rows.append([len(rows) + 1, number, token["id"] if token["id"] is not None else "embedding",
                         token["text"].replace("</w>", "␣"),
                         round(token["weight"], 4), token["word"]])
    return rows, len(report["chunks"])


def build(ui):
    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="tokens_prompt")
    button = gr.Button("Tokenize", elem_id="tokens_run")
    summary = gr.HTML("", elem_id="tokens_summary")
    table = gr.Dataframe(headers=["#", "chunk", "id", "token (␣ = word end)", "weight", "word"],
                         elem_id="tokens_table", interactive=False, wrap=True)
    gr.Markdown("The model reads 75 tokens at a time (plus start and end tokens); longer prompts are split "
                "into chunks encoded separately, a full chunk moves the words after its last comma to the "
                "next one, and `BREAK` starts a new chunk. Weights come from `(emphasis)`, `[de-emphasis]` "
                "and `(word:1.5)`.")

    def run(text: str):
        rows, chunks = token_rows(ui.tokenizer, text, ui.embeddings())
        return f"{len(rows)} tokens in {chunks} chunk(s) of {CHUNK}", rows

    button.click(run, prompt, [summary, table], queue=False)
    prompt.submit(run, prompt, [summary, table], queue=False)
    return {"prompt": prompt}
