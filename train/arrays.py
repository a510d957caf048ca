"""NumPy arrays as a data source: an .npz with named arrays, or a bare .npy of images.

.npz keys, the first set that is present wins:
    x_train, y_train, x_test, y_test   (Keras' mnist.npz layout; labels optional)
    x, y                               (one set; the test split is held out by --test-fraction)
    a single array                     (images, unlabelled)
Optional `classes`: an array of class names. A .npy is one array of images, unlabelled.

Image layouts: (N, H, W) grayscale; (N, H, W, C) or (N, C, H, W) with C in {1, 3, 4}. uint8 pixels are
used as they are; floats must lie in [0, 1] and are scaled to 0..255; other integers must lie in 0..255.

    edgevae train --data cifar.npz --arch conv --image-size 32 --likelihood gaussian --out runs/cifar
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset

SUFFIXES = (".npz", ".npy")
CHANNEL_COUNTS = (1, 3, 4)  # L, RGB, RGBA
MAX_PIXEL = 255


def images_from_array(a: np.ndarray, source: str) -> torch.Tensor:
    """Any supported layout and dtype -> uint8 (N, C, H, W)."""
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4 and a.shape[-1] in CHANNEL_COUNTS:
        a = a.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    elif not (a.ndim == 4 and a.shape[1] in CHANNEL_COUNTS):
        raise ValueError(f"{source}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C in "
                         f"{CHANNEL_COUNTS}, got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (not np.isfinite(a).all() or a.min() < 0 or a.max() > 1):
            raise ValueError(f"{source}: float images must lie in [0, 1], got [{a.min()}, {a.max()}]")
        a = np.rint(a * MAX_PIXEL)
    elif np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > MAX_PIXEL):
            raise ValueError(f"{source}: integer images must lie in 0..{MAX_PIXEL}, got {a.min()}..{a.max()}")
    else:
        raise ValueError(f"{source}: images must be integers or floats, got dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))


def labels_from_array(y: np.ndarray | None, n: int, source: str) -> torch.Tensor:
    if y is None:
        return torch.zeros(n, dtype=torch.int64)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # Keras-style (N, 1) labels
        y = y[:, 0]
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (n and y.min() < 0):
        raise ValueError(f"{source}: labels must be non-negative integers of shape ({n},), got {y.dtype} {y.shape}")
    return torch.from_numpy(y.astype(np.int64))


def load_arrays(path: Path) -> Dataset:
    """A Dataset from an .npz or .npy file; an empty test set when the file has none."""
    try:
        if path.suffix == ".npy":
            arrays = {"x": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable {path.suffix} file ({str(e).splitlines()[0]})") from None
    if "x_train" in arrays:
        train, test = ("x_train", "y_train"), ("x_test", "y_test")
    elif "x" in arrays:
        train, test = ("x", "y"), (None, None)
    elif len(arrays) == 1:
        arrays = {"x": next(iter(arrays.values()))}
        train, test = ("x", "y"), (None, None)
    else:
        raise ValueError(f"{path}: expected arrays x_train[, y_train, x_test, y_test] or x[, y], "
                         f"got {', '.join(sorted(arrays))}")
    parts = []
    for xk, yk in (train, test):
        if xk is None or xk not in arrays:
            parts.append(None)
            continue
        x = images_from_array(arrays[xk], f"{path}[{xk}]")
        parts.append((x, labels_from_array(arrays.get(yk), len(x), f"{path}[{yk}]")))
    (train_x, train_y), test_part = parts
    test_x, test_y = test_part if test_part else (train_x[:0], train_y[:0])
    if test_part and test_x.shape[1:] != train_x.shape[1:]:
        raise ValueError(f"{path}: test images {tuple(test_x.shape[1:])} differ from the training images "
                         f"{tuple(train_x.shape[1:])}")
    n_classes = int(max(train_y.max(), test_y.max() if len(test_y) else 0)) + 1 if len(train_y) else 1
    names = arrays.get("classes")
    classes = tuple(str(c) for c in names) if names is not None else tuple(str(i) for i in range(n_classes))
    if len(classes) < n_classes:
        raise ValueError(f"{path}: {len(classes)} class names for labels up to {n_classes - 1}")
    return Dataset(path.stem, train_x, train_y, test_x, test_y, classes)
