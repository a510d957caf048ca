"""IDX files (the MNIST format) and directories of them: MNIST, Fashion-MNIST, KMNIST ...

    python -c "from edgevae.train.idx import idx_directory; print(idx_directory('data/mnist').train_x.shape)"
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset

IMAGES, LABELS = "images-idx3-ubyte", "labels-idx1-ubyte"
SPLITS = (("train", "train"), ("test", "t10k"))  # (our split, the file prefix)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx_bytes(raw: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes: magic 0x0000 <dtype> <ndim>, then ndim big-endian uint32 sizes, then the data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{source}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{source}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{source}: IDX size {len(raw)} bytes does not match its header {dims} ({expected} bytes)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, raw or .gz."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (gzip.BadGzipFile, EOFError) as e:
        raise ValueError(f"{path}: not a readable gzip file ({e})") from None
    return read_idx_bytes(raw, str(path))


def find(directory: Path, stem: str) -> Path | None:
    """directory/stem or directory/stem.gz, whichever exists."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def is_idx_directory(directory: Path) -> bool:
    return find(directory, f"train-{IMAGES}") is not None


def idx_directory(directory: str | Path, name: str | None = None) -> Dataset:
    """Load train-/t10k- images and labels from an MNIST-format directory (.gz or raw)."""
    directory = Path(directory)
    parts = {}
    for split, prefix in SPLITS:
        files = []
        for stem in (f"{prefix}-{IMAGES}", f"{prefix}-{LABELS}"):
            path = find(directory, stem)
            if path is None:
                raise FileNotFoundError(f"{directory}: expected {stem} or {stem}.gz")
            files.append(read_idx(path))
        images, labels = files
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{directory}: {prefix} images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{directory}: {len(labels)} {prefix} labels for {len(images)} images")
        parts[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    n_classes = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    return Dataset(name or directory.name, *parts["train"], *parts["test"], tuple(str(i) for i in range(n_classes)))
