"""Images in and out of the runtime: image files to float arrays, float [0, 1] arrays to uint8, PNG grids (Pillow)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .errors import EdgeVAEError


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map float pixels in [0, 1] to uint8 by round(clip(x, 0, 1) * 255); shape is kept."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise EdgeVAEError(f"images must be a float array in [0, 1], got dtype {images.dtype}")
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) float images into one uint8 (rows, cols, C) array, `nrow` images per row.

    nrow defaults to ceil(sqrt(N)), so 64 images make an 8x8 grid; padding is black.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise EdgeVAEError(f"images must have shape (N>=1, C in {{1, 3}}, H, W), got {images.shape}")
    n, c, h, w = images.shape
    cols = nrow if nrow is not None else math.ceil(math.sqrt(n))
    if cols < 1:
        raise EdgeVAEError(f"nrow must be >= 1, got {cols}")
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), dtype=np.uint8)
    pixels = to_uint8(images).transpose(0, 2, 3, 1)  # (N, H, W, C)
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[top:top + h, left:left + w] = pixels[i]
    return grid


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None, scale: int = 1) -> Path:
    """Write images as one PNG grid (grayscale "L" or "RGB"), each pixel `scale` x `scale`; returns the path."""
    from PIL import Image

    grid = make_grid(images, nrow)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    image = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)  # uint8 2-D -> "L", (H, W, 3) -> "RGB"
    try:
        image.save(path, format="PNG")
    except OSError as e:
        raise EdgeVAEError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def load_images(paths, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Read image files as float32 (N, C, H, W) in [0, 1] for a model of image_shape (C, H, W).

    Converted to grayscale (C = 1) or RGB (C = 3), 16-bit grayscale scaled by 1/65535; transparent pixels
    are composited onto black;
    images of another size are resized to H x W (bilinear). An unreadable file raises EdgeVAEError.
    """
    from PIL import Image, UnidentifiedImageError

    c, h, w = image_shape
    out = np.empty((len(paths), c, h, w), dtype=np.float32)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                im.load()
                if "A" in im.getbands() or im.mode == "P" and "transparency" in im.info:
                    rgba = im.convert("RGBA")
                    im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
                if im.mode.startswith("I"):  # 16-bit grayscale ("I;16", or "I" holding 16-bit values)
                    grey = np.clip(np.asarray(im, dtype=np.float64) / 65535.0, 0.0, 1.0).astype(np.float32)
                    im = Image.fromarray(grey)  # mode "F", values in [0, 1]
                    scale = 1.0
                elif im.mode == "F":
                    raise EdgeVAEError(f"{path}: floating-point images (mode F) have no defined pixel range; "
                                       f"save it as 8- or 16-bit")
                else:
                    im, scale = im.convert("L" if c == 1 else "RGB"), 255.0
                if im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.float32) / scale
                if pixels.ndim == 2 and c == 3:
                    pixels = np.repeat(pixels[:, :, None], 3, axis=2)  # 16-bit grey into an RGB model
        except EdgeVAEError:
            raise
        except FileNotFoundError:
            raise EdgeVAEError(f"{path}: no such file") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise EdgeVAEError(f"{path}: not a readable image ({e})") from None
        out[i] = pixels[None] if c == 1 else pixels.transpose(2, 0, 1)  # (C, H, W)
    return out
