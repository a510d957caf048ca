"""Data sources, chosen by `--data`: the built-in `shapes` set, and dispatch to the others.

    shapes                     generated here, deterministic by seed (no download)
    mnist, fashion-mnist       downloaded and sha256-verified (train/download.py), then read as IDX
    DIR with train-images-...  an IDX directory: MNIST, Fashion-MNIST, KMNIST ... (train/idx.py)
    DIR otherwise              an image folder, sub-folders = classes (train/folder.py)
    FILE.npz, FILE.npy         arrays (train/arrays.py)

Every source yields a Dataset of uint8 tensors (N, C, H, W) held in memory (train/dataset.py).

    python -c "from edgevae.train.data import shapes; x, y = shapes(16, 28, seed=0); print(x.shape)"
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import arrays, download, folder, idx
from .config import SHAPES_SIZE
from .dataset import Dataset, prepare

SHAPE_CLASSES = ("circle", "square", "triangle")
_SUPERSAMPLE = 4  # sub-pixel samples per axis, for anti-aliased edges
_POLYGONS = ((0, 1.0), (4, 0.8), (3, 0.6))  # per class: sides (0 = circle) and apothem / radius
SHAPES_TEST_STREAM = 1_000_003  # added to --seed for the test set's generator: a disjoint stream


def shapes(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n filled circles, squares and triangles on black, size x size, anti-aliased; deterministic by seed.

    Each image has a random class, size, rotation, grey level in [0.5, 1] and a centre that keeps the
    whole shape inside the frame.
    Returns uint8 images (n, 1, size, size) and int64 labels (n,) indexing SHAPE_CLASSES.
    """
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(SHAPE_CLASSES), n)
    radius = rng.uniform(0.2, 0.32, n) * size
    extent = radius * np.array([a / np.cos(np.pi / s) if s else 1.0 for s, a in _POLYGONS])[label]  # circumradius
    room = np.minimum(0.15 * size, size / 2 - extent - 1)[:, None]  # jitter that keeps a 1 px margin
    centre = size / 2 + rng.uniform(-1.0, 1.0, (n, 2)) * room
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    grey = rng.uniform(0.5, 1.0, n)
    ticks = ((np.arange(size * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE).astype(np.float32)  # sub-pixel centres (S,)
    cover = np.empty((n, size, size), dtype=np.float32)
    for cls, (sides, apothem) in enumerate(_POLYGONS):
        for part in np.array_split(np.flatnonzero(label == cls), max(1, int(np.sum(label == cls)) // 256)):
            if part.size == 0:
                continue
            dx = (ticks[None, None, :] - centre[part, 0, None, None]).astype(np.float32)  # (B, 1, S)
            dy = (ticks[None, :, None] - centre[part, 1, None, None]).astype(np.float32)  # (B, S, 1)
            if sides == 0:
                dist = np.sqrt(dx * dx + dy * dy)  # (B, S, S)
            else:  # regular polygon: the largest projection on its edge normals, compared with the apothem
                dist = np.full((part.size, ticks.size, ticks.size), -np.inf, dtype=np.float32)
                for k in range(sides):
                    theta = (angle[part] + 2.0 * np.pi * k / sides)[:, None, None]
                    normal = (np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32))
                    np.maximum(dist, dx * normal[0] + dy * normal[1], out=dist)
                dist /= apothem
            inside = dist <= radius[part, None, None].astype(np.float32)
            b, s = part.size, size
            cover[part] = inside.reshape(b, s, _SUPERSAMPLE, s, _SUPERSAMPLE).mean(axis=(2, 4))  # (B, H, W)
    images = np.rint(cover * grey[:, None, None] * 255.0).astype(np.uint8)[:, None]  # (N, 1, H, W)
    return images, label.astype(np.int64)


def load(config, log=print) -> Dataset:
    """The Dataset a TrainConfig names, prepared: test split, size, channels, limit, validation split."""
    source, path = config.data, Path(config.data)
    if source == "shapes":
        height, width = (SHAPES_SIZE, SHAPES_SIZE) if config.image_size == "auto" else config.image_hw
        if height != width:
            raise ValueError(f"--data shapes makes square images; --image-size {config.image_size} is not square")
        train = shapes(config.num_train, height, seed=config.seed)
        test = shapes(config.num_test, height, seed=config.seed + SHAPES_TEST_STREAM)
        data = Dataset("shapes", *(torch.from_numpy(a) for a in (*train, *test)), SHAPE_CLASSES)
    elif source in download.DATASETS:
        data = idx.idx_directory(download.fetch(source, config.data_root, config.mirror, log=log), name=source)
        data.classes = download.DATASETS[source].classes or data.classes
    elif path.is_dir():
        data = idx.idx_directory(path) if idx.is_idx_directory(path) else folder.image_folder(path, config, log=log)
    elif path.is_file() and path.suffix in arrays.SUFFIXES:
        data = arrays.load_arrays(path)
    else:
        why = f"not {' or '.join(arrays.SUFFIXES)}" if path.is_file() else "no such file or directory"
        raise ValueError(f"--data must be 'shapes', {', '.join(map(repr, download.DATASETS))}, a directory or an "
                         f"{'/'.join(arrays.SUFFIXES)} file, got {source!r} ({why})")
    return prepare(data, config, log)
