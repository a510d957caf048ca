"""Images in and out: the one preprocessing (image file -> pixels), float <-> uint8, PNG grids (Pillow).

Training reads image folders with `read_image` and the runtime's `load_images` calls the same function,
so `encode` and `reconstruct` see exactly what training saw; an export records the choices in its spec
(`preprocessing`), and `Model.load_images` applies them:

    decode        Pillow, any format it reads; EXIF orientation applied; at most MAX_IMAGE_PIXELS pixels
    depth         16-bit greyscale scaled to 8 bits (round(v / 257)); floating-point images refused
    alpha         mode RGBA keeps it as a channel; L and RGB composite transparent pixels onto `matte`
    mode          converted to L (ITU-R 601 luma), RGB or RGBA
    fit to H x W  crop (centre, to the aspect, then resize), pad (resize inside, borders in the matte or
                  transparent) or stretch (resize, aspect not kept), with a named Pillow filter

What was done to whom is counted in a `Notes`, whose summary says it once ("cropped 68x56 to 56x56 at the
centre: 1350 of 1350 images lose pixels"), instead of it happening silently.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import spec as S
from .errors import EdgeVAEError, check_int

MAX_IMAGE_PIXELS = 1 << 24  # 16.7 megapixels (4096 x 4096) per image file; larger ones are refused before decoding
ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose reads; 5-8 swap width and height
MODES = {"L": 1, "RGB": 3, "RGBA": 4}  # image mode -> channels
COLOURS = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128)}
CHECKER = ((255, 255, 255), (204, 204, 204))  # the preview checkerboard's two greys
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def parse_colour(text) -> tuple[int, int, int]:
    """A colour name (black, white, grey), '#rrggbb', or an [r, g, b] of 0..255 ints."""
    if isinstance(text, (list, tuple)) and len(text) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in text):
        return tuple(text)
    if isinstance(text, str):
        if text.lower() in COLOURS:
            return COLOURS[text.lower()]
        if len(text) == 7 and text[0] == "#":
            try:
                return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
            except ValueError:
                pass
    raise EdgeVAEError(f"a colour must be one of {', '.join(COLOURS)} or #rrggbb, got {text!r}")


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model's input; the spec's `preprocessing` object."""
    mode: str = "RGB"  # L, RGB or RGBA: the model's channels
    fit: str = "crop"  # crop, pad or stretch to H x W (S.FITS)
    resample: str = "lanczos"  # Pillow filter for resizing (S.RESAMPLING)
    alpha: str = "matte"  # RGBA models: clear (invisible colour set to 0) or keep; matte: composited onto `matte`
    matte: tuple[int, int, int] = (0, 0, 0)  # the composite's background and pad's border colour

    def __post_init__(self):
        for name, allowed in (("mode", tuple(MODES)), ("fit", S.FITS), ("resample", S.RESAMPLING),
                              ("alpha", S.ALPHAS)):
            if getattr(self, name) not in allowed:
                raise EdgeVAEError(f"preprocessing {name} must be one of {', '.join(allowed)}, "
                                   f"got {getattr(self, name)!r}")
        object.__setattr__(self, "matte", parse_colour(self.matte))
        if (self.alpha in S.KEEPS_ALPHA) != (self.mode == "RGBA"):
            raise EdgeVAEError(f"preprocessing alpha 'clear' or 'keep' goes with mode RGBA (alpha is a channel) and "
                               f"'matte' with L and RGB; got alpha {self.alpha!r} for mode {self.mode}")

    @classmethod
    def default(cls, channels: int) -> Preprocessing:
        """The runtime's preprocessing for images of `channels` channels when no spec gives one (`load_images`
        without `preprocessing`): centre crop, Lanczos, RGBA as stored, L and RGB composited onto black. Training's
        own default for RGBA is `clear` (train/folder.py), which its spec records."""
        mode = S.IMAGE_MODES.get(channels)
        if mode is None:
            raise EdgeVAEError(f"images must have 1, 3 or 4 channels, got {channels}")
        return cls(mode=mode, alpha="keep" if mode == "RGBA" else "matte")

    @classmethod
    def from_spec(cls, spec: dict | None, channels: int) -> Preprocessing:
        if spec is None:
            return cls.default(channels)
        if isinstance(spec, Preprocessing):
            return spec
        known = {k: spec[k] for k in ("mode", "fit", "resample", "alpha", "matte") if k in spec}
        return cls(**{**cls.default(channels).__dict__, **known})

    def to_spec(self) -> dict:
        return {"mode": self.mode, "fit": self.fit, "resample": self.resample, "alpha": self.alpha,
                "matte": list(self.matte)}


class Notes:
    """Counts what preprocessing did, per kind of change, and says it in a few lines."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.sizes: dict[str, set] = {}  # the source sizes (height, width) each change was made from
        self.total = 0

    def add(self, what: str, size: tuple[int, int] | None = None) -> None:
        self.counts[what] += 1
        if size is not None:
            self.sizes.setdefault(what, set()).add(size)

    def summary(self) -> list[str]:
        lines = []
        for what, n in sorted(self.counts.items()):
            sizes = sorted(self.sizes.get(what, ()), key=lambda s: (s[0] * s[1], s))
            source = "" if not sizes else f" from {sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else \
                f" from {len(sizes)} sizes, {sizes[0][0]}x{sizes[0][1]} to {sizes[-1][0]}x{sizes[-1][1]}"
            lines.append(f"{what}{source}: {n} of {self.total} image(s)")
        return lines


def _open_regular(path):
    """A binary file object for `path` if it is a regular file (a FIFO or a device would hang or never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise EdgeVAEError(f"{path}: no such file") from None
    except (OSError, ValueError, TypeError) as e:
        raise EdgeVAEError(f"{path}: cannot open it ({getattr(e, 'strerror', None) or e})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise EdgeVAEError(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


@contextlib.contextmanager
def _identified(path):
    """The image file opened by Pillow, its header read and its size within the pixel limit, not yet decoded; any
    failure inside the block (the header, the size, decoding it there) is one EdgeVAEError line."""
    from PIL import Image, UnidentifiedImageError

    def too_big(size: str) -> EdgeVAEError:
        return EdgeVAEError(f"{path}: {size} pixels is more than the {MAX_IMAGE_PIXELS:,}-pixel limit for an "
                            f"image file")

    with _open_regular(path) as f, warnings.catch_warnings():
        # Pillow warns about damaged metadata (TIFF tags, EXIF) it skips; the image either decodes or is
        # refused in one line below, so its warnings are noise on an app's stderr
        warnings.simplefilter("ignore")
        try:
            image = Image.open(f)
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise too_big(f"{width}x{height}")
            yield image
        except EdgeVAEError:
            raise
        except Image.DecompressionBombError as e:  # Pillow's own, larger limit, checked as it opens the file
            raise too_big(next(iter(re.findall(r"\d+ pixels", str(e))), "too many").removesuffix(" pixels")) from None
        except UnidentifiedImageError:
            raise EdgeVAEError(f"{path}: not a readable image (not a format Pillow reads)") from None
        except Exception as e:  # a decoder fed hostile bytes may raise anything; every one means "unreadable"
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise EdgeVAEError(f"{path}: not a readable image ({detail})") from None


def open_image(path):
    """Decode one image file with Pillow, EXIF-rotated; any failure is one EdgeVAEError line."""
    from PIL import ImageOps

    with _identified(path) as image:
        image.load()  # decode now, so a truncated or corrupt file fails here
        return ImageOps.exif_transpose(image)


def header_size(path) -> tuple[int, int]:
    """(H, W) of an image file as open_image gives it (EXIF-rotated), from its header: nothing is decoded. A file
    open_image would refuse before decoding, or one of a mode reading refuses, raises EdgeVAEError."""
    with _identified(path) as image:
        width, height = image.size
        turned = image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8)  # transposed or rotated a quarter turn
    try:
        check_mode(image)
    except EdgeVAEError as e:
        raise EdgeVAEError(f"{path}: {e}") from None
    return (width, height) if turned else (height, width)


def palette_alpha(image):
    """A palette image with an alpha per palette entry as one whose palette holds the alpha (a copy): what
    converting it does anyway, without Pillow's warning to do so; any other image as it is."""
    if image.mode == "P" and isinstance(image.info.get("transparency"), bytes):
        image = image.copy()
        image.apply_transparency()
    return image


def has_alpha(image) -> bool:
    palette = image.palette.mode if image.mode == "P" and image.palette is not None else ""
    return image.mode in _ALPHA_MODES or "transparency" in image.info or palette == "RGBA"


def is_colour(image) -> bool:
    """Whether an image is in colour: by its mode, and for a palette image by the colours it uses."""
    if image.mode in ("1", "L", "LA", "La", "F") or image.mode.startswith("I"):
        return False
    if image.mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
        return bool(np.any(rgb[..., 0] != rgb[..., 1]) or np.any(rgb[..., 1] != rgb[..., 2]))
    return True  # RGB, RGBA, CMYK, YCbCr ...: the file says colour


def check_mode(image) -> None:
    """EdgeVAEError for an image whose mode has no pixel range to read (floating point)."""
    if image.mode == "F":
        raise EdgeVAEError("floating-point images (mode F) have no defined pixel range; save it as 8- or 16-bit")


def _to_mode(image, pre: Preprocessing, notes: Notes | None):
    """The image in pre.mode: 16-bit scaled, alpha kept or composited onto the matte, colour converted."""
    from PIL import Image

    check_mode(image)
    if image.mode.startswith("I"):  # 16-bit greyscale ("I;16"), or "I" holding 16-bit values
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        image = Image.fromarray(grey)  # mode L
        _note(notes, "16-bit greyscale scaled to 8 bits")
    if image.mode in ("P", "PA"):
        _note(notes, f"palette images converted to {pre.mode}")
        image = palette_alpha(image)
    elif pre.mode != "L" and image.mode in ("1", "L", "LA", "La"):
        _note(notes, f"greyscale images converted to {pre.mode}")
    if pre.mode == "RGBA":
        if not has_alpha(image):
            _note(notes, "opaque images given alpha 255")
        return image.convert("RGBA")
    if has_alpha(image):
        rgba = image.convert("RGBA")
        if np.asarray(rgba)[:, :, 3].min() < 255:
            _note(notes, f"transparent pixels composited onto {_colour_name(pre.matte)}")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (*pre.matte, 255)), rgba)
    if pre.mode == "L" and is_colour(image):
        _note(notes, "colour converted to greyscale")
    return image.convert(pre.mode)


def _fit(image, size_hw: tuple[int, int], pre: Preprocessing, notes: Notes | None):
    from PIL import Image, ImageOps

    height, width = size_hw
    if image.size == (width, height):
        return image
    method = getattr(Image.Resampling, pre.resample.upper())
    w0, h0 = image.size
    same_aspect = w0 * height == h0 * width
    target = f"to {height}x{width} (height x width) with {pre.resample}"
    if pre.fit == "stretch" or same_aspect:
        _note(notes, f"{'resized' if same_aspect else 'stretched (aspect not kept)'} {target}", (h0, w0))
        return image.resize((width, height), method)
    if pre.fit == "crop":
        enlarged = ", enlarged" if max(height / h0, width / w0) > 1 else ""  # the crop is scaled up to fill it
        _note(notes, f"cropped at the centre{enlarged} {target}, edges lost", (h0, w0))
        return ImageOps.fit(image, (width, height), method=method)
    fill = {"RGBA": (0, 0, 0, 0), "RGB": pre.matte, "L": round(0.299 * pre.matte[0] + 0.587 * pre.matte[1]
                                                                + 0.114 * pre.matte[2])}[pre.mode]
    borders = "transparent" if pre.mode == "RGBA" else _colour_name(pre.matte)
    enlarged = ", enlarged" if min(height / h0, width / w0) > 1 else ""  # the whole image is scaled up to fit it
    _note(notes, f"padded at the centre{enlarged} {target}, {borders} borders", (h0, w0))
    return ImageOps.pad(image, (width, height), method=method, color=fill)


def _note(notes: Notes | None, what: str, size: tuple[int, int] | None = None) -> None:
    if notes is not None:
        notes.add(what, size)


def _colour_name(rgb: tuple[int, int, int]) -> str:
    names = {v: k for k, v in COLOURS.items()}
    return names.get(tuple(rgb), "#" + "".join(f"{v:02x}" for v in rgb))


def prepare(image, size_hw: tuple[int, int], pre: Preprocessing, notes: Notes | None = None) -> np.ndarray:
    """One decoded Pillow image -> uint8 (C, H, W) as `pre` says; the one preprocessing step."""
    if notes is not None:
        notes.total += 1
    pixels = np.array(_fit(_to_mode(image, pre, notes), size_hw, pre, notes), dtype=np.uint8)  # a writable copy
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)
    return clear_invisible(pixels[None], pre, notes)[0]


def clear_invisible(pixels: np.ndarray, pre: Preprocessing, notes: Notes | None = None) -> np.ndarray:
    """uint8 (N, C, H, W) with, for alpha "clear", the colour of fully transparent pixels set to 0: a copy when
    any was not, else `pixels` itself (images cleared already, as a folder's are when arrays are fitted)."""
    if pre.alpha != "clear":
        return pixels
    visible = pixels[:, 3:] != 0
    coloured = (pixels[:, :3] * ~visible).reshape(len(pixels), -1).any(axis=1)
    if not coloured.any():
        return pixels
    for _ in range(int(coloured.sum())):
        _note(notes, "colour under fully transparent pixels set to 0")
    cleared = pixels.copy()
    cleared[:, :3] *= visible
    return cleared


def read_image(path, size_hw: tuple[int, int], pre: Preprocessing, notes: Notes | None = None) -> np.ndarray:
    """An image file -> uint8 (C, H, W): what training stores and `load_images` scales to [0, 1]."""
    try:
        with open_image(path) as image:
            return prepare(image, size_hw, pre, notes)
    except EdgeVAEError as e:
        message = str(e)
        raise EdgeVAEError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def load_images(paths, image_shape: tuple[int, int, int], preprocessing=None, *, notes: list | None = None
                ) -> np.ndarray:
    """Read image files as float32 (N, C, H, W) in [0, 1] for a model of image_shape (C, H, W).

    preprocessing: a Model's `preprocessing` (its spec's record of what training did: use
    `model.load_images(paths)`), a Preprocessing, or None for the defaults (crop at the centre, Lanczos,
    alpha kept for C = 4 and composited onto black otherwise). notes: a list that receives one line per
    kind of change made (resized, cropped, composited ...). An unreadable file raises EdgeVAEError.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise EdgeVAEError("load_images: paths must be a list of image files, got one path")
    c, h, w = image_shape
    pre = Preprocessing.from_spec(preprocessing, c)
    if MODES[pre.mode] != c:
        raise EdgeVAEError(f"load_images: preprocessing mode {pre.mode} gives {MODES[pre.mode]} channel(s), "
                           f"the image shape has {c}")
    paths = list(paths)
    tally = Notes()
    out = np.empty((len(paths), c, h, w), dtype=np.float32)
    for i, path in enumerate(paths):
        out[i] = read_image(path, (h, w), pre, tally)
    out /= np.float32(255.0)
    if notes is not None:
        notes.extend(tally.summary())
    return out


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map float pixels in [0, 1] to uint8 by round(clip(x, 0, 1) * 255); shape is kept."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise EdgeVAEError(f"images must be a float array in [0, 1], got dtype {images.dtype}")
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def _background(spec, shape: tuple[int, int], tile: int) -> np.ndarray | None:
    """uint8 (H, W, 3) to composite RGBA images onto: a colour, a checkerboard, or None (keep transparency)."""
    if spec is None or spec == "none":
        return None
    if spec in ("checker", "checkerboard"):
        rows, cols = np.indices(shape) // max(tile, 1)
        return np.where(((rows + cols) % 2 == 0)[:, :, None], CHECKER[0], CHECKER[1]).astype(np.uint8)
    return np.broadcast_to(np.array(parse_colour(spec), np.uint8), (*shape, 3)).copy()


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2, background=None) -> np.ndarray:
    """Tile (N, C, H, W) float images into one uint8 (rows, cols, C) array, `nrow` images per row.

    nrow defaults to ceil(sqrt(N)), so 64 images make an 8x8 grid. Padding is black (transparent for RGBA).
    background (RGBA images only): None keeps the transparency; "checkerboard" or a colour (black, white,
    #rrggbb) composites the images onto it for a preview and returns RGB.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3, 4) or images.shape[0] == 0:
        raise EdgeVAEError(f"images must have shape (N>=1, C in {{1, 3, 4}}, H, W), got {images.shape}")
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n)) if nrow is None else min(check_int(nrow, "nrow", 1, 65_536), n)
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * (h + padding) + padding, cols * (w + padding) + padding, c), dtype=np.uint8)
    pixels = to_uint8(images).transpose(0, 2, 3, 1)  # (N, H, W, C)
    for i in range(n):
        top, left = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        grid[top:top + h, left:left + w] = pixels[i]
    back = _background(background, grid.shape[:2], max(2, h // 8)) if c == 4 else None
    if back is not None:
        alpha = grid[:, :, 3:].astype(np.float32) / 255.0
        grid = np.rint(grid[:, :, :3] * alpha + back * (1.0 - alpha)).astype(np.uint8)
    return grid


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None, scale: int = 1,
              background=None) -> Path:
    """Write images as one PNG grid ("L", "RGB" or "RGBA", each pixel `scale` x `scale`); returns the path.

    RGBA images keep their transparency unless `background` ("checkerboard" or a colour) is given.
    """
    from ._png import write_png  # zlib: no Pillow import for writing (bench/cold_start.py)

    scale = check_int(scale, "scale", 1, 64)
    grid = make_grid(images, nrow, background=background)
    if grid.shape[0] * grid.shape[1] * scale * scale > MAX_IMAGE_PIXELS:
        raise EdgeVAEError(f"the grid would be {grid.shape[1] * scale}x{grid.shape[0] * scale} pixels, over the "
                           f"{MAX_IMAGE_PIXELS:,}-pixel limit; use fewer images, a smaller --scale or --nrow")
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    path = Path(path)
    try:
        write_png(path, grid)  # "L", "RGB" or "RGBA" by the channel count
    except (OSError, ValueError) as e:
        raise EdgeVAEError(f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from None
    return path
