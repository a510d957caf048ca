"""Image folders through the runtime's one preprocessing (edgevae's runtime/_images.py): PNG, JPEG, ...

    photos/cat/001.jpg, photos/dog/002.png ...  -> classes ('cat', 'dog'), labels by sub-folder
    photos/001.jpg ...                          -> one class, named after the folder
    photos/cat/..., photos/extra.png            -> --layout classes: the loose images form one more class;
                                                   --layout flat: every image, one class

Each image is decoded, EXIF-rotated, put in the model's mode (--channels; alpha kept for RGBA or
composited onto --matte) and fitted to --image-size (--fit crop/pad/stretch, --resample), exactly as
`edgevae encode` will prepare files for the exported model. What was done is printed once, counted
("cropped 68x56 to 56x56 at the centre ...: 1350 of 1350 image(s)"). Files with an image extension that
cannot be decoded are skipped: one warning names how many and the first few, and loading stops only if
nothing readable is left. Files without an image extension (notes, .DS_Store) are ignored.

    edgevae train --data photos --image-size 64 --out runs/photos
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from edgevae import EdgeVAEError
from edgevae._images import (
    Notes,
    Preprocessing,
    has_alpha,
    is_colour,
    open_image,
    palette_alpha,
    parse_colour,
    read_image,
)
from edgevae.spec import IMAGE_MODES

from .dataset import Dataset

SHOWN_SKIPPED = 3  # unreadable files named in the warning; the rest are counted


def _image_extensions() -> set[str]:
    from PIL import Image

    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def preprocessing(config, channels: int) -> Preprocessing:
    """The one preprocessing a config asks for, for a model of `channels` channels (what the spec records)."""
    # RGBA: clear by default (--alpha auto, recorded as clear); keep, or matte forced to 4 channels by --channels 4,
    # keep the colour as stored, as they did before clear existed
    alpha = ("clear" if config.alpha in ("auto", "clear") else "keep") if channels == 4 else "matte"
    return Preprocessing(mode=IMAGE_MODES[channels], fit=config.fit, resample=config.resample, alpha=alpha,
                         matte=parse_colour(config.matte))


def list_images(root: Path, layout: str = "auto") -> tuple[list[Path], list[int], tuple[str, ...], str]:
    """(files, labels, classes, what was done) under root, in a sorted, reproducible order."""
    extensions = _image_extensions()

    def images(entries) -> list[Path]:
        return sorted(p for p in entries if p.is_file() and p.suffix.lower() in extensions
                      and not p.name.startswith("."))

    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = images(root.iterdir())
    groups = [(d.name, images(d.rglob("*"))) for d in subdirs]
    groups = [(name, found) for name, found in groups if found]
    if layout == "flat" or (layout == "auto" and not groups):
        files = images(root.rglob("*"))
        how = "one class" + (f" (all {len(groups)} sub-folders' images with the loose ones)" if groups else "")
        groups = [(root.name, files)] if files else []
    else:
        how = f"{len(groups)} class(es) from the sub-folders"
        if loose:
            name = root.name if root.name not in {n for n, _ in groups} else f"{root.name} (top level)"
            groups.append((name, loose))
            how += (f", and the {len(loose)} loose image(s) at the top level as one more class {name!r} "
                    f"(--layout flat: one class for everything)")
    files, labels, classes = [], [], []
    for name, found in groups:
        files += found
        labels += [len(classes)] * len(found)
        classes.append(name)
    if not files:
        raise ValueError(f"{root}: no image files (looked for {', '.join(sorted(extensions)[:6])} ...)")
    return files, labels, tuple(classes), how


def _channels(files: list[Path], config) -> tuple[int, str]:
    """--channels, or from the data when 0: (channels, why)."""
    if config.channels:
        return config.channels, "--channels"
    transparent = colour = 0
    for path in files:
        try:
            with open_image(path) as opened:
                image = palette_alpha(opened)
                colour += is_colour(image)
                if has_alpha(image) and config.alpha != "matte":
                    transparent += int(np.asarray(image.convert("RGBA"))[:, :, 3].min() < 255)
        except EdgeVAEError:
            continue  # reported when it is read for real
    if transparent:
        return 4, f"RGBA: {transparent} image(s) have transparency, kept as a 4th channel (--alpha matte " \
                  f"composites it onto --matte instead)"
    return (3, f"RGB: {colour} image(s) in colour") if colour else (1, "greyscale: no image has colour")


def image_folder(root: Path, config, log=print) -> Dataset:
    """All images under root as one training set (the test split is held out later, by --test-fraction)."""
    files, labels, classes, how = list_images(root, config.layout)
    channels, why = _channels(files, config)
    if config.alpha in ("clear", "keep") and channels != 4:
        raise ValueError(f"--alpha {config.alpha} needs RGBA images (--channels 4 or 0), got --channels {channels}")
    pre = preprocessing(config, channels)
    notes = Notes()
    images, kept, names, skipped = [], [], [], []
    for path, label in zip(files, labels):
        try:
            images.append(read_image(path, config.image_hw, pre, notes))
            kept.append(label)
            names.append(path.relative_to(root).as_posix())
        except EdgeVAEError as e:
            skipped.append(f"{path} ({str(e).removeprefix(f'{path}: ')})")
    if skipped:
        more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
        print(f"warning: skipped {len(skipped)} of {len(files)} image files that cannot be read: "
              f"{'; '.join(skipped[:SHOWN_SKIPPED])}{more}", file=sys.stderr)
    if not images:
        raise ValueError(f"{root}: none of its {len(files)} image files could be read")
    x = torch.from_numpy(np.stack(images))  # (N, C, H, W)
    y = torch.tensor(kept, dtype=torch.int64)
    log(f"read {len(images)} images from {root}: {how}; {why}")
    for line in notes.summary():
        log(f"  {line}")
    return Dataset(root.name, x, y, x[:0], y[:0], classes, files={"root": str(root), "train": names})
