"""EdgeVAE runtime: generate and encode images with an exported VAE, using only onnxruntime and numpy.

    import edgevae
    model = edgevae.load("exports/shapes")
    images = model.sample(64, seed=0)          # float32 (64, C, H, W) in [0, 1]
    edgevae.save_grid(images, "grid.png")

Imports none of torch, onnx, train or export (a test checks this in a fresh interpreter).
"""
from ._images import load_images, make_grid, save_grid, to_uint8
from ._model import Encoding, Model, load
from .errors import EdgeVAEError
from .noise import standard_normal

__all__ = [
    "EdgeVAEError",
    "Encoding",
    "Model",
    "load",
    "load_images",
    "make_grid",
    "save_grid",
    "standard_normal",
    "to_uint8",
]
__version__ = "0.2.0"  # the one place the version lives (pyproject.toml reads it)
