"""Data sources: the built-in `shapes` set and IDX directories (MNIST, Fashion-MNIST, KMNIST ...).

Every source yields a Dataset of uint8 tensors (N, C, H, W) held in memory; the training loop
batches them by index and scales to [0, 1] on the fly.

    python -c "from train.data import shapes; x, y = shapes(16, 28, seed=0); print(x.shape)"
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SHAPE_CLASSES = ("circle", "square", "triangle")
_SUPERSAMPLE = 4  # sub-pixel samples per axis, for anti-aliased edges
_POLYGONS = ((0, 1.0), (4, 0.8), (3, 0.6))  # per class: sides (0 = circle) and apothem / radius
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass
class Dataset:
    name: str  # what the spec's training summary calls it
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor  # uint8 (M, C, H, W)
    test_y: torch.Tensor  # int64 (M,)
    classes: tuple[str, ...]  # label names, index = label

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])


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
        for idx in np.array_split(np.flatnonzero(label == cls), max(1, int(np.sum(label == cls)) // 256)):
            if idx.size == 0:
                continue
            dx = (ticks[None, None, :] - centre[idx, 0, None, None]).astype(np.float32)  # (B, 1, S)
            dy = (ticks[None, :, None] - centre[idx, 1, None, None]).astype(np.float32)  # (B, S, 1)
            if sides == 0:
                dist = np.sqrt(dx * dx + dy * dy)  # (B, S, S)
            else:  # regular polygon: the largest projection on its edge normals, compared with the apothem
                dist = np.full((idx.size, ticks.size, ticks.size), -np.inf, dtype=np.float32)
                for k in range(sides):
                    theta = (angle[idx] + 2.0 * np.pi * k / sides)[:, None, None]
                    np.maximum(dist, dx * np.cos(theta).astype(np.float32) + dy * np.sin(theta).astype(np.float32), out=dist)
                dist /= apothem
            inside = dist <= radius[idx, None, None].astype(np.float32)
            b, s = idx.size, size
            cover[idx] = inside.reshape(b, s, _SUPERSAMPLE, s, _SUPERSAMPLE).mean(axis=(2, 4))  # (B, H, W)
    images = np.rint(cover * grey[:, None, None] * 255.0).astype(np.uint8)[:, None]  # (N, 1, H, W)
    return images, label.astype(np.int64)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or .gz): magic 0x0000 <dtype> <ndim>, then ndim big-endian uint32 sizes."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: IDX size {len(raw)} bytes does not match its header {dims} ({expected} bytes)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{directory}: expected {stem} or {stem}.gz")


def idx_directory(directory: str | Path) -> Dataset:
    """Load train-/t10k- images and labels from an MNIST-format directory (.gz or raw)."""
    directory = Path(directory)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find(directory, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{directory}: {prefix} images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{directory}: {len(labels)} {prefix} labels for {len(images)} images")
        parts[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    n_classes = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    return Dataset(directory.name, *parts["train"], *parts["test"], tuple(str(i) for i in range(n_classes)))


def load(config) -> Dataset:
    """The Dataset a TrainConfig names, cut to config.limit training images when set."""
    if config.data == "shapes":
        train = shapes(config.num_train, config.image_size, seed=config.seed)
        test = shapes(config.num_test, config.image_size, seed=config.seed + 1_000_003)  # disjoint stream
        data = Dataset("shapes", *(torch.from_numpy(a) for a in (*train, *test)), SHAPE_CLASSES)
    elif Path(config.data).is_dir():
        data = idx_directory(config.data)
    else:
        raise ValueError(f"--data must be 'shapes' or an IDX directory, got {config.data!r} (no such directory)")
    if config.limit:
        data.train_x, data.train_y = data.train_x[:config.limit], data.train_y[:config.limit]
    return data
