/**
 * Latents and decoding for the JavaScript hosts, as runtime.Model.sample and decode compute them.
 *
 *   import { priorLatents, decode } from "../js/generate.mjs";
 *   const z = priorLatents(spec, n, seed, temperature);              // Float32Array, n * prod(latent_shape)
 *   const { data, shape } = await decode(ort, session, spec, z, n);  // x_hat, Float32Array (N, C, H, W)
 *
 * `ort` is the onnxruntime module of the host (onnxruntime-node or onnxruntime-web: the same Tensor API).
 * eps = standardNormal(seed, n * prod(latent_shape)) row-major, the stream of Python's
 * standard_normal(seed, (n, *latent_shape)); z = float32(eps * float32(temperature)).
 */
import { ExportError, latentShape, latentSize } from "./export.mjs";
import { standardNormal } from "./noise.mjs";

export const CHUNK = 1024; // images per session.run, as the Python runtime bounds memory
export const MAX_TEMPERATURE = 100; // the Python runtime's bound

/** Why sample() cannot run on this model (schema 2's `prior` null), or null when it can. */
export function priorRefusal(spec) {
  if (spec.prior !== null) return null; // "standard_normal", or absent in schema 1
  return `this model has no prior to sample from (spec prior null${spec.prior_note ? `: ${spec.prior_note}` : ""})`;
}

/** temperature * standardNormal(seed, ...) for n images, as runtime's sample(n, seed=, temperature=) feeds it. */
export function priorLatents(spec, n, seed, temperature = 1) {
  const refusal = priorRefusal(spec);
  if (refusal) throw new ExportError(refusal);
  if (!(temperature >= 0 && temperature <= MAX_TEMPERATURE)) {
    throw new ExportError(`temperature must be a number in [0, ${MAX_TEMPERATURE}], got ${temperature}`);
  }
  const z = standardNormal(seed, n * latentSize(spec));
  if (temperature !== 1) {
    const t = Math.fround(temperature); // Python scales in float32: eps * np.float32(temperature)
    for (let i = 0; i < z.length; i++) z[i] = Math.fround(z[i] * t);
  }
  return z;
}

/** int64 class indices for n images from one index or one per image; null for an unconditional model. */
function labelTensor(ort, spec, labels, start, m) {
  if (!spec.classes) {
    if (labels !== null && labels !== undefined) {
      throw new ExportError("this model is unconditional; it takes no labels");
    }
    return null;
  }
  const all = Array.isArray(labels) ? labels.slice(start, start + m) : Array(m).fill(labels);
  if (all.length !== m || !all.every((k) => Number.isInteger(k) && k >= 0 && k < spec.classes.length)) {
    throw new ExportError(`this model is conditional: pick a class in [0, ${spec.classes.length - 1}] ` +
      `(${spec.classes.join(", ")}), got ${labels}`);
  }
  return new ort.Tensor("int64", BigInt64Array.from(all, BigInt), [m]);
}

/** Decode n latents (Float32Array, n * prod(latent_shape)) in chunks: { data: x_hat, shape: [n, C, H, W] }. */
export async function decode(ort, session, spec, z, n, labels = null) {
  const shape = latentShape(spec), d = latentSize(spec);
  const [c, h, w] = spec.image_shape;
  if (z.length !== n * d) throw new ExportError(`decode: z must hold ${n} x ${d} numbers, got ${z.length}`);
  const data = new Float32Array(n * c * h * w);
  for (let start = 0; start < n; start += CHUNK) {
    const m = Math.min(CHUNK, n - start);
    const feeds = { z: new ort.Tensor("float32", z.subarray(start * d, (start + m) * d), [m, ...shape]) };
    const y = labelTensor(ort, spec, labels, start, m);
    if (y) feeds.y = y;
    const { x_hat: xHat } = await session.run(feeds);
    data.set(xHat.data, start * c * h * w);
  }
  if (!data.every(Number.isFinite)) throw new ExportError("decode: the decoder returned NaN or Inf (z too large?)");
  return { data, shape: [n, c, h, w] };
}
