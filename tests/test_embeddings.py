"""Textual-inversion embeddings: the file's name in a prompt brings in its vectors."""
import numpy as np
import torch

from webui.engine.conditioning import encode_prompts, inspect_prompt


def test_embedding_vectors_replace_the_name(app):
    loaded = app.models.get("tiny-sd1")
    usable, skipped = app.models.embeddings_for(loaded)
    assert {"kitty-style", "tri-emb", "bin-emb"} <= set(usable)
    assert "1024-wide" in skipped["wide-emb"] and "bad-emb" in skipped

    def cond(prompt):
        return encode_prompts(loaded.components, prompt, "", 1, 10, "cpu", usable).at(1)[0]

    # An embedding whose vectors are the rows of "cat" encodes exactly like "cat"; multi-vector too.
    assert torch.equal(cond("a kitty-style on a mat"), cond("a cat on a mat"))
    assert torch.equal(cond("a tri-emb here"), cond("a red circle big here"))
    assert torch.equal(cond("a bin-emb"), cond("a dog"))
    assert not torch.equal(cond("a kitty-style"), cond("a kitty-styled"))  # only the exact name


def test_embedding_changes_the_image_only_when_used_and_is_recorded(app, base_request):
    plain = app.engine.generate(base_request.with_changes(prompt="a red circle"))
    used = app.engine.generate(base_request.with_changes(prompt="a red circle, tri-emb"))
    assert np.abs(np.asarray(plain.images[0], dtype=int) - np.asarray(used.images[0], dtype=int)).mean() > 0.5
    assert "TI hashes" not in plain.infotexts[0]
    assert 'TI hashes: "tri-emb: ' in used.infotexts[0]


def test_inspector_shows_embedding_vectors(app):
    loaded = app.models.get("tiny-sd1")
    usable, _ = app.models.embeddings_for(loaded)
    report = inspect_prompt(loaded.components.tokenizer, "a tri-emb", usable)
    tokens = report["chunks"][0]["tokens"]
    assert [t.get("embedding") for t in tokens] == [None, "tri-emb", "tri-emb", "tri-emb"]
    assert report["total"] == 4
