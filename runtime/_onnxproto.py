"""A small, bounded reader of ONNX's ModelProto (protobuf wire format), without the onnx package.

    from edgevae._onnxproto import parse
    model = parse(open("exports/shapes/decoder.onnx", "rb").read())
    [node.op_type for node in model.graph.nodes], model.metadata["edgevae.spec"]

It reads what the runtime checks before onnxruntime sees a graph: the nodes (op type, domain, inputs,
outputs, attributes; subgraphs are flagged, not followed), opset_import, the graph's inputs and outputs
(names, element types, dims or dim_params), initializers (type, dims, where their data lives, external-data
entries) and metadata_props. Field numbers are those of onnx/onnx.proto (IR version 10).

Bounded by construction: it walks the bytes it is given once, never allocates more than a small multiple
of them, follows no message deeper than the schema above needs, and stops with ProtoError after MAX_FIELDS
fields or at any length, varint or string that runs past its enclosing message.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MAX_FIELDS = 2_000_000  # protobuf fields one parse reads, all messages together (bounds the time: ~1 s)
MAX_NAME = 4096  # bytes in a name, op type, domain, dim_param or attribute string
MAX_METADATA_VALUE = 1 << 20  # bytes in one metadata_props value (the spec JSON)
MAX_DIMS = 16  # rank of any tensor or shape
MAX_ATTR_VALUES = 1024  # ints or floats in one attribute

# TensorProto.DataType -> bytes per element (the types a graph here may hold; others are refused)
ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
FLOAT, UINT8, INT8, INT32, INT64, BOOL, FLOAT16 = 1, 2, 3, 6, 7, 9, 10
EXTERNAL = 1  # TensorProto.DataLocation


class ProtoError(ValueError):
    """The bytes are not a ModelProto this reader accepts; the message says where and why."""


@dataclass(slots=True)
class Tensor:
    """An initializer: its data is raw little-endian bytes, a typed repeated field, or an external file."""
    name: str = ""
    data_type: int = 0
    dims: tuple[int, ...] = ()
    raw: memoryview | None = None  # raw_data
    typed: list = field(default_factory=list)  # (field number, wire type, value) of float_data, int64_data ...
    external: dict[str, str] | None = None  # external_data entries (location, offset, length, checksum)
    data_location: int = 0

    @property
    def size(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


@dataclass(slots=True)
class Attribute:
    name: str = ""
    type: int = 0  # AttributeProto.AttributeType
    i: int | None = None
    f: float | None = None
    s: str | None = None
    ints: list[int] = field(default_factory=list)
    floats: list[float] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # fields present that this reader does not follow


@dataclass(slots=True)
class Node:
    op_type: str = ""
    domain: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    attributes: dict[str, Attribute] = field(default_factory=dict)


@dataclass(slots=True)
class ValueInfo:
    """A graph input or output. dims: one per axis, an int (dim_value), a str (dim_param) or None (unknown);
    None for no shape at all. kind: "tensor", or what else the TypeProto holds (refused by the checks)."""
    name: str = ""
    kind: str = ""
    elem_type: int = 0
    dims: tuple | None = None


@dataclass(slots=True)
class Graph:
    nodes: list[Node] = field(default_factory=list)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    initializers: list[Tensor] = field(default_factory=list)
    sparse_initializers: int = 0


@dataclass(slots=True)
class Model:
    ir_version: int = 0
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("" = ai.onnx) -> version
    graph: Graph | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    functions: int = 0  # model-local functions (not followed)
    training_info: int = 0


class _Reader:
    """Walks protobuf fields of a buffer, counting them against MAX_FIELDS."""

    def __init__(self, data: bytes | memoryview):
        self.buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        self.fields = 0

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        buf, result, shift = self.buf, 0, 0
        while True:
            if pos >= end:
                raise ProtoError("truncated varint")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                raise ProtoError("varint longer than 10 bytes")

    def fields_of(self, start: int, end: int, what: str):
        """(field number, wire type, value) of each field of the message in buf[start:end]: value is an int
        for varints, else a (start, end) span of the payload."""
        pos = start
        while pos < end:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise ProtoError(f"more than {MAX_FIELDS:,} protobuf fields")
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise ProtoError(f"{what}: field number 0")
            if wire == 0:
                value, pos = self.varint(pos, end)
            elif wire == 2:
                length, pos = self.varint(pos, end)
                value = (pos, pos + length)
                pos += length
            elif wire == 1 or wire == 5:
                value = (pos, pos + (8 if wire == 1 else 4))
                pos = value[1]
            else:  # 3, 4: groups (deprecated, never in ONNX); 6, 7: invalid
                raise ProtoError(f"{what}: field {number} has wire type {wire}")
            if pos > end:
                raise ProtoError(f"{what}: field {number} runs past the end of its message")
            yield number, wire, value

    def text(self, span, what: str, limit: int = MAX_NAME) -> str:
        start, end = self._span(span, what)
        if end - start > limit:
            raise ProtoError(f"{what}: string of {end - start:,} bytes (at most {limit:,})")
        try:
            return bytes(self.buf[start:end]).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtoError(f"{what}: not valid UTF-8") from None

    def _span(self, value, what: str) -> tuple[int, int]:
        if not isinstance(value, tuple):
            raise ProtoError(f"{what}: expected a length-delimited field, got a varint")
        return value

    def ints(self, wire: int, value, what: str, out: list, signed: bool = True) -> None:
        """Append a repeated int64 field's values (packed or one per field) to out."""
        if wire == 0:
            out.append(_signed(value) if signed else value)
        elif wire == 2:
            pos, end = value
            while pos < end:
                v, pos = self.varint(pos, end)
                out.append(_signed(v) if signed else v)
        else:
            raise ProtoError(f"{what}: wrong wire type {wire} for an integer")
        if len(out) > MAX_ATTR_VALUES:
            raise ProtoError(f"{what}: more than {MAX_ATTR_VALUES} values")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _int(wire: int, value, what: str) -> int:
    if wire != 0:
        raise ProtoError(f"{what}: expected a varint, got wire type {wire}")
    return _signed(value)


def parse(data: bytes | memoryview) -> Model:
    """The ModelProto in `data`; ProtoError if it is malformed or beyond this reader's bounds."""
    r, model = _Reader(data), Model()
    for number, wire, value in r.fields_of(0, len(r.buf), "ModelProto"):
        if number == 1:
            model.ir_version = _int(wire, value, "ir_version")
        elif number == 8:
            domain, version = _opset(r, r._span(value, "opset_import"))
            if domain in model.opsets:
                raise ProtoError(f"opset_import lists domain {domain!r} twice")
            model.opsets[domain] = version
        elif number == 7:
            if model.graph is not None:
                raise ProtoError("two graph fields")
            model.graph = _graph(r, r._span(value, "graph"))
        elif number == 14:
            key, text = _entry(r, r._span(value, "metadata_props"), "metadata_props", MAX_METADATA_VALUE)
            if key in model.metadata:
                raise ProtoError(f"metadata_props lists key {key!r} twice")
            model.metadata[key] = text
        elif number == 25:
            model.functions += 1
        elif number == 20:
            model.training_info += 1
        # 2-6 (producer, domain, model_version, doc_string) and unknown fields: not needed, skipped
    if model.graph is None:
        raise ProtoError("no graph")
    return model


def _opset(r: _Reader, span) -> tuple[str, int]:
    domain, version = "", 0
    for number, wire, value in r.fields_of(*span, "opset_import"):
        if number == 1:
            domain = r.text(value, "opset_import domain")
        elif number == 2:
            version = _int(wire, value, "opset_import version")
    return domain, version


def _entry(r: _Reader, span, what: str, limit: int = MAX_NAME) -> tuple[str, str]:
    """A StringStringEntryProto (key = 1, value = 2)."""
    key, text = "", ""
    for number, _, value in r.fields_of(*span, what):
        if number == 1:
            key = r.text(value, f"{what} key")
        elif number == 2:
            text = r.text(value, f"{what} {key!r} value", limit)
    return key, text


def _graph(r: _Reader, span) -> Graph:
    g = Graph()
    for number, _, value in r.fields_of(*span, "graph"):
        if number == 1:
            g.nodes.append(_node(r, r._span(value, "node"), len(g.nodes)))
        elif number == 5:
            g.initializers.append(_tensor(r, r._span(value, "initializer")))
        elif number == 11:
            g.inputs.append(_value_info(r, r._span(value, "input")))
        elif number == 12:
            g.outputs.append(_value_info(r, r._span(value, "output")))
        elif number == 15:
            g.sparse_initializers += 1
        # 2 name, 10 doc_string, 13 value_info (shape hints), 14 quantization_annotation, 16 metadata: skipped
    return g


def _node(r: _Reader, span, index: int) -> Node:
    node, what = Node(), f"node {index}"
    for number, _, value in r.fields_of(*span, what):
        if number == 1:
            node.inputs.append(r.text(value, f"{what} input"))
        elif number == 2:
            node.outputs.append(r.text(value, f"{what} output"))
        elif number == 4:
            node.op_type = r.text(value, f"{what} op_type")
        elif number == 7:
            node.domain = r.text(value, f"{what} domain")
        elif number == 5:
            attr = _attribute(r, r._span(value, f"{what} attribute"), what)
            if attr.name in node.attributes:
                raise ProtoError(f"{what} ({node.op_type}): attribute {attr.name!r} twice")
            node.attributes[attr.name] = attr
        # 3 name, 6 doc_string, 8 overload, 9 metadata_props: skipped
    return node


_ATTR_OTHER = {5: "t", 6: "g", 10: "tensors", 11: "graphs", 14: "tp", 15: "type_protos", 21: "ref_attr_name",
               22: "sparse_tensor", 23: "sparse_tensors"}


def _attribute(r: _Reader, span, where: str) -> Attribute:
    a = Attribute()
    for number, wire, value in r.fields_of(*span, f"{where} attribute"):
        what = f"{where} attribute {a.name or '?'}"
        if number == 1:
            a.name = r.text(value, f"{where} attribute name")
        elif number == 20:
            a.type = _int(wire, value, f"{what} type")
        elif number == 3:
            a.i = _int(wire, value, what)
        elif number == 2:
            a.f = _float32(r, wire, value, what)
        elif number == 4:
            a.s = r.text(value, what)
        elif number == 8:
            r.ints(wire, value, what, a.ints)
        elif number == 7:
            _floats(r, wire, value, what, a.floats)
        elif number == 9:
            a.other.append("strings")
        elif number in _ATTR_OTHER:
            a.other.append(_ATTR_OTHER[number])
        # 13 doc_string: skipped
    return a


def _float32(r: _Reader, wire: int, value, what: str) -> float:
    import struct

    if wire != 5:
        raise ProtoError(f"{what}: expected a 32-bit float, got wire type {wire}")
    return struct.unpack("<f", r.buf[value[0]:value[1]])[0]


def _floats(r: _Reader, wire: int, value, what: str, out: list) -> None:
    import struct

    if wire == 5:
        out.append(_float32(r, wire, value, what))
    elif wire == 2:
        start, end = value
        if (end - start) % 4:
            raise ProtoError(f"{what}: packed floats of {end - start} bytes")
        out.extend(struct.unpack(f"<{(end - start) // 4}f", r.buf[start:end]))
    else:
        raise ProtoError(f"{what}: wrong wire type {wire} for floats")
    if len(out) > MAX_ATTR_VALUES:
        raise ProtoError(f"{what}: more than {MAX_ATTR_VALUES} values")


def _tensor(r: _Reader, span) -> Tensor:
    t, dims = Tensor(), []
    for number, wire, value in r.fields_of(*span, "initializer"):
        what = f"initializer {t.name or '?'}"
        if number == 1:
            r.ints(wire, value, f"{what} dims", dims)
            if len(dims) > MAX_DIMS:
                raise ProtoError(f"{what}: more than {MAX_DIMS} dims")
        elif number == 2:
            t.data_type = _int(wire, value, f"{what} data_type")
        elif number == 8:
            t.name = r.text(value, "initializer name")
        elif number == 9:
            start, end = r._span(value, f"{what} raw_data")
            t.raw = r.buf[start:end]
        elif number in (4, 5, 6, 7, 10, 11):  # float, int32, string, int64, double, uint64 data
            t.typed.append((number, wire, value))
        elif number == 13:
            t.external = t.external or {}
            key, text = _entry(r, r._span(value, f"{what} external_data"), f"{what} external_data")
            if key in t.external:
                raise ProtoError(f"{what}: external_data key {key!r} twice")
            t.external[key] = text
        elif number == 14:
            t.data_location = _int(wire, value, f"{what} data_location")
        elif number == 3:
            raise ProtoError(f"{what}: segmented tensors are not supported")
        # 12 doc_string, 16 metadata_props: skipped
    if any(d < 0 for d in dims):
        raise ProtoError(f"initializer {t.name!r}: negative dim in {dims}")
    t.dims = tuple(dims)
    return t


def typed_count(data: bytes | memoryview, tensor: Tensor) -> int:
    """How many values the typed repeated fields (float_data, int64_data ...) of `tensor` hold."""
    import numpy as np

    buf, count = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B"), 0
    for number, wire, value in tensor.typed:
        if wire != 2:  # one value per field
            count += 1
        elif number in _FIXED_WIDTH:
            count += (value[1] - value[0]) // _FIXED_WIDTH[number]
        else:  # packed varints: one value ends at each byte below 0x80
            count += int(np.count_nonzero(np.frombuffer(buf[value[0]:value[1]], np.uint8) < 0x80))
    return count


_FIXED_WIDTH = {4: 4, 10: 8}  # float_data (fixed32), double_data (fixed64); int32, int64, uint64 are varints


def int_values(data: bytes | memoryview, tensor: Tensor, limit: int = 64) -> list[int] | None:
    """The values of a small int64 (or int32) initializer, or None when it holds more than `limit` or none
    inline (external data)."""
    if tensor.data_type not in (INT64, INT32) or tensor.size > limit or tensor.external is not None:
        return None
    if tensor.raw is not None:
        width = ITEMSIZE[tensor.data_type]
        if len(tensor.raw) != tensor.size * width:
            return None
        return [int.from_bytes(tensor.raw[i:i + width], "little", signed=True)
                for i in range(0, len(tensor.raw), width)]
    r, out = _Reader(data), []
    for number, wire, value in tensor.typed:
        if number not in (5, 7):
            return None
        r.ints(wire, value, tensor.name, out)
    if tensor.data_type == INT32:
        out = [((v + (1 << 31)) % (1 << 32)) - (1 << 31) for v in out]
    return out if len(out) == tensor.size else None


def float_values(data: bytes | memoryview, tensor: Tensor, limit: int = 64) -> list[float] | None:
    """The values of a small float32 initializer held inline, else None."""
    import struct

    if tensor.data_type != FLOAT or tensor.size > limit or tensor.external is not None:
        return None
    if tensor.raw is not None:
        return list(struct.unpack(f"<{tensor.size}f", tensor.raw)) if len(tensor.raw) == 4 * tensor.size else None
    values: list[float] = []
    r = _Reader(data)
    for number, wire, value in tensor.typed:
        if number != 4:
            return None
        _floats(r, wire, value, tensor.name, values)
    return values if len(values) == tensor.size else None


def float_value(data: bytes | memoryview, tensor: Tensor) -> float | None:
    """The value of a one-element float32 initializer held inline, else None."""
    values = float_values(data, tensor, 1) if tensor.size == 1 else None
    return values[0] if values else None


def _value_info(r: _Reader, span) -> ValueInfo:
    v = ValueInfo()
    for number, _, value in r.fields_of(*span, "value_info"):
        if number == 1:
            v.name = r.text(value, "input/output name")
        elif number == 2:
            _type(r, r._span(value, f"{v.name} type"), v)
    return v


_TYPE_KINDS = {4: "sequence", 5: "map", 7: "opaque", 8: "sparse tensor", 9: "optional"}


def _type(r: _Reader, span, v: ValueInfo) -> None:
    for number, _, value in r.fields_of(*span, f"{v.name} type"):
        if number == 1:
            v.kind = "tensor"
            for n2, w2, val2 in r.fields_of(*r._span(value, f"{v.name} tensor_type"), f"{v.name} tensor_type"):
                if n2 == 1:
                    v.elem_type = _int(w2, val2, f"{v.name} elem_type")
                elif n2 == 2:
                    v.dims = _shape(r, r._span(val2, f"{v.name} shape"), v.name)
        elif number in _TYPE_KINDS:
            v.kind = _TYPE_KINDS[number]


def _shape(r: _Reader, span, name: str) -> tuple:
    dims = []
    for number, _, value in r.fields_of(*span, f"{name} shape"):
        if number != 1:
            continue
        dim = None
        for n2, w2, val2 in r.fields_of(*r._span(value, f"{name} dim"), f"{name} dim"):
            if n2 == 1:
                dim = _int(w2, val2, f"{name} dim_value")
            elif n2 == 2:
                dim = r.text(val2, f"{name} dim_param")
        dims.append(dim)
        if len(dims) > MAX_DIMS:
            raise ProtoError(f"{name}: more than {MAX_DIMS} dims")
    return tuple(dims)
