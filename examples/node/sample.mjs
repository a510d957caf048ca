#!/usr/bin/env node
/**
 * Generate a PNG grid from an EdgeVAE export with onnxruntime-node: the same pixels as the Python runtime.
 *
 *   cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci
 *   node sample.mjs ../../exports/shapes --n 64 --seed 0 --temperature 1 --out grid.png [--label CLASS]
 *
 * equals `edgevae sample exports/shapes --n 64 --seed 0 --out grid.png` pixel for pixel
 * (tests/test_node.py checks it). Like runtime.load it checks each graph's sha256 against manifest.json
 * and that the encoder, decoder and manifest share one pair_id, read from the `edgevae.spec` metadata.
 * The checks, the noise and the grid layout live in ../js/, shared with the browser page (../web/).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";

import { checkSignature, ExportError, readExport } from "../js/export.mjs";
import { decode, priorLatents } from "../js/generate.mjs";
import { makeGrid } from "../js/grid.mjs";
import { encodePng } from "./png.mjs";

/** Sessions and spec of an export directory, after the same checks as runtime.load (../js/export.mjs). */
export async function loadExport(dir, { variant = "fp32", threads = 0 } = {}) {
  const ex = await readExport((name) => readFileSync(join(dir, name)), dir, { variant });
  const options = {
    executionProviders: ["cpu"],
    intraOpNumThreads: threads, // 0: onnxruntime picks
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    extra: { session: { intra_op: { allow_spinning: "0" } } }, // idle threads sleep instead of spinning
  };
  const model = { manifest: ex.manifest, specs: ex.specs, sessions: {} };
  for (const role of ["encoder", "decoder"]) {
    let session;
    try {
      session = await ort.InferenceSession.create(ex.bytes[role], options);
    } catch (e) {
      throw new ExportError(`${ex.files[role]}: onnxruntime cannot load it (${String(e.message).split("\n")[0]})`);
    }
    checkSignature(session, role, ex.specs[role], ex.files[role]);
    model.sessions[role] = session;
  }
  return model;
}

/** Decode z = temperature * eps(seed) for n images: { data: Float32Array (N, C, H, W), shape }. */
export async function sample(model, n, seed, temperature = 1.0, label = null) {
  const spec = model.specs.decoder;
  return decode(ort, model.sessions.decoder, spec, priorLatents(spec, n, seed, temperature), n, label);
}

/** A class index from --label (an index or a class name) for a conditional model; null otherwise. */
function classIndex(spec, label) {
  if (!spec.classes) {
    if (label !== undefined) throw new ExportError("--label: this model is unconditional; it takes no labels");
    return null;
  }
  const index = /^\d+$/.test(label ?? "") ? Number(label) : spec.classes.indexOf(label);
  if (!(index >= 0 && index < spec.classes.length)) {
    throw new ExportError(`--label: this model is conditional: pass a class name or index of ` +
      `${spec.classes.join(", ")}, got ${label}`);
  }
  return index;
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
      label: { type: "string" },
    },
  });
  if (positionals.length !== 1) throw new ExportError("usage: node sample.mjs EXPORT_DIR [--n 64] [--seed 0] " +
    "[--temperature 1] [--out grid.png] [--threads 0] [--variant fp32] [--label CLASS]");
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
  const label = classIndex(model.specs.decoder, values.label);
  const { data, shape } = await sample(model, n, seed, temperature, label);
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
