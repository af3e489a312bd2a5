"""Tokens: how the CLIP tokenizer cuts a prompt (ids, token text, weights, 75-token chunks)."""
from __future__ import annotations

import gradio as gr

from ..engine.conditioning import CHUNK, inspect_prompt


def token_rows(tokenizer, text: str, embeddings: dict | None = None) -> tuple[list[list], int, list]:
    report = inspect_prompt(tokenizer, text, embeddings)
    rows = []
    for number, chunk in enumerate(report["chunks"], 1):
        for token in chunk["tokens"]:
            rows.append([len(rows) + 1, number, token["id"] if token["id"] is not None else "embedding",
                         token["text"].replace("</w>", "␣"),
                         round(token["weight"], 4), token["word"]])
    return rows, len(report["chunks"]), report["loras"]


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
        rows, chunks, loras = token_rows(ui.tokenizer, text, ui.embeddings())
        per_chunk = ", ".join(f"{sum(1 for r in rows if r[1] == n)}/{CHUNK}" for n in range(1, chunks + 1))
        lora_text = "; LoRA: " + ", ".join(f"{t['name']} (text {t['te_weight']:g}, UNet {t['unet_weight']:g})"
                                           for t in loras) if loras else ""
        return f"{len(rows)} tokens in {chunks} chunk(s) of {CHUNK} ({per_chunk}){lora_text}", rows

    button.click(run, prompt, [summary, table], queue=False)
    prompt.submit(run, prompt, [summary, table], queue=False)

    gr.Markdown("#### In the model's embedding space (loads the selected checkpoint)")
    with gr.Row():
        word = gr.Textbox(label="Nearest tokens to", placeholder="man", elem_id="tokens_neighbours_word")
        other = gr.Textbox(label="Compare the prompt above with", placeholder="a photo of a dog",
                           elem_id="tokens_compare_text")
    with gr.Row():
        neighbours_button = gr.Button("Find neighbours", elem_id="tokens_neighbours_run")
        compare_button = gr.Button("Compare", elem_id="tokens_compare_run")
    result = gr.JSON(label="Result", elem_id="tokens_model_result")

    def on_model(task):
        """Run a small task on the engine's worker (it owns the model) and wait for it."""
        model = ui.current_model()
        job = ui.app.queue.submit(lambda app: task(app.models.get(model)))
        try:
            return job.wait(600)
        except Exception as e:
            raise gr.Error(str(e)) from None

    def find_neighbours(text: str):
        from ..engine.inspector import nearest_tokens

        if not (text or "").strip():
            raise gr.Error("Type a word first")
        return on_model(lambda loaded: nearest_tokens(loaded.components, text.strip(), 10))

    def compare_texts(first: str, second: str):
        from ..engine.inspector import compare

        return on_model(lambda loaded: compare(loaded.components, first or "", second or "", 1,
                                               ui.app.models.embeddings_for(loaded)[0]))

    neighbours_button.click(find_neighbours, word, result, concurrency_limit=None)
    compare_button.click(compare_texts, [prompt, other], result, concurrency_limit=None)
    return {"prompt": prompt}
