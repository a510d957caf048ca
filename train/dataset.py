"""The in-memory Dataset every source produces, and what is done to it before training.

Images are uint8 tensors (N, C, H, W) held whole in memory; the training loop batches them by index
(no per-item Python, no collate) and scales to [0, 1] on the fly. Here: the deterministic hold-out
split, and fitting arrays to the model's size and channels with the runtime's one preprocessing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

SPLIT_SEED = 20_160_101  # the hold-out permutation's seed: one fixed split per dataset size, whatever --seed is
AUTO_MAX_SIDE = 128  # --image-size auto: the residual family is built for 32-128 px; larger images are scaled to it


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like[:0].clone()


@dataclass
class Dataset:
    name: str  # what the spec's training summary calls it
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor  # uint8 (M, C, H, W); empty when the source has no test split
    test_y: torch.Tensor  # int64 (M,)
    classes: tuple[str, ...]  # label names, index = label
    val_x: torch.Tensor = field(default=None)  # uint8 (V, C, H, W) held out of train_x; set by hold_out
    val_y: torch.Tensor = field(default=None)  # int64 (V,)
    # an image folder's files, relative to "root", per part ("train", "val", "test"), in the order of the part's
    # images; kept through prepare's splits so a run can say which files it held out (split.json). None otherwise
    files: dict | None = None

    def __post_init__(self):
        if self.val_x is None:
            self.val_x, self.val_y = _empty(self.train_x), _empty(self.train_y)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


def split(x: torch.Tensor, y: torch.Tensor, fraction: float):
    """(kept_x, kept_y, held_x, held_y): round(fraction * N) images held out by a fixed seeded permutation.

    Deterministic: the same N gives the same split on every run and every process; both parts keep
    their original order.
    """
    keep_idx, held_idx = split_indices(len(x), fraction)
    return x[keep_idx], y[keep_idx], x[held_idx], y[held_idx]


def split_indices(n: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held) indices of `split`, each in increasing order."""
    held = round(fraction * n)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return tuple(torch.from_numpy(np.sort(part)) for part in (order[held:], order[:held]))


def auto_size(sizes: dict[tuple[int, int], int], multiple: int = 1) -> tuple[tuple[int, int], str]:
    """--image-size auto from {(H, W): images of that size}: ((H, W), why). The most common size when half the images
    or more have it, else the median height and width; scaled to AUTO_MAX_SIDE on its longer side if larger, and
    rounded to a multiple of `multiple` (what --arch conv's stride-2 layers need)."""
    total = sum(sizes.values())
    (hw, count), = sorted(sizes.items(), key=lambda item: (-item[1], -item[0][0] * item[0][1]))[:1]
    if 2 * count >= total:
        why = "the size of every image" if count == total else f"the size of {count} of {total} images"
    else:
        heights, widths = (np.repeat([size[k] for size in sizes], list(sizes.values())) for k in (0, 1))
        hw = (round(float(np.median(heights))), round(float(np.median(widths))))
        why = f"the median height and width of {total} images of {len(sizes)} sizes"
    if max(hw) > AUTO_MAX_SIDE:
        scale = AUTO_MAX_SIDE / max(hw)
        hw = (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))
        why += f", scaled to {AUTO_MAX_SIDE} on its longer side"
    if multiple > 1 and (hw[0] % multiple or hw[1] % multiple):
        hw = tuple(max(multiple, round(side / multiple) * multiple) for side in hw)
        why += f", rounded to a multiple of {multiple} (--arch conv)"
    return hw, why


def choose_size(sizes: dict[tuple[int, int], int], config) -> tuple[tuple[int, int], str]:
    """auto_size for a config (--arch conv's multiple), checked like a size given by --image-size."""
    multiple = 2 ** len(config.conv_channels) if config.arch == "conv" else 1
    hw, why = auto_size(sizes, multiple)
    config.check_image_size(hw, auto=True)
    return hw, why


def size_flag(hw: tuple[int, int]) -> str:
    """(64, 64) -> "64", (56, 68) -> "56x68": --image-size's spelling of a size."""
    return str(hw[0]) if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def _split_files(data: Dataset, fraction: float, part: str) -> None:
    """Hold out `part` of the training files the way `split` holds out their images."""
    if data.files is not None:
        keep, held = split_indices(len(data.files["train"]), fraction)
        data.files[part] = [data.files["train"][i] for i in held.tolist()]
        data.files["train"] = [data.files["train"][i] for i in keep.tolist()]


def fit_images(x: torch.Tensor, size_hw: tuple[int, int], pre, notes=None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C', *size_hw) through the runtime's one preprocessing, image by image,
    as if each had been a file (so arrays and folders are fitted alike); untouched when nothing changes."""
    from PIL import Image

    from edgevae._images import MODES, clear_invisible
    from edgevae._images import prepare as prepare_image

    channels = MODES[pre.mode]
    if tuple(x.shape[1:]) == (channels, *size_hw):
        if pre.alpha != "clear":
            return x
        if notes is not None:
            notes.total += len(x)
        return torch.from_numpy(clear_invisible(x.numpy(), pre, notes))
    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    out = torch.empty(len(x), channels, *size_hw, dtype=torch.uint8)
    for i, image in enumerate(x.numpy()):
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)  # (H, W[, C])
        out[i] = torch.from_numpy(prepare_image(Image.fromarray(pixels, modes[image.shape[0]]), size_hw, pre, notes))
    return out


def prepare(data: Dataset, config, log=print) -> Dataset:
    """Make a loaded Dataset what the config asks for: test split, size, channels, limit, validation split."""
    if len(data.test_x) == 0:
        _split_files(data, config.test_fraction, "test")
        data.train_x, data.train_y, data.test_x, data.test_y = split(data.train_x, data.train_y, config.test_fraction)
        if len(data.test_x) == 0:
            raise ValueError(f"{data.name}: no test split and --test-fraction {config.test_fraction} holds out "
                             f"no image of {len(data.train_x)}")
    from edgevae._images import Notes

    from .folder import preprocessing

    have = data.image_shape[0]
    channels = config.channels or (3 if have == 4 and config.alpha == "matte" else have)
    pre, notes = preprocessing(config, channels), Notes()
    if config.image_size == "auto":  # arrays: their own size (a folder was read at its auto size already)
        size_hw, why = choose_size({tuple(data.train_x.shape[2:]): len(data.train_x)}, config)
        if size_hw != tuple(data.train_x.shape[2:]):
            log(f"  --image-size auto: {size_flag(size_hw)} ({why})")
    else:
        size_hw = config.image_hw
    for name in ("train_x", "test_x"):
        setattr(data, name, fit_images(getattr(data, name), size_hw, pre, notes))
    for line in notes.summary():
        log(f"  {line}")
    if config.limit:
        data.train_x, data.train_y = data.train_x[:config.limit], data.train_y[:config.limit]
        if data.files is not None:
            data.files["train"] = data.files["train"][:config.limit]
    _split_files(data, config.val_fraction, "val")
    data.train_x, data.train_y, data.val_x, data.val_y = split(data.train_x, data.train_y, config.val_fraction)
    if len(data.train_x) == 0:
        raise ValueError(f"{data.name}: no training images left after --limit and --val-fraction")
    if config.conditional and len(data.classes) < 2:
        raise ValueError(f"--conditional needs labelled data with 2 or more classes; {data.name} has "
                         f"{len(data.classes)}")
    return data
