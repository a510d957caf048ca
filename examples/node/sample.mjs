#!/usr/bin/env node
/**
 * Generate a PNG grid from an EdgeVAE export with onnxruntime-node: the same pixels as the Python runtime.
 *
 *   cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci
 *   node sample.mjs ../../exports/shapes --n 64 --seed 0 --temperature 1 --out grid.png
 *
 * equals `edgevae sample exports/shapes --n 64 --seed 0 --out grid.png` pixel for pixel
 * (tests/test_node.py checks it). Like runtime.load it checks each graph's sha256 against manifest.json
 * and that the encoder, decoder and manifest share one pair_id, read from the `edgevae.spec` metadata.
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";

import { readMetadata } from "./onnxmeta.mjs";
import { encodePng, makeGrid } from "./png.mjs";
import { standardNormal } from "./noise.mjs";

const SIGNATURES = { encoder: [["x", "eps"], ["z", "mu", "logvar"]], decoder: [["z"], ["x_hat"]] };
const CHUNK = 1024; // images per run, as the Python runtime chunks large batches

class ExportError extends Error {}

/** Sessions and spec of an export directory, after the same checks as runtime.load. */
export async function loadExport(dir, { variant = "fp32", threads = 0 } = {}) {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"));
  } catch (e) {
    throw new ExportError(`${dir}: not an export directory (${e.message})`);
  }
  const files = manifest.variants?.[variant];
  if (!files) throw new ExportError(`${dir}: no '${variant}' variant in this export`);
  const options = {
    executionProviders: ["cpu"],
    intraOpNumThreads: threads, // 0: onnxruntime picks
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    extra: { session: { intra_op: { allow_spinning: "0" } } }, // idle threads sleep instead of spinning
  };
  const model = { manifest, specs: {}, sessions: {} };
  for (const role of ["encoder", "decoder"]) {
    const name = files[role];
    const bytes = readFileSync(join(dir, name));
    const digest = createHash("sha256").update(bytes).digest("hex");
    const expected = manifest.files?.[name]?.sha256;
    if (digest !== expected) {
      throw new ExportError(`${join(dir, name)}: sha256 ${digest.slice(0, 12)}... does not match the manifest's ` +
        `${String(expected).slice(0, 12)}... (file changed or corrupt)`);
    }
    const text = readMetadata(bytes)["edgevae.spec"];
    if (text === undefined) throw new ExportError(`${join(dir, name)}: no 'edgevae.spec' metadata`);
    const spec = JSON.parse(text);
    if (spec.role !== role) throw new ExportError(`${join(dir, name)}: expected the ${role}, got the ${spec.role}`);
    const session = await ort.InferenceSession.create(bytes, options);
    const [inputs, outputs] = SIGNATURES[role];
    if (session.inputNames.join() !== inputs.join() || session.outputNames.join() !== outputs.join()) {
      throw new ExportError(`${join(dir, name)}: expected inputs ${inputs} -> outputs ${outputs}, ` +
        `got ${session.inputNames} -> ${session.outputNames}`);
    }
    model.specs[role] = spec;
    model.sessions[role] = session;
  }
  const ids = new Set([model.specs.encoder.pair_id, model.specs.decoder.pair_id, manifest.pair_id]);
  if (ids.size !== 1) {
    throw new ExportError(`${dir}: encoder, decoder and manifest come from different exports (pair_id encoder=` +
      `${model.specs.encoder.pair_id}, decoder=${model.specs.decoder.pair_id}, manifest=${manifest.pair_id})`);
  }
  return model;
}

/** Decode z = temperature * standardNormal(seed, n * D): { data: Float32Array (N, C, H, W), shape }. */
export async function sample(model, n, seed, temperature = 1.0) {
  const d = model.specs.decoder.latent_dim;
  const [c, h, w] = model.specs.decoder.image_shape;
  const z = standardNormal(seed, n * d);
  if (temperature !== 1) {
    const t = Math.fround(temperature); // Python scales in float32: eps * np.float32(temperature)
    for (let i = 0; i < z.length; i++) z[i] = Math.fround(z[i] * t);
  }
  const data = new Float32Array(n * c * h * w);
  for (let start = 0; start < n; start += CHUNK) {
    const m = Math.min(CHUNK, n - start);
    const feed = new ort.Tensor("float32", z.subarray(start * d, (start + m) * d), [m, d]);
    const { x_hat: xHat } = await model.sessions.decoder.run({ z: feed });
    data.set(xHat.data, start * c * h * w);
  }
  return { data, shape: [n, c, h, w] };
}

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      n: { type: "string", default: "64" },
      seed: { type: "string", default: "0" },
      temperature: { type: "string", default: "1" },
      out: { type: "string", default: "grid.png" },
      threads: { type: "string", default: "0" },
      variant: { type: "string", default: "fp32" },
    },
  });
  if (positionals.length !== 1) throw new ExportError("usage: node sample.mjs EXPORT_DIR [--n 64] [--seed 0] " +
    "[--temperature 1] [--out grid.png] [--threads 0] [--variant fp32]");
  const n = Number(values.n), temperature = Number(values.temperature);
  if (!Number.isInteger(n) || n < 1 || n > 65536) throw new ExportError(`--n must be an int in [1, 65536], got ${values.n}`);
  if (!Number.isFinite(temperature) || temperature < 0) throw new ExportError(`--temperature must be >= 0, got ${values.temperature}`);
  let seed;
  try {
    seed = BigInt(values.seed);
  } catch {
    throw new ExportError(`--seed must be an int in [0, 2**64), got ${values.seed}`);
  }
  if (seed < 0n || seed >= 1n << 64n) throw new ExportError(`--seed must be an int in [0, 2**64), got ${values.seed}`);
  const started = performance.now();
  const model = await loadExport(positionals[0], { variant: values.variant, threads: Number(values.threads) });
  const { data, shape } = await sample(model, n, seed, temperature);
  writeFileSync(values.out, encodePng(makeGrid(data, shape)));
  const ms = Math.round(performance.now() - started);
  console.log(`wrote ${values.out} (${n} samples, seed ${seed}, temperature ${temperature}, ${ms} ms with loading)`);
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    console.error(e instanceof ExportError ? e.message : e.stack);
    process.exit(1);
  });
}
