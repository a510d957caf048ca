/**
 * Read an ONNX file's metadata_props (key -> value) straight from its protobuf bytes, in Node.js or a browser.
 *
 *   import { readMetadata } from "../js/onnxmeta.mjs";
 *   const spec = JSON.parse(readMetadata(bytes)["edgevae.spec"]);
 *
 * onnxruntime-node and onnxruntime-web (1.30) expose input/output names and shapes but not the model's
 * custom metadata (Python's get_modelmeta().custom_metadata_map has no JS counterpart), so this walks the
 * top level of ModelProto: field 14 is `repeated StringStringEntryProto metadata_props` with key = 1,
 * value = 2. Every other field is skipped by its wire type; the graph itself is never parsed.
 */
const METADATA_PROPS = 14;

function* fields(bytes, start = 0, end = bytes.length) {
  let pos = start;
  const varint = () => {
    let value = 0;
    for (let scale = 1; ; scale *= 128) {
      if (pos >= end) throw new Error("truncated protobuf varint");
      const b = bytes[pos++];
      value += (b & 0x7f) * scale; // multiply, not shift: lengths may exceed 2^31
      if (b < 0x80) return value;
    }
  };
  while (pos < end) {
    const tag = varint();
    const field = Math.floor(tag / 8), wire = tag % 8;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const length = varint();
      if (pos + length > end) throw new Error("truncated protobuf field");
      yield { field, start: pos, end: pos + length };
      pos += length;
    } else throw new Error(`unsupported protobuf wire type ${wire} (not an ONNX file?)`);
  }
}

/** The metadata_props of a serialized ModelProto as a plain object. */
export function readMetadata(bytes) {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const props = {};
  for (const f of fields(bytes)) {
    if (f.field !== METADATA_PROPS) continue;
    const entry = {};
    for (const g of fields(bytes, f.start, f.end)) entry[g.field] = decoder.decode(bytes.subarray(g.start, g.end));
    props[entry[1] ?? ""] = entry[2] ?? "";
  }
  return props;
}
