"""runtime/_png.py: the PNG files save_grid writes decode (with Pillow, an independent reader) to the same pixels."""
import numpy as np
import pytest
from PIL import Image

import edgevae
from edgevae._png import encode_png, write_png


@pytest.mark.parametrize("channels,mode", [(None, "L"), (1, "L"), (3, "RGB"), (4, "RGBA")])
def test_pixels_round_trip_through_pillow(tmp_path, channels, mode):
    rng = np.random.default_rng(channels or 0)
    shape = (37, 53) if channels is None else (37, 53, channels)  # odd sizes: no row padding assumed
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    write_png(tmp_path / "a.png", pixels)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == mode and im.size == (53, 37)
        assert np.array_equal(np.asarray(im), pixels if channels != 1 else pixels[:, :, 0])


def test_same_pixels_same_bytes_and_bad_input_refused():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert encode_png(pixels) == encode_png(pixels.copy())
    assert encode_png(pixels)[:8] == b"\x89PNG\r\n\x1a\n"
    for bad in (pixels.astype(np.float32), pixels[:, :, :2], pixels[None]):
        with pytest.raises(ValueError, match="expected uint8 pixels"):
            encode_png(bad)


def test_save_grid_writes_what_make_grid_builds(tmp_path):
    images = np.random.default_rng(1).random((5, 3, 6, 7), dtype=np.float32)
    edgevae.save_grid(images, tmp_path / "g.png", scale=2)
    with Image.open(tmp_path / "g.png") as im:
        assert np.array_equal(np.asarray(im), edgevae.make_grid(images).repeat(2, 0).repeat(2, 1))
