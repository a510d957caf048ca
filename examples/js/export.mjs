/**
 * Open an EdgeVAE export in any JavaScript host (Node.js or a browser): the checks runtime.load makes
 * before it trusts a graph, with no onnxruntime in sight.
 *
 *   import { readExport, latentShape } from "../js/export.mjs";
 *   const ex = await readExport((name) => fetchBytes(base + name), base);  // { manifest, specs, bytes, files }
 *   const session = await ort.InferenceSession.create(ex.bytes.decoder);
 *   checkSignature(session, "decoder", ex.specs.decoder, ex.files.decoder);
 *
 * `read(name)` returns one file of the export directory as a Uint8Array (or rejects). Each graph's
 * sha256 (WebCrypto: Node.js, or a browser page in a secure context such as http://127.0.0.1) must
 * equal manifest.json's; its `edgevae.spec` metadata must parse as schema 1 or 2;
 * the encoder, decoder and manifest must share one pair_id. Any failure throws ExportError, one line.
 *
 * Schema 1 specs name a flat latent `latent_dim` D (latents [N, D]); schema 2 specs name `latent_shape`,
 * [D] or [C, h, w] (latents [N, *latent_shape]), `image_mode` and `prior`. latentShape(spec) reads both.
 */
import { readMetadata } from "./onnxmeta.mjs";

export const METADATA_KEY = "edgevae.spec";
export const MANIFEST = "manifest.json";
export const SCHEMA_VERSIONS = [1, 2];
const MODES = { L: 1, RGB: 3, RGBA: 4 }; // image_mode -> channels C of image_shape
const MODEL_KINDS = ["vae", "ae"];
const PRIORS = ["standard_normal", null];

export class ExportError extends Error {}

/** The latent of one image: schema 2's latent_shape ([D] or [C, h, w]), or schema 1's [latent_dim]. */
export function latentShape(spec) {
  return spec.latent_shape ?? [spec.latent_dim];
}

/** Numbers in one image's latent: the product of latentShape(spec). */
export function latentSize(spec) {
  return latentShape(spec).reduce((a, b) => a * b, 1);
}

/** [input names, output names] of a graph, as runtime/spec.py's signature(). */
export function signature(role, spec) {
  const label = spec.classes ? ["y"] : []; // conditional models take y int64 [N] last
  if (role === "decoder") return [["z", ...label], ["x_hat"]];
  if (spec.model === "ae") return [["x", ...label], ["z"]];
  return [["x", "eps", ...label], ["z", "mu", "logvar"]];
}

/** Throw unless an onnxruntime session (node or web) has the names the spec promises. */
export function checkSignature(session, role, spec, source) {
  const [inputs, outputs] = signature(role, spec);
  if (session.inputNames.join() !== inputs.join() || session.outputNames.join() !== outputs.join()) {
    throw new ExportError(`${source}: expected inputs ${inputs} -> outputs ${outputs}, ` +
      `got ${session.inputNames} -> ${session.outputNames}`);
  }
}

/** WebCrypto's SubtleCrypto: a global in browsers (secure contexts only) and Node.js >= 19, a module in Node.js 18. */
async function subtleCrypto() {
  if (globalThis.crypto?.subtle) return globalThis.crypto.subtle;
  try {
    return (await import("node:crypto")).webcrypto.subtle;
  } catch {
    throw new ExportError("WebCrypto (crypto.subtle) is unavailable: serve the page from https or 127.0.0.1");
  }
}

/** Lower-case hex sha256 of bytes. */
export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await (await subtleCrypto()).digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

const positiveInts = (v, length) => Array.isArray(v) && length.includes(v.length) &&
  v.every((s) => Number.isInteger(s) && s > 0);

/** Parse and check the `edgevae.spec` JSON read from `source` (a file name or URL, for messages). */
export function parseSpec(text, source) {
  let spec;
  try {
    spec = JSON.parse(text);
  } catch (e) {
    throw new ExportError(`${source}: metadata '${METADATA_KEY}' is not valid JSON (${e.message})`);
  }
  if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
    throw new ExportError(`${source}: metadata '${METADATA_KEY}' must be a JSON object`);
  }
  const bad = (field, expected) => new ExportError(
    `${source}: spec ${field} must be ${expected}, got ${JSON.stringify(spec[field])}`);
  const version = spec.schema_version; // first: a newer schema may mean anything by the other fields
  if (!SCHEMA_VERSIONS.includes(version)) {
    throw new ExportError(`${source}: spec schema_version ${JSON.stringify(version)} is not supported ` +
      `(this reader takes ${SCHEMA_VERSIONS.join(" and ")}; update examples/js)`);
  }
  if (!MODEL_KINDS.includes(spec.model)) throw bad("model", MODEL_KINDS.join(" or "));
  if (!positiveInts(spec.image_shape, [3]) || !Object.values(MODES).includes(spec.image_shape[0])) {
    throw bad("image_shape", "[C, H, W] of positive ints with C 1, 3 or 4");
  }
  if (spec.image_mode !== undefined && MODES[spec.image_mode] !== spec.image_shape[0]) {
    throw bad("image_mode", `the mode of ${spec.image_shape[0]} channels (L 1, RGB 3, RGBA 4)`);
  }
  if (version >= 2 && !positiveInts(spec.latent_shape, [1, 3])) throw bad("latent_shape", "[D] or [C, h, w]");
  if (version === 1 && !positiveInts([spec.latent_dim], [1])) throw bad("latent_dim", "a positive int");
  if (spec.latent_dim !== undefined && spec.latent_dim !== latentSize(spec)) {
    throw bad("latent_dim", `the product of latent_shape, ${latentSize(spec)}`);
  }
  const classes = spec.classes ?? null;
  if (classes !== null && !(Array.isArray(classes) && classes.length && classes.every((c) => typeof c === "string"))) {
    throw bad("classes", "null or a non-empty list of names");
  }
  if (spec.prior !== undefined && !PRIORS.includes(spec.prior)) throw bad("prior", '"standard_normal" or null');
  return spec;
}

/**
 * Check an export through `read(name)` and return its manifest, both specs and both graphs' bytes.
 * manifestSha256 (optional, hex) pins the export: manifest.json must hash to it, and it lists every file's hash.
 */
export async function readExport(read, where, { variant = "fp32", manifestSha256 = null } = {}) {
  const file = (name) => (where.endsWith("/") ? where + name : `${where}/${name}`);
  let manifestBytes;
  try {
    manifestBytes = await read(MANIFEST);
  } catch (e) {
    throw new ExportError(`${where}: not an export directory (${MANIFEST}: ${e.message})`);
  }
  if (manifestSha256) { // the app ships with the digest of the export it was tested with
    const digest = await sha256Hex(manifestBytes);
    if (digest !== manifestSha256.toLowerCase()) {
      throw new ExportError(`${file(MANIFEST)}: sha256 ${digest.slice(0, 12)}... is not the pinned ` +
        `${manifestSha256.slice(0, 12)}... (another export than the one this app ships with)`);
    }
  }
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(manifestBytes));
  } catch (e) {
    throw new ExportError(`${file(MANIFEST)}: not valid JSON (${e.message})`);
  }
  if (manifest === null || typeof manifest !== "object" || typeof manifest.files !== "object" ||
      typeof manifest.variants !== "object" || !manifest.files || !manifest.variants) {
    throw new ExportError(`${file(MANIFEST)}: expected an object with 'files' and 'variants' maps`);
  }
  const names = manifest.variants[variant];
  if (!names) {
    throw new ExportError(`${where}: no '${variant}' variant in this export ` +
      `(it has: ${Object.keys(manifest.variants).join(", ") || "none"})`);
  }
  const ex = { manifest, specs: {}, bytes: {}, files: {} };
  for (const role of ["encoder", "decoder"]) {
    const name = names[role];
    if (typeof name !== "string" || /[/\\]/.test(name) || name.startsWith(".")) {
      throw new ExportError(`${file(MANIFEST)}: bad ${role} file name ${JSON.stringify(name)} ` +
        `for variant '${variant}'`);
    }
    const expected = manifest.files[name]?.sha256;
    if (typeof expected !== "string") throw new ExportError(`${file(MANIFEST)}: no sha256 listed for ${name}`);
    let bytes;
    try {
      bytes = await read(name);
    } catch (e) {
      throw new ExportError(`${file(name)}: cannot read it (${e.message})`);
    }
    const digest = await sha256Hex(bytes);
    if (digest !== expected) {
      throw new ExportError(`${file(name)}: sha256 ${digest.slice(0, 12)}... does not match the manifest's ` +
        `${expected.slice(0, 12)}... (file changed or corrupt)`);
    }
    let text;
    try {
      text = readMetadata(bytes)[METADATA_KEY];
    } catch (e) {
      throw new ExportError(`${file(name)}: not an ONNX file (${e.message})`);
    }
    if (text === undefined) {
      throw new ExportError(`${file(name)}: no '${METADATA_KEY}' metadata (not an EdgeVAE graph)`);
    }
    const spec = parseSpec(text, file(name));
    if (spec.role !== role || spec.variant !== variant) {
      throw new ExportError(`${file(name)}: expected the ${variant} ${role}, got the ${spec.variant} ${spec.role}`);
    }
    ex.specs[role] = spec;
    ex.bytes[role] = bytes;
    ex.files[role] = file(name);
  }
  const { encoder, decoder } = ex.specs;
  if (new Set([encoder.pair_id, decoder.pair_id, manifest.pair_id]).size !== 1) {
    throw new ExportError(`${where}: encoder, decoder and manifest come from different exports (pair_id encoder=` +
      `${encoder.pair_id}, decoder=${decoder.pair_id}, manifest=${manifest.pair_id})`);
  }
  return ex;
}
