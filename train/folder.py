"""Image folders through Pillow: PNG, JPEG and whatever else Pillow reads; sub-folders are classes.

    photos/cat/001.jpg, photos/dog/002.png ...  -> classes ('cat', 'dog'), labels by sub-folder
    photos/001.jpg ...                          -> one class, named after the folder

Each image is EXIF-rotated, its transparency composited over --matte, converted to grayscale or RGB
(--channels; 0 = RGB if any image has colour, else grayscale), centre-cropped to a square and resized
to --image-size. Files with an image extension that Pillow cannot decode are skipped: one warning
names how many and the first few, and loading stops only if nothing readable is left.
Files without an image extension (notes, .DS_Store) are ignored.

    edgevae train --data photos --arch conv --image-size 32 --likelihood continuous-bernoulli --out runs/photos
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset

MATTES = {"black": (0, 0, 0), "white": (255, 255, 255)}
SHOWN_SKIPPED = 3  # unreadable files named in the warning; the rest are counted


def _image_extensions() -> set[str]:
    from PIL import Image

    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _is_colour(mode: str) -> bool:
    return mode not in ("1", "L", "LA", "I", "I;16", "F", "La")


def _open(path: Path):
    from PIL import Image, ImageOps

    image = Image.open(path)
    image.load()  # decode now, so a truncated or corrupt file fails here
    return ImageOps.exif_transpose(image)


def _convert(image, channels: int, size: int, matte: str) -> np.ndarray:
    """One PIL image -> uint8 (C, size, size)."""
    from PIL import Image, ImageOps

    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*MATTES[matte], 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    image = ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS)  # centre crop + resize
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)  # (C, H, W)


def list_images(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """(files, labels, classes) under root, in a sorted, reproducible order."""
    extensions = _image_extensions()
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = [(d.name, d.rglob("*")) for d in subdirs] if subdirs else [(root.name, root.iterdir())]
    if subdirs and any(p.is_file() and p.suffix.lower() in extensions for p in root.iterdir()):
        raise ValueError(f"{root}: has both images and class sub-folders; move the loose images into a sub-folder")
    files, labels, classes = [], [], []
    for name, entries in groups:
        found = sorted(p for p in entries if p.is_file() and p.suffix.lower() in extensions)
        if found:
            files += found
            labels += [len(classes)] * len(found)
            classes.append(name)
    if not files:
        raise ValueError(f"{root}: no image files (looked for {', '.join(sorted(extensions)[:6])} ...)")
    return files, labels, tuple(classes)


def image_folder(root: Path, config, log=print) -> Dataset:
    """All images under root as one training set (the test split is held out later, by --test-fraction)."""
    from PIL import Image, UnidentifiedImageError

    files, labels, classes = list_images(root)
    channels = config.channels
    if channels == 0:  # headers only: Image.open does not decode pixels
        channels = 1
        for path in files:
            try:
                with Image.open(path) as image:
                    if _is_colour(image.mode):
                        channels = 3
                        break
            except (OSError, UnidentifiedImageError, ValueError):
                continue  # reported below, when it is decoded
    images, kept, skipped = [], [], []
    for path, label in zip(files, labels):
        try:
            with _open(path) as image:
                images.append(_convert(image, channels, config.image_size, config.matte))
            kept.append(label)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            skipped.append(f"{path} ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if skipped:
        more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
        print(f"warning: skipped {len(skipped)} of {len(files)} image files Pillow cannot read: "
              f"{'; '.join(skipped[:SHOWN_SKIPPED])}{more}", file=sys.stderr)
    if not images:
        raise ValueError(f"{root}: none of its {len(files)} image files could be read")
    x = torch.from_numpy(np.stack(images))  # (N, C, H, W)
    y = torch.tensor(kept, dtype=torch.int64)
    log(f"read {len(images)} images of {len(classes)} class(es) from {root}, {channels} channel(s)")
    return Dataset(root.name, x, y, x[:0], y[:0], classes)
