"""A1111's infotext: the text record of how an image was made, written into the PNG and read back.

Format: the prompt (any number of lines), then ``Negative prompt: ...`` (any number of lines), then
one line of ``Key: value`` pairs separated by ``, ``. A value containing ``,``, ``:`` or a newline is
written as a JSON string. The parser returns A1111's field names with string values
(``Size`` is split into ``Size-1`` and ``Size-2``), as A1111's own parser does.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
_SCHEDULE_SUFFIXES = ("Karras", "Exponential", "SGM Uniform", "Uniform")


def quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def build(prompt: str, negative_prompt: str, params: Iterable[tuple[str, Any]]) -> str:
    """Infotext from ordered (key, value) pairs; pairs with value None are left out."""
    line = ", ".join(f"{k}: {quote(v)}" for k, v in params if v is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}"


def format_number(value: float) -> str:
    """7.0 -> "7", 7.5 -> "7.5" (A1111 writes CFG and strengths this way)."""
    return str(int(value)) if float(value).is_integer() else repr(round(float(value), 6))


def parse(text: str) -> dict[str, str]:
    """A1111 infotext -> fields (``Prompt``, ``Negative prompt``, ``Steps``, ``Size-1``, ...)."""
    fields: dict[str, str] = {}
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)  # no parameter line: every line is prompt text
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines[:-1]:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    fields["Prompt"] = "\n".join(prompt)
    fields["Negative prompt"] = "\n".join(negative)
    for key, value in _PARAM.findall(last):
        value = unquote(value.strip()) if value.strip().startswith('"') else value.strip()
        size = _SIZE.match(value)
        if size:
            fields[f"{key}-1"], fields[f"{key}-2"] = size[1], size[2]
        else:
            fields[key] = value
    fields.setdefault("Clip skip", "1")
    sampler = fields.get("Sampler", "")
    if "Schedule type" not in fields and sampler:
        for suffix in _SCHEDULE_SUFFIXES:  # old infotexts: "DPM++ 2M Karras"
            if sampler.endswith(" " + suffix):
                fields["Sampler"], fields["Schedule type"] = sampler[: -len(suffix) - 1], suffix
                break
    return fields


def request_fields(fields: dict[str, str]) -> dict[str, Any]:
    """Parsed infotext -> ``GenerationRequest`` keyword arguments (what "send to txt2img" fills)."""
    out: dict[str, Any] = {"prompt": fields.get("Prompt", ""), "negative_prompt": fields.get("Negative prompt", "")}
    conversions = {"Steps": ("steps", int), "Sampler": ("sampler", str), "Schedule type": ("schedule", str),
                   "CFG scale": ("cfg_scale", float), "Seed": ("seed", int), "Size-1": ("width", int),
                   "Size-2": ("height", int), "Variation seed": ("subseed", int),
                   "Variation seed strength": ("subseed_strength", float),
                   "Denoising strength": ("denoising_strength", float), "Clip skip": ("clip_skip", int),
                   "Mask blur": ("mask_blur", int), "Model": ("model", str), "VAE": ("vae", str)}
    for key, (name, kind) in conversions.items():
        if key in fields:
            try:
                out[name] = kind(fields[key])
            except ValueError:
                continue
    return out


def read_image_parameters(image) -> str | None:
    """The infotext stored in an image: PNG ``parameters`` text, or EXIF UserComment (JPEG/WebP)."""
    text = image.info.get("parameters")
    if text:
        return text
    try:
        comment = image.getexif().get_ifd(0x8769).get(0x9286)
    except (AttributeError, KeyError, ValueError):
        comment = None
    if isinstance(comment, bytes):
        if comment.startswith(b"UNICODE\0"):
            return comment[8:].decode("utf-16-be", errors="replace")
        return comment.split(b"\0", 1)[-1].decode("utf-8", errors="replace")
    return comment or None
