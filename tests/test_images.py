"""The one preprocessing: training's folder loader and the runtime's load_images give the same tensors for
the same file, for every option; what it does is said; RGBA keeps its alpha; hostile files are one line."""
import itertools
import json
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import edgevae
from edgevae import EdgeVAEError
from edgevae._images import MAX_IMAGE_PIXELS, Preprocessing
from edgevae.train.config import TrainConfig
from edgevae.train.folder import image_folder, preprocessing


def _files(root):
    """Images of every kind the pipeline must handle, each in its own way awkward."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (40, 52, 4), dtype=np.uint8)
    rgba[:, :10, 3] = 0  # a transparent left edge
    rgba[:, 10:20, 3] = 128  # half transparent
    Image.fromarray(rgba, "RGBA").save(root / "a_rgba.png")
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8), "RGB").save(root / "b_rgb.png")
    Image.fromarray(rng.integers(0, 256, (64, 20), dtype=np.uint8), "L").save(root / "c_grey_tall.png")
    grey16 = (rng.integers(0, 65536, (24, 24))).astype(np.uint16)
    Image.fromarray(grey16).save(root / "d_grey16.png")
    palette = Image.fromarray(rng.integers(0, 4, (20, 28), dtype=np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255] + [0] * 756)
    palette.info["transparency"] = 3  # the white entry is transparent
    palette.save(root / "e_palette.png", transparency=3)
    graded = Image.fromarray(rng.integers(0, 3, (18, 18), dtype=np.uint8), "P")  # an alpha per palette entry
    graded.putpalette([200, 30, 30, 30, 200, 30, 30, 30, 200] + [0] * 759)
    graded.save(root / "g_palette_alpha.png", transparency=bytes([255, 128, 0]))
    turned = Image.fromarray(rng.integers(0, 256, (16, 40, 3), dtype=np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    turned.save(root / "f_exif.jpg", exif=exif, quality=95)
    return sorted(root.iterdir())


SETTINGS = itertools.product((1, 3, 4), ("crop", "pad", "stretch"), ("lanczos", "bilinear", "nearest"),
                             ("black", "#3366cc"))
OPTIONS = [(c, f, r, m, a) for c, f, r, m in SETTINGS for a in (("clear", "keep") if c == 4 else ("matte",))]


@pytest.mark.parametrize("channels,fit,resample,matte,alpha", OPTIONS)
def test_training_and_runtime_read_the_same_tensors(tmp_path, channels, fit, resample, matte, alpha):
    files = _files(tmp_path / "imgs")
    config = TrainConfig(data=str(tmp_path / "imgs"), image_size="24x32", channels=channels, fit=fit,
                         resample=resample, matte=matte, alpha=alpha)
    train = image_folder(tmp_path / "imgs", config, log=lambda *_: None).train_x  # uint8, in file order
    pre = preprocessing(config, channels)
    runtime = edgevae.load_images(files, (channels, 24, 32), pre.to_spec())
    # Training scales its uint8 batches by x / 255 in float32 (train/loop.py to_unit): the same division
    assert np.array_equal(train.float().div_(255.0).numpy(), runtime)
    assert runtime.shape == (len(files), channels, 24, 32)


def test_sixteen_bit_exif_and_alpha_are_handled_as_documented(tmp_path):
    files = {p.stem: p for p in _files(tmp_path / "imgs")}
    grey16 = np.asarray(Image.open(files["d_grey16"]), dtype=np.float64)
    x = edgevae.load_images([files["d_grey16"]], (1, 24, 24))
    assert np.array_equal(x[0, 0] * 255, np.rint(grey16 / 257))  # scaled to 8 bits, not clipped to white
    # EXIF orientation 6: the 40 wide x 16 tall file displays 16 wide x 40 tall; stretch keeps every pixel
    upright = np.asarray(Image.open(files["f_exif"]).transpose(Image.Transpose.ROTATE_270).convert("L"))
    got = edgevae.load_images([files["f_exif"]], (1, 40, 16), {"mode": "L", "fit": "stretch", "resample": "nearest",
                                                                "alpha": "matte", "matte": [0, 0, 0]})
    assert np.abs(got[0, 0] * 255 - upright).max() <= 1
    rgba = edgevae.load_images([files["a_rgba"]], (4, 40, 52))  # same size: the pixels as stored
    assert np.array_equal(rgba[0].transpose(1, 2, 0) * 255, np.asarray(Image.open(files["a_rgba"])))
    white = edgevae.load_images([files["a_rgba"]], (3, 40, 52), {"mode": "RGB", "fit": "crop",
                                                                  "resample": "lanczos", "alpha": "matte",
                                                                  "matte": [255, 255, 255]})
    assert (white[0, :, :, :10] == 1.0).all()  # fully transparent -> the matte, not black


def test_what_was_done_is_said(tmp_path):
    files = _files(tmp_path / "imgs")
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing but the notes: Pillow's advice on palette alpha is taken, not shown
        edgevae.load_images(files, (3, 24, 24), notes=notes)
        said_by_training = []
        data = image_folder(tmp_path / "imgs", TrainConfig(data=str(tmp_path / "imgs"), image_size=24),
                            log=said_by_training.append)  # its scan for colour and transparency too
    assert data.image_shape == (4, 24, 24)  # the palette with an alpha per entry counts as transparent
    assert any("palette images converted to RGBA: 2 of 7" in line for line in said_by_training)
    said = "\n".join(notes)
    assert "cropped at the centre to 24x24 (height x width) with lanczos, edges lost from" in said
    assert "16-bit greyscale scaled to 8 bits: 1 of 7" in said
    assert "transparent pixels composited onto black: 3 of 7" in said
    assert "palette images converted to RGB: 2 of 7" in said
    assert "greyscale images converted to RGB: 2 of 7" in said  # the 8-bit one and the 16-bit one


def test_a_palette_with_an_alpha_per_entry_keeps_it(tmp_path):
    path = {p.stem: p for p in _files(tmp_path / "imgs")}["g_palette_alpha"]
    index = np.asarray(Image.open(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgba = edgevae.load_images([path], (4, 18, 18))[0] * 255
    assert np.array_equal(rgba[3], np.array([255, 128, 0])[index])
    assert np.array_equal(rgba[:3].transpose(1, 2, 0)[index == 1], np.tile([30, 200, 30], ((index == 1).sum(), 1)))


def test_loose_images_beside_class_folders(tmp_path):
    root = tmp_path / "mixed"
    for sub in ("cats", "dogs"):
        (root / sub).mkdir(parents=True)
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / sub / "1.png")
    Image.new("RGB", (8, 8)).save(root / "loose.png")
    said = []
    data = image_folder(root, TrainConfig(data=str(root), image_size=8), log=said.append)
    assert data.classes == ("cats", "dogs", "mixed") and len(data.train_x) == 3
    assert "1 loose image(s) at the top level as one more class 'mixed' (or --layout flat, to make one class of " \
        "everything)" in said[0]
    flat = image_folder(root, TrainConfig(data=str(root), image_size=8, layout="flat"), log=said.append)
    assert flat.classes == ("mixed",) and len(flat.train_x) == 3
    (root / "cats" / "kittens").mkdir()  # a deeper folder counts for its top-level sub-folder, and that is said
    Image.new("RGB", (8, 8), (10, 200, 10)).save(root / "cats" / "kittens" / "2.png")
    nested = image_folder(root, TrainConfig(data=str(root), image_size=8), log=said.append)
    assert nested.classes == ("cats", "dogs", "mixed") and len(nested.train_x) == 4
    assert any("2 class(es) from the sub-folders (1 image(s) in deeper folders count for the sub-folder they are "
               "in)" in line for line in said)


def test_rgba_grids_keep_transparency_or_preview_on_a_background(tmp_path):
    images = np.zeros((2, 4, 8, 8), np.float32)
    images[:, 0] = 1.0  # red
    images[0, 3] = 1.0  # opaque
    images[1, 3, :, :4] = 0.5  # half transparent left half, the rest fully transparent
    path = edgevae.save_grid(images, tmp_path / "g.png")
    with Image.open(path) as png:
        assert png.mode == "RGBA"
        pixels = np.asarray(png)
    assert pixels[2:10, 2:10, 3].min() == 255 and pixels[2:10, 12:16, 3].max() == 128  # alpha as written
    assert pixels[2:10, 16:20, 3].max() == 0
    checker = edgevae.make_grid(images, background="checkerboard")
    assert checker.shape[2] == 3 and len(np.unique(checker[2:10, 16:20].reshape(-1, 3), axis=0)) == 2
    blue = edgevae.make_grid(images, background="#0000ff")
    assert tuple(blue[5, 18]) == (0, 0, 255) and tuple(blue[5, 13]) == (128, 0, 127)  # alpha 128/255 of red over blue


def _png_header_only(path, width, height):
    """A PNG that declares width x height of 8-bit greyscale and holds one compressed row of zeros."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    body += chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))


def test_hostile_image_files_are_one_line(tmp_path):
    _png_header_only(tmp_path / "bomb.png", 30_000, 30_000)
    with pytest.raises(EdgeVAEError, match=f"bomb.png: .* pixels is more than the {MAX_IMAGE_PIXELS:,}-pixel limit"):
        edgevae.load_images([tmp_path / "bomb.png"], (1, 8, 8))
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "full.png")
    (tmp_path / "short.png").write_bytes((tmp_path / "full.png").read_bytes()[:2000])  # cut inside its pixel data
    with pytest.raises(EdgeVAEError, match="short.png: not a readable image"):
        edgevae.load_images([tmp_path / "short.png"], (1, 8, 8))
    (tmp_path / "fake.png").write_bytes(b"DDS |" + bytes(200))  # a DDS header behind a .png name
    with pytest.raises(EdgeVAEError, match="fake.png: not a readable image"):
        edgevae.load_images([tmp_path / "fake.png"], (1, 8, 8))
    os.mkfifo(tmp_path / "fifo.png")  # opening it for reading would wait for a writer forever
    with pytest.raises(EdgeVAEError, match="fifo.png: not a regular file"):
        edgevae.load_images([tmp_path / "fifo.png"], (1, 8, 8))
    with pytest.raises(EdgeVAEError, match="gone.png: no such file"):
        edgevae.load_images([tmp_path / "gone.png"], (1, 8, 8))
    with pytest.raises(EdgeVAEError, match="paths must be a list"):
        edgevae.load_images(str(tmp_path / "gone.png"), (1, 8, 8))
    Image.new("F", (4, 4)).save(tmp_path / "float.tif")
    with pytest.raises(EdgeVAEError, match="float.tif: floating-point images"):
        edgevae.load_images([tmp_path / "float.tif"], (1, 8, 8))


def test_grids_refuse_what_would_not_fit_in_memory(tmp_path):
    images = np.zeros((4, 1, 8, 8), np.float32)
    assert edgevae.make_grid(images, nrow=1_000_000 // 1000).shape[:2] == (12, 42)  # nrow beyond N: one row of N
    with pytest.raises(EdgeVAEError, match="nrow must be an int"):
        edgevae.make_grid(images, nrow=2.5)
    with pytest.raises(EdgeVAEError, match="pixel limit"):
        edgevae.save_grid(np.zeros((4096, 1, 64, 64), np.float32), tmp_path / "big.png", scale=8)


def test_preprocessing_rejects_contradictions():
    with pytest.raises(EdgeVAEError, match="alpha 'clear' or 'keep' goes with mode RGBA"):
        Preprocessing(mode="RGB", alpha="keep")
    with pytest.raises(EdgeVAEError, match="alpha 'clear' or 'keep' goes with mode RGBA"):
        Preprocessing(mode="RGBA", alpha="matte")
    # --alpha matte forced to 4 channels kept the colour as stored before clear existed, and still does
    assert preprocessing(TrainConfig(alpha="matte", channels=4), 4).alpha == "keep"
    assert preprocessing(TrainConfig(), 4).alpha == "clear" and Preprocessing.default(4).alpha == "keep"
    with pytest.raises(EdgeVAEError, match="fit must be one of"):
        Preprocessing(fit="zoom")
    with pytest.raises(EdgeVAEError, match="a colour must be one of"):
        Preprocessing(matte="mauve")


def test_an_image_just_over_the_limit_is_refused_before_decoding(tmp_path):
    _png_header_only(tmp_path / "big.png", 5000, 4000)  # 20 megapixels: under Pillow's limit, over ours
    with pytest.raises(EdgeVAEError, match="big.png: 5000x4000 pixels is more than the"):
        edgevae.load_images([tmp_path / "big.png"], (1, 8, 8))


def test_an_rgba_non_square_model_end_to_end(tmp_path):
    """Train on a folder of RGBA images at 12x16, export: the spec records the preprocessing, and the runtime
    prepares the same files exactly as training did, says so on the command line, and writes RGBA PNGs."""
    from conftest import run_cli

    from edgevae.export.build import export
    from edgevae.train.loop import train

    root = tmp_path / "sprites"
    root.mkdir()
    rng = np.random.default_rng(1)
    for i in range(24):
        sprite = np.zeros((20, 30, 4), np.uint8)
        sprite[4:16, 8:22] = (*rng.integers(0, 256, 3), 255)  # an opaque coloured block on transparency
        Image.fromarray(sprite, "RGBA").save(root / f"{i:02d}.png")
    config = TrainConfig(data=str(root), image_size="12x16", hidden=(32,), latent_dim=3, epochs=1, batch_size=8,
                         out=str(tmp_path / "run"))
    out = export(train(config), tmp_path / "export", log=lambda *_: None)
    model = edgevae.load(out)
    assert model.image_shape == (4, 12, 16) and model.image_mode == "RGBA"
    assert model.preprocessing == {"mode": "RGBA", "fit": "crop", "resample": "lanczos", "alpha": "clear",
                                   "matte": [0, 0, 0]}
    files = sorted(root.iterdir())
    want = image_folder(root, config, log=lambda *_: None).train_x.float().div_(255.0).numpy()
    assert np.array_equal(model.load_images(files), want)
    r = run_cli("reconstruct", str(out), *map(str, files[:3]), "--out", str(tmp_path / "r.png"))
    assert r.returncode == 0, r.stderr
    said = "note: cropped at the centre to 12x16 (height x width) with lanczos, edges lost from 20x30: 3 of 3"
    assert said in r.stderr
    with Image.open(tmp_path / "r.png") as png:
        assert png.mode == "RGBA" and png.size == (3 * 18 + 2, 2 * 14 + 2)


def test_clear_sets_the_colour_under_fully_transparent_pixels_to_0_and_says_so(tmp_path, capsys):
    # Invisible colour is whatever the drawing program left (Wesnoth's sprites: black, white or leftovers, varying
    # within a quarter of the images); a model given it spends its latent on what no one sees. "clear" (training's
    # default for RGBA) zeroes it, identically in training's loader and the runtime; "keep" leaves it as stored.
    files = _files(tmp_path / "imgs")
    rgba = next(f for f in files if f.stem == "a_rgba")
    stored = np.asarray(Image.open(rgba)).transpose(2, 0, 1)  # (4, 40, 52): random colour under alpha 0
    clear = {"mode": "RGBA", "fit": "crop", "resample": "nearest", "alpha": "clear", "matte": [0, 0, 0]}
    got = np.rint(edgevae.load_images([rgba], (4, 40, 52), clear)[0] * 255).astype(np.uint8)
    invisible = stored[3] == 0
    assert invisible.any() and stored[:3, invisible].any()
    assert not got[:3, invisible].any()  # cleared ...
    assert np.array_equal(got[:, ~invisible], stored[:, ~invisible])  # ... and nothing else touched
    kept = edgevae.load_images([rgba], (4, 40, 52), {**clear, "alpha": "keep"})[0]
    assert np.array_equal(np.rint(kept * 255).astype(np.uint8), stored)
    lines = []
    data = image_folder(tmp_path / "imgs", TrainConfig(data=str(tmp_path / "imgs"), image_size="40x52"),
                        log=lines.append)
    assert any(line.strip().startswith("colour under fully transparent pixels set to 0: ") for line in lines)
    x = data.train_x.numpy()
    assert not (x[:, :3] * (x[:, 3:] == 0)).any()
    # arrays (.npz) already at the model's size are cleared too, so every source trains on what the spec says
    from edgevae.train.dataset import fit_images

    raw = torch.from_numpy(stored[None].copy())
    assert np.array_equal(fit_images(raw, (40, 52), Preprocessing(**clear)).numpy()[0], got)


def test_a_run_records_clear_and_one_saved_before_it_exports_as_keep(tmp_path, capsys):
    # --alpha auto clears RGBA's invisible colour and the run's config records "clear" (the auto line says it); a
    # checkpoint saved before "clear" existed says "auto" and trained on the colour as stored: it loads as "keep",
    # so its export tells the runtime to leave that colour as it is.
    from edgevae.export.build import export
    from edgevae.train import checkpoint
    from edgevae.train.loop import train

    root = tmp_path / "sprites"
    root.mkdir()
    rng = np.random.default_rng(2)
    for i in range(20):
        sprite = rng.integers(0, 256, (12, 16, 4), dtype=np.uint8)
        sprite[:, :6, 3] = 0  # invisible, with colour under it
        Image.fromarray(sprite, "RGBA").save(root / f"{i:02d}.png")
    run = train(TrainConfig(data=str(root), image_size="12x16", hidden=(16,), latent_dim=2, epochs=1, batch_size=8,
                            out=str(tmp_path / "run")))
    assert any(line.startswith("auto: ") and "--alpha clear" in line for line in capsys.readouterr().out.splitlines())
    assert torch.load(run / "checkpoint.pt", weights_only=True)["config"]["alpha"] == "clear"
    # colour images: every evaluation measures how much colour the reconstructions keep (train/loop.py COLOUR_KEPT)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= row["val_colour_kept"] < 5 for row in rows)
    for name in ("checkpoint.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        ckpt["config"]["alpha"] = "auto"  # as saved before --alpha clear
        torch.save(ckpt, run / name)
    assert checkpoint.load(run / "best.pt")["config"]["alpha"] == "keep"
    out = export(run, tmp_path / "export", log=lambda *_: None)
    assert edgevae.load(out).preprocessing["alpha"] == "keep"
