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

import math
import operator
from dataclasses import dataclass, field

from . import _onnxproto as P
from . import spec as S
from .errors import EdgeVAEError

MAX_NODES = 10_000  # nodes in one graph
MAX_STRUCTURE_BYTES = 16 << 20  # a graph file's bytes besides its weights: nodes, names, metadata, doc strings
RUN_BYTES = 256 << 20  # estimated tensors alive in one session.run, at the batch the runtime runs
IMAGE_MACS = 25 * 10**9  # estimated multiply-adds for one image (about a second on one core of a laptop CPU)
IR_VERSIONS = (4, 14)  # ModelProto.ir_version: initializers need not be inputs since 4; onnxruntime 1.32 reads to 14
_DOMAINS = ("", "ai.onnx")
_MAX_VALUES = 1 << 40  # any tensor beyond this many values is refused on sight (far beyond RUN_BYTES)
_SHAPE_VALUES = 64  # int64 tensors up to this many values are tracked by value (shapes, axes)
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


def check_graph(model: P.Model, data: bytes, label: str, role: str, spec: dict, max_batch: int = 1024,
                run_bytes: int = RUN_BYTES, image_macs: int = IMAGE_MACS) -> Facts:
    """Facts about `model` (parsed from `data`), or EdgeVAEError naming `label` and what is wrong.
    run_bytes: the most one session.run may hold by the estimate (load's max_run_bytes); image_macs: the most
    multiply-adds one image may cost (load's max_image_macs)."""
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
    facts = Facts(frozenset(ops))
    _check_initializers(graph, data, label, facts)
    inputs, outputs = _check_io(graph, label, role, spec)
    _infer(graph, data, label, inputs, outputs, facts, max_batch, (run_bytes, image_macs),
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
def _check_initializers(graph: P.Graph, data: bytes, label: str, facts: Facts) -> None:
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
        if any(d > _MAX_VALUES for d in t.dims) or t.size > _MAX_VALUES:
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
@dataclass(slots=True)
class _T:
    shape: tuple[int, ...]
    itemsize: int
    value: tuple[int, ...] | None = None  # for small int tensors: constants, and what Shape gives
    const: bool = False  # depends on initializers only (onnxruntime folds it at load)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


def _infer(graph: P.Graph, data: bytes, label: str, inputs: dict, outputs: dict, facts: Facts,
           max_batch: int, budgets: tuple[int, int], tile_scale: int | None) -> None:
    budget, work_budget = budgets
    consts = {}
    for t in graph.initializers:
        values = P.int_values(data, t, _SHAPE_VALUES)
        if values is None:
            values = P.float_values(data, t, _SHAPE_VALUES)  # Resize's scales, Clip's bounds
        consts[t.name] = _T(t.dims, P.ITEMSIZE[t.data_type], tuple(values) if values is not None else None, True)
    last_use = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            last_use[name] = i
    for name in outputs:
        last_use[name] = len(graph.nodes)

    def sized(name: str, shape: tuple, cells: int | None) -> tuple:
        """A tensor's per-image shape, with a tileable graph's sides cut to a tile of `cells` latent cells."""
        if cells is None or len(shape) != 3:
            return shape
        side = cells * (tile_scale if name in ("x", "x_hat") else 1)
        return (shape[0], min(shape[1], side), min(shape[2], side))

    def run(batch: int, cells: int | None = None) -> tuple[int, int]:
        """(peak bytes of tensors alive at once, multiply-adds) of one run at this batch and tile."""
        env = dict(consts)
        for name, shape in inputs.items():
            env[name] = _T((batch, *sized(name, shape, cells)), 8 if name == "y" else 4)
        alive = set(inputs)  # tensors held now (initializers and folded constants are counted apart)
        live = peak = sum(env[n].nbytes for n in inputs)
        folded = work = 0
        for i, node in enumerate(graph.nodes):
            where = f"node {i} ({node.op_type})"
            args = []
            for name in node.inputs:
                if name and name not in env:
                    raise _fail(label, f"{where} reads {name!r} before anything makes it")
                args.append(env[name] if name else None)
            rule = _RULES.get(node.op_type)
            if rule is None:
                raise _fail(label, f"{where}: no shape rule for this op in runtime/_graphcheck.py")
            try:
                made, workspace = rule(node, args)
            except _Bad as e:
                raise _fail(label, f"{where}: {e}") from None
            except (ArithmeticError, IndexError, TypeError, ValueError) as e:  # inputs no rule foresaw: malformed
                raise _fail(label, f"{where}: its inputs {[a.shape if a else None for a in args]} do not fit the op "
                                   f"({type(e).__name__})") from None
            if len(node.outputs) > len(made):
                raise _fail(label, f"{where} has {len(node.outputs)} outputs; the op makes {len(made)}")
            work += _macs(node.op_type, args, made)
            for name, t in zip(node.outputs, made):
                if not name:
                    continue
                if name in env:
                    raise _fail(label, f"{where} writes {name!r}, which already exists")
                if math.prod(t.shape) > _MAX_VALUES:
                    raise _fail(label, f"{where} makes a tensor of shape {t.shape}")
                env[name] = t
                if t.const:
                    folded += t.nbytes
                else:
                    alive.add(name)
                    live += t.nbytes
            peak = max(peak, live + workspace)
            for name in set(node.inputs) | set(node.outputs):
                if name in alive and last_use.get(name, i) <= i:
                    alive.discard(name)
                    live -= env[name].nbytes
        if folded > budget:
            raise _fail(label, f"its constant parts hold {folded:,} bytes (at most {budget:,})")
        for name, shape in outputs.items():
            want = (batch, *sized(name, shape, cells))
            if name not in env or env[name].shape != want:
                got = env[name].shape if name in env else "nothing (no node makes it)"
                raise _fail(label, f"output {name} has shape {got} at batch {batch}, expected {want}")
        return peak, work

    batch = max_batch
    while True:
        peak, _ = run(batch)
        if peak <= budget or batch == 1:
            break
        batch //= 2
    one_peak, one_work = run(1)  # also: the outputs at batch 1, so the batch axis flows through, not a constant
    facts.chunk, facts.run_bytes, facts.image_macs = batch, peak, one_work
    if one_peak <= budget and one_work <= work_budget:
        return
    if tile_scale is None:
        raise _fail(label, f"one image needs an estimated {one_peak:,} bytes of tensors and {one_work:,} "
                           f"multiply-adds (at most {budget:,} and {work_budget:,}; edgevae.load(..., "
                           f"max_run_bytes=, max_image_macs=) raises the bounds)")
    # A tileable graph too large to run whole within the bounds: the largest square tile that fits.
    low, high = 0, max(max(shape[1:]) for shape in inputs.values() if len(shape) == 3)
    while low < high:  # sizes and work grow with the tile, so the largest that fits is found by bisection
        mid = (low + high + 1) // 2
        tile_peak, tile_work = run(1, mid)
        low, high = (mid, high) if tile_peak <= budget and tile_work <= work_budget else (low, mid - 1)
    if low == 0:
        raise _fail(label, f"one latent cell needs more than {budget:,} bytes of tensors or {work_budget:,} "
                           f"multiply-adds")
    facts.chunk, facts.max_cells = 1, low
    facts.run_bytes, facts.image_macs = run(1, low)


class _Bad(ValueError):
    pass


def _macs(op: str, args: list, made: list) -> int:
    """Multiply-adds of one node, from its shapes: the dot products of Gemm, MatMul and the convolutions; one
    per output value for everything else (elementwise work, normalisations, resizing)."""
    if op == "Gemm":
        return math.prod(args[0].shape) * made[0].shape[1]  # (M x K) x N
    if op in ("MatMul", "MatMulInteger"):
        return math.prod(made[0].shape) * args[0].shape[-1]
    if op in ("Conv", "ConvInteger"):
        return math.prod(made[0].shape) * math.prod(args[1].shape[1:])
    if op == "ConvTranspose":
        return math.prod(args[0].shape) * math.prod(args[1].shape[1:])
    return sum(math.prod(t.shape) for t in made)


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        dims = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise _Bad(f"shapes {', '.join(map(str, shapes))} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _need(args: list, count: int, optional: int = 0) -> list:
    if len(args) < count or len(args) > count + optional or any(a is None for a in args[:count]):
        raise _Bad(f"takes {count} to {count + optional} inputs, got {len(args)}")
    return args + [None] * (count + optional - len(args))


def _const(args) -> bool:
    return all(a.const for a in args if a is not None)


def _ints(node: P.Node, name: str, default):
    attr = node.attributes.get(name)
    if attr is None:
        return default
    values = attr.ints if attr.ints or attr.i is None else [attr.i]
    if any(abs(v) > 1 << 31 for v in values):
        raise _Bad(f"attribute {name} {values} out of range")
    return list(values) if isinstance(default, list) else values[0] if values else default


def _elementwise(node, args):
    (x,) = _need(args, 1)
    return [_T(x.shape, x.itemsize, None, x.const)], 0


def _binary(node, args):
    a, b = _need(args, 2)
    itemsize = 1 if node.op_type == "Less" else a.itemsize
    shape = _broadcast(a.shape, b.shape)
    return [_T(shape, itemsize, _arithmetic(node.op_type, a, b, shape), _const(args))], 0


def _arithmetic(op: str, a: _T, b: _T, shape: tuple) -> tuple | None:
    """The values of Add, Mul (and Div by a positive constant) on shape values: h * w for a Reshape, say.
    Only operations that keep non-negative sizes growing with the inputs, so sizes stay monotone in the batch
    and the spatial sizes; anything else (Sub, a negative result) is not followed, and a shape made from it
    is refused."""
    if a.value is None or b.value is None or len(shape) > 1 or not all(
            isinstance(v, int) and v >= 0 for v in a.value + b.value):
        return None
    if op == "Div" and not (b.const and all(v > 0 for v in b.value)):
        return None
    fn = {"Add": operator.add, "Mul": operator.mul, "Div": operator.floordiv}.get(op)
    if fn is None:
        return None
    left, right = (v * math.prod(shape) if len(v) == 1 else v for v in (a.value, b.value))  # broadcast a scalar
    return tuple(fn(x, y) for x, y in zip(left, right))


def _where(node, args):
    c, x, y = _need(args, 3)
    return [_T(_broadcast(c.shape, x.shape, y.shape), x.itemsize, None, _const(args))], 0


def _clip(node, args):
    x, _, _ = _need(args, 1, 2)
    return [_T(x.shape, x.itemsize, None, _const(args))], 0


def _cast(node, args):
    (x,) = _need(args, 1)
    to = _ints(node, "to", 0)
    if to not in P.ITEMSIZE:
        raise _Bad(f"cast to element type {to}")
    value = x.value if to in (P.INT64, P.INT32) and _ints_known(x) else None
    return [_T(x.shape, P.ITEMSIZE[to], value, x.const)], 0


def _gemm(node, args):
    a, b, _ = _need(args, 2, 1)
    if len(a.shape) != 2 or len(b.shape) != 2:
        raise _Bad(f"needs 2-D inputs, got {a.shape} and {b.shape}")
    m, k = a.shape[::-1] if _ints(node, "transA", 0) else a.shape
    k2, n = b.shape[::-1] if _ints(node, "transB", 0) else b.shape
    if k != k2:
        raise _Bad(f"inner dims {k} and {k2} differ")
    return [_T((m, n), 4, None, _const(args))], 0


def _matmul_shape(a: tuple, b: tuple) -> tuple:
    if not a or not b:
        raise _Bad("MatMul needs inputs of rank >= 1")
    a2, b2 = (1, *a) if len(a) == 1 else a, (*b, 1) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise _Bad(f"inner dims of {a} and {b} differ")
    out = (*_broadcast(a2[:-2], b2[:-2]), a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul_integer(node, args):
    a, b, _, _ = _need(args, 2, 2)
    return [_T(_matmul_shape(a.shape, b.shape), 4, None, _const(args))], 0


def _conv(node, args):
    transpose = node.op_type == "ConvTranspose"
    x, w, *_ = _need(args, 2, 2 if node.op_type == "ConvInteger" else 1)
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise _Bad(f"needs (N, C, ...) input and weight of the same rank, got {x.shape} and {w.shape}")
    spatial = len(x.shape) - 2
    group = _ints(node, "group", 1)
    kernel = _ints(node, "kernel_shape", list(w.shape[2:]))
    strides, dilations = _ints(node, "strides", [1] * spatial), _ints(node, "dilations", [1] * spatial)
    pads = _ints(node, "pads", [0] * 2 * spatial)
    if (group < 1 or len(kernel) != spatial or list(kernel) != list(w.shape[2:]) or len(strides) != spatial
            or len(dilations) != spatial or len(pads) != 2 * spatial or min(strides + dilations) < 1 or min(pads) < 0):
        raise _Bad("kernel_shape, strides, dilations, pads or group do not fit its weight")
    auto_pad = (node.attributes["auto_pad"].s if "auto_pad" in node.attributes else None) or "NOTSET"
    if auto_pad not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise _Bad(f"auto_pad {auto_pad!r}")
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    size = x.shape[2:]
    if transpose:
        if x.shape[1] != w.shape[0] or w.shape[0] % group:
            raise _Bad(f"input channels {x.shape[1]} do not match weight {w.shape} with group {group}")
        channels = w.shape[1] * group
        output_shape = _ints(node, "output_shape", [])
        output_padding = _ints(node, "output_padding", [0] * spatial)
        if len(output_padding) != spatial or min(output_padding) < 0:
            raise _Bad("output_padding does not fit its weight")
        if output_shape:
            out = list(output_shape[-spatial:])
        elif auto_pad.startswith("SAME"):
            out = [i * s for i, s in zip(size, strides)]
        else:
            begin, end = (pads[:spatial], pads[spatial:]) if auto_pad == "NOTSET" else ([0] * spatial,) * 2
            out = [s * (i - 1) + p + k - b - e for i, s, p, k, b, e in
                   zip(size, strides, output_padding, span, begin, end)]
        workspace = channels // group * math.prod(kernel) * math.prod(size)  # col buffer of one image
    else:
        if x.shape[1] != w.shape[1] * group or w.shape[0] % group:
            raise _Bad(f"input channels {x.shape[1]} do not match weight {w.shape} with group {group}")
        channels = w.shape[0]
        if auto_pad.startswith("SAME"):
            out = [-(-i // s) for i, s in zip(size, strides)]
        else:
            begin, end = (pads[:spatial], pads[spatial:]) if auto_pad == "NOTSET" else ([0] * spatial,) * 2
            out = [(i + b + e - k) // s + 1 for i, b, e, k, s in zip(size, begin, end, span, strides)]
        workspace = x.shape[1] // group * math.prod(kernel) * math.prod(out)  # im2col of one image
    if min(out) < 1 or len(out) != spatial:
        raise _Bad(f"output spatial size {out} from input {size}")
    itemsize = 4
    return [_T((x.shape[0], channels, *out), itemsize, None, _const(args))], workspace * 4


def _reshape(node, args):
    x, shape = _need(args, 2)
    if not _ints_known(shape) or len(shape.shape) != 1:
        raise _Bad("its shape must be a constant or come from Shape")
    allowzero = _ints(node, "allowzero", 0)
    dims = [x.shape[i] if v == 0 and not allowzero and i < len(x.shape) else v for i, v in enumerate(shape.value)]
    known = math.prod(d for d in dims if d != -1)
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise _Bad(f"shape {list(shape.value)}")
    total = math.prod(x.shape)
    if -1 in dims:
        if known == 0 or total % known:
            raise _Bad(f"cannot reshape {x.shape} to {list(shape.value)}")
        dims[dims.index(-1)] = total // known
    if math.prod(dims) != total:
        raise _Bad(f"cannot reshape {x.shape} to {list(shape.value)}")
    return [_T(tuple(dims), x.itemsize, x.value, _const(args))], 0


def _expand(node, args):
    x, shape = _need(args, 2)
    if not _ints_known(shape) or len(shape.shape) != 1 or min(shape.value, default=0) < 0:
        raise _Bad("its shape must be a constant or come from Shape")
    return [_T(_broadcast(x.shape, tuple(shape.value)), x.itemsize, None, _const(args))], 0


def _unsqueeze(node, args):
    x, axes = _need(args, 2)
    if not _ints_known(axes):
        raise _Bad("its axes must be a constant")
    rank = len(x.shape) + len(axes.value)
    norm = sorted(a + rank if a < 0 else a for a in axes.value)
    if len(set(norm)) != len(norm) or not all(0 <= a < rank for a in norm):
        raise _Bad(f"axes {list(axes.value)} for rank {len(x.shape)}")
    dims = list(x.shape)
    for a in norm:
        dims.insert(a, 1)
    return [_T(tuple(dims), x.itemsize, x.value, _const(args))], 0


def _concat(node, args):
    if not args or any(a is None for a in args):
        raise _Bad("needs inputs")
    rank = len(args[0].shape)
    axis = _ints(node, "axis", None)
    if axis is None or not -rank <= axis < rank or any(len(a.shape) != rank for a in args):
        raise _Bad(f"axis {axis} for inputs of shapes {[a.shape for a in args]}")
    axis %= rank
    rest = {a.shape[:axis] + a.shape[axis + 1:] for a in args}
    if len(rest) != 1:
        raise _Bad(f"inputs of shapes {[a.shape for a in args]} differ off axis {axis}")
    dims = list(args[0].shape)
    dims[axis] = sum(a.shape[axis] for a in args)
    value = tuple(v for a in args for v in a.value) if rank == 1 and all(a.value is not None for a in args) else None
    return [_T(tuple(dims), args[0].itemsize, value, _const(args))], 0


def _gather_nd(node, args):
    data, indices = _need(args, 2)
    batch_dims = _ints(node, "batch_dims", 0)
    if not indices.shape or not 1 <= indices.shape[-1] <= len(data.shape) - batch_dims or batch_dims < 0 \
            or data.shape[:batch_dims] != indices.shape[:batch_dims]:
        raise _Bad(f"indices {indices.shape} do not fit data {data.shape} with batch_dims {batch_dims}")
    shape = indices.shape[:-1] + data.shape[batch_dims + indices.shape[-1]:]
    return [_T(shape, data.itemsize, None, _const(args))], 0


def _shape(node, args):
    (x,) = _need(args, 1)
    rank = len(x.shape)
    start, end = _ints(node, "start", 0), _ints(node, "end", rank)
    start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
    value = x.shape[start:end]
    return [_T((len(value),), 8, tuple(value), x.const)], 0


def _dynamic_quantize(node, args):
    (x,) = _need(args, 1)
    const = x.const
    return [_T(x.shape, 1, None, const), _T((), 4, None, const), _T((), 1, None, const)], 0


def _ints_known(t: _T | None) -> bool:
    return t is not None and t.value is not None and all(isinstance(v, int) for v in t.value)


def _ints_of(t: _T | None, what: str) -> list[int]:
    if not _ints_known(t):
        raise _Bad(f"its {what} must be a constant or come from Shape")
    return list(t.value)


def _axis(a: int, rank: int, what: str) -> int:
    if not -rank <= a < rank:
        raise _Bad(f"{what} {a} for rank {rank}")
    return a % rank


def _transpose(node, args):
    (x,) = _need(args, 1)
    perm = _ints(node, "perm", list(range(len(x.shape)))[::-1])
    if sorted(perm) != list(range(len(x.shape))):
        raise _Bad(f"perm {perm} for rank {len(x.shape)}")
    return [_T(tuple(x.shape[p] for p in perm), x.itemsize, None, x.const)], 0


def _squeeze(node, args):
    x, axes = _need(args, 1, 1)
    if axes is None:
        dims = [d for d in x.shape if d != 1]
    else:
        drop = {_axis(a, len(x.shape), "axis") for a in _ints_of(axes, "axes")}
        if any(x.shape[a] != 1 for a in drop):
            raise _Bad(f"cannot squeeze axes {sorted(drop)} of {x.shape}")
        dims = [d for i, d in enumerate(x.shape) if i not in drop]
    return [_T(tuple(dims), x.itemsize, x.value, _const(args))], 0


def _matmul(node, args):
    a, b = _need(args, 2)
    return [_T(_matmul_shape(a.shape, b.shape), a.itemsize, None, _const(args))], 0


def _slice(node, args):
    x, starts, ends, axes, steps = _need(args, 3, 2)
    starts, ends = _ints_of(starts, "starts"), _ints_of(ends, "ends")
    axes = _ints_of(axes, "axes") if axes is not None else list(range(len(starts)))
    steps = _ints_of(steps, "steps") if steps is not None else [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise _Bad("starts, ends, axes and steps differ in length, or a step is 0")
    dims, value = list(x.shape), x.value
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _axis(axis, len(dims), "axis")
        index = range(dims[axis])[slice(start, end, step)]  # Python's slice clamps exactly as ONNX's does
        dims[axis] = len(index)
        if value is not None and len(x.shape) == 1:
            value = tuple(value[i] for i in index)
    return [_T(tuple(dims), x.itemsize, value if len(x.shape) == 1 else None, _const(args))], 0


def _split(node, args):
    x, split = _need(args, 1, 1)
    axis = _axis(_ints(node, "axis", 0), len(x.shape), "axis")
    size = x.shape[axis]
    if split is not None:
        parts = _ints_of(split, "split")
    else:
        count = _ints(node, "num_outputs", len(node.outputs))
        if count < 1:
            raise _Bad(f"num_outputs {count}")
        piece = -(-size // count)
        parts = [min(piece, max(size - piece * i, 0)) for i in range(count)]
    if sum(parts) != size or min(parts) < 0:
        raise _Bad(f"split {parts} of axis {axis} of {x.shape}")
    return [_T(x.shape[:axis] + (p,) + x.shape[axis + 1:], x.itemsize, None, _const(args)) for p in parts], 0


def _resize(node, args):
    x, _, scales, sizes = _need(args, 1, 3)
    axes = _ints(node, "axes", list(range(len(x.shape))))
    dims = list(x.shape)
    if sizes is not None and sizes.shape != (0,):
        for axis, size in zip(axes, _ints_of(sizes, "sizes")):
            dims[_axis(axis, len(dims), "axis")] = size
    elif scales is not None and scales.value is not None and len(scales.value) == len(axes):
        for axis, scale in zip(axes, scales.value):
            if not 0 < scale <= 1 << 16:
                raise _Bad(f"scale {scale}")
            a = _axis(axis, len(dims), "axis")
            dims[a] = math.floor(dims[a] * scale)
    else:
        raise _Bad("its scales or sizes must be constants (or sizes from Shape)")
    if min(dims, default=1) < 0:
        raise _Bad(f"output size {dims}")
    return [_T(tuple(dims), x.itemsize, None, _const(args))], 0


def _normalization(node, args):
    x, _, _ = _need(args, 3)
    return [_T(x.shape, x.itemsize, None, _const(args))], 0


_RULES = {
    **{op: _elementwise for op in ("Abs", "Exp", "Relu", "Sigmoid", "Tanh", "Reciprocal")},
    **{op: _binary for op in ("Add", "Sub", "Mul", "Div", "Less")},
    "Where": _where, "Clip": _clip, "Cast": _cast, "Gemm": _gemm, "MatMulInteger": _matmul_integer,
    "Conv": _conv, "ConvInteger": _conv, "ConvTranspose": _conv, "Reshape": _reshape, "Expand": _expand,
    "Unsqueeze": _unsqueeze, "Concat": _concat, "GatherND": _gather_nd, "Shape": _shape,
    "DynamicQuantizeLinear": _dynamic_quantize,
    # imported VAEs: attention, GroupNorm's lowering, upsampling
    "LeakyRelu": _elementwise, "Softmax": _elementwise, "InstanceNormalization": _normalization,
    "Transpose": _transpose, "Squeeze": _squeeze, "MatMul": _matmul, "Slice": _slice, "Split": _split,
    "Resize": _resize,
}
