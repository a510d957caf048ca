/**
 * Paths through latent space for the interpolation strip: runtime/_latent.py's interpolate in float64,
 * rounded to float32 at the end, so a lerp strip decodes the same latents as model.interpolate.
 *
 *   const path = interpolate(a, b, 10, "slerp");   // Float32Array(10 * a.length), a and b included
 */
export const METHODS = ["lerp", "slerp"];

/** numpy's linspace(0, 1, steps): i * (1 / (steps - 1)), the last exactly 1. */
function linspace(steps) {
  const step = 1 / (steps - 1);
  return Array.from({ length: steps }, (_, i) => (i === steps - 1 ? 1 : i * step));
}

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

/**
 * `steps` latents from a to b (both Float32Array of one image's latent), flattened row-major. `held`: numbers kept
 * at the nearer end's value (a's for t < 1/2, then b's) and left out of slerp's norms, as runtime/_latent.py does
 * for a fitted mixture's first number (heldNumbers).
 */
export function interpolate(a, b, steps, method = "lerp", held = []) {
  if (!METHODS.includes(method)) throw new RangeError(`method must be lerp or slerp, got ${method}`);
  const d = a.length, out = new Float32Array(steps * d);
  const free = Array.from({ length: d }, (_, j) => j).filter((j) => !held.includes(j));
  const na = norm(free.map((j) => a[j])), nb = norm(free.map((j) => b[j]));
  let omega = 0;
  if (method === "slerp" && na > 0 && nb > 0) {
    let cos = 0;
    for (const j of free) cos += (a[j] / na) * (b[j] / nb);
    omega = Math.acos(Math.min(1, Math.max(-1, cos)));
  }
  const spherical = Math.sin(omega) >= 1e-6; // else (anti)parallel or from the origin: a straight line
  linspace(steps).forEach((t, i) => {
    for (const j of free) {
      out[i * d + j] = spherical
        ? (Math.sin((1 - t) * omega) * a[j] / na + Math.sin(t * omega) * b[j] / nb) / Math.sin(omega) *
          ((1 - t) * na + t * nb)
        : (1 - t) * a[j] + t * b[j];
    }
    for (const j of held) out[i * d + j] = t < 0.5 ? a[j] : b[j];
  });
  return out;
}

/** The latent numbers interpolation holds: a fitted mixture's first number picks its component (runtime/_latent.py). */
export function heldNumbers(spec) {
  return spec.prior_fit?.kind === "gaussian-mixture" ? [0] : [];
}
