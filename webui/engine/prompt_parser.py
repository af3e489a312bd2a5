"""A1111-compatible prompt syntax in pure Python: emphasis weights, BREAK, prompt editing and
alternation schedules, and LoRA tags.

The behaviour follows AUTOMATIC1111's documented prompt syntax; the implementation is our own.
Pipeline order (as in A1111): ``extract_lora_tags`` on the whole prompt, ``prompt_schedule`` on
what is left, then ``parse_emphasis`` on each scheduled text.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

__all__ = [
    "BREAK",
    "LoraTag",
    "extract_lora_tags",
    "is_break",
    "parse_emphasis",
    "prompt_schedule",
]

BREAK = "BREAK"
"""Text of the segment that ``parse_emphasis`` emits for a forced chunk break (weight -1.0)."""

_BREAK_WEIGHT = -1.0
_ROUND = 1.1
_SQUARE = 1 / 1.1
_ESCAPABLE = "()[]\\"

# ":NUMBER)" closing a round group with an explicit weight (whitespace allowed around the number).
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)")
# The BREAK keyword as a separate word, with the whitespace around it.
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")
# The "when" of a prompt edit: a signed int or float, optionally with an exponent.
_WHEN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*")
_LORA_TAG = re.compile(r"<(lora|lyco):([^<>]*)>", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Emphasis


def is_break(segment: tuple[str, float]) -> bool:
    """True for the forced chunk break segment ``("BREAK", -1.0)`` of ``parse_emphasis``."""
    return segment[0] == BREAK and segment[1] == _BREAK_WEIGHT


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(text, weight)`` segments following A1111's attention syntax.

    ``(x)`` multiplies by 1.1, ``[x]`` divides by 1.1, ``(x:W)`` multiplies by W; brackets left
    open at the end still apply; stray closers and ``\\(``-style escapes are literal text.
    ``BREAK`` as a separate word becomes ``("BREAK", -1.0)``. Adjacent equal weights are merged.
    """
    segments: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []
    square_open: list[int] = []
    pending: list[str] = []

    def flush() -> None:
        if not pending:
            return
        parts = _BREAK_SPLIT.split("".join(pending))
        pending.clear()
        for index, part in enumerate(parts):
            if index:
                segments.append([BREAK, _BREAK_WEIGHT, True])
            if part:
                segments.append([part, 1.0, False])

    def multiply(start: int, factor: float) -> None:
        for segment in segments[start:]:
            if not segment[2]:
                segment[1] *= factor

    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            if i + 1 < n and text[i + 1] in _ESCAPABLE:
                pending.append(text[i + 1])
                i += 2
            else:
                pending.append(char)
                i += 1
            continue
        if char == "(":
            flush()
            round_open.append(len(segments))
        elif char == "[":
            flush()
            square_open.append(len(segments))
        elif char == ":" and round_open and (match := _WEIGHT_CLOSE.match(text, i)):
            flush()
            multiply(round_open.pop(), float(match.group(1)))
            i = match.end()
            continue
        elif char == ")" and round_open:
            flush()
            multiply(round_open.pop(), _ROUND)
        elif char == "]" and square_open:
            flush()
            multiply(square_open.pop(), _SQUARE)
        else:
            pending.append(char)
        i += 1
    flush()
    for start in round_open:
        multiply(start, _ROUND)
    for start in square_open:
        multiply(start, _SQUARE)

    merged: list[list] = []
    for segment in segments:
        if merged and not segment[2] and not merged[-1][2] and merged[-1][1] == segment[1]:
            merged[-1][0] += segment[0]
        else:
            merged.append(segment)
    if not merged:
        return [("", 1.0)]
    return [(segment[0], segment[1]) for segment in merged]


# --------------------------------------------------------------------------------------------
# Prompt editing and alternation


@dataclass(frozen=True)
class _Edit:
    """``[before:after:when]``; ``before`` is empty for ``[after:when]``."""

    before: tuple[_Node, ...]
    after: tuple[_Node, ...]
    when: str


@dataclass(frozen=True)
class _Alternate:
    """``[a|b|c]``: option ``(step - 1) % len(options)`` at each step."""

    options: tuple[tuple[_Node, ...], ...]


_Node = Union[str, _Edit, _Alternate]


def _match_brackets(text: str) -> dict[int, int]:
    """Map each opening ``(``/``[`` to its closer; escaped characters are skipped, a closer that
    does not match the innermost open bracket is stray, brackets still open at the end are unmatched."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char in "([":
            stack.append(i)
        elif char in ")]" and stack and text[stack[-1]] == ("(" if char == ")" else "["):
            pairs[stack.pop()] = i
        i += 1
    return pairs


class _ScheduleParser:
    """Builds the editing/alternation tree of one prompt; everything else stays verbatim text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pairs = _match_brackets(text)

    def parse(self, start: int, end: int) -> tuple[_Node, ...]:
        """Nodes for ``text[start:end]``."""
        nodes: list[_Node] = []
        literal_from = start
        i = start
        while i < end:
            char = self.text[i]
            if char == "\\":
                i += 2
                continue
            if char == "[" and i in self.pairs:
                close = self.pairs[i]
                node = self._bracket(i + 1, close)
                if node is not None:
                    if literal_from < i:
                        nodes.append(self.text[literal_from:i])
                    nodes.append(node)
                    i = literal_from = close + 1
                    continue
            i += 1
        if literal_from < end:
            nodes.append(self.text[literal_from:end])
        return tuple(nodes)

    def _bracket(self, start: int, end: int) -> _Node | None:
        """An edit or alternation for the inside of ``[...]``, or None for an emphasis bracket."""
        colons: list[int] = []
        bars: list[int] = []
        i = start
        while i < end:
            char = self.text[i]
            if char == "\\":
                i += 2
                continue
            if char in "([" and i in self.pairs:
                i = self.pairs[i] + 1
                continue
            if char == ":":
                colons.append(i)
            elif char == "|":
                bars.append(i)
            i += 1
        if bars and not colons:
            bounds = [start - 1, *bars, end]
            return _Alternate(tuple(self.parse(a + 1, b) for a, b in zip(bounds, bounds[1:])))
        if colons and not bars and len(colons) <= 2:
            when = _WHEN.fullmatch(self.text, colons[-1] + 1, end)
            if when is None:
                return None
            if len(colons) == 1:
                return _Edit((), self.parse(start, colons[0]), when.group(1))
            return _Edit(self.parse(start, colons[0]), self.parse(colons[0] + 1, colons[1]), when.group(1))
        return None


def _edit_step(when: str, steps: int) -> int:
    """Last step that shows the "before" text: fractions (< 1) of ``steps``, else a step number;
    capped at ``steps``; 0 means the "after" text from the first step on."""
    value = float(when)
    if value < 1:
        value *= steps
    if value >= steps:
        return steps
    if value < 1:
        return 0
    return int(value)


def _boundaries(nodes: tuple[_Node, ...], steps: int, found: set[int]) -> None:
    for node in nodes:
        if isinstance(node, _Edit):
            step = _edit_step(node.when, steps)
            if step >= 1:
                found.add(step)
            _boundaries(node.before, steps, found)
            _boundaries(node.after, steps, found)
        elif isinstance(node, _Alternate):
            found.update(range(1, steps + 1))
            for option in node.options:
                _boundaries(option, steps, found)


def _render(nodes: tuple[_Node, ...], step: int, steps: int) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            chosen = node.before if step <= _edit_step(node.when, steps) else node.after
            out.append(_render(chosen, step, steps))
        else:
            out.append(_render(node.options[(step - 1) % len(node.options)], step, steps))
    return "".join(out)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """``[(end_step, text), ...]`` for A1111 prompt editing (``[from:to:when]``, ``[to:when]``,
    ``[from::when]``) and alternation (``[a|b]``); steps are 1-based, the text at step s is that of
    the first entry with ``end_step >= s``. Other brackets and escapes are kept verbatim."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    try:
        tree = _ScheduleParser(prompt).parse(0, len(prompt))
        if all(isinstance(node, str) for node in tree):
            return [(steps, prompt)]
        ends = {steps}
        _boundaries(tree, steps, ends)
        schedule: list[tuple[int, str]] = []
        for end in sorted(ends):
            text = _render(tree, end, steps)
            if schedule and schedule[-1][1] == text:
                schedule[-1] = (end, text)
            else:
                schedule.append((end, text))
    except RecursionError:  # absurdly deep nesting: like A1111 on a parse failure, no scheduling
        return [(steps, prompt)]
    return schedule


# --------------------------------------------------------------------------------------------
# LoRA tags


@dataclass(frozen=True)
class LoraTag:
    """One ``<lora:NAME[:TE[:UNET]]>`` tag: text-encoder and UNet multipliers."""

    name: str
    te_weight: float
    unet_weight: float


def _weight(value: str, tag: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"invalid weight {value.strip()!r} in {tag}") from None
    if not math.isfinite(number):
        raise ValueError(f"invalid weight {value.strip()!r} in {tag}")
    return number


def _lora_tag(tag: str, body: str) -> LoraTag:
    name, *args = body.split(":")
    name = name.strip()
    if not name:
        raise ValueError(f"missing network name in {tag}")
    positional: list[str] = []
    named: dict[str, str] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq:
            key = key.strip().lower()
            if key not in ("te", "unet") or key in named:
                raise ValueError(f"unknown or repeated argument {key!r} in {tag}")
            named[key] = value
        elif named:
            raise ValueError(f"positional weight after a named one in {tag}")
        else:
            positional.append(arg)
    if len(positional) > 2:
        raise ValueError(f"too many weights in {tag} (expected NAME, NAME:W or NAME:TE:UNET)")
    te_text = named.get("te", positional[0] if positional else None)
    te = 1.0 if te_text is None else _weight(te_text, tag)
    unet_text = named.get("unet", positional[1] if len(positional) > 1 else None)
    unet = te if unet_text is None else _weight(unet_text, tag)
    return LoraTag(name, te, unet)


def extract_lora_tags(prompt: str) -> tuple[str, list[LoraTag]]:
    """Remove ``<lora:...>`` / ``<lyco:...>`` tags from ``prompt``; return the remaining text and
    the tags in order. ``<lora:NAME>`` weighs 1, ``<lora:NAME:W>`` W for both, ``<lora:NAME:TE:UNET>``;
    ``te=``/``unet=`` named weights are accepted too. Names are kept as written (no path handling).
    Raises ValueError naming the tag for a bad weight."""
    tags: list[LoraTag] = []

    def take(match: re.Match[str]) -> str:
        tags.append(_lora_tag(match.group(0), match.group(2)))
        return ""

    return _LORA_TAG.sub(take, prompt), tags
