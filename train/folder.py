"""Image folders through the runtime's one preprocessing (edgevae's runtime/_images.py): PNG, JPEG, ...

    photos/cat/001.jpg, photos/dog/002.png ...  -> classes ('cat', 'dog'), labels by sub-folder
    photos/001.jpg ...                          -> one class, named after the folder
    photos/cat/..., photos/extra.png            -> --layout classes: the loose images form one more class;
                                                   --layout flat: every image, one class

Each image is decoded, EXIF-rotated, put in the model's mode (--channels; alpha kept for RGBA or
composited onto --matte) and fitted to --image-size (--fit crop/pad/stretch, --resample; auto: the most
common size, train/dataset.py auto_size), exactly as `edgevae encode` will prepare files for the
exported model. What was done is printed once, counted
("cropped 68x56 to 56x56 at the centre ...: 1350 of 1350 image(s)"). Files with an image extension that
cannot be decoded are skipped: one warning names how many and the first few, and loading stops only if
nothing readable is left. Files without an image extension (notes, .DS_Store) are ignored.

    edgevae train --data photos --out runs/photos                  # at the images' own size
    edgevae train --data photos --image-size 64 --out runs/photos  # at 64 x 64
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
    check_mode,
    has_alpha,
    header_size,
    is_colour,
    open_image,
    palette_alpha,
    parse_colour,
    read_image,
)
from edgevae.spec import IMAGE_MODES

from .dataset import Dataset, choose_size, size_flag

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
        nested = sum(1 for name, found in groups for f in found if f.parent != root / name)
        if nested:  # a class is a top-level sub-folder with everything under it
            how += f" ({nested} image(s) in deeper folders count for the sub-folder they are in)"
        if loose:
            name = root.name if root.name not in {n for n, _ in groups} else f"{root.name} (top level)"
            groups.append((name, loose))
            how += (f", and the {len(loose)} loose image(s) at the top level as one more class {name!r} "
                    f"(or --layout flat, to make one class of everything)")
    files, labels, classes = [], [], []
    for name, found in groups:
        files += found
        labels += [len(classes)] * len(found)
        classes.append(name)
    if not files:
        raise ValueError(f"{root}: no image files (looked for {', '.join(sorted(extensions)[:6])} ...)")
    return files, labels, tuple(classes), how


def _survey(files: list[Path], config) -> tuple[int, str, dict[tuple[int, int], int]]:
    """--channels, or from the data when 0: (channels, why), and the sizes {(H, W): count} (EXIF-rotated) of the
    images that will be read, when --image-size is auto; one pass over the files, none when neither is asked for."""
    sizes: dict[tuple[int, int], int] = {}
    if config.channels and config.image_size != "auto":
        return config.channels, "--channels", sizes
    transparent = colour = 0
    for path in files:
        try:
            if config.channels:  # only the sizes: from the headers, nothing decoded
                hw = header_size(path)
            else:
                with open_image(path) as opened:
                    image = palette_alpha(opened)
                    check_mode(image)  # what reading it would refuse is not counted
                    hw = image.height, image.width
                    colour += is_colour(image)
                    if has_alpha(image) and config.alpha != "matte":
                        transparent += int(np.asarray(image.convert("RGBA"))[:, :, 3].min() < 255)
            sizes[hw] = sizes.get(hw, 0) + 1
        except EdgeVAEError:
            continue  # reported when it is read for real
    if config.channels:
        return config.channels, "--channels", sizes
    if transparent:
        return 4, f"RGBA: {transparent} image(s) have transparency, kept as a 4th channel (--alpha matte " \
                  f"composites it onto --matte instead)", sizes
    return (3, f"RGB: {colour} image(s) in colour", sizes) if colour else (1, "greyscale: no image has colour", sizes)


def image_folder(root: Path, config, log=print) -> Dataset:
    """All images under root as one training set (the test split is held out later, by --test-fraction)."""
    files, labels, classes, how = list_images(root, config.layout)
    channels, why, sizes = _survey(files, config)
    if config.image_size != "auto":
        size_hw, size_why = config.image_hw, ""
    elif sizes:
        size_hw, size_why = choose_size(sizes, config)
    else:  # no file decodes: each is reported as it is read below, and loading stops there
        size_hw, size_why = (1, 1), ""
    if config.alpha in ("clear", "keep") and channels != 4:
        raise ValueError(f"--alpha {config.alpha} needs RGBA images (--channels 4 or 0), got --channels {channels}")
    pre = preprocessing(config, channels)
    notes = Notes()
    images, kept, names, skipped = [], [], [], []
    for path, label in zip(files, labels):
        try:
            images.append(read_image(path, size_hw, pre, notes))
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
    if size_why:
        height, width = size_hw  # images of its aspect are resized (said below); --fit decides for the others
        other = sum(n for (h, w), n in sizes.items() if h * width != w * height)
        how_fitted = {"crop": "which cuts their edges (--fit pad keeps them)", "pad": "with borders",
                      "stretch": "without keeping their aspect"}[config.fit]
        log(f"  --image-size auto: {size_flag(size_hw)} ({size_why})"
            + (f"; {other} of another aspect are fitted to it by --fit {config.fit}, {how_fitted}" if other else ""))
    for line in notes.summary():
        log(f"  {line}")
    return Dataset(root.name, x, y, x[:0], y[:0], classes, files={"root": str(root), "train": names})
