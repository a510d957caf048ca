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

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from . import files
from .dataset import Dataset

SUFFIXES = (".npz", ".npy")
CHANNEL_COUNTS = (1, 3, 4)  # L, RGB, RGBA
MAX_PIXEL = 255
MAX_MEMBERS = 64  # arrays in one .npz
MAX_HEADER = 4096  # bytes of an .npy header


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
    files.check_labels(y, source)
    return torch.from_numpy(y.astype(np.int64))


def read_npy(f, source: str) -> np.ndarray:
    """One .npy array from a stream: its header (format 1 or 2, a numeric or string dtype, the bytes its
    shape needs) checked before anything is allocated, then exactly that many bytes read."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"{source}: .npy format version {version} is not supported (1.0 or 2.0)")
    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, fortran, dtype = read_header(f, max_header_size=MAX_HEADER)
    if dtype.hasobject or dtype.kind not in "biufUS" or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"{source}: dtype {dtype} is not a plain number or string type")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    files.check_size(nbytes, source, f"its header (shape {shape}, {dtype})")
    data = files.read_exact(f, nbytes, source).view(dtype)
    return data.reshape(shape[::-1]).T if fortran else data.reshape(shape)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npy (as "x") or .npz file, every header checked before its data is read."""
    with files.open_regular(path) as f:
        if path.suffix == ".npy":
            return {"x": read_npy(f, str(path))}
        with zipfile.ZipFile(f) as z:
            members = [m for m in z.infolist() if m.filename.endswith(".npy")]
            names = [m.filename[:-4] for m in members]
            if len(members) > MAX_MEMBERS or len(set(names)) != len(names):
                raise ValueError(f"{path}: {len(members)} arrays (at most {MAX_MEMBERS}, each name once)")
            arrays = {}
            for name, member in zip(names, members):
                with z.open(member) as stream:
                    arrays[name] = read_npy(stream, f"{path}[{name}]")
            return arrays


def load_arrays(path: Path) -> Dataset:
    """A Dataset from an .npz or .npy file; an empty test set when the file has none."""
    try:
        arrays = _read_arrays(path)
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable {path.suffix} file ({(str(e).splitlines() or [''])[0]})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError,
            RuntimeError) as e:  # RuntimeError: an encrypted member; NotImplementedError: an unknown compression
        raise ValueError(f"{path}: not a readable {path.suffix} file "
                         f"({(str(e).splitlines() or [type(e).__name__])[0]})") from None
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
    n_classes = max(files.check_labels(y.numpy(), str(path)) for y in (train_y, test_y))
    names = arrays.get("classes")
    if names is not None and (names.ndim != 1 or len(names) > files.MAX_CLASSES or names.dtype.itemsize > 4096):
        raise ValueError(f"{path}[classes]: must be a list of at most {files.MAX_CLASSES} names, got {names.dtype} "
                         f"{names.shape}")
    classes = tuple(str(c) for c in names) if names is not None else tuple(str(i) for i in range(n_classes))
    if len(classes) < n_classes:
        raise ValueError(f"{path}: {len(classes)} class names for labels up to {n_classes - 1}")
    return Dataset(path.stem, train_x, train_y, test_x, test_y, classes)
