"""The in-memory Dataset every source produces, and what is done to it before training.

Images are uint8 tensors (N, C, H, W) held whole in memory; the training loop batches them by index
(no per-item Python, no collate) and scales to [0, 1] on the fly. Here: the deterministic hold-out
split, resizing to the model's size, and grayscale <-> RGB.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_SEED = 20_160_101  # the hold-out permutation's seed: one fixed split per dataset size, whatever --seed is
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 RGB -> grey weights, what Pillow's convert("L") uses
RESIZE_CHUNK = 4096  # images resized per call, so memory stays bounded on large sets


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
    held = round(fraction * len(x))
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    keep_idx, held_idx = (torch.from_numpy(np.sort(part)) for part in (order[held:], order[:held]))
    return x[keep_idx], y[keep_idx], x[held_idx], y[held_idx]


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), bilinear with antialiasing when shrinking."""
    if tuple(x.shape[2:]) == (size, size):
        return x
    out = torch.empty(len(x), x.shape[1], size, size, dtype=torch.uint8)
    for i in range(0, len(x), RESIZE_CHUNK):
        chunk = F.interpolate(x[i:i + RESIZE_CHUNK].float(), size=(size, size), mode="bilinear",
                              antialias=True, align_corners=False)
        out[i:i + RESIZE_CHUNK] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) with C in {1, 3} -> `channels` channels (0 = unchanged)."""
    have = x.shape[1]
    if channels in (0, have):
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA).view(1, 3, 1, 1)
        return (x.float() * weights).sum(dim=1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels (supported: 1 <-> 3)")


def prepare(data: Dataset, config) -> Dataset:
    """Make a loaded Dataset what the config asks for: test split, size, channels, limit, validation split."""
    if len(data.test_x) == 0:
        data.train_x, data.train_y, data.test_x, data.test_y = split(data.train_x, data.train_y, config.test_fraction)
        if len(data.test_x) == 0:
            raise ValueError(f"{data.name}: no test split and --test-fraction {config.test_fraction} holds out "
                             f"no image of {len(data.train_x)}")
    for name in ("train_x", "test_x"):
        setattr(data, name, to_channels(resize(getattr(data, name), config.image_size), config.channels))
    if config.limit:
        data.train_x, data.train_y = data.train_x[:config.limit], data.train_y[:config.limit]
    data.train_x, data.train_y, data.val_x, data.val_y = split(data.train_x, data.train_y, config.val_fraction)
    if len(data.train_x) == 0:
        raise ValueError(f"{data.name}: no training images left after --limit and --val-fraction")
    if config.conditional and len(data.classes) < 2:
        raise ValueError(f"--conditional needs labelled data with 2 or more classes; {data.name} has "
                         f"{len(data.classes)}")
    return data
