"""The X/Y/Z plot's axes: what each one changes in a request, how its values are written and labelled.

Values follow A1111: comma-separated lists (CSV quoting for values with commas), integer ranges
``1-5``, ``1-5 (+2)``, ``10-30 [5]`` (five evenly spaced values), the same for decimals (``5-9 (+1.5)``,
``0.3-0.9 [4]``); Prompt S/R's first value is the text searched for in the prompt and negative prompt,
every value (the first included) replaces it in turn.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any, Callable

from webui.extensions import ExtensionAPI, GenerationRequest, RequestError

_INT = re.compile(r"^[+-]?\d+$")
_INT_RANGE = re.compile(r"^([+-]?\d+)\s*-\s*([+-]?\d+)(?:\s*\(\s*([+-]?\d+)\s*\))?$")
_INT_COUNT = re.compile(r"^([+-]?\d+)\s*-\s*([+-]?\d+)\s*\[\s*(\d+)\s*\]$")
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_FLOAT = re.compile(rf"^{_NUM}$")
_FLOAT_RANGE = re.compile(rf"^({_NUM})\s*-\s*({_NUM})(?:\s*\(\s*({_NUM})\s*\))?$")
_FLOAT_COUNT = re.compile(rf"^({_NUM})\s*-\s*({_NUM})\s*\[\s*(\d+)\s*\]$")
_SIZE = re.compile(r"^(\d+)\s*[x×X]\s*(\d+)$")
MAX_VALUES = 100


@dataclass(frozen=True)
class Axis:
    name: str
    kind: str  # nothing, int, float, text, choice, size, prompt_sr
    field: str | None = None  # the GenerationRequest field it sets
    modes: tuple[str, ...] = ("txt2img", "img2img")
    choices: Callable[[Any], list[str]] | None = None  # ctx -> names (samplers, checkpoints, ...)
    aliases: tuple[str, ...] = ()
    show_name: bool = True  # label "Steps: 20" (numbers) or just the value (names)

    def label(self, value: Any) -> str:
        if self.kind == "nothing":
            return ""
        if self.kind == "size":
            return f"Size: {value[0]}x{value[1]}"
        if self.kind == "float":
            value = _format_float(value)
        return f"{self.name}: {value}" if self.show_name else str(value)

    def apply(self, request: GenerationRequest, value: Any, search: str | None = None) -> GenerationRequest:
        if self.kind == "nothing":
            return request
        if self.kind == "size":
            return request.with_changes(width=value[0], height=value[1])
        if self.kind == "prompt_sr":
            return request.with_changes(prompt=request.prompt.replace(search, value),
                                        negative_prompt=request.negative_prompt.replace(search, value))
        return request.with_changes(**{self.field: value})


def _samplers(ctx) -> list[str]:
    return ExtensionAPI.samplers()


def _schedules(ctx) -> list[str]:
    return ExtensionAPI.schedule_types()


def _checkpoints(ctx) -> list[str]:
    return ctx.checkpoints()


AXES: tuple[Axis, ...] = (
    Axis("Nothing", "nothing", aliases=("none", "")),
    Axis("Seed", "int", "seed"),
    Axis("Var. seed", "int", "subseed", aliases=("variation seed", "subseed")),
    Axis("Var. strength", "float", "subseed_strength", aliases=("variation strength", "subseed strength")),
    Axis("Steps", "int", "steps"),
    Axis("CFG Scale", "float", "cfg_scale", aliases=("cfg", "cfg_scale")),
    Axis("Prompt S/R", "prompt_sr", show_name=False, aliases=("prompt sr", "prompt search/replace")),
    Axis("Sampler", "choice", "sampler", choices=_samplers, show_name=False, aliases=("sampler_name",)),
    Axis("Schedule type", "choice", "schedule", choices=_schedules, show_name=False,
         aliases=("schedule", "scheduler")),
    Axis("Checkpoint name", "choice", "model", choices=_checkpoints, show_name=False,
         aliases=("checkpoint", "model", "sd_model_checkpoint")),
    Axis("Denoising", "float", "denoising_strength", modes=("img2img",),
         aliases=("denoising strength", "denoising_strength")),
    Axis("Width", "int", "width"),
    Axis("Height", "int", "height"),
    Axis("Size", "size", aliases=("size (wxh)", "wxh")),
    Axis("Clip skip", "int", "clip_skip", aliases=("clip_skip",)),
)


# A1111's axis lists (1.10), so API clients that send A1111's axis *indices* in script_args get the
# same axis there and here. Entries: (label, the only mode it is offered in, or None for both).
_A1111_AXES = (
    ("Nothing", None), ("Seed", None), ("Var. seed", None), ("Var. strength", None), ("Steps", None),
    ("Hires steps", "txt2img"), ("CFG Scale", None), ("Image CFG Scale", "img2img"), ("Prompt S/R", None),
    ("Prompt order", None), ("Sampler", "txt2img"), ("Hires sampler", "txt2img"), ("Sampler", "img2img"),
    ("Checkpoint name", None), ("Negative Guidance minimum sigma", None), ("Sigma Churn", None),
    ("Sigma min", None), ("Sigma max", None), ("Sigma noise", None), ("Schedule type", None),
    ("Schedule min sigma", None), ("Schedule max sigma", None), ("Schedule rho", None), ("Eta", None),
    ("Clip skip", None), ("Denoising", None), ("Initial noise multiplier", None), ("Extra noise", None),
    ("Hires upscaler", "txt2img"), ("Cond. Image Mask Weight", "img2img"), ("VAE", None), ("Styles", None),
    ("UniPC Order", None), ("Face restore", None), ("Token merging ratio", None),
    ("Token merging ratio high-res", None), ("Always discard next-to-last sigma", None),
    ("SGM noise multiplier", None), ("Refiner checkpoint", None), ("Refiner switch at", None), ("RNG source", None),
)


def a1111_axis_labels(mode: str) -> list[str]:
    """A1111's X/Y/Z axis dropdown for ``mode`` (txt2img, or img2img which inpainting shares)."""
    mode = "txt2img" if mode == "txt2img" else "img2img"
    return [label for label, only in _A1111_AXES if only in (None, mode)]


def _norm(text: str) -> str:
    return " ".join(str(text).strip().lower().replace("_", " ").split())


def find_axis(value: Any, argument: str, mode: str = "txt2img") -> Axis:
    """An axis by name/alias in any case, or by its index in A1111's axis list for ``mode``."""
    if isinstance(value, bool):
        raise ValueError(f"{argument}: expected an axis name or index, got {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and _INT.match(value.strip())):
        index, labels = int(value), a1111_axis_labels(mode)
        if not 0 <= index < len(labels):
            raise ValueError(f"{argument}: axis index {index} out of range 0-{len(labels) - 1} (A1111's {mode} list)")
        value = labels[index]
        if not any(_norm(value) == _norm(axis.name) for axis in AXES):
            raise ValueError(f"{argument}: A1111's axis {index} ({value!r}) is not available here; choose one of: "
                             + ", ".join(a.name for a in AXES))
    if value is None:
        return AXES[0]
    wanted = _norm(value)
    for axis in AXES:
        if wanted == _norm(axis.name) or wanted in (_norm(a) for a in axis.aliases):
            return axis
    raise ValueError(f"{argument}: unknown axis {value!r}; choose one of: " + ", ".join(a.name for a in AXES))


def split_values(text: str) -> list[str]:
    """``a, b, "c, d"`` -> ["a", "b", "c, d"] (CSV, blanks dropped)."""
    if not text or not str(text).strip():
        return []
    row = next(csv.reader(io.StringIO(str(text)), skipinitialspace=True), [])
    return [item.strip() for item in row if item.strip()]


def _format_float(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _int_items(items: list[str], label: str) -> list[int]:
    values: list[int] = []
    for item in items:
        compact = item.strip()
        if _INT.match(compact):
            values.append(int(compact))
        elif m := _INT_COUNT.match(compact):
            start, end, count = int(m[1]), int(m[2]), int(m[3])
            if count < 1:
                raise ValueError(f"{label}: {item!r} asks for no values")
            values += [start] if count == 1 else [round(start + (end - start) * i / (count - 1)) for i in range(count)]
        elif m := _INT_RANGE.match(compact):
            start, end, step = int(m[1]), int(m[2]), int(m[3]) if m[3] else 1
            if step == 0:
                raise ValueError(f"{label}: {item!r} has a step of 0")
            stepped = list(range(start, end + (1 if step > 0 else -1), step))
            if not stepped:
                raise ValueError(f"{label}: {item!r} is an empty range (the step goes the other way)")
            values += stepped
        else:
            raise ValueError(f"{label}: {item!r} is not a whole number or a range like 1-5, 1-5 (+2), 10-30 [5]")
        if len(values) > MAX_VALUES:
            raise ValueError(f"{label}: more than {MAX_VALUES} values")
    return values


def _float_items(items: list[str], label: str) -> list[float]:
    values: list[float] = []
    for item in items:
        compact = item.strip()
        if _FLOAT.match(compact):
            values.append(float(compact))
        elif m := _FLOAT_COUNT.match(compact):
            start, end, count = float(m[1]), float(m[2]), int(m[3])
            if count < 1:
                raise ValueError(f"{label}: {item!r} asks for no values")
            values += [start] if count == 1 else [round(start + (end - start) * i / (count - 1), 6)
                                                  for i in range(count)]
        elif m := _FLOAT_RANGE.match(compact):
            start, end = float(m[1]), float(m[2])
            step = float(m[3]) if m[3] else 1.0
            if step == 0 or (end - start) * step < 0:
                raise ValueError(f"{label}: {item!r} is an empty range")
            count = int((end - start) / step + 1e-9) + 1
            if count > MAX_VALUES:
                raise ValueError(f"{label}: more than {MAX_VALUES} values")
            values += [round(start + i * step, 6) for i in range(count)]
        else:
            raise ValueError(f"{label}: {item!r} is not a number or a range like 5-9 (+1.5), 0.3-0.9 [4]")
        if len(values) > MAX_VALUES:
            raise ValueError(f"{label}: more than {MAX_VALUES} values")
    return values


def _match_choice(value: str, choices: list[str], label: str, ctx) -> str:
    wanted = _norm(value)
    for choice in choices:
        if wanted == _norm(choice):
            return choice
    return value  # not a listed spelling (an alias, an old name, a hash): the request's validation decides


def parse_values(axis: Axis, text: Any, dropdown: Any, ctx, request: GenerationRequest, label: str) -> list[Any]:
    """An axis's values, checked against the request: every value must make a valid request, so a typo
    fails before the first image is made. Errors name the axis (``X values (Steps): ...``)."""
    label = f"{label} ({axis.name})"
    if axis.kind == "nothing":
        return [None]
    if isinstance(text, (list, tuple)):
        items = [str(v).strip() for v in text if str(v).strip()]
    else:
        items = split_values(text or "")
    if axis.choices is not None and isinstance(dropdown, (list, tuple)) and dropdown:
        items = [str(v) for v in dropdown]  # A1111's multiselect dropdown wins for name axes
    if not items:
        raise RequestError("script_args", f"{label}: no values given")
    try:
        if axis.kind == "int":
            values: list[Any] = _int_items(items, label)
        elif axis.kind == "float":
            values = _float_items(items, label)
        elif axis.kind == "size":
            values = []
            for item in items:
                m = _SIZE.match(item)
                if not m:
                    raise ValueError(f"{label}: {item!r} is not a size like 512x768")
                values.append((int(m[1]), int(m[2])))
        elif axis.kind == "choice" and axis.field == "model":
            values = [ctx.find_checkpoint(item) for item in items]
        elif axis.kind == "choice":
            values = [_match_choice(item, axis.choices(ctx), label, ctx) for item in items]
        else:  # prompt_sr, text
            values = items
    except ValueError as e:
        raise RequestError("script_args", str(e) if str(e).startswith(label) else f"{label}: {e}") from None
    if len(values) > MAX_VALUES:
        raise RequestError("script_args", f"{label}: more than {MAX_VALUES} values")
    search = values[0] if axis.kind == "prompt_sr" else None
    if search is not None and search not in request.prompt and search not in request.negative_prompt:
        raise RequestError("script_args", f"{label}: {search!r} is in neither the prompt nor the negative prompt")
    for value in values:
        try:
            axis.apply(request, value, search).validated()
        except RequestError as e:
            raise RequestError("script_args", f"{label}: {value!r}: {e}") from None
    return values
