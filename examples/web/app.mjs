/**
 * The page (index.html): open an export, draw a grid from a seed and a temperature, edit the first image's
 * latent with sliders, interpolate between two seeds, pick a class for conditional models.
 *
 * Decodes run one at a time through a small queue keyed by kind ("grid", "image", "strip"): a new request
 * replaces a waiting one of its kind, so a slider dragged over 50 positions costs a few decodes, the last
 * one at the newest position. Every failure is one line in #status. For tests and scripts the page
 * reports on <body data-state>: "loading", "busy", "ready" or "error"; each canvas's data-shown holds
 * the parameters of the picture it shows.
 */
import { ExportError, latentShape, latentSize } from "../js/export.mjs";
import { priorLatents, priorRefusal } from "../js/generate.mjs";
import { clearCanvas, drawImages } from "./draw.mjs";
import { heldNumbers, interpolate, METHODS } from "./latent.mjs";
import { firstLine, openModel } from "./model.mjs";

const SLIDERS = 8; // the first (flattened) latent elements get a slider each
const SPAN = 3; // sliders cover [-3, 3]: three standard deviations of the prior N(0, I)
const MAX_IMAGES = 1024;
const $ = (id) => document.getElementById(id);

let model = null; // what openModel returned
let z = null; // Float32Array: the latent the sliders edit
const queue = new Map(); // kind -> async job; Map keeps the order kinds were first requested in
let running = false;
let failed = false; // a job failed since the last user action
let loading = false;
let loads = 0; // the newest load() wins

function setStatus(text, error = false) {
  const line = String(text).split("\n")[0];
  $("status").textContent = line;
  $("status").title = line;
  $("status").classList.toggle("error", error);
}

function fail(error) {
  if (!(error instanceof ExportError)) console.error(error); // a bug: keep the stack in the console
  failed = true;
  setStatus(firstLine(error), true);
  document.body.dataset.state = "error";
}

/** Queue job(model) -> draw(); the newest request of a kind replaces a waiting one. */
function submit(kind, job) {
  const owner = model;
  queue.set(kind, async () => {
    const draw = owner === model ? await job(owner) : null;
    if (draw && owner === model) draw(); // not when another export was opened meanwhile
  });
  document.body.dataset.state = "busy";
  if (!running) pump();
}

async function pump() {
  running = true;
  while (queue.size) {
    const [kind, job] = queue.entries().next().value;
    queue.delete(kind);
    try {
      await job();
    } catch (e) {
      fail(e);
    }
  }
  running = false;
  if (!loading) document.body.dataset.state = failed ? "error" : "ready";
}

function parseSeed(text, what) {
  const value = String(text).trim();
  if (/^\d+$/.test(value) && BigInt(value) < 1n << 64n) return BigInt(value);
  throw new ExportError(`${what} must be an integer in [0, 2**64), got "${value}"`);
}

function parseNumber(text, what, lo, hi, integer = false) {
  const value = Number(String(text).trim());
  if (String(text).trim() === "" || !Number.isFinite(value) || value < lo || value > hi ||
      (integer && !Number.isInteger(value))) {
    throw new ExportError(`${what} must be ${integer ? "an integer" : "a number"} in [${lo}, ${hi}], got "${text}"`);
  }
  return value;
}

/** The controls' values, checked: { seed, n, temperature, label }. */
function readControls() {
  return {
    seed: parseSeed($("seed").value, "seed"),
    n: parseNumber($("n").value, "images", 1, MAX_IMAGES, true),
    temperature: parseNumber($("temperature").value, "temperature", 0, 100),
    label: model.spec.classes ? Number($("class").value) : null,
  };
}

/** "z3" for a flat latent, "z[c,y,x]" for a spatial one (the slider edits that flattened element). */
function elementName(i, shape) {
  if (shape.length === 1) return `z${i}`;
  const [, h, w] = shape;
  return `z[${Math.floor(i / (h * w))},${Math.floor(i / w) % h},${i % w}]`;
}

function buildControls(spec) {
  const sliders = $("sliders");
  sliders.replaceChildren();
  const count = Math.min(SLIDERS, latentSize(spec));
  for (let i = 0; i < count; i++) {
    const label = document.createElement("label");
    const input = Object.assign(document.createElement("input"),
      { type: "range", min: -SPAN, max: SPAN, step: 0.05, value: 0, id: `slider${i}` });
    const output = document.createElement("output");
    label.append(elementName(i, latentShape(spec)), input, output);
    input.addEventListener("input", () => {
      output.value = Number(input.value).toFixed(2);
      if (!z) return;
      z[i] = Math.fround(Number(input.value));
      decodeImage();
    });
    sliders.append(label);
  }
  const picker = $("class");
  picker.replaceChildren(...(spec.classes ?? []).map((name, i) => new Option(name, String(i))));
  $("class-label").hidden = !spec.classes;
  const label = new URLSearchParams(location.search).get("label");
  if (spec.classes && label !== null && Number(label) < spec.classes.length) picker.value = label;
}

function describe(spec) {
  const [c, h, w] = spec.image_shape;
  const mode = spec.image_mode ?? { 1: "L", 3: "RGB", 4: "RGBA" }[c];
  const classes = spec.classes ? `, ${spec.classes.length} classes` : "";
  return `${spec.model}, latent [${latentShape(spec).join(", ")}], images ${c}×${h}×${w} ${mode}${classes}, ` +
    `schema ${spec.schema_version}, pair ${String(spec.pair_id).slice(0, 8)}`;
}

/** Redraw everything that depends on seed, temperature and class: the grid, the sliders' image, the strip. */
function generate() {
  failed = false;
  let p;
  try {
    if (!model) throw new ExportError("no export is loaded");
    const refusal = priorRefusal(model.spec);
    if (refusal) throw new ExportError(`cannot sample: ${refusal}`);
    p = readControls();
  } catch (e) {
    fail(e);
    return;
  }
  setStatus(describe(model.spec));
  const shown = { seed: String(p.seed), n: p.n, temperature: p.temperature, label: p.label };
  submit("grid", async (m) => {
    const started = performance.now();
    const images = await m.decode(priorLatents(m.spec, p.n, p.seed, p.temperature), p.n, p.label);
    const ms = Math.round(performance.now() - started);
    return () => {
      drawImages($("grid"), images, { maxWidth: 520 });
      $("grid").dataset.shown = JSON.stringify(shown);
      $("grid-caption").textContent = `${p.n} samples, seed ${p.seed}, temperature ${p.temperature}: ${ms} ms`;
    };
  });
  z = priorLatents(model.spec, 1, p.seed, p.temperature); // the grid's first image: one Philox block or so
  [...$("sliders").querySelectorAll("input")].forEach((input, i) => {
    input.value = Math.min(SPAN, Math.max(-SPAN, z[i]));
    input.nextElementSibling.value = z[i].toFixed(2);
  });
  decodeImage();
  runInterpolation();
}

function decodeImage() {
  const latent = Float32Array.from(z), label = model.spec.classes ? Number($("class").value) : null;
  submit("image", async (m) => {
    const images = await m.decode(latent, 1, label);
    return () => {
      drawImages($("image"), images, { maxWidth: 200 });
      $("image").dataset.shown = JSON.stringify({ z: Array.from(latent), label });
    };
  });
}

function runInterpolation() {
  let p;
  try {
    if (!model || priorRefusal(model.spec)) return;
    const { temperature, label } = readControls();
    const steps = parseNumber($("steps").value, "steps", 2, 32, true);
    const [a, b] = [$("seed-a").value, $("seed-b").value].map((s) => parseSeed(s, "interpolation seed"));
    p = { a, b, steps, method: METHODS.includes($("method").value) ? $("method").value : "lerp", temperature, label };
  } catch (e) {
    fail(e);
    return;
  }
  submit("strip", async (m) => {
    const ends = [p.a, p.b].map((seed) => priorLatents(m.spec, 1, seed, p.temperature));
    const path = interpolate(ends[0], ends[1], p.steps, p.method, heldNumbers(m.spec));
    const images = await m.decode(path, p.steps, p.label);
    return () => {
      drawImages($("strip"), images, { nrow: p.steps, maxWidth: 900 });
      $("strip").dataset.shown = JSON.stringify({ ...p, a: String(p.a), b: String(p.b) });
      $("strip-caption").textContent = `${p.method} from seed ${p.a} to seed ${p.b}, ${p.steps} steps`;
    };
  });
}

async function load(url) {
  model = z = null;
  failed = false;
  loading = true;
  queue.clear();
  for (const id of ["grid", "image", "strip"]) clearCanvas($(id));
  $("sliders").replaceChildren();
  document.body.dataset.state = "loading";
  setStatus(`Loading ${url}…`);
  const token = ++loads;
  let opened;
  try {
    const params = new URLSearchParams(location.search);
    const meta = document.querySelector('meta[name="edgevae-manifest-sha256"]');
    const pin = meta?.content || params.get("manifest_sha256"); // a bundled app's pin, else the URL's
    opened = await openModel(url, { variant: params.get("variant") ?? "fp32", manifestSha256: pin || null });
  } catch (e) {
    if (token === loads) {
      loading = false;
      fail(e);
    }
    return;
  }
  if (token !== loads) return;
  loading = false;
  model = opened;
  buildControls(model.spec);
  document.body.dataset.state = "ready";
  generate();
}

function saveGrid() {
  $("grid").toBlob((blob) => {
    if (!blob) return;
    const link = Object.assign(document.createElement("a"),
      { href: URL.createObjectURL(blob), download: `grid-seed${$("seed").value.trim()}.png` });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000); // after the download has started
  }, "image/png");
}

function init() {
  const params = new URLSearchParams(location.search);
  for (const id of ["n", "seed", "temperature"]) if (params.has(id)) $(id).value = params.get(id);
  $("temperature-range").value = $("temperature").value;
  $("export").value = params.get("export") ?? "/export/";
  const on = (id, event, handler) => $(id).addEventListener(event, (e) => {
    if (event === "submit") e.preventDefault();
    handler();
  });
  on("open", "submit", () => load($("export").value.trim()));
  on("sample", "submit", generate);
  on("interpolate", "submit", runInterpolation);
  on("class", "change", generate);
  on("method", "change", runInterpolation);
  on("temperature", "change", () => {
    $("temperature-range").value = $("temperature").value;
    generate();
  });
  on("temperature-range", "input", () => {
    $("temperature").value = $("temperature-range").value;
    generate();
  });
  on("save", "click", saveGrid);
  load($("export").value);
}

init();
