/**
 * The page's model: fetch an export over HTTP, check it with ../js/export.mjs, decode with onnxruntime-web.
 *
 *   const model = await openModel("/export/");           // throws ExportError, one line, on a bad export
 *   const { data, shape } = await model.decode(z, n, label);
 *
 * onnxruntime-web's WASM build comes from node_modules on this origin (no CDN): ort.wasm.min.mjs loads
 * ort-wasm-simd-threaded.{mjs,wasm} from the same folder. One thread (numThreads = 1): more would need
 * SharedArrayBuffer, which a browser grants only to cross-origin-isolated pages (COOP/COEP headers).
 * The encoder is checked (sha256, spec, pair_id) but not loaded: the page only decodes.
 */
import { checkSignature, ExportError, readExport } from "../js/export.mjs";
import { decode } from "../js/generate.mjs";

const ORT_DIST = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
let ortPromise = null;

/** The first line of an error's message, for the one-line status. */
export function firstLine(error) {
  return String(error?.message ?? error).split("\n")[0];
}

function onnxruntime() {
  ortPromise ??= import(ORT_DIST + "ort.wasm.min.mjs").then((ort) => {
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.wasmPaths = ORT_DIST;
    return ort;
  }, () => {
    ortPromise = null;
    throw new ExportError(`onnxruntime-web is not served at ${ORT_DIST}: run npm ci in examples/web`);
  });
  return ortPromise;
}

async function fetchBytes(url) {
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch (e) {
    throw new Error(`cannot fetch it: ${firstLine(e)}`);
  }
  if (!response.ok) throw new Error(`HTTP ${response.status} ${response.statusText}`.trim());
  return new Uint8Array(await response.arrayBuffer());
}

/** Check and open the export at `url` (relative to the page): { base, manifest, spec, decode }. */
export async function openModel(url, { variant = "fp32", manifestSha256 = null } = {}) {
  const base = new URL(url.endsWith("/") ? url : `${url}/`, location.href).href;
  const ex = await readExport((name) => fetchBytes(new URL(name, base)), base, { variant, manifestSha256 });
  const ort = await onnxruntime();
  const spec = ex.specs.decoder;
  let session;
  try {
    session = await ort.InferenceSession.create(ex.bytes.decoder, {
      executionProviders: ["wasm"],
      graphOptimizationLevel: "all",
    });
  } catch (e) {
    if (/no available backend/.test(firstLine(e))) { // the wasm did not load or compile: not the graph's fault
      throw new ExportError(`onnxruntime-web's WASM backend did not start from ${ORT_DIST} (${firstLine(e)})`);
    }
    throw new ExportError(`${ex.files.decoder}: onnxruntime-web cannot load it (${firstLine(e)})`);
  }
  checkSignature(session, "decoder", spec, ex.files.decoder);
  return {
    base,
    manifest: ex.manifest,
    spec,
    decode: (z, n, label = null) => decode(ort, session, spec, z, n, label),
  };
}
