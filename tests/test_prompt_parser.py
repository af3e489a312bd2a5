"""A1111 prompt syntax: emphasis, BREAK, prompt editing/alternation schedules, LoRA tags."""
from __future__ import annotations

import dataclasses

import pytest

from webui.engine.prompt_parser import (
    BREAK,
    LoraTag,
    extract_lora_tags,
    is_break,
    parse_emphasis,
    prompt_schedule,
)


def _lists(segments: list[tuple[str, float]]) -> list[list]:
    return [[text, weight] for text, weight in segments]


def _approx(segments: list[tuple[str, float]]) -> list[tuple[str, object]]:
    return [(text, pytest.approx(weight)) for text, weight in segments]


# ---------------------------------------------------------------------------------- emphasis

@pytest.mark.parametrize("text, expected", [
    ("normal text", [["normal text", 1.0]]),
    ("an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]),
    ("(unbalanced", [["unbalanced", 1.1]]),
    ("\\(literal\\]", [["(literal]", 1.0]]),
    ("(unnecessary)(parens)", [["unnecessaryparens", 1.1]]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
      [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]]),
])
def test_a1111_doctest_examples_exactly(text, expected):
    assert _lists(parse_emphasis(text)) == expected


def test_nesting_multiplies():
    assert parse_emphasis("((a))") == _approx([("a", 1.21)])
    assert parse_emphasis("[[a]]") == _approx([("a", 1 / 1.21)])
    assert parse_emphasis("[a]") == _approx([("a", 1 / 1.1)])
    assert parse_emphasis("(a (b:1.5) c)") == _approx([("a ", 1.1), ("b", 1.65), (" c", 1.1)])
    assert parse_emphasis("([a])") == [("a", pytest.approx(1.0))]


def test_explicit_weight_forms():
    assert parse_emphasis("(a:1.5)") == [("a", 1.5)]
    assert parse_emphasis("(a: 0.25 )") == [("a", 0.25)]
    assert parse_emphasis("(a:.5) (b:2.)") == [("a", 0.5), (" ", 1.0), ("b", 2.0)]
    assert parse_emphasis("(a:-1)") == [("a", -1.0)]


def test_non_number_after_colon_is_literal_text():
    assert parse_emphasis("(a:b)") == _approx([("a:b", 1.1)])
    assert parse_emphasis("(a:b:1.2)") == [("a:b", 1.2)]
    assert parse_emphasis("(a:1.2.3)") == _approx([("a:1.2.3", 1.1)])
    assert parse_emphasis("x:1.5) y") == [("x:1.5) y", 1.0)]  # no open round bracket
    assert parse_emphasis("[a:1.5]") == _approx([("a:1.5", 1 / 1.1)])


def test_escapes_are_literal_and_keep_the_weight():
    assert parse_emphasis("\\(literal\\)") == [("(literal)", 1.0)]
    assert parse_emphasis("\\[x\\] \\\\ y") == [("[x] \\ y", 1.0)]
    assert parse_emphasis("(a \\) b)") == _approx([("a ) b", 1.1)])
    assert parse_emphasis("back\\slash") == [("back\\slash", 1.0)]  # lone backslash stays


def test_unbalanced_brackets():
    assert parse_emphasis("a [b") == _approx([("a ", 1.0), ("b", 1 / 1.1)])
    assert parse_emphasis("a (b (c) d") == _approx([("a ", 1.0), ("b ", 1.1), ("c", 1.21), (" d", 1.1)])
    assert parse_emphasis("a) b] c") == [("a) b] c", 1.0)]
    assert parse_emphasis("()") == [("", 1.0)]


def test_break_is_its_own_segment():
    assert parse_emphasis("a BREAK b") == [("a", 1.0), (BREAK, -1.0), ("b", 1.0)]
    assert parse_emphasis("(a BREAK b)") == _approx([("a", 1.1), ("BREAK", -1.0), ("b", 1.1)])
    assert parse_emphasis("a BREAK BREAK b") == [("a", 1.0), ("BREAK", -1.0), ("BREAK", -1.0), ("b", 1.0)]
    assert parse_emphasis("BREAK") == [("BREAK", -1.0)]
    assert parse_emphasis("a,BREAK,b") == [("a,", 1.0), ("BREAK", -1.0), (",b", 1.0)]
    assert is_break(parse_emphasis("x BREAK y")[1])
    # not a separate word, or not uppercase: plain text
    assert parse_emphasis("BREAKING break xBREAK") == [("BREAKING break xBREAK", 1.0)]
    assert not is_break(("BREAK", 1.0))


def test_empty_and_merging():
    assert parse_emphasis("") == [("", 1.0)]
    assert parse_emphasis("(a)(b) c") == _approx([("ab", 1.1), (" c", 1.0)])


# ---------------------------------------------------------------------------------- schedules

def test_no_editing_is_one_entry():
    assert prompt_schedule("a cat (on:1.2) [a] mat", 20) == [(20, "a cat (on:1.2) [a] mat")]
    assert prompt_schedule("", 5) == [(5, "")]


def test_edit_with_fraction_and_step_number():
    assert prompt_schedule("a [cat:dog:0.5] on a mat", 10) == [(5, "a cat on a mat"), (10, "a dog on a mat")]
    assert prompt_schedule("a [cat:dog:3] x", 10) == [(3, "a cat x"), (10, "a dog x")]
    assert prompt_schedule("[cat:dog:0.25]", 10) == [(2, "cat"), (10, "dog")]  # int(2.5)
    assert prompt_schedule("[cat:dog: 4 ]", 10) == [(4, "cat"), (10, "dog")]


def test_edit_bounds():
    assert prompt_schedule("[cat:dog:50]", 10) == [(10, "cat")]  # capped at steps
    assert prompt_schedule("[cat:dog:0.01]", 10) == [(10, "dog")]  # before step 1
    assert prompt_schedule("[cat:dog:1e9]", 10) == [(10, "cat")]


def test_add_after_and_remove_after():
    assert prompt_schedule("a [hat:4] b", 10) == [(4, "a  b"), (10, "a hat b")]
    assert prompt_schedule("a [:hat:4] b", 10) == [(4, "a  b"), (10, "a hat b")]
    assert prompt_schedule("a [hat::0.3] b", 10) == [(3, "a hat b"), (10, "a  b")]
    assert prompt_schedule("[word:1.5]", 4) == [(1, ""), (4, "word")]  # [to:when] with 1.5 -> step 1


def test_nested_editing():
    assert prompt_schedule("[a:[b:c:10]:5]", 20) == [(5, "a"), (10, "b"), (20, "c")]
    assert prompt_schedule("[[a:b:2]:c:4]", 6) == [(2, "a"), (4, "b"), (6, "c")]


def test_alternation():
    assert prompt_schedule("[a|b] x", 3) == [(1, "a x"), (2, "b x"), (3, "a x")]
    assert prompt_schedule("[a|b|c]", 5) == [(1, "a"), (2, "b"), (3, "c"), (4, "a"), (5, "b")]
    assert prompt_schedule("[a|]", 3) == [(1, "a"), (2, ""), (3, "a")]
    assert prompt_schedule("[a|a] z", 4) == [(4, "a z")]  # duplicates merged
    assert prompt_schedule("[a|[b|c]]", 4) == [(1, "a"), (2, "c"), (3, "a"), (4, "c")]


def test_multiple_edits_in_one_prompt():
    assert prompt_schedule("[a:b:2] and [c:d:4]", 6) == [(2, "a and c"), (4, "b and c"), (6, "b and d")]
    assert prompt_schedule("[a:b:2] [x|y]", 4) == [(1, "a x"), (2, "a y"), (3, "b x"), (4, "b y")]


def test_emphasis_and_escapes_inside_edits_are_preserved():
    prompt = "(big:1.2) [(red:1.3) \\[x\\]:[blue]:0.5] ((sky))"
    assert prompt_schedule(prompt, 4) == [(2, "(big:1.2) (red:1.3) \\[x\\] ((sky))"),
                                          (4, "(big:1.2) [blue] ((sky))")]
    assert parse_emphasis(prompt_schedule(prompt, 4)[0][1])[2] == ("red", 1.3)


def test_brackets_that_are_not_edits_stay_verbatim():
    for prompt in ("[word]", "[a:b]", "[a:b:c:5]", "[a:b|c]", "a | b", "[unclosed:x:5", "\\[a:b:5\\]",
                   "(a:b:5)", "x] [y"):
        assert prompt_schedule(prompt, 4) == [(4, prompt)], prompt


def test_edit_inside_emphasis():
    assert prompt_schedule("([a:b:1]:1.2) (unclosed [c|d]", 2) == [(1, "(a:1.2) (unclosed c"),
                                                                  (2, "(b:1.2) (unclosed d")]


def test_absurd_nesting_falls_back_to_the_plain_prompt():
    prompt = "[x:" * 3000 + "a" + ":1]" * 3000
    assert prompt_schedule(prompt, 4) == [(4, prompt)]


def test_steps_must_be_positive():
    with pytest.raises(ValueError):
        prompt_schedule("[a:b:1]", 0)


# ---------------------------------------------------------------------------------- LoRA tags

def test_lora_tag_forms():
    text, tags = extract_lora_tags("a <lora:one> b <lora:two:0.5> c <lora:three:0.3:-0.7>")
    assert text == "a  b  c "
    assert tags == [LoraTag("one", 1.0, 1.0), LoraTag("two", 0.5, 0.5), LoraTag("three", 0.3, -0.7)]


def test_lyco_and_named_weights():
    text, tags = extract_lora_tags("<lyco:old style:0.8>, cat, <lora:n:te=0.2:unet=0.4> <lora:m:unet=0>")
    assert text == ", cat,  "
    assert tags == [LoraTag("old style", 0.8, 0.8), LoraTag("n", 0.2, 0.4), LoraTag("m", 1.0, 0.0)]


def test_lora_names_kept_as_written():
    _, tags = extract_lora_tags("<lora:sub/dir/my-lora.v2:1> <lora:../escape:1>")
    assert [tag.name for tag in tags] == ["sub/dir/my-lora.v2", "../escape"]


def test_no_tags_leaves_prompt_alone():
    assert extract_lora_tags("a (cat:1.2) <other:x> [a:b:3]") == ("a (cat:1.2) <other:x> [a:b:3]", [])


@pytest.mark.parametrize("prompt", ["<lora:x:strong>", "<lora:x:0.5:high>", "<lora:x:>", "<lora:x:nan>",
                                    "<lora:x:1:2:3>", "<lora::1>", "<lora:x:dyn=4>"])
def test_bad_lora_tags_raise_naming_the_tag(prompt):
    with pytest.raises(ValueError) as error:
        extract_lora_tags(f"cat {prompt} dog")
    assert prompt in str(error.value)


def test_lora_tag_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        LoraTag("a", 1.0, 1.0).name = "b"  # type: ignore[misc]
