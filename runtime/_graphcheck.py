"""Check a graph against its spec before onnxruntime sees it, from the protobuf alone (runtime/_onnxproto.py).

    facts = check_graph(parse(data), data, "exports/shapes/decoder.onnx", "decoder", spec)

What a graph may be: ai.onnx ops from spec.ALLOWED_OPS only (no other domain, no subgraph, no local function,
no tensor-valued attribute, nothing sparse); an opset in spec.OPSETS; inputs and outputs named, typed and
shaped as the spec says (axis 0 a dynamic batch axis, every other axis the spec's number); initializers whose
data is what their dims say, inline or in an external file named by a plain file name (listed in
Facts.external for the caller to verify against the manifest).

Then every tensor's shape is inferred at a concrete batch: shape inputs (Reshape's shape, Expand's shape,
Unsqueeze's axes) must be constants or come from Shape, so every size grows with the batch and the sizes at
the largest batch bound all smaller ones. The tensors alive at once (a tensor lives from the node that makes
it to the last that reads it), plus a convolution's unfolded-input workspace, give an estimate of the memory
one session.run holds; Facts.chunk is the largest batch (a power of two up to max_batch) that keeps it
within RUN_BYTES, and a graph that exceeds it for one image is refused. So no graph made of allowed ops can
make the runtime allocate without bound, and the inferred outputs must have the spec's shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import _onnxproto as P
from . import spec as S
from ._shapes import MAX_VALUES, infer
from .errors import EdgeVAEError

MAX_NODES = 10_000  # nodes in one graph
MAX_STRUCTURE_BYTES = 16 << 20  # a graph file's bytes besides its weights: nodes, names, metadata, doc strings
RUN_BYTES = 256 << 20  # estimated tensors alive in one session.run, at the batch the runtime runs
IMAGE_MACS = 25 * 10**9  # estimated multiply-adds for one image (about a second on one core of a laptop CPU)
IR_VERSIONS = (4, 14)  # ModelProto.ir_version: initializers need not be inputs since 4; onnxruntime 1.32 reads to 14
_DOMAINS = ("", "ai.onnx")
_TYPED_FIELDS = {P.FLOAT: (4,), 10: (5,), P.UINT8: (5,), P.INT8: (5,), 4: (5,), 5: (5,), P.INT32: (5,),
                 P.INT64: (7,), P.BOOL: (5,), 11: (10,), 12: (11,), 13: (11,), 16: (5,)}


@dataclass
class Facts:
    """What the loader needs from a checked graph."""
    ops: frozenset[str]
    external: dict[str, int] = field(default_factory=dict)  # file -> bytes it must hold at least
    chunk: int = 1  # largest batch per session.run within the run-bytes bound
    run_bytes: int = 0  # the estimate at that batch
    max_cells: int | None = None  # tileable graphs: the largest square latent tile one run may take
    image_macs: int = 0  # estimated multiply-adds per image (per tile of max_cells for a graph run in tiles)
    weight_bytes: int = 0  # initializers, inline and external
    unit_range: frozenset[str] = frozenset()  # outputs a final Clip(0, 1) keeps in [0, 1] (NaN aside)


def _fail(label: str, message: str) -> EdgeVAEError:
    return EdgeVAEError(f"{label}: {message}")


def check_ops(model: P.Model, label: str) -> frozenset[str]:
    """The ops of `model` if its IR version, opset, nodes and attributes are ones an EdgeVAE graph may hold
    (spec.ALLOWED_OPS: no random op, no control flow); EdgeVAEError naming `label` otherwise."""
    if not IR_VERSIONS[0] <= model.ir_version <= IR_VERSIONS[1]:
        raise _fail(label, f"ONNX IR version {model.ir_version} (this runtime reads "
                           f"{IR_VERSIONS[0]}..{IR_VERSIONS[1]})")
    opset = next((model.opsets[d] for d in _DOMAINS if d in model.opsets), None)
    if opset is None or not S.OPSETS[0] <= opset <= S.OPSETS[1]:
        raise _fail(label, f"ai.onnx opset {opset} (an EdgeVAE graph uses {S.OPSETS[0]}..{S.OPSETS[1]})")
    for what, count in (("model-local functions", model.functions), ("training_info", model.training_info),
                        ("sparse initializers", model.graph.sparse_initializers)):
        if count:
            raise _fail(label, f"has {what}, which an EdgeVAE graph never holds")
    graph = model.graph
    if len(graph.nodes) > MAX_NODES:
        raise _fail(label, f"{len(graph.nodes):,} nodes (at most {MAX_NODES:,})")
    ops = set()
    for i, node in enumerate(graph.nodes):
        where = f"node {i} ({node.op_type or '?'})"
        if node.domain not in _DOMAINS:
            raise _fail(label, f"{where} is in domain {node.domain!r}; only ai.onnx ops are allowed")
        if node.op_type not in S.ALLOWED_OPS:
            kind = "a random op" if node.op_type in S.RANDOM_OPS else "an op outside the allow-list"
            raise _fail(label, f"{where} is {kind} (spec.ALLOWED_OPS: noise comes in as eps, no control flow)")
        for attr in node.attributes.values():
            if attr.other:
                raise _fail(label, f"{where} attribute {attr.name!r} holds {', '.join(attr.other)}, which no "
                                   f"allowed op takes")
        ops.add(node.op_type)
    return frozenset(ops)


def check_graph(model: P.Model, data: bytes, label: str, role: str, spec: dict, max_batch: int = 1024,
                run_bytes: int = RUN_BYTES, image_macs: int = IMAGE_MACS) -> Facts:
    """Facts about `model` (parsed from `data`), or EdgeVAEError naming `label` and what is wrong.
    run_bytes: the most one session.run may hold by the estimate (load's max_run_bytes); image_macs: the most
    multiply-adds one image may cost (load's max_image_macs)."""
    facts = Facts(check_ops(model, label))
    graph = model.graph
    check_initializers(graph, data, label, facts)
    inputs, outputs = _check_io(graph, label, role, spec)
    infer(graph, data, label, inputs, outputs, facts, max_batch, (run_bytes, image_macs),
           spec.get("latent_scale") if symbolic_axes(spec) else None)
    facts.unit_range = _clipped_to_unit(graph, data, outputs)
    return facts


def _clipped_to_unit(graph: P.Graph, data: bytes, outputs) -> frozenset[str]:
    """Outputs made by a Clip whose min and max are constants within [0, 1]."""
    consts = {t.name: P.float_value(data, t) for t in graph.initializers}
    clipped = set()
    for node in graph.nodes:
        if node.op_type == "Clip" and len(node.inputs) == 3 and node.outputs and node.outputs[0] in outputs:
            low, high = consts.get(node.inputs[1]), consts.get(node.inputs[2])
            if low is not None and high is not None and 0 <= low <= high <= 1:
                clipped.add(node.outputs[0])
    return frozenset(clipped)


# -- initializers ----------------------------------------------------------------------------------------
def check_initializers(graph: P.Graph, data: bytes, label: str, facts: Facts) -> None:
    inputs = {v.name for v in graph.inputs}
    read = {name for node in graph.nodes for name in node.inputs}
    seen, inline = set(), 0
    for t in graph.initializers:
        where = f"initializer {t.name!r}"
        if not t.name or t.name in seen or t.name in inputs:
            raise _fail(label, f"{where}: empty, repeated, or also a graph input")
        if t.name not in read:
            raise _fail(label, f"{where} is read by no node")
        seen.add(t.name)
        inline += (len(t.raw) if t.raw is not None else 0) + sum(v[1] - v[0] for _, w, v in t.typed if w != 0)
        if t.data_type not in P.ITEMSIZE:
            raise _fail(label, f"{where}: element type {t.data_type} is not a numeric type")
        if any(d > MAX_VALUES for d in t.dims) or t.size > MAX_VALUES:
            raise _fail(label, f"{where}: dims {t.dims} are beyond any graph's size")
        nbytes = t.size * P.ITEMSIZE[t.data_type]
        facts.weight_bytes += nbytes
        external = t.data_location == P.EXTERNAL
        if external != (t.external is not None):
            raise _fail(label, f"{where}: data_location and external_data disagree")
        if external:
            if t.raw is not None or t.typed:
                raise _fail(label, f"{where}: external data and inline data at once")
            facts.external[t.external.get("location", "")] = max(
                facts.external.get(t.external.get("location", ""), 0), _external_end(t, nbytes, label))
        elif t.raw is not None:
            if t.typed or len(t.raw) != nbytes:
                raise _fail(label, f"{where}: {len(t.raw):,} bytes of data for dims {t.dims} ({nbytes:,} bytes)")
        elif t.typed:
            fields = {number for number, _, _ in t.typed}
            if not fields <= set(_TYPED_FIELDS[t.data_type]) or P.typed_count(data, t) != t.size:
                raise _fail(label, f"{where}: its typed data does not hold the {t.size:,} values of dims {t.dims}")
        elif nbytes:
            raise _fail(label, f"{where}: no data for dims {t.dims}")
    if len(data) - inline > MAX_STRUCTURE_BYTES:
        raise _fail(label, f"{len(data) - inline:,} bytes besides its weights (at most {MAX_STRUCTURE_BYTES:,}): "
                           f"padding, or a graph of another kind")


def _external_end(t: P.Tensor, nbytes: int, label: str) -> int:
    """The byte the external file must hold up to; the location, offset and length checked."""
    where = f"initializer {t.name!r} external data"
    unknown = set(t.external) - {"location", "offset", "length", "checksum"}
    location = t.external.get("location", "")
    if unknown or not S.FILE_NAME.fullmatch(location) or location == S.MANIFEST:
        raise _fail(label, f"{where}: location {location!r} must be a plain file name beside the graph "
                           f"(keys {sorted(t.external)})")
    try:
        offset = int(t.external.get("offset", "0"))
        length = int(t.external.get("length", str(nbytes)))
    except ValueError:
        raise _fail(label, f"{where}: offset and length must be decimal integers") from None
    if offset < 0 or length != nbytes or offset > S.MAX_EXPORT_BYTES:
        raise _fail(label, f"{where}: offset {offset} and length {length} do not hold dims {t.dims} "
                           f"({nbytes:,} bytes)")
    return offset + length


# -- inputs and outputs ----------------------------------------------------------------------------------
def _expected(spec: dict) -> dict[str, tuple[int, tuple[int, ...]]]:
    latent, image = tuple(spec["latent_shape"]), tuple(spec["image_shape"])
    return {"x": (P.FLOAT, image), "eps": (P.FLOAT, latent), "y": (P.INT64, ()), "z": (P.FLOAT, latent),
            "mu": (P.FLOAT, latent), "logvar": (P.FLOAT, latent), "x_hat": (P.FLOAT, image)}


def symbolic_axes(spec: dict) -> frozenset[int]:
    """Axes besides the batch that a graph may declare symbolic: H, W of images and h, w of a [C, h, w] latent
    when the spec says the graphs are `tileable` (they then run on tiles; the checks here use the spec's sizes,
    the tile the runtime runs). Every other axis must be the spec's number."""
    return frozenset({2, 3}) if spec.get("tileable") is True and len(spec["latent_shape"]) == 3 else frozenset()


def _check_io(graph: P.Graph, label: str, role: str, spec: dict):
    """{name: per-image shape} of inputs and of outputs, after checking names, types and declared dims."""
    names_in, names_out = S.signature(role, spec["model"], spec["classes"] is not None)
    got_in, got_out = tuple(v.name for v in graph.inputs), tuple(v.name for v in graph.outputs)
    if (got_in, got_out) != (names_in, names_out):
        raise _fail(label, f"expected inputs {names_in} -> outputs {names_out}, got {got_in} -> {got_out}")
    expected, spatial = _expected(spec), symbolic_axes(spec)
    for v in graph.inputs + graph.outputs:
        elem, shape = expected[v.name]
        want = f"{'float32' if elem == P.FLOAT else 'int64'} [batch{''.join(f', {d}' for d in shape)}]"
        dims = v.dims
        ok = (v.kind == "tensor" and v.elem_type == elem and dims is not None and len(dims) == 1 + len(shape)
              and (dims[0] is None or isinstance(dims[0], str))
              and all(d == s or (axis in spatial and (d is None or isinstance(d, str)))
                      for axis, (d, s) in enumerate(zip(dims[1:], shape), start=1)))
        if not ok:
            got = "no type" if not v.kind else v.kind if v.kind != "tensor" else \
                f"element type {v.elem_type}, dims {list(dims) if dims is not None else 'unknown'}"
            raise _fail(label, f"{v.name} must be {want} (axis 0 dynamic), got {got}")
    return ({n: expected[n][1] for n in names_in}, {n: expected[n][1] for n in names_out})


# -- shapes and memory -----------------------------------------------------------------------------------
