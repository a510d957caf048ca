"""The contract between export and runtime: graph names, the `edgevae.spec` metadata, the manifest.

Both sides import from here (export writes what runtime reads), so the two cannot drift.
Standard library only: a C#, C++ or JS host reads the same JSON with its own parser.
"""
from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from .errors import EdgeVAEError, shorten

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
    "DequantizeLinear", "QuantizeLinear",  # int8 variants of graphs with convolutions (static QDQ)
    # imported VAEs (README "Ops"): what diffusers' AutoencoderKL and AntixK's models lower to
    "InstanceNormalization",  # GroupNorm's lowering: InstanceNormalization on (N, groups, -1), then a Mul/Add
    "MatMul", "Softmax", "Transpose", "Squeeze",  # attention: softmax(q k^T / sqrt(d)) v over the h*w positions
    "Slice", "Split",  # h, w read from the input's Shape (dynamic sizes); the moments split into mu and logvar
    "Resize",  # nearest-neighbour 2x upsampling in the decoder
    "Sqrt",  # the tiled decoder's GroupNorm with given statistics: (x - mean) / sqrt(var + eps)
    "LeakyRelu",  # AntixK's conv stacks (their BatchNorm folds into the Conv)
    "Log",  # a fitted prior (train/prior.py): the encoder's logvar of u = -log(exp(-logvar) @ (L * L))
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
# RGBA models keep alpha as a channel: "clear" with the colour of fully transparent pixels set to 0 (invisible, and
# whatever the drawing program left there: a model should not spend its latent on it), "keep" as stored; L and RGB
# models composite it onto the matte
ALPHAS = ("clear", "keep", "matte")
KEEPS_ALPHA = ("clear", "keep")
V1_PREPROCESSING = {"fit": "stretch", "resample": "bilinear", "alpha": "matte", "matte": [0, 0, 0]}  # what schema 1 did

# What load reads, bounded before anything is allocated (docs/design.md "The spec"; README "Reliability").
MAX_JSON_BYTES = 1 << 20  # manifest.json, and each graph's spec
MAX_JSON_DEPTH = 32  # nesting of objects and arrays in them
MAX_JSON_INT_DIGITS = 19  # digits in one int: no bignums
MAX_GRAPH_BYTES = 256 << 20  # one .onnx file (the protobuf; weights beyond it go in external-data files)
MAX_EXPORT_BYTES = 384 << 20  # one variant's files together: both graphs and their external data
OPSETS = (13, 23)  # ai.onnx opset versions a graph may import (Unsqueeze takes axes as an input since 13)
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a file an export lists: no path, no leading dot
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # pair_id, variant names
SHA256 = re.compile(r"[0-9a-f]{64}")


def dumps(spec: dict[str, Any]) -> str:
    """Serialize a spec the one way both graphs and the manifest use (sorted keys, compact)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def parse_json(text: str | bytes, source: str) -> Any:
    """JSON from an untrusted file, bounded: at most MAX_JSON_BYTES, MAX_JSON_DEPTH levels of nesting, ints
    of MAX_JSON_INT_DIGITS digits, finite numbers, no duplicate keys, strings that encode as UTF-8.
    `source` names it in the EdgeVAEError that anything else raises."""
    if len(text) > MAX_JSON_BYTES:
        raise EdgeVAEError(f"{source}: {len(text):,} bytes of JSON (at most {MAX_JSON_BYTES:,})")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise EdgeVAEError(f"{source}: not UTF-8 text (byte {e.start})") from None
    # Nesting depth before parsing (the parser recurses): brackets outside strings, counted.
    brackets = re.sub(r"[^][{}]", "", re.sub(r'"(?:[^"\\]|\\.)*"', "", text))
    depth = max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)
    if depth > MAX_JSON_DEPTH:
        raise EdgeVAEError(f"{source}: JSON nested {depth} levels deep (at most {MAX_JSON_DEPTH})")
    try:
        value = json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant,
                           object_pairs_hook=_json_object)
        _json_strings(value)
    except json.JSONDecodeError as e:
        raise EdgeVAEError(f"{source}: not valid JSON ({e})") from None
    except _JSONValueError as e:
        raise EdgeVAEError(f"{source}: {e}") from None
    return value


class _JSONValueError(ValueError):
    pass


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise _JSONValueError(f"integer of {len(text)} digits in JSON (at most {MAX_JSON_INT_DIGITS})")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JSONValueError(f"number {text[:20]} is beyond float64's range")
    return value


def _json_constant(text: str):
    raise _JSONValueError(f"{text} is not a JSON number")


def _json_object(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _JSONValueError(f"key {shorten(twice)} appears twice in one object")
    return out


def _json_strings(value) -> None:
    """Every string (keys too) must encode as UTF-8: "\\ud800" parses to an unpaired surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _JSONValueError(f"string {shorten(item)} holds an unpaired surrogate") from None


def loads(text: str | bytes, source: str) -> dict[str, Any]:
    """Parse and check a spec read from `source` (a file name, for the error message)."""
    spec = parse_json(text, f"{source}: metadata '{METADATA_KEY}'")
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
        raise EdgeVAEError(f"{source}: spec latent_dim must be an int in [1, {MAX_LATENT}], "
                           f"got {shorten(spec['latent_dim'])}")
    shape = spec["image_shape"]
    channels = shape[0] if isinstance(shape, list) and shape and _positive_int(shape[0], 4) else None
    mode = IMAGE_MODES.get(channels, "?")  # "?" for a bad shape: check() says what is wrong with image_shape
    return {**spec, "latent_shape": [spec["latent_dim"]], "image_mode": mode,
            "prior": PRIOR if spec["model"] == "vae" else None,
            "preprocessing": {**V1_PREPROCESSING, "mode": mode}}


def _positive_int(value, high: int) -> bool:
    return _int_in(value, 1, high)


def _int_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _ints_in(values, lo: int, hi: int) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in values)


def _name(value, limit: int = 256) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def check(spec: dict[str, Any], source: str) -> None:
    """Every field the runtime acts on, within its documented bounds; EdgeVAEError naming the field otherwise."""
    def bad(field: str, expected: str) -> EdgeVAEError:
        return EdgeVAEError(f"{source}: spec {field} must be {expected}, got {shorten(spec.get(field))}")

    if spec["role"] not in ("encoder", "decoder"):
        raise bad("role", "'encoder' or 'decoder'")
    for field in ("variant", "pair_id"):
        if not (isinstance(spec[field], str) and IDENTIFIER.fullmatch(spec[field])):
            raise bad(field, "a string of 1 to 64 letters, digits, '.', '_' or '-'")
    shape = spec["image_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and _ints_in(shape, 1, MAX_SIDE) and shape[0] in IMAGE_MODES
            and shape[0] * shape[1] * shape[2] <= MAX_PIXELS):
        raise bad("image_shape", f"[C, H, W] with C in {sorted(IMAGE_MODES)}, sides in [1, {MAX_SIDE}] and at most "
                                 f"{MAX_PIXELS} values")
    if spec["image_mode"] != IMAGE_MODES[shape[0]]:
        raise bad("image_mode", f"{IMAGE_MODES[shape[0]]!r} for {shape[0]} channel(s)")
    latent = spec["latent_shape"]
    if not (isinstance(latent, list) and len(latent) in (1, 3) and _ints_in(latent, 1, MAX_LATENT)
            and math.prod(latent) <= MAX_LATENT):
        raise bad("latent_shape", f"[D] or [C, h, w] of positive ints with at most {MAX_LATENT} elements")
    dim = spec.get("latent_dim", math.prod(latent))
    if isinstance(dim, bool) or dim != math.prod(latent):
        raise bad("latent_dim", f"the product of latent_shape {latent}")
    if spec["model"] not in MODEL_KINDS:
        raise bad("model", f"one of {', '.join(MODEL_KINDS)}")
    if spec["prior"] not in (PRIOR, None):
        raise bad("prior", f"{PRIOR!r} or null")
    pixel_range = spec["pixel_range"]
    if not (isinstance(pixel_range, list) and all(type(v) in (int, float) for v in pixel_range)
            and pixel_range == [0, 1]):
        raise bad("pixel_range", "[0, 1]")
    if spec["likelihood"] is not None and not _name(spec["likelihood"], 64):
        raise bad("likelihood", "a name, or null (an imported model)")
    noise = spec["noise"]
    if not (isinstance(noise, dict) and noise.get("algorithm") == NOISE["algorithm"]
            and noise.get("version") == NOISE["version"] and not isinstance(noise.get("version"), bool)):
        raise bad("noise", f"this runtime's generator, {NOISE['algorithm']} version {NOISE['version']}")
    classes = spec["classes"]
    if classes is not None and not (isinstance(classes, list) and 1 <= len(classes) <= 1 << 16
                                    and all(_name(c) for c in classes)):
        raise bad("classes", "null or a list of 1 to 65536 names of 1 to 256 characters")
    _check_imported(spec, bad)
    pre = spec["preprocessing"]
    if not (isinstance(pre, dict) and pre.get("fit") in FITS and pre.get("resample") in RESAMPLING
            and pre.get("alpha") in ALPHAS and pre.get("mode") == spec["image_mode"]
            and (pre["alpha"] in KEEPS_ALPHA) == (spec["image_mode"] == "RGBA")
            and isinstance(pre.get("matte"), list) and len(pre["matte"]) == 3 and _ints_in(pre["matte"], 0, 255)):
        raise bad("preprocessing", f"an object with mode (the image mode), fit in {FITS}, resample in {RESAMPLING}, "
                                   f"alpha in {ALPHAS} (clear or keep exactly for RGBA) and matte [r, g, b] in 0..255")
    # Informational fields (`edgevae info` shows them): their types, so no reader trips over them.
    if not isinstance(spec["parity"], dict):
        raise bad("parity", "an object")
    if spec["training"] is not None and not isinstance(spec["training"], dict):
        raise bad("training", "an object, or null (an imported model)")
    for field in ("quality", "likelihood_params", "source", "diagnostics", "latent_scaling", "prior_fit"):
        if spec.get(field) is not None and not isinstance(spec[field], dict):
            raise bad(field, "an object or null")
    if not (isinstance(spec["ops"], list) and all(_name(op, 128) for op in spec["ops"])):
        raise bad("ops", "a list of op type names")
    for field in ("prior_note", "arch", "created", "edgevae_version"):
        if spec.get(field) is not None and not _name(spec[field], 1024):
            raise bad(field, "a string of 1 to 1024 characters")
    if "opset" in spec and not _ints_in([spec["opset"]], 1, 1000):
        raise bad("opset", "an int")
    if not isinstance(spec.get("tileable", False), bool) or (spec.get("tileable") and len(latent) != 3):
        raise bad("tileable", "true (for a [C, h, w] latent: image and latent sides may be symbolic) or false")


def check_manifest(manifest, source: str) -> None:
    """manifest.json's structure (docs/design.md): schema_version, pair_id, files {name: {sha256, bytes}},
    variants {name: {encoder, decoder, quality}} naming listed files; EdgeVAEError naming the field otherwise."""
    def bad(what: str, expected: str, got) -> EdgeVAEError:
        return EdgeVAEError(f"{source}: {what} must be {expected}, got {shorten(got)}")

    if not isinstance(manifest, dict):
        raise bad("the manifest", "an object", type(manifest).__name__)
    version = manifest.get("schema_version")
    if not _ints_in([version], 1, SCHEMA_VERSION):
        raise bad("schema_version", f"an int in 1..{SCHEMA_VERSION} (upgrade edgevae for newer exports)", version)
    if not (isinstance(manifest.get("pair_id"), str) and IDENTIFIER.fullmatch(manifest["pair_id"])):
        raise bad("pair_id", "a string of 1 to 64 letters, digits, '.', '_' or '-'", manifest.get("pair_id"))
    files, variants = manifest.get("files"), manifest.get("variants")
    if not isinstance(files, dict) or not 1 <= len(files) <= 256:
        raise bad("files", "an object listing 1 to 256 files", files)
    for name, entry in files.items():
        if not FILE_NAME.fullmatch(name) or name == MANIFEST:
            raise bad("a file name", "a plain name of letters, digits, '.', '_' or '-' (no path, no leading dot)",
                      name)
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and SHA256.fullmatch(entry["sha256"])
                and _ints_in([entry.get("bytes")], 0, MAX_EXPORT_BYTES)):
            raise bad(f"files[{name!r}]", f"{{'sha256': 64 lower-case hex digits, 'bytes': an int in "
                                          f"[0, {MAX_EXPORT_BYTES}]}}", entry)
    if not isinstance(variants, dict) or not 1 <= len(variants) <= 16:
        raise bad("variants", "an object with 1 to 16 variants", variants)
    for name, entry in variants.items():
        if not IDENTIFIER.fullmatch(name):
            raise bad("a variant name", "1 to 64 letters, digits, '.', '_' or '-'", name)
        if not (isinstance(entry, dict)
                and all(isinstance(entry.get(role), str) and entry[role] in files for role in ("encoder", "decoder"))):
            raise bad(f"variants[{name!r}]", "{'encoder': a listed file, 'decoder': a listed file}", entry)
        if entry.get("quality") is not None and not isinstance(entry["quality"], dict):
            raise bad(f"variants[{name!r}].quality", "an object or null", entry["quality"])


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
        for role in ("decoder", "encoder"):
            if f"tiled_{role}" in spec and not _tiled_ok(spec[f"tiled_{role}"], spec, role):
                raise bad(f"tiled_{role}", "an object whose units (file, whole, scale, halo, channels, norms) chain "
                                           f"through the {role} (docs/design.md 'Exact tiled decoding')")


def _tiled_ok(plan, spec: dict[str, Any], role: str) -> bool:
    """A tiled decoder's or encoder's units (export/tiled.py, runtime/_units.py) are well formed and chain
    from the graph's input to its output: the decoder's from the latent at scale 1 (its first unit whole)
    to the image at latent_scale, the encoder's from the image to the latent (its last unit whole)."""
    units = plan.get("units") if isinstance(plan, dict) else None
    if not isinstance(units, list) or not 2 <= len(units) <= 256:
        return False
    image, latent = (spec["image_shape"][0], spec["latent_scale"]), (spec["latent_shape"][0], 1)
    channels, scale = latent if role == "decoder" else image
    for k, u in enumerate(units):
        whole = k == 0 if role == "decoder" else k == len(units) - 1
        if not (isinstance(u, dict) and u.get("file") == f"{role}.tiled.{k:02d}.onnx" and u.get("whole") is whole
                and isinstance(u.get("scale"), list) and len(u["scale"]) == 2 and u["scale"][0] == scale
                and u["scale"][1] in ((scale, 2 * scale) if role == "decoder" else (scale, scale / 2))
                and _int_in(u.get("halo"), 0, 64) and isinstance(u.get("channels"), list)
                and len(u["channels"]) == 2 and u["channels"][0] == channels
                and _positive_int(u["channels"][1], 1 << 16) and isinstance(u.get("norms"), list)
                and (not whole or not u["norms"])):
            return False
        inner = 0
        for norm in u["norms"]:
            if not (isinstance(norm, dict) and _positive_int(norm.get("groups"), 1 << 16)
                    and norm.get("input") in ("unit", f"norm_in_{inner}") and norm.get("scale") in u["scale"]):
                return False
            inner += norm["input"] != "unit"
        channels, scale = u["channels"][1], u["scale"][1]
    return (channels, scale) == (image if role == "decoder" else latent)
