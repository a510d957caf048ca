"""The contract between export and runtime: graph names, the `edgevae.spec` metadata, the manifest.

Both sides import from here (export writes what runtime reads), so the two cannot drift.
Standard library only: a C#, C++ or JS host reads the same JSON with its own parser.
"""
from __future__ import annotations

import json
import math
from typing import Any

from .errors import EdgeVAEError

SCHEMA_VERSION = 2  # bump when a field changes meaning; the runtime refuses newer schemas, reads older ones
METADATA_KEY = "edgevae.spec"  # key in ModelProto.metadata_props holding the spec JSON
MANIFEST = "manifest.json"  # lists every file of an export with its sha256
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"

# Graph signatures (docs/design.md "The two graphs"). The batch axis is dynamic and named BATCH_AXIS.
# These are the VAE's; `signature` gives every model kind's.
BATCH_AXIS = "batch"
TILE_AXES = ("h", "w")  # a tileable export's latent h and w are dynamic too; x's are named "{scale}*h", "{scale}*w"
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
    "Pad",  # --arch resnet: padding to a multiple of 2^(levels-1) (its GroupNorm, Resize, Slice: see below)
    "Greater", "Neg", "Softplus",  # the discretized logistic's mean
    "Cast", "ConvInteger", "DynamicQuantizeLinear", "MatMulInteger",  # int8 and fp16 variants
    # imported VAEs (README "Ops"): what diffusers' AutoencoderKL and AntixK's models lower to
    "InstanceNormalization",  # GroupNorm's lowering: InstanceNormalization on (N, groups, -1), then a Mul/Add
    "MatMul", "Softmax", "Transpose", "Squeeze",  # attention: softmax(q k^T / sqrt(d)) v over the h*w positions
    "Slice", "Split",  # h, w read from the input's Shape (dynamic sizes); the moments split into mu and logvar
    "Resize",  # nearest-neighbour 2x upsampling in the decoder
    "LeakyRelu",  # AntixK's conv stacks (their BatchNorm folds into the Conv)
})

NOISE = {  # how the runtime draws eps by default; runtime/noise.py implements it, README documents it
    "algorithm": "philox4x32-10/box-muller",
    "version": 1,
    "distribution": "standard normal, float32",
}

# Schema 2 (docs/design.md "The spec"). A schema-1 spec (flat latents, no preprocessing record) is read by
# upgrading it: latent_shape [latent_dim], the image mode from C, the prior of its kind, V1_PREPROCESSING.
REQUIRED_FIELDS = ("schema_version", "role", "variant", "pair_id", "model", "latent_shape", "image_shape",
                   "image_mode", "pixel_range", "likelihood", "classes", "noise", "prior", "preprocessing",
                   "training", "parity", "quality", "ops")
REQUIRED_FIELDS_V1 = ("schema_version", "role", "variant", "pair_id", "model", "latent_dim", "image_shape",
                      "pixel_range", "likelihood", "classes", "noise", "training", "parity", "quality", "ops")

IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels -> the Pillow mode images are read in and written as
PRIOR = "standard_normal"  # spec "prior": decoding z ~ N(0, I) is meaningful; null: sample() refuses
SOURCE_KINDS = ("edgevae", "module", "antixk", "diffusers", "pythae")  # spec "source" kind: where the model came from
MAX_LATENT = 1 << 20  # elements per latent (a 4x128x128 spatial latent is 65,536); bounds what eps allocates
MAX_SIDE = 8192  # pixels per image side
MAX_PIXELS = 1 << 26  # C x H x W of one image (a 4x4096x4096 image)

# How an image file becomes x (runtime/_images.py implements it; training reads its folders with it).
FITS = ("crop", "pad", "stretch")  # to H x W: centre crop, letterbox (matte or transparent), or resize
RESAMPLING = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")  # Pillow's filters, by name
ALPHAS = ("keep", "matte")  # RGBA models keep alpha as a channel; others composite it onto the matte
V1_PREPROCESSING = {"fit": "stretch", "resample": "bilinear", "alpha": "matte", "matte": [0, 0, 0]}  # what schema 1 did


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
    version = spec.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        raise EdgeVAEError(f"{source}: spec schema_version {version!r} is not supported "
                           f"(this runtime reads 1..{SCHEMA_VERSION}; upgrade edgevae)")
    missing = [k for k in (REQUIRED_FIELDS_V1 if version == 1 else REQUIRED_FIELDS) if k not in spec]
    if missing:
        raise EdgeVAEError(f"{source}: spec is missing field(s) {', '.join(missing)}")
    if version == 1:
        spec = upgrade_v1(spec, source)
    check(spec, source)
    return spec


def upgrade_v1(spec: dict[str, Any], source: str) -> dict[str, Any]:
    """A schema-1 spec in schema-2 terms: what those exports meant, made explicit."""
    if not _positive_int(spec["latent_dim"], MAX_LATENT):
        raise EdgeVAEError(f"{source}: spec latent_dim must be an int in [1, {MAX_LATENT}], got {spec['latent_dim']!r}")
    shape = spec["image_shape"]
    channels = shape[0] if isinstance(shape, list) and shape else None
    return {**spec, "latent_shape": [spec["latent_dim"]], "image_mode": IMAGE_MODES.get(channels, "?"),
            "prior": PRIOR if spec["model"] == "vae" else None,
            "preprocessing": {**V1_PREPROCESSING, "mode": IMAGE_MODES.get(channels, "?")}}


def _positive_int(value, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high


def check(spec: dict[str, Any], source: str) -> None:
    """Every field the runtime acts on, within its documented bounds; EdgeVAEError naming the field otherwise."""
    def bad(field: str, expected: str) -> EdgeVAEError:
        return EdgeVAEError(f"{source}: spec {field} must be {expected}, got {spec.get(field)!r}")

    shape = spec["image_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and shape[0] in IMAGE_MODES
            and all(_positive_int(s, MAX_SIDE) for s in shape[1:]) and shape[0] * shape[1] * shape[2] <= MAX_PIXELS):
        raise bad("image_shape", f"[C, H, W] with C in {sorted(IMAGE_MODES)}, sides in [1, {MAX_SIDE}] and at most "
                                 f"{MAX_PIXELS} values")
    if spec["image_mode"] != IMAGE_MODES[shape[0]]:
        raise bad("image_mode", f"{IMAGE_MODES[shape[0]]!r} for {shape[0]} channel(s)")
    latent = spec["latent_shape"]
    if not (isinstance(latent, list) and len(latent) in (1, 3) and all(_positive_int(s, MAX_LATENT) for s in latent)
            and math.prod(latent) <= MAX_LATENT):
        raise bad("latent_shape", f"[D] or [C, h, w] of positive ints with at most {MAX_LATENT} elements")
    if spec.get("latent_dim", math.prod(latent)) != math.prod(latent):
        raise bad("latent_dim", f"the product of latent_shape {latent}")
    if spec["model"] not in MODEL_KINDS:
        raise bad("model", f"one of {', '.join(MODEL_KINDS)}")
    if spec["prior"] not in (PRIOR, None):
        raise bad("prior", f"{PRIOR!r} or null")
    classes = spec["classes"]
    if classes is not None and not (isinstance(classes, list) and 1 <= len(classes) <= 1 << 16
                                    and all(isinstance(c, str) for c in classes)):
        raise bad("classes", "null or a list of 1 to 65536 names")
    _check_imported(spec, bad)
    pre = spec["preprocessing"]
    if not (isinstance(pre, dict) and pre.get("fit") in FITS and pre.get("resample") in RESAMPLING
            and pre.get("alpha") in ALPHAS and pre.get("mode") == spec["image_mode"]
            and (pre["alpha"] == "keep") == (spec["image_mode"] == "RGBA")
            and isinstance(pre.get("matte"), list) and len(pre["matte"]) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in pre["matte"])):
        raise bad("preprocessing", f"an object with mode (the image mode), fit in {FITS}, resample in {RESAMPLING}, "
                                   f"alpha in {ALPHAS} (keep exactly for RGBA) and matte [r, g, b] in 0..255")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_imported(spec: dict[str, Any], bad) -> None:
    """The fields imported models add (all optional): source, native_range, latent_scaling, tiling."""
    source = spec.get("source", {"kind": "edgevae"})
    if not (isinstance(source, dict) and source.get("kind") in SOURCE_KINDS):
        raise bad("source", f"an object with kind in {SOURCE_KINDS}")
    native = spec.get("native_range", [0.0, 1.0])
    if not (isinstance(native, list) and len(native) == 2 and all(map(_number, native)) and native[0] < native[1]):
        raise bad("native_range", "[lo, hi] with lo < hi")
    scaling = spec.get("latent_scaling")
    if scaling is not None and not (isinstance(scaling, dict) and _number(scaling.get("scaling_factor"))
                                    and _number(scaling.get("shift_factor", 0.0))):
        raise bad("latent_scaling", "null or {scaling_factor, shift_factor} numbers")
    if spec.get("tileable", False):
        latent, image = spec["latent_shape"], spec["image_shape"]
        scale = spec.get("latent_scale")
        if not (len(latent) == 3 and _positive_int(scale, 64)
                and latent[1] * scale == image[1] and latent[2] * scale == image[2]):
            raise bad("latent_scale", "an int in [1, 64] with latent h, w times it equal to the image's H, W "
                                      "(tileable models have spatial latents)")
