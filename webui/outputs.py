"""Saving results: ``outputs/<mode>-images/YYYY-MM-DD/NNNNN-SEED.png`` with the infotext inside.

Each file is written to a temporary name in the same folder and renamed into place, so a crash or a
full disk never leaves a half-written image under a real name. Numbering continues from the
highest number already in the day's folder, as A1111 does.
"""
from __future__ import annotations

import datetime
import os
import re
import threading
from pathlib import Path

from PIL import Image, PngImagePlugin

FOLDERS = {"txt2img": "txt2img-images", "img2img": "img2img-images", "inpaint": "img2img-images",
           "depth": "img2img-images", "grid": "txt2img-grids", "txt2img-grid": "txt2img-grids",
           "img2img-grid": "img2img-grids"}
_NUMBERED = re.compile(r"^(\d+)-")


class OutputWriter:
    def __init__(self, root: Path):
        self.root = root
        self._lock = threading.Lock()

    def folder(self, mode: str, day: datetime.date | None = None) -> Path:
        day = day or datetime.date.today()
        return self.root / FOLDERS.get(mode, f"{mode}-images") / day.isoformat()

    def save(self, image: Image.Image, infotext: str, mode: str, seed: int, fmt: str = "png") -> Path:
        fmt = "jpg" if fmt == "jpeg" else fmt
        folder = self.folder(mode)
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            number = next_number(folder)
            path = folder / f"{number:05d}-{seed}.{fmt}"
            tmp = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
            try:
                write_image(image, infotext, tmp, fmt)
                os.replace(tmp, path)
            finally:
                if tmp.exists():
                    tmp.unlink()
        return path


def next_number(folder: Path) -> int:
    highest = -1
    for entry in os.scandir(folder):
        m = _NUMBERED.match(entry.name)
        if m and not entry.name.startswith("."):
            highest = max(highest, int(m[1]))
    return highest + 1


def write_image(image: Image.Image, infotext: str, path: Path, fmt: str) -> None:
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext)
        image.save(path, format="PNG", pnginfo=info)
        return
    exif = Image.Exif()
    # A1111 stores the infotext in EXIF UserComment (in the Exif IFD) for JPEG and WebP.
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + infotext.encode("utf-16-be")
    image.convert("RGB").save(path, format="JPEG" if fmt == "jpg" else "WEBP", quality=95, exif=exif)
