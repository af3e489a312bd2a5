"""Prompt -> conditioning: A1111 chunking, emphasis weights with mean restore, BREAK, schedules."""
import pytest
import torch

from webui.engine import RequestError
from webui.engine.conditioning import CHUNK, chunk_prompt, count_tokens, encode_chunks, encode_prompts
from webui.model_manager.loader import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("sd1")


@pytest.fixture(scope="module")
def components(app):
    return app.models.get("tiny-sd1").components


def test_real_clip_ids_and_word_end_markers(tokenizer):
    chunks = chunk_prompt(tokenizer, "a photo of a cat")
    assert chunks[0].tokens == [320, 1125, 539, 320, 2368]
    assert tokenizer.convert_ids_to_tokens(2368) == "cat</w>"
    ids, weights = chunks[0].padded(49406, 49407, 49407)
    assert len(ids) == 77 and ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and set(ids[7:]) == {49407}


def test_emphasis_weights_reach_the_tokens(tokenizer):
    chunk = chunk_prompt(tokenizer, "a (red:1.5) [blue] ((circle))")[0]
    by_text = dict(zip(chunk.sources, chunk.weights))
    assert by_text["red"] == 1.5 and by_text["blue"] == pytest.approx(1 / 1.1)
    assert by_text["circle"] == pytest.approx(1.21)


def test_long_prompts_chunk_by_75_and_break_forces_a_chunk(tokenizer):
    words = " ".join(["cat"] * 80)
    chunks = chunk_prompt(tokenizer, words)
    assert [len(c.tokens) for c in chunks] == [75, 5]
    assert count_tokens(tokenizer, words) == (80, 150)
    assert [len(c.tokens) for c in chunk_prompt(tokenizer, "red circle BREAK blue square")] == [2, 2]
    assert count_tokens(tokenizer, "") == (0, CHUNK)


def test_full_chunk_moves_words_after_the_last_comma(tokenizer):
    text = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)  # comma is token 71 of 81
    chunks = chunk_prompt(tokenizer, text)
    assert [len(c.tokens) for c in chunks] == [71, 10]  # the dogs moved together
    far = " ".join(["cat"] * 40) + ", " + " ".join(["dog"] * 40)  # comma 36 tokens back: no move
    assert [len(c.tokens) for c in chunk_prompt(tokenizer, far)] == [75, 6]


def test_weight_one_changes_nothing_and_emphasis_changes_the_conditioning(components, tokenizer):
    plain = encode_chunks(components, chunk_prompt(tokenizer, "red circle"), 1, "cpu")
    one = encode_chunks(components, chunk_prompt(tokenizer, "(red:1) circle"), 1, "cpu")
    strong = encode_chunks(components, chunk_prompt(tokenizer, "(red:1.5) circle"), 1, "cpu")
    assert torch.equal(plain, one)
    assert not torch.allclose(plain, strong)
    assert strong.mean().item() == pytest.approx(plain.mean().item(), rel=1e-4, abs=1e-6)  # mean restored


def test_prompt_editing_switches_at_the_right_step(components):
    conditioning = encode_prompts(components, "a [red:blue:0.5] circle", "", 1, 10, "cpu")
    red = encode_prompts(components, "a red circle", "", 1, 10, "cpu").at(1)[0]
    blue = encode_prompts(components, "a blue circle", "", 1, 10, "cpu").at(1)[0]
    assert torch.equal(conditioning.at(5)[0], red) and torch.equal(conditioning.at(6)[0], blue)
    alternating = encode_prompts(components, "[red|blue] circle", "", 1, 4, "cpu")
    assert torch.equal(alternating.at(1)[0], alternating.at(3)[0])
    assert not torch.equal(alternating.at(1)[0], alternating.at(2)[0])


def test_positive_and_negative_are_padded_to_the_same_length(components):
    conditioning = encode_prompts(components, " ".join(["cat"] * 100), "blurry", 1, 10, "cpu")
    cond, uncond = conditioning.at(1)
    assert cond.shape == uncond.shape == (1, 154, cond.shape[-1])


def test_prompt_editing_changes_the_generated_image(app, base_request):
    import numpy as np

    def image(prompt):
        return np.asarray(app.engine.generate(base_request.with_changes(prompt=prompt, steps=4)).images[0], dtype=int)

    # Step 1 reads the first text, steps 2-4 the second: the image is neither one alone.
    edited = image("[a red circle:a blue square on a green background:1]")
    assert np.abs(edited - image("a red circle")).mean() > 0
    assert np.abs(edited - image("a blue square on a green background")).mean() > 0


def test_bad_lora_tag_syntax_is_a_validation_error(base_request):
    with pytest.raises(RequestError, match="prompt"):
        base_request.with_changes(prompt="a cat <lora:style:abc>").validated()
