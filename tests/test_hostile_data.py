"""Hostile training data: bombs, absurd labels, pipes and devices end in one ValueError line, bounded in memory."""
import gzip
import io
import os
import resource
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import ROOT
from test_data import _idx_bytes

from edgevae.train import arrays, files
from edgevae.train.idx import idx_directory, read_idx


def _idx_dir(path, train_labels=None, images=None):
    rng = np.random.default_rng(0)
    path.mkdir(exist_ok=True)
    parts = {"train-images-idx3-ubyte": _idx_bytes(rng.integers(0, 256, (20, 8, 8))) if images is None else images,
             "train-labels-idx1-ubyte": train_labels if train_labels is not None else _idx_bytes(np.arange(20) % 3),
             "t10k-images-idx3-ubyte": _idx_bytes(rng.integers(0, 256, (5, 8, 8))),
             "t10k-labels-idx1-ubyte": _idx_bytes(np.arange(5) % 3)}
    for name, data in parts.items():
        (path / name).write_bytes(data)
    return path


def _int32_labels(values) -> bytes:
    values = np.asarray(values, ">i4")
    return bytes([0, 0, 0x0C, 1]) + len(values).to_bytes(4, "big") + values.tobytes()


def test_idx_label_of_2_31_is_refused_not_expanded(tmp_path):
    d = _idx_dir(tmp_path / "d", train_labels=_int32_labels([0] * 19 + [2**31 - 1]))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 65536\), got 0..2147483647"):
        idx_directory(d)
    d = _idx_dir(tmp_path / "e", train_labels=_int32_labels([0] * 19 + [-3]))
    with pytest.raises(ValueError, match="got -3..0"):
        idx_directory(d)


def test_gzip_bomb_stops_one_byte_past_its_header(tmp_path):
    # A valid header for 20 images of 8x8, then 256 MiB of zeros: ~256 KB compressed.
    bomb = tmp_path / "bomb.gz"
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (20, 8, 8))
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        f.write(header)
        zeros = bytes(1 << 20)
        for _ in range(256):
            f.write(zeros)
    assert bomb.stat().st_size < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="longer than the 1,280 bytes of data its header declares"):
        read_idx(bomb)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB: nothing like 256 MiB


def test_idx_header_declaring_terabytes_is_refused_before_reading(tmp_path):
    huge = tmp_path / "huge"
    huge.write_bytes(bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (60000, 60000, 60000)))
    with pytest.raises(ValueError, match="declares 216,000,000,000,000 bytes of data, more than the 1,073,741,824"):
        read_idx(huge)


def test_corrupt_and_truncated_gzip_are_one_line(tmp_path):
    good = gzip.compress(_idx_bytes(np.random.default_rng(0).integers(0, 256, (40, 8, 8))))
    corrupt = bytearray(good)
    corrupt[len(good) // 2:len(good) // 2 + 10] = b"\xff" * 10  # inside the deflate stream: zlib.error or a bad CRC
    (tmp_path / "corrupt.gz").write_bytes(bytes(corrupt))
    (tmp_path / "cut.gz").write_bytes(good[:-12])
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4, 3, 3)))[:-5])
    for name, message in (("corrupt.gz", "not a readable gzip file"), ("cut.gz", "not a readable gzip file|truncated"),
                          ("short", "truncated: 31 of the 36 bytes")):
        with pytest.raises(ValueError, match=message):
            read_idx(tmp_path / name)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_device_in_a_data_directory_are_refused_without_blocking(tmp_path):
    d = _idx_dir(tmp_path / "d")
    (d / "train-images-idx3-ubyte").unlink()
    os.mkfifo(d / "train-images-idx3-ubyte")  # a plain open() would wait for a writer forever
    with pytest.raises(ValueError, match="is a FIFO, not a regular file"):
        idx_directory(d)
    (d / "train-images-idx3-ubyte").unlink()
    (d / "train-images-idx3-ubyte").symlink_to("/dev/zero")  # would read forever
    with pytest.raises(ValueError, match="is a device or special file, not a regular file"):
        idx_directory(d)


def _npz(path, **members: bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    return path


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npy_header(shape, dtype="<f8") -> bytes:
    """An .npy header alone: what a 336-byte bomb is."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode()


def test_npz_header_bomb_is_refused_before_allocating(tmp_path):
    bomb = _npz(tmp_path / "bomb.npz", x=_npy_header((10**6, 10**6, 10**6)))
    assert bomb.stat().st_size < 400
    with pytest.raises(ValueError, match=r"bomb.npz\[x\]: its header .* declares 8,000,000,000,000,000,000 bytes"):
        arrays.load_arrays(bomb)
    one = tmp_path / "one.npy"
    one.write_bytes(_npy_header((1 << 40,), "|u1"))
    with pytest.raises(ValueError, match="more than the 1,073,741,824 one array may hold"):
        arrays.load_arrays(one)


def test_npz_label_of_2_62_is_refused_not_expanded(tmp_path):
    x = np.zeros((10, 8, 8), np.uint8)
    y = np.zeros(10, np.int64)
    y[3] = 2**62
    path = _npz(tmp_path / "big.npz", x=_npy(x), y=_npy(y))
    with pytest.raises(ValueError, match=r"big.npz\[y\]: labels must be class indices in \[0, 65536\)"):
        arrays.load_arrays(path)


def test_truncated_corrupt_and_odd_npz_are_one_line(tmp_path):
    good = _npz(tmp_path / "good.npz", x=_npy(np.zeros((10, 8, 8), np.uint8)))
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])  # BadZipFile
    flipped = bytearray(data)
    flipped[60] ^= 0xFF  # inside the member: a bad CRC or a broken deflate stream
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    _npz(tmp_path / "obj.npz", x=_npy_header((3,), "|O") + bytes(24))
    _npz(tmp_path / "trail.npz", x=_npy(np.zeros((10, 8, 8), np.uint8)) + b"extra")
    for name, message in (("cut.npz", "not a readable .npz file"), ("flip.npz", "not a readable .npz file"),
                          ("obj.npz", "is not a plain number or string type"),
                          ("trail.npz", "longer than the 640 bytes")):
        with pytest.raises(ValueError, match=message):
            arrays.load_arrays(tmp_path / name)


def test_the_cli_prints_one_line_and_exits_2_on_every_bomb(tmp_path):
    cases = [_npz(tmp_path / "bomb.npz", x=_npy_header((10**6, 10**6, 10**6))),
             _idx_dir(tmp_path / "labels", train_labels=_int32_labels([0] * 19 + [2**31 - 1]))]
    for data in cases:
        r = subprocess.run([sys.executable, "-m", "edgevae", "train", "--data", str(data), "--out",
                            str(tmp_path / "run"), "--epochs", "1"], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("*.pt"))


def test_labels_within_bounds_still_load(tmp_path):
    assert files.check_labels(np.array([0, 5, 65535]), "y") == 65536
    d = _idx_dir(tmp_path / "d")
    assert idx_directory(d).classes == ("0", "1", "2")
