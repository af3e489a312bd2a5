"""Procedural "shapes" world used to train and evaluate the demo model.

Every scene is a 64x64 RGB image with a flat background colour and one or two
flat shapes (circle, square, triangle), deterministic from an integer seed.
Each scene also has a depth map (background = 0.0, shapes = 1.0) and a caption
drawn from a small grammar in which optional parts are left out at random.

This module is a training/evaluation tool only; the web UI must not import it.

Public API
----------
sample_scene(seed, two_shape_prob=0.25)        -> attrs (dict)
render(attrs)                                  -> (rgb uint8 HxWx3, depth float32 HxW)
caption_from_attrs(attrs, mention=None, rng=None) -> str
random_mention(rng, attrs)                     -> mention flags
make_example(seed)                             -> dict(image, depth, caption, attrs)
scene_attributes(seed)                         -> attrs (alias of sample_scene)
check_image(rgb)                               -> measured attributes (objective checker)
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOUR_NAMES = list(COLOURS)
SHAPES = ["circle", "square", "triangle"]
SIZES = ["small", "large"]
# half extent in pixels (before jitter)
HALF = {"small": 8, "large": 15}

# position phrase -> grid cell (col, row), col/row in 0..2
POSITIONS: dict[str, tuple[int, int]] = {
    "at the top left": (0, 0),
    "at the top": (1, 0),
    "at the top right": (2, 0),
    "at the left": (0, 1),
    "in the center": (1, 1),
    "at the right": (2, 1),
    "at the bottom left": (0, 2),
    "at the bottom": (1, 2),
    "at the bottom right": (2, 2),
}
POSITION_NAMES = list(POSITIONS)
CELL_TO_POSITION = {v: k for k, v in POSITIONS.items()}
GRID = (16, 32, 48)  # pixel centres of the 3x3 grid


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _cells_compatible(c1, c2, s1, s2) -> bool:
    """Two shapes must not overlap: with two small shapes neighbouring cells are
    fine; when either is large the cells must be two apart on some axis."""
    if c1 == c2:
        return False
    dx, dy = abs(c1[0] - c2[0]), abs(c1[1] - c2[1])
    if s1 == "small" and s2 == "small":
        return True
    return dx == 2 or dy == 2


def sample_scene(seed: int, two_shape_prob: float = 0.25) -> dict:
    """Sample the attributes of a scene, deterministically from `seed`."""
    rng = np.random.default_rng(seed)
    bg = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    n = 2 if rng.random() < two_shape_prob else 1
    shapes = []
    used_colours = {bg}
    for i in range(n):
        for _ in range(100):
            colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
            if colour not in used_colours:
                break
        used_colours.add(colour)
        shape = SHAPES[rng.integers(len(SHAPES))]
        size = SIZES[rng.integers(len(SIZES))]
        for _ in range(100):
            cell = (int(rng.integers(3)), int(rng.integers(3)))
            if all(_cells_compatible(cell, (s["col"], s["row"]), size, s["size"]) for s in shapes):
                break
        else:  # fall back to a small shape in a free cell, or give up on the second shape
            size = "small"
            free = [c for c in POSITIONS.values()
                    if all(_cells_compatible(c, (s["col"], s["row"]), size, s["size"]) for s in shapes)]
            if not free:
                break
            cell = free[int(rng.integers(len(free)))]
        half = HALF[size] + int(rng.integers(-1, 2))
        cx = GRID[cell[0]] + int(rng.integers(-2, 3))
        cy = GRID[cell[1]] + int(rng.integers(-2, 3))
        shapes.append(dict(shape=shape, colour=colour, size=size, position=CELL_TO_POSITION[cell],
                           col=cell[0], row=cell[1], cx=cx, cy=cy, half=half))
    return dict(seed=int(seed), background=bg, shapes=shapes)


scene_attributes = sample_scene


def render(attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Render a scene: returns (uint8 RGB image HxWx3, float32 depth HxW)."""
    img = Image.new("RGB", (SIZE, SIZE), COLOURS[attrs["background"]])
    dep = Image.new("L", (SIZE, SIZE), 0)
    d_img, d_dep = ImageDraw.Draw(img), ImageDraw.Draw(dep)
    for s in attrs["shapes"]:
        cx, cy, h = s["cx"], s["cy"], s["half"]
        col = COLOURS[s["colour"]]
        box = [cx - h, cy - h, cx + h, cy + h]
        if s["shape"] == "circle":
            d_img.ellipse(box, fill=col)
            d_dep.ellipse(box, fill=255)
        elif s["shape"] == "square":
            d_img.rectangle(box, fill=col)
            d_dep.rectangle(box, fill=255)
        else:
            tri = [(cx - h, cy + h), (cx + h, cy + h), (cx, cy - h)]
            d_img.polygon(tri, fill=col)
            d_dep.polygon(tri, fill=255)
    depth = (np.asarray(dep, dtype=np.float32) / 255.0)
    return np.asarray(img, dtype=np.uint8).copy(), depth


def random_mention(rng: np.random.Generator, attrs: dict, p_size=0.6, p_position=0.6, p_background=0.7) -> dict:
    """Which optional caption parts to mention (shape and colour always are)."""
    return dict(
        size=[bool(rng.random() < p_size) for _ in attrs["shapes"]],
        position=[bool(rng.random() < p_position) for _ in attrs["shapes"]],
        background=bool(rng.random() < p_background),
    )


def full_mention(attrs: dict) -> dict:
    n = len(attrs["shapes"])
    return dict(size=[True] * n, position=[True] * n, background=True)


def caption_from_attrs(attrs: dict, mention: dict | None = None, rng: np.random.Generator | None = None) -> str:
    """Caption from attributes. `mention` picks the optional parts; default is a
    random choice from `rng` (or everything when neither is given)."""
    if mention is None:
        mention = random_mention(rng, attrs) if rng is not None else full_mention(attrs)
    parts = []
    for i, s in enumerate(attrs["shapes"]):
        words = []
        if mention["size"][i]:
            words.append(s["size"])
        words += [s["colour"], s["shape"]]
        phrase = f"{_article(words[0])} {' '.join(words)}"
        if mention["position"][i]:
            phrase += " " + s["position"]
        parts.append(phrase)
    cap = " and ".join(parts)
    if mention["background"]:
        cap += f" on {_article(attrs['background'])} {attrs['background']} background"
    return cap


def make_example(seed: int, two_shape_prob: float = 0.25) -> dict:
    attrs = sample_scene(seed, two_shape_prob)
    rng = np.random.default_rng([seed, 1])
    img, depth = render(attrs)
    return dict(image=img, depth=depth, caption=caption_from_attrs(attrs, rng=rng), attrs=attrs)


# --------------------------------------------------------------------------
# Objective checker
# --------------------------------------------------------------------------
_PAL = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)


def _nearest_colour_map(rgb: np.ndarray) -> np.ndarray:
    x = rgb.astype(np.float32).reshape(-1, 1, 3)
    d = ((x - _PAL[None]) ** 2).sum(-1)
    return d.argmin(1).reshape(rgb.shape[:2])


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as index arrays (largest first)."""
    h, w = mask.shape
    lab = np.zeros((h, w), dtype=np.int32)
    comps = []
    cur = 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if lab[y0, x0]:
            continue
        cur += 1
        stack = [(y0, x0)]
        lab[y0, x0] = cur
        pts = []
        while stack:
            y, x = stack.pop()
            pts.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not lab[ny, nx]:
                    lab[ny, nx] = cur
                    stack.append((ny, nx))
        comps.append(np.array(pts))
    comps.sort(key=len, reverse=True)
    return comps


def _classify_region(pts: np.ndarray) -> dict:
    ys, xs = pts[:, 0], pts[:, 1]
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    fill = len(pts) / float(bw * bh)
    # triangle (apex up): the top rows are much narrower than the bottom rows
    top = xs[ys <= y0 + max(1, bh // 4)]
    bot = xs[ys >= y1 - max(1, bh // 4)]
    top_w = top.max() - top.min() + 1 if len(top) else 0
    bot_w = bot.max() - bot.min() + 1 if len(bot) else 1
    if fill > 0.9:
        shape = "square"
    elif top_w < 0.6 * bot_w and fill < 0.72:
        shape = "triangle"
    else:
        shape = "circle"
    cx, cy = xs.mean(), ys.mean()
    if shape == "triangle":  # centroid of the apex-up triangle lies below the box centre
        cy = (y0 + y1) / 2.0
    col = int(np.argmin(np.abs(np.array(GRID) - cx)))
    row = int(np.argmin(np.abs(np.array(GRID) - cy)))
    extent = max(bw, bh)
    size = "large" if extent >= 24 else "small"
    return dict(shape=shape, size=size, position=CELL_TO_POSITION[(col, row)], col=col, row=row,
                cx=float(cx), cy=float(cy), extent=int(extent), fill=float(fill), area=int(len(pts)))


def check_image(rgb: np.ndarray, min_area: int = 20) -> dict:
    """Measure a (possibly generated) image: background colour (dominant palette
    colour of the border), and for each shape region (connected pixels of one
    non-background palette colour) its colour, class, position and size.
    Shapes are returned largest first."""
    rgb = np.asarray(rgb)
    cmap = _nearest_colour_map(rgb)
    border = np.concatenate([cmap[0], cmap[-1], cmap[:, 0], cmap[:, -1]])
    counts = np.bincount(cmap.ravel(), minlength=len(COLOUR_NAMES))
    bcounts = np.bincount(border, minlength=len(COLOUR_NAMES))
    bg_idx = int(np.argmax(bcounts * 4 + counts))
    shapes = []
    for ci in range(len(COLOUR_NAMES)):
        if ci == bg_idx or counts[ci] < min_area:
            continue
        comps = _components(cmap == ci)
        if comps and len(comps[0]) >= min_area:
            r = _classify_region(comps[0])
            r["colour"] = COLOUR_NAMES[ci]
            shapes.append(r)
    shapes.sort(key=lambda r: r["area"], reverse=True)
    return dict(background=COLOUR_NAMES[bg_idx], shapes=shapes)


ATTRIBUTES = ("shape_colour", "background", "shape", "position", "size")


def score(attrs: dict, measured: dict, mention: dict | None = None) -> dict:
    """Per-attribute correctness (bools) of a measured image against the scene
    attributes. Only mentioned attributes are scored (mention=None: all).
    For each target shape the measured shape of the same colour is used."""
    if mention is None:
        mention = full_mention(attrs)
    out: dict[str, list[bool]] = {k: [] for k in ATTRIBUTES}
    if mention["background"]:
        out["background"].append(measured["background"] == attrs["background"])
    by_colour = {m["colour"]: m for m in measured["shapes"]}
    for i, s in enumerate(attrs["shapes"]):
        m = by_colour.get(s["colour"])
        out["shape_colour"].append(m is not None)
        out["shape"].append(m is not None and m["shape"] == s["shape"])
        if mention["position"][i]:
            out["position"].append(m is not None and m["position"] == s["position"])
        if mention["size"][i]:
            out["size"].append(m is not None and m["size"] == s["size"])
    return out


if __name__ == "__main__":  # quick self check: the checker on clean renders
    import sys
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    tot: dict[str, list[bool]] = {k: [] for k in ATTRIBUTES}
    for seed in range(n):
        a = sample_scene(seed)
        img, _ = render(a)
        sc = score(a, check_image(img))
        for k, v in sc.items():
            tot[k] += v
    for k, v in tot.items():
        print(f"{k:13s} {np.mean(v) * 100:6.2f}% of {len(v)}")
    for s in range(4):
        print(make_example(s)["caption"])
