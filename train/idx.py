"""IDX files (the MNIST format) and directories of them: MNIST, Fashion-MNIST, KMNIST ...

    python -c "from edgevae.train.idx import idx_directory; print(idx_directory('data/mnist').train_x.shape)"
"""
from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from . import files
from .dataset import Dataset

IMAGES, LABELS = "images-idx3-ubyte", "labels-idx1-ubyte"
SPLITS = (("train", "train"), ("test", "t10k"))  # (our split, the file prefix)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _header(head: bytes, source: str) -> tuple[np.dtype, int]:
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
        raise ValueError(f"{source}: not an IDX file (bad magic {head[:4].hex() or 'empty'})")
    return np.dtype(_IDX_DTYPES[head[2]]), head[3]


def read_idx_bytes(raw: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes: magic 0x0000 <dtype> <ndim>, then ndim big-endian uint32 sizes, then the data."""
    return read_idx_stream(io.BytesIO(raw), source)


def read_idx_stream(f, source: str) -> np.ndarray:
    """An IDX array from a binary stream, reading at most the bytes its header declares, plus one."""
    dtype, ndim = _header(f.read(4), source)
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise ValueError(f"{source}: truncated IDX header ({4 + len(raw_dims)} bytes, need {4 + 4 * ndim})")
    dims = tuple(int.from_bytes(raw_dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    nbytes = math.prod(dims) * dtype.itemsize
    files.check_size(nbytes, source, f"its IDX header {dims}")
    return files.read_exact(f, nbytes, source).view(dtype).reshape(dims)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file, raw or .gz: a regular file, decompressed no further than its header declares."""
    path = Path(path)
    try:
        with files.open_regular(path) as raw:
            if path.suffix != ".gz":
                return read_idx_stream(raw, str(path))
            with gzip.GzipFile(fileobj=raw) as f:
                return read_idx_stream(f, str(path))
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        kind = "gzip" if path.suffix == ".gz" else "IDX"
        raise ValueError(f"{path}: not a readable {kind} file ({e or type(e).__name__})") from None


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
        loaded = []
        for stem in (f"{prefix}-{IMAGES}", f"{prefix}-{LABELS}"):
            path = find(directory, stem)
            if path is None:
                raise FileNotFoundError(f"{directory}: expected {stem} or {stem}.gz")
            loaded.append(read_idx(path))
        images, labels = loaded
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{directory}: {prefix} images must be uint8 (N, H, W), got {images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
            raise ValueError(f"{directory}: {prefix} labels must be integers, one per image; got {labels.dtype} "
                             f"{labels.shape} for {len(images)} images")
        files.check_labels(labels, f"{directory}: {prefix} labels")
        parts[split] = (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    n_classes = max(files.check_labels(y.numpy(), str(directory)) for _, y in parts.values())
    return Dataset(name or directory.name, *parts["train"], *parts["test"], tuple(str(i) for i in range(n_classes)))
