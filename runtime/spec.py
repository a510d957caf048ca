"""The contract between export and runtime: graph names, the `edgevae.spec` metadata, the manifest.

Both sides import from here (export writes what runtime reads), so the two cannot drift.
Standard library only: a C#, C++ or JS host reads the same JSON with its own parser.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import EdgeVAEError

SCHEMA_VERSION = 1  # bump when a field changes meaning; the runtime refuses newer schemas
METADATA_KEY = "edgevae.spec"  # key in ModelProto.metadata_props holding the spec JSON
MANIFEST = "manifest.json"  # lists every file of an export with its sha256
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"

# Graph signatures (docs/design.md "The two graphs"). The batch axis is dynamic and named BATCH_AXIS.
# These are the VAE's; `signature` gives every model kind's.
BATCH_AXIS = "batch"
ENCODER_INPUTS = ("x", "eps")
ENCODER_OUTPUTS = ("z", "mu", "logvar")
DECODER_INPUTS = ("z",)
DECODER_OUTPUTS = ("x_hat",)
MODEL_KINDS = ("vae", "ae")  # "ae": the plain autoencoder baseline; its encoder takes no eps and returns z only


def signature(role: str, model: str, conditional: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(input names, output names) of a graph. Conditional models add y, int64 (N,), as the last input."""
    label = ("y",) if conditional else ()
    if role == "decoder":
        return DECODER_INPUTS + label, DECODER_OUTPUTS
    if model == "ae":
        return ("x",) + label, ("z",)
    return ENCODER_INPUTS + label, ENCODER_OUTPUTS

# Ops that draw randomness inside a graph. None may appear: noise always comes from outside.
RANDOM_OPS = frozenset({
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
})

# Every op an EdgeVAE graph may contain (README "Ops" lists them per graph and variant). Export fails on
# anything else: no random op, no control flow (If, Loop, Scan), nothing a small ONNX host may lack.
ALLOWED_OPS = frozenset({
    "Add", "Clip", "Exp", "Gemm", "Mul", "Relu", "Reshape", "Sigmoid",  # MLP layers, reparameterization, the mean
    "Conv", "ConvTranspose",  # conv networks
    "Concat", "GatherND", "Unsqueeze",  # conditional models: one-hot y joined to features and z
    "Abs", "Div", "Expand", "Less", "Reciprocal", "Shape", "Sub", "Tanh", "Where",  # continuous-Bernoulli mean
    "Cast", "ConvInteger", "DynamicQuantizeLinear", "MatMulInteger",  # int8 and fp16 variants
})

NOISE = {  # how the runtime draws eps by default; runtime/noise.py implements it, README documents it
    "algorithm": "philox4x32-10/box-muller",
    "version": 1,
    "distribution": "standard normal, float32",
}

REQUIRED_FIELDS = ("schema_version", "role", "variant", "pair_id", "model", "latent_dim", "image_shape",
                   "pixel_range", "likelihood", "classes", "noise", "training", "parity", "quality", "ops")


def dumps(spec: dict[str, Any]) -> str:
    """Serialize a spec the one way both graphs and the manifest use (sorted keys, compact)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def loads(text: str, source: str) -> dict[str, Any]:
    """Parse and check a spec read from `source` (a file name, for the error message)."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise EdgeVAEError(f"{source}: metadata '{METADATA_KEY}' is not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise EdgeVAEError(f"{source}: metadata '{METADATA_KEY}' must be a JSON object, got {type(spec).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in spec]
    if missing:
        raise EdgeVAEError(f"{source}: spec is missing field(s) {', '.join(missing)}")
    version = spec["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise EdgeVAEError(f"{source}: spec schema_version {version!r} is not supported "
                           f"(this runtime reads 1..{SCHEMA_VERSION}; upgrade edgevae)")
    shape = spec["image_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        raise EdgeVAEError(f"{source}: spec image_shape must be [C, H, W] of positive ints, got {shape!r}")
    if spec["model"] not in MODEL_KINDS:
        raise EdgeVAEError(f"{source}: spec model must be one of {', '.join(MODEL_KINDS)}, got {spec['model']!r}")
    classes = spec["classes"]
    if classes is not None and not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise EdgeVAEError(f"{source}: spec classes must be null or a non-empty list of names, got {classes!r}")
    if not (isinstance(spec["latent_dim"], int) and spec["latent_dim"] > 0):
        raise EdgeVAEError(f"{source}: spec latent_dim must be a positive int, got {spec['latent_dim']!r}")
    return spec
