"""Labelled grids: cells in rows and columns, column labels above, row labels on the left, drawn with
the font that ships inside Pillow (``ImageFont.load_default(size=...)``, Pillow >= 10.1)."""
from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


@dataclass
class GridLayout:
    """Where everything went: ``cells[(column, row)] = (left, top, right, bottom)``."""

    size: tuple[int, int]
    cell_size: tuple[int, int]
    top: int  # height of the column-label band
    left: int  # width of the row-label band
    cells: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)


def font_for(cell_width: int, cell_height: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=font_size(cell_width, cell_height))


def font_size(cell_width: int, cell_height: int) -> int:
    return max(12, (cell_width + cell_height) // 25)


def wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Words onto lines no wider than ``width`` (a single long word is cut by characters)."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if draw.textlength(candidate, font=font) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            while draw.textlength(line, font=font) > width and len(line) > 1:
                cut = len(line)
                while cut > 1 and draw.textlength(line[:cut], font=font) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Hgjy")
    return bottom + max(2, bottom // 5)


def draw_grid(cells: list[list[Image.Image | None]], column_labels: list[str], row_labels: list[str],
              margin: int = 0, legend: bool = True) -> tuple[Image.Image, GridLayout]:
    """``cells[row][column]``; a missing cell (interrupted run) stays blank. Labels that are all empty
    take no space."""
    rows, columns = len(cells), max(len(r) for r in cells)
    present = [c for r in cells for c in r if c is not None]
    cell_w = max((c.width for c in present), default=64)
    cell_h = max((c.height for c in present), default=64)
    font = font_for(cell_w, cell_h)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(4, font.size // 3)
    line_h = _line_height(font)
    show_columns = legend and any(column_labels)
    show_rows = legend and any(row_labels)
    left = 0
    row_lines: list[list[str]] = []
    if show_rows:
        widest = max(scratch.textlength(t, font=font) for t in row_labels)
        left = int(min(widest, max(cell_w, 8 * font.size))) + 2 * pad
        row_lines = [wrap(scratch, t, font, left - 2 * pad) for t in row_labels]
    top = 0
    column_lines: list[list[str]] = []
    if show_columns:
        column_lines = [wrap(scratch, t, font, cell_w - 2 * pad) for t in column_labels]
        top = max(len(lines) for lines in column_lines) * line_h + 2 * pad
    width = left + columns * cell_w + (columns - 1) * margin
    height = top + rows * cell_h + (rows - 1) * margin
    grid = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    layout = GridLayout((width, height), (cell_w, cell_h), top, left)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            x, y = left + c * (cell_w + margin), top + r * (cell_h + margin)
            layout.cells[(c, r)] = (x, y, x + cell_w, y + cell_h)
            if cell is not None:
                grid.paste(cell.convert("RGB"), (x, y))
    for c, lines in enumerate(column_lines):
        x0 = left + c * (cell_w + margin)
        y = top - pad - len(lines) * line_h
        for line in lines:
            draw.text((x0 + (cell_w - draw.textlength(line, font=font)) / 2, y), line, font=font, fill=TEXT)
            y += line_h
    for r, lines in enumerate(row_lines):
        y = top + r * (cell_h + margin) + (cell_h - len(lines) * line_h) / 2
        for line in lines:
            draw.text((left - pad - draw.textlength(line, font=font), y), line, font=font, fill=TEXT)
            y += line_h
    return grid, layout


def join_grids(grids: list[Image.Image], labels: list[str], margin: int = 0,
               legend: bool = True) -> tuple[Image.Image, GridLayout]:
    """The Z axis: sub-grids side by side, each under its own label."""
    return draw_grid([grids], labels, [""], margin, legend)
