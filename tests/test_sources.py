"""Every data source trains a few steps on data the test makes: image folders, NPZ/NPY, IDX, and the
MNIST / Fashion-MNIST downloader against a local HTTP server on 127.0.0.1 (no internet needed)."""
import functools
import gzip
import hashlib
import http.server
import json
import socket
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import _idx_bytes

from edgevae.train import download
from edgevae.train.config import TrainConfig
from edgevae.train.data import load
from edgevae.train.loop import train

TINY_RUN = dict(image_size=16, hidden=(16,), latent_dim=2, epochs=1, batch_size=16, seed=0)


def _train(tmp_path, data, **overrides):
    out = train(TrainConfig(data=str(data), out=str(tmp_path / "run"), **{**TINY_RUN, **overrides}))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and np.isfinite(ckpt["metrics"]["test_neg_elbo"])
    return ckpt


# --- image folders --------------------------------------------------------------------------------

def _folder(root, rng):
    """cats: RGB PNGs of assorted sizes; dogs: grayscale JPEGs and RGBA PNGs; plus a note and a corrupt file."""
    (root / "cats").mkdir(parents=True)
    (root / "dogs" / "nested").mkdir(parents=True)
    for i in range(12):
        size = (20 + i, 16 + 2 * i)  # not square, not the model's size: centre-cropped and resized
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(root / "cats" / f"{i}.png")
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(root / "dogs" / f"{i}.jpg", quality=90)
    for i in range(4):
        rgba = np.zeros((16, 16, 4), np.uint8)
        rgba[..., 0] = 255  # red, fully transparent on the left half
        rgba[:, 8:, 3] = 255
        Image.fromarray(rgba, "RGBA").save(root / "dogs" / "nested" / f"{i}.png")
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))


def test_image_folder_classes_channels_alpha_and_a_corrupt_file(tmp_path, capsys):
    _folder(tmp_path / "pets", np.random.default_rng(0))
    config = TrainConfig(data=str(tmp_path / "pets"), image_size=16, val_fraction=0, test_fraction=0.25)
    data = load(config, log=lambda *_: None)
    assert data.classes == ("cats", "dogs")
    assert data.image_shape == (4, 16, 16)  # some images have transparency: RGBA for all, alpha kept
    assert len(data.train_x) + len(data.test_x) == 24  # 12 + 8 + 4 readable images
    err = capsys.readouterr().err
    assert "skipped 1 of 25 image files" in err and "broken.png" in err

    matte = load(TrainConfig(data=str(tmp_path / "pets"), image_size=16, alpha="matte", val_fraction=0,
                             test_fraction=0.25), log=lambda *_: None)
    assert matte.image_shape == (3, 16, 16)  # some images have colour: RGB for all
    alpha = [x for x, y in zip(matte.train_x, matte.train_y) if y == 1 and x[1:].sum() == 0 and x[0].max() == 255]
    assert alpha and all((x[0, :, :4] == 0).all() for x in alpha)  # transparent left edge over black matte

    white = load(TrainConfig(data=str(tmp_path / "pets"), image_size=16, matte="white", channels=1, val_fraction=0),
                 log=lambda *_: None)
    assert white.image_shape == (1, 16, 16)


def test_image_folder_trains_conditional_conv(tmp_path):
    _folder(tmp_path / "pets", np.random.default_rng(1))
    ckpt = _train(tmp_path, tmp_path / "pets", arch="conv", conv_channels=(4, 8), conditional=True,
                  likelihood="continuous-bernoulli")
    assert ckpt["classes"] == ["cats", "dogs"] and ckpt["image_shape"] == [4, 16, 16]  # RGBA: alpha kept


def test_a_folder_run_names_the_files_it_trained_validated_and_tested_on(tmp_path):
    from edgevae.train.folder import preprocessing, read_image

    root = tmp_path / "pets"
    _folder(root, np.random.default_rng(2))
    out = train(TrainConfig(data=str(root), out=str(tmp_path / "run"), **{**TINY_RUN, "val_fraction": 0.2}))
    split = json.loads((out / "split.json").read_text())
    assert split["root"] == str(root)
    named = split["train"] + split["val"] + split["test"]
    readable = [p for p in root.rglob("*") if p.suffix in (".png", ".jpg") and p.name != "broken.png"]
    assert sorted(named) == sorted(p.relative_to(root).as_posix() for p in readable)  # each readable file once
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (18, 4, 2)  # 24: 10% test, 20% val
    # the files split.json calls test are the images the run tested on (the checkpoint keeps them for export)
    config = TrainConfig(**ckpt["config"])
    pre = preprocessing(config, 4)
    test = np.stack([read_image(root / name, config.image_hw, pre) for name in split["test"]])
    assert np.array_equal(test, ckpt["reference_x"].numpy())


def test_folder_without_readable_images_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="none of its 1 image files could be read"):
        load(TrainConfig(data=str(tmp_path / "empty")), log=lambda *_: None)


# --- arrays -------------------------------------------------------------------------------------------

def test_npz_keras_layout_trains(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "set.npz", x_train=rng.integers(0, 256, (80, 16, 16, 3), dtype=np.uint8),
             y_train=rng.integers(0, 4, (80, 1)), x_test=rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8),
             y_test=rng.integers(0, 4, (20, 1)))
    ckpt = _train(tmp_path, tmp_path / "set.npz", likelihood="gaussian", conditional=True)
    assert ckpt["image_shape"] == [3, 16, 16] and len(ckpt["classes"]) == 4


def test_npy_floats_in_unit_range_train(tmp_path):
    x = np.random.default_rng(0).random((64, 1, 16, 16), dtype=np.float32)  # (N, C, H, W), floats in [0, 1]
    np.save(tmp_path / "x.npy", x)
    ckpt = _train(tmp_path, tmp_path / "x.npy", val_fraction=0)
    assert ckpt["image_shape"] == [1, 16, 16] and ckpt["classes"] == ["0"]
    # uint8 after rint(x * 255), test split held out by --test-fraction
    data = load(TrainConfig(data=str(tmp_path / "x.npy"), image_size=16, val_fraction=0), log=lambda *_: None)
    assert len(data.train_x) + len(data.test_x) == 64 and data.train_x.dtype == torch.uint8


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 5)), "images must be"),
    (np.full((4, 8, 8), 2.0), r"float images must lie in \[0, 1\]"),
    (np.full((4, 8, 8), 300), "integer images must lie in 0..255"),
])
def test_bad_arrays_say_what_is_wrong(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message):
        load(TrainConfig(data=str(tmp_path / "bad.npy")))


# --- IDX and the downloader ------------------------------------------------------------------------------

def _idx_files(rng, n_train=64, n_test=16, side=12):
    """The four MNIST-format files, gzipped, as {stem: gz bytes}."""
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    return {stem: gzip.compress(_idx_bytes(a)) for stem, a in arrays.items()}


def test_idx_directory_trains_resized(tmp_path):
    (tmp_path / "kmnist").mkdir()
    for stem, data in _idx_files(np.random.default_rng(0)).items():
        (tmp_path / "kmnist" / f"{stem}.gz").write_bytes(data)
    ckpt = _train(tmp_path, tmp_path / "kmnist", model="ae")  # 12x12 files, resized to --image-size 16
    assert ckpt["image_shape"] == [1, 16, 16] and ckpt["dataset"] == "kmnist"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):  # no access log on stderr
        pass

    def do_GET(self):
        _Quiet.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def mirror(tmp_path):
    """(base URL, served directory): an HTTP server on 127.0.0.1, stopped after the test."""
    served = tmp_path / "served"
    served.mkdir()
    _Quiet.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_mnist(monkeypatch):
    """Replace MNIST's table with tiny files of our own (their content sha256 listed as the real table does)."""
    files = _idx_files(np.random.default_rng(0))
    digests = {stem: hashlib.sha256(gzip.decompress(data)).hexdigest() for stem, data in files.items()}
    monkeypatch.setitem(download.DATASETS, "mnist", download.Source(mirrors=("http://127.0.0.1:9/",), files=digests))
    return files


def test_download_verifies_then_trains_and_reuses_files(tmp_path, mirror, fake_mnist):
    url, served = mirror
    for stem, data in fake_mnist.items():
        (served / f"{stem}.gz").write_bytes(data)
    ckpt = _train(tmp_path, "mnist", data_root=str(tmp_path / "root"), mirror=url)
    assert ckpt["dataset"] == "mnist" and len(_Quiet.requests) == 4
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == sorted(f"{s}.gz" for s in fake_mnist)
    download.fetch("mnist", tmp_path / "root", mirror=url, log=lambda *_: None)
    assert len(_Quiet.requests) == 4  # present and verified: nothing downloaded again


def test_download_rejects_a_wrong_checksum_and_leaves_nothing(tmp_path, mirror, fake_mnist):
    url, served = mirror
    for stem, data in fake_mnist.items():
        (served / f"{stem}.gz").write_bytes(gzip.compress(b"tampered") if "t10k-images" in stem else data)
    with pytest.raises(download.DownloadError, match=r"t10k-images-idx3-ubyte.gz.*sha256 of the content is"):
        download.fetch("mnist", tmp_path / "root", mirror=url, log=lambda *_: None)
    assert not (tmp_path / "root" / "mnist" / "t10k-images-idx3-ubyte.gz").exists()
    assert not list((tmp_path / "root" / "mnist").glob("*.part"))


def test_download_offline_is_one_clear_error(tmp_path, fake_mnist):
    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(download.DownloadError, match=r"cannot download train-images-idx3-ubyte.gz .*offline\?"):
        download.fetch("mnist", tmp_path / "root", mirror=f"http://127.0.0.1:{port}/", log=lambda *_: None)
