"""Training data files that may be hostile: regular files only, sizes bounded before anything is allocated.

    with open_regular(path) as f:           # ValueError for a FIFO, a device, a directory ...
        data = read_exact(f, n, str(path))  # n bytes into one buffer; ValueError if fewer or more follow

A data directory is whatever is on disk: a FIFO named like an IDX file would block a plain open(), a link
to /dev/zero would read forever, a gzip bomb would decompress until memory runs out. Every reader of
training data opens through here (O_NONBLOCK, then fstat: regular files only), learns the size of what it
will hold from a header (IDX dims, an .npy header) and caps it at MAX_DATA_BYTES before allocating, then
reads exactly that much and refuses a stream with more. Errors are ValueError with one line: `edgevae
train` prints it and exits 2.
"""
from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np

MAX_DATA_BYTES = 1 << 30  # one array held in memory: an IDX file's data, an .npy, one .npz member (1 GiB)
MAX_CLASSES = 1 << 16  # distinct labels (and class names) of a data set, as the spec's `classes` allows


def open_regular(path: str | Path) -> io.BufferedReader:
    """`path` opened for reading if it is a regular file (symlinks to one are fine); ValueError otherwise."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:  # no permission, a NUL byte ...
        raise ValueError(f"{path}: cannot open it ({getattr(e, 'strerror', None) or e})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "directory" if stat.S_ISDIR(mode) else "FIFO" if stat.S_ISFIFO(mode) else "device or special file"
        raise ValueError(f"{path}: is a {kind}, not a regular file")
    return os.fdopen(fd, "rb")


def check_size(nbytes: int, source: str, what: str) -> None:
    if nbytes > MAX_DATA_BYTES:
        raise ValueError(f"{source}: {what} declares {nbytes:,} bytes of data, more than the {MAX_DATA_BYTES:,} "
                         f"one array may hold in memory")


def read_exact(f, nbytes: int, source: str) -> np.ndarray:
    """Exactly `nbytes` from the stream into a new writable uint8 array; ValueError if it holds fewer or more.
    Reads at most nbytes + 1 bytes: a decompression bomb stops one byte past what its header promised."""
    out = np.empty(nbytes, np.uint8)
    view, filled = memoryview(out), 0
    while filled < nbytes:
        n = f.readinto(view[filled:])
        if not n:
            raise ValueError(f"{source}: truncated: {filled:,} of the {nbytes:,} bytes its header declares")
        filled += n
    if f.read(1):
        raise ValueError(f"{source}: longer than the {nbytes:,} bytes of data its header declares")
    return out


def check_labels(y: np.ndarray, source: str) -> int:
    """The number of classes integer labels y imply (max + 1), after checking they are >= 0 and few enough."""
    if y.size == 0:
        return 1
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= MAX_CLASSES:
        raise ValueError(f"{source}: labels must be class indices in [0, {MAX_CLASSES}), got {low}..{high}")
    return high + 1
