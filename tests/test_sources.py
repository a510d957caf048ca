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
from edgevae.train.dataset import auto_size
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


def test_image_size_auto_is_the_images_own_size_said_and_recorded(tmp_path):
    """Without --image-size a folder trains at its images' most common size (HxW), says so once, and the run
    records it: no 64 x 64 emoji silently shrunk to 28 x 28."""
    rng = np.random.default_rng(0)
    (tmp_path / "mixed").mkdir()
    for i in range(5):  # 20 high, 30 wide: the most common size
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "mixed" / f"a{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "mixed" / f"b{i}.png")
    Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)).save(tmp_path / "mixed" / "small.png")
    lines = []
    data = load(TrainConfig(data=str(tmp_path / "mixed"), val_fraction=0), log=lines.append)
    assert data.image_shape == (3, 20, 30)
    assert "  --image-size auto: 20x30 (the size of 5 of 8 images); 3 of another aspect are fitted to it by --fit " \
           "crop, which cuts their edges (--fit pad keeps them)" in lines
    said = "\n".join(lines)  # the small one is scaled up to fill the crop, and that is said; the larger two are not
    assert "cropped at the centre, enlarged to 20x30 (height x width) with lanczos, edges lost from 8x16: 1 of 8" \
        in said
    assert "cropped at the centre to 20x30 (height x width) with lanczos, edges lost from 40x40: 2 of 8" in said
    ckpt = _train(tmp_path, tmp_path / "mixed", image_size="auto", val_fraction=0)
    assert ckpt["image_shape"] == [3, 20, 30] and ckpt["config"]["image_size"] == "20x30"
    assert load(TrainConfig(data="shapes", num_train=8, num_test=4), log=lambda *_: None).image_shape == (1, 28, 28)


@pytest.mark.parametrize("sizes, expected, why", [
    ({(64, 64): 9}, (64, 64), "the size of every image"),
    ({(20, 30): 2, (40, 40): 2}, (40, 40), "the size of 2 of 4 images"),  # a tie: the larger
    ({(10, 10): 1, (20, 30): 1, (40, 50): 1}, (20, 30), "the median height and width of 3 images of 3 sizes"),
    ({(3000, 4000): 2}, (96, 128), "the size of every image, scaled to 128 on its longer side"),
])
def test_auto_size_rule(sizes, expected, why):
    assert auto_size(sizes) == (expected, why)


def test_image_size_auto_counts_only_what_is_read_and_turns_with_exif(tmp_path):
    """The survey reads sizes as the loader will: EXIF-rotated (from the header alone when --channels is given), and
    files the loader skips (floating point, not an image) do not vote."""
    root = tmp_path / "odd"
    root.mkdir()
    for i in range(3):  # float TIFFs: decodable, refused by the loader
        Image.fromarray(np.zeros((50, 50), np.float32), "F").save(root / f"f{i}.tif")
    (root / "junk.png").write_bytes(b"not a png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated a quarter turn: 20 wide x 30 high as stored, 30 x 20 once turned
    for i in range(2):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(root / f"p{i}.jpg", exif=exif.tobytes())
    for channels in (0, 3):  # decoded to tell the channels, or headers only
        lines = []
        data = load(TrainConfig(data=str(root), channels=channels, val_fraction=0, test_fraction=0.5),
                    log=lines.append)
        assert data.image_shape == (3, 30, 20), channels
        assert "  --image-size auto: 30x20 (the size of every image)" in lines


def test_image_size_auto_is_checked_like_a_given_size(tmp_path):
    with pytest.raises(ValueError, match="pixels to generate"):  # shapes: 28, before anything is generated
        TrainConfig(data="shapes", num_train=1 << 24, num_test=1 << 24)
    TrainConfig(data=str(tmp_path), image_size=256)  # a folder at 256 is not 'generated': allowed
    np.save(tmp_path / "big.npy", np.zeros((20, 1, 128, 128), np.uint8))
    with pytest.raises(ValueError, match=r"--image-size auto \(128x128\) with --hidden 4096 makes a first layer"):
        load(TrainConfig(data=str(tmp_path / "big.npy"), arch="mlp", hidden=(4096,)), log=lambda *_: None)
    np.save(tmp_path / "odd.npy", np.zeros((20, 1, 30, 30), np.uint8))
    lines = []
    conv = load(TrainConfig(data=str(tmp_path / "odd.npy"), arch="conv", val_fraction=0), log=lines.append)
    assert conv.image_shape == (1, 32, 32)  # --arch conv's two stride-2 layers need multiples of 4
    assert "  --image-size auto: 32 (the size of every image, rounded to a multiple of 4 (--arch conv))" in lines
    with pytest.raises(ValueError, match="auto"):
        TrainConfig().image_hw  # noqa: B018 -- chosen from the data, not before


def test_image_size_auto_scaled_down_resizes_and_says_no_more(tmp_path):
    (tmp_path / "big").mkdir()
    for i in range(3):
        Image.fromarray(np.full((256, 256, 3), 40 * i, np.uint8)).save(tmp_path / "big" / f"{i}.png")
    lines = []
    assert load(TrainConfig(data=str(tmp_path / "big"), val_fraction=0, test_fraction=0.34), log=lines.append
                ).image_shape == (3, 128, 128)
    assert "  --image-size auto: 128 (the size of every image, scaled to 128 on its longer side)" in lines
    assert any(line.startswith("  resized to 128x128") for line in lines)  # same aspect: resized, nothing cut


def test_image_size_auto_for_arrays_is_their_size_scaled_to_the_family(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "small.npy", rng.integers(0, 256, (12, 3, 24, 16), dtype=np.uint8))
    np.save(tmp_path / "large.npy", rng.integers(0, 256, (6, 1, 256, 192), dtype=np.uint8))
    assert load(TrainConfig(data=str(tmp_path / "small.npy"), val_fraction=0), log=lambda *_: None
                ).image_shape == (3, 24, 16)
    lines = []
    large = load(TrainConfig(data=str(tmp_path / "large.npy"), val_fraction=0), log=lines.append)
    assert large.image_shape == (1, 128, 96)
    assert "  --image-size auto: 128x96 (the size of every image, scaled to 128 on its longer side)" in lines


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
