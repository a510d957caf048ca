"""Data sources: the generated `shapes` set, the IDX reader, and what every source goes through (split, resize)."""
import gzip

import numpy as np
import pytest
import torch

from edgevae._images import Preprocessing
from edgevae.train.data import SHAPE_CLASSES, shapes
from edgevae.train.dataset import fit_images, split
from edgevae.train.idx import idx_directory, read_idx


def test_shapes_are_deterministic_by_seed():
    a, la = shapes(64, 28, seed=3)
    b, lb = shapes(64, 28, seed=3)
    c, _ = shapes(64, 28, seed=4)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_shapes_look_like_shapes():
    x, y = shapes(300, 32, seed=0)
    assert x.shape == (300, 1, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(len(SHAPE_CLASSES)))
    assert (x.reshape(300, -1).max(axis=1) >= 127).all()  # every image has a shape at grey >= 0.5
    assert (x[:, :, 0, :] == 0).all() and (x[:, :, :, 0] == 0).all()  # nothing touches the border
    area = (x > 0).reshape(300, -1).mean(axis=1)
    assert 0.05 < area.mean() < 0.5  # shapes are neither specks nor fill the frame
    # Edges are anti-aliased: some pixels lie strictly between background and the shape's grey.
    assert ((x > 0) & (x < x.reshape(300, -1).max(axis=1)[:, None, None, None])).any()


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_round_trip(tmp_path, compressed):
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)),
             "train-labels-idx1-ubyte": rng.integers(0, 10, 20),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5)}
    for name, array in files.items():
        data = _idx_bytes(array)
        (tmp_path / (name + ".gz" if compressed else name)).write_bytes(gzip.compress(data) if compressed else data)
    ds = idx_directory(tmp_path)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_x.shape == (5, 1, 28, 28)
    assert np.array_equal(ds.train_x[:, 0].numpy(), files["train-images-idx3-ubyte"])
    assert np.array_equal(ds.test_y.numpy(), files["t10k-labels-idx1-ubyte"])


def test_idx_rejects_wrong_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x03" + bytes(16))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(_idx_bytes(np.zeros((4, 3, 3)))[:-5])
    with pytest.raises(ValueError, match="truncated: 31 of the 36 bytes its header declares"):
        read_idx(short)


def test_idx_directory_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        idx_directory(tmp_path)


def test_hold_out_split_is_deterministic_and_disjoint():
    x = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1)
    y = torch.arange(100)
    a, b = split(x, y, 0.2), split(x, y, 0.2)
    assert all(torch.equal(p, q) for p, q in zip(a, b))  # same N, same split, whatever the run
    kept, held = set(a[1].tolist()), set(a[3].tolist())
    assert len(held) == 20 and not kept & held and kept | held == set(range(100))
    assert a[1].tolist() == sorted(kept)  # both parts keep the original order


def test_arrays_are_fitted_by_the_one_preprocessing():
    x = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    small = fit_images(x, (16, 16), Preprocessing(mode="L"))
    assert small.shape == (2, 1, 16, 16) and small.dtype == torch.uint8
    assert (small == 200).all()  # a flat image stays flat: the filter's weights sum to 1
    assert fit_images(x, (28, 28), Preprocessing(mode="L")) is x
    rgb = fit_images(small, (16, 16), Preprocessing(mode="RGB"))
    assert rgb.shape == (2, 3, 16, 16) and (rgb == 200).all()
    assert torch.equal(fit_images(rgb, (16, 16), Preprocessing(mode="L")), small)  # BT.601 weights sum to 1
    tall = fit_images(x, (16, 8), Preprocessing(mode="L", fit="pad"))  # 28x28 into 16x8: letterboxed
    assert tall.shape == (2, 1, 16, 8) and (tall[:, :, 4:12] == 200).all() and (tall[:, :, :4] == 0).all()
