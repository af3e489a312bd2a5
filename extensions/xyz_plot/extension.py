"""X/Y/Z plot, built on the public extension API only (``webui.extensions``).

Each cell is one ordinary generation of the request with the axes' values applied, so a cell is the
same picture as a single generation with those settings. Returns the grid first (then the per-Z
sub-grids when asked), then every cell's images, each with its own infotext, as A1111 does.

Script arguments (UI controls and the API's ``script_args``, in this order, A1111's order):
``x_type, x_values, x_values_dropdown, y_type, y_values, y_values_dropdown, z_type, z_values,
z_values_dropdown, draw_legend, include_lone_images, include_sub_grids, no_fixed_seeds, vary_seeds_x,
vary_seeds_y, vary_seeds_z, margin_size, csv_mode``. Axis types are names ("Steps", "CFG Scale", ...)
or indices into A1111's axis list for the tab (``axes.a1111_axis_labels``); values are text ("1-5, 8")
or a list.
"""
from __future__ import annotations

import random

from webui.extensions import (GenerationRequest, GenerationResult, RequestError, Script, ScriptArg, ScriptContext,
                              ScriptUIContext, add_infotext_fields)

from .axes import AXES, find_axis, parse_values
from .grid import draw_grid, join_grids

MAX_CELLS = 400
MAX_SEED = 2**32 - 1
AXIS_NAMES = tuple(a.name for a in AXES)


class XYZPlot(Script):
    title = "X/Y/Z plot"
    modes = ("txt2img", "img2img")
    arguments = (
        ScriptArg("X type", "Seed", AXIS_NAMES), ScriptArg("X values", ""), ScriptArg("X values (list)", None),
        ScriptArg("Y type", "Nothing", AXIS_NAMES), ScriptArg("Y values", ""), ScriptArg("Y values (list)", None),
        ScriptArg("Z type", "Nothing", AXIS_NAMES), ScriptArg("Z values", ""), ScriptArg("Z values (list)", None),
        ScriptArg("Draw legend", True), ScriptArg("Include individual images", True),
        ScriptArg("Include sub grids", False), ScriptArg("Keep -1 for seeds", False),
        ScriptArg("Vary seeds for X", False), ScriptArg("Vary seeds for Y", False),
        ScriptArg("Vary seeds for Z", False), ScriptArg("Grid margins (px)", 0, minimum=0, maximum=500, step=2),
        ScriptArg("Use text inputs instead of dropdowns", False),
    )

    # ---- arguments ------------------------------------------------------------------------
    def parse_args(self, args: list, mode: str = "txt2img") -> list:
        args = super().parse_args(args, mode)
        for i, axis in ((0, "x_type"), (3, "y_type"), (6, "z_type")):
            args[i] = find_axis(args[i], axis, mode).name
            values = args[i + 1]
            if values is None:
                args[i + 1] = ""
            elif not isinstance(values, (str, list, tuple, int, float)):
                raise ValueError(f"{axis[0]}_values: expected text or a list, got {type(values).__name__}")
            elif isinstance(values, (int, float)):
                args[i + 1] = str(values)
            dropdown = args[i + 2]
            if dropdown is not None and not isinstance(dropdown, (list, tuple)):
                args[i + 2] = [dropdown]
        for i in range(9, 16):
            args[i] = bool(args[i])
        try:
            args[16] = max(0, min(500, int(args[16] or 0)))
        except (TypeError, ValueError):
            raise ValueError(f"margin_size: expected a whole number, got {args[16]!r}") from None
        args[17] = bool(args[17])
        return args

    # ---- UI -------------------------------------------------------------------------------
    def ui(self, ctx: ScriptUIContext) -> list:
        import gradio as gr

        names = [a.name for a in AXES if ctx.mode in a.modes]
        controls = []
        axis_controls = []
        for letter, default in (("x", "Seed"), ("y", "Nothing"), ("z", "Nothing")):
            with gr.Row():
                kind = gr.Dropdown(names, value=default, label=f"{letter.upper()} type",
                                   elem_id=ctx.elem_id(f"{letter}_type"), scale=1)
                values = gr.Textbox(label=f"{letter.upper()} values", lines=1, scale=3,
                                    placeholder="e.g. 1-5, 8, 10-30 (+5), 7-9 [3]",
                                    elem_id=ctx.elem_id(f"{letter}_values"), visible=default != "Nothing")
                dropdown = gr.Dropdown([], value=[], multiselect=True, label=f"{letter.upper()} values",
                                       visible=False, scale=3, elem_id=ctx.elem_id(f"{letter}_values_dropdown"))
            controls += [kind, values, dropdown]
            axis_controls.append((kind, values, dropdown))
        with gr.Row():
            legend = gr.Checkbox(True, label="Draw legend", elem_id=ctx.elem_id("draw_legend"))
            lone = gr.Checkbox(True, label="Include individual images", elem_id=ctx.elem_id("include_lone_images"))
            sub_grids = gr.Checkbox(False, label="Include sub grids", elem_id=ctx.elem_id("include_sub_grids"))
            keep_seeds = gr.Checkbox(False, label="Keep -1 for seeds", elem_id=ctx.elem_id("no_fixed_seeds"))
        with gr.Row():
            vary = [gr.Checkbox(False, label=f"Vary seeds for {letter}", elem_id=ctx.elem_id(f"vary_seeds_{letter}"))
                    for letter in "xyz"]
            margin = gr.Slider(0, 500, value=0, step=2, label="Grid margins (px)", elem_id=ctx.elem_id("margin_size"))
            csv_mode = gr.Checkbox(False, label="Use text inputs instead of dropdowns", visible=False)
        controls += [legend, lone, sub_grids, keep_seeds, *vary, margin, csv_mode]

        def on_type(name):
            axis = find_axis(name, "type")
            if axis.kind == "nothing":
                return gr.update(visible=False), gr.update(visible=False, value=[])
            if axis.choices is not None:
                return gr.update(visible=False), gr.update(visible=True, choices=axis.choices(ctx), value=[])
            return gr.update(visible=True), gr.update(visible=False, value=[])

        for kind, values, dropdown in axis_controls:
            kind.change(on_type, kind, [values, dropdown], queue=False, show_progress="hidden")
        return controls

    # ---- run ------------------------------------------------------------------------------
    def run(self, context: ScriptContext, request: GenerationRequest, x_type, x_values, x_dropdown, y_type, y_values,
            y_dropdown, z_type, z_values, z_dropdown, draw_legend=True, include_lone_images=True,
            include_sub_grids=False, no_fixed_seeds=False, vary_seeds_x=False, vary_seeds_y=False,
            vary_seeds_z=False, margin_size=0, csv_mode=False) -> GenerationResult:
        axes = [find_axis(x_type, "x_type"), find_axis(y_type, "y_type"), find_axis(z_type, "z_type")]
        raw = [x_values, y_values, z_values]
        values = [parse_values(axis, text, dropdown, context, request, f"{letter} values")
                  for axis, text, dropdown, letter in zip(axes, raw, (x_dropdown, y_dropdown, z_dropdown), "XYZ")]
        xs, ys, zs = values
        if len(xs) * len(ys) * len(zs) > MAX_CELLS:
            raise RequestError("script_args", f"{len(xs)} x {len(ys)} x {len(zs)} cells is more than {MAX_CELLS}")
        if not no_fixed_seeds:  # A1111: one random seed for every cell, so only the axes differ
            request = request.with_changes(
                seed=request.seed if request.seed != -1 else random.randrange(MAX_SEED),
                subseed=request.subseed if request.subseed != -1 else random.randrange(MAX_SEED))
            for i, axis in enumerate(axes):
                if axis.field in ("seed", "subseed"):
                    values[i] = [v if v != -1 else random.randrange(MAX_SEED) for v in values[i]]
        searches = [vals[0] if axis.kind == "prompt_sr" else None for axis, vals in zip(axes, values)]
        context.set_total(len(xs) * len(ys) * len(zs))

        cells: dict[tuple[int, int, int], GenerationResult] = {}
        interrupted = False
        for iz, z in enumerate(zs):
            for iy, y in enumerate(ys):
                for ix, x in enumerate(xs):
                    if context.interrupted:
                        interrupted = True
                        break
                    cell = request
                    if request.seed != -1 and (vary_seeds_x or vary_seeds_y or vary_seeds_z):
                        offset = (ix if vary_seeds_x else 0) + (iy * len(xs) if vary_seeds_y else 0) + \
                                 (iz * len(xs) * len(ys) if vary_seeds_z else 0)
                        cell = cell.with_changes(seed=(request.seed + offset) % (MAX_SEED + 1))
                    for axis, value, search in zip(axes, (x, y, z), searches):
                        cell = axis.apply(cell, value, search)
                    result = context.generate(cell)
                    if result.images:
                        cells[(ix, iy, iz)] = result
                    if result.interrupted:
                        interrupted = True
        if not cells:
            return GenerationResult([], [], [], [], interrupted=True, request=request)

        first = cells[min(cells, key=lambda k: (k[2], k[1], k[0]))]
        legend_labels = [[axis.label(v) for v in vals] if axis.kind != "nothing" else [""] * len(vals)
                         for axis, vals in zip(axes, values)]
        sub_grids = []
        for iz in range(len(zs)):
            rows = [[cells[(ix, iy, iz)].images[0] if (ix, iy, iz) in cells else None for ix in range(len(xs))]
                    for iy in range(len(ys))]
            if all(c is None for r in rows for c in r):
                continue
            sub_grids.append((iz, draw_grid(rows, legend_labels[0], legend_labels[1], margin_size, draw_legend)[0]))
        if len(zs) > 1:
            grid, _ = join_grids([g for _, g in sub_grids], [legend_labels[2][iz] for iz, _ in sub_grids],
                                 margin_size, draw_legend)
        else:
            grid = sub_grids[0][1]

        fields = {"Script": self.title}
        for letter, axis, text, dropdown in zip("XYZ", axes, raw, (x_dropdown, y_dropdown, z_dropdown)):
            if axis.kind != "nothing":
                shown = ", ".join(str(v) for v in dropdown) if axis.choices is not None and dropdown else \
                    (", ".join(str(v) for v in text) if isinstance(text, (list, tuple)) else str(text))
                fields[f"{letter} Type"], fields[f"{letter} Values"] = axis.name, shown
        grid_text = add_infotext_fields(first.infotexts[0], fields)
        seed, subseed = first.seeds[0], first.subseeds[0]
        out = GenerationResult([], [], [], [], interrupted=interrupted, model_title=first.model_title, request=request)
        saving = request.save_images

        def add(image, text, seed_, subseed_, path):
            out.images.append(image)
            out.infotexts.append(text)
            out.seeds.append(seed_)
            out.subseeds.append(subseed_)
            if saving and path:
                out.paths.append(path)

        add(grid, grid_text, seed, subseed, context.save_grid(grid, grid_text, request, seed))
        if include_sub_grids and len(zs) > 1:
            for iz, sub in sub_grids:
                text = add_infotext_fields(grid_text, {"Z Value": legend_labels[2][iz]})
                add(sub, text, seed, subseed, context.save_grid(sub, text, request, seed))
        if include_lone_images:
            for key in sorted(cells, key=lambda k: (k[2], k[1], k[0])):
                result = cells[key]
                for i, image in enumerate(result.images):
                    path = result.paths[i] if i < len(result.paths) else None
                    add(image, result.infotexts[i], result.seeds[i], result.subseeds[i], path)
        if saving and len(out.paths) != len(out.images):
            out.paths = []  # keep paths aligned with images, or give none
        out.timings = {"total": round(sum(r.timings.get("total", 0.0) for r in cells.values()), 3)}
        return out


def setup(api) -> None:
    api.add_script(XYZPlot())


__all__ = ["XYZPlot", "setup"]
