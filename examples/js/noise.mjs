/**
 * The EdgeVAE portable noise in JavaScript: Philox4x32-10 + Box-Muller, bit for bit as runtime/noise.py.
 * One implementation for every JavaScript host here: examples/node (Node.js) and examples/web (the browser)
 * import this file; it uses nothing but the language, so it runs in both.
 *
 *   import { standardNormal } from "../js/noise.mjs";
 *   const eps = standardNormal(0n, 8);   // Float32Array(8), the same as runtime.standard_normal(0, (8,))
 *
 * Steps (README "The noise generator"): key = (seed mod 2^32, seed div 2^32); block b uses counter
 * (b mod 2^32, b div 2^32, 0, 0); each of the four output words w becomes u = (w + 0.5) / 2^32 in float64;
 * Box-Muller on (u0, u1) and (u2, u3); the first `count` normals, rounded to float32 (Math.fround).
 * tests/test_node.py checks it against numpy's float32 bit patterns (tests/test_noise.py's reference vectors).
 */

const M0 = 0xd2511f53; // Philox multipliers
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9; // Weyl key increments
const W1 = 0xbb67ae85;
const TWO32 = 4294967296;

/** Exact 64-bit product of two uint32 as [hi, lo] uint32: 16-bit halves keep every partial sum below 2^53. */
export function mulhilo32(a, b) {
  const aLo = a & 0xffff, aHi = a >>> 16, bLo = b & 0xffff, bHi = b >>> 16;
  const lh = aLo * bHi, hl = aHi * bLo;
  const mid = ((aLo * bLo) >>> 16) + (lh & 0xffff) + (hl & 0xffff); // carries into the high word
  const hi = (aHi * bHi + Math.floor(lh / 65536) + Math.floor(hl / 65536) + Math.floor(mid / 65536)) >>> 0;
  return [hi, Math.imul(a, b) >>> 0];
}

/** Philox4x32-10 of one counter [c0, c1, c2, c3] under key [k0, k1] (uint32 numbers): four uint32 words. */
export function philox4x32(counter, key) {
  let [c0, c1, c2, c3] = counter.map((v) => v >>> 0);
  let [k0, k1] = key.map((v) => v >>> 0);
  for (let round = 0; round < 10; round++) {
    const [hi0, lo0] = mulhilo32(M0, c0);
    const [hi1, lo1] = mulhilo32(M1, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** `count` standard normals for `seed` (a BigInt or integer Number in [0, 2^64)) as a Float32Array. */
export function standardNormal(seed, count) {
  const s = BigInt(seed);
  if (s < 0n || s >= 1n << 64n) throw new RangeError(`seed must be in [0, 2**64), got ${seed}`);
  const key = [Number(s & 0xffffffffn), Number(s >> 32n)];
  const out = new Float32Array(count);
  for (let block = 0, i = 0; i < count; block++) {
    const words = philox4x32([block % TWO32, Math.floor(block / TWO32), 0, 0], key);
    const u = words.map((w) => (w + 0.5) / TWO32); // float64 in (0, 1): log(u) is finite
    for (const [a, b] of [[u[0], u[1]], [u[2], u[3]]]) {
      const r = Math.sqrt(-2.0 * Math.log(a));
      const t = 2.0 * Math.PI * b;
      if (i < count) out[i++] = Math.fround(r * Math.cos(t)); // a Float32Array store rounds the same way
      if (i < count) out[i++] = Math.fround(r * Math.sin(t));
    }
  }
  return out;
}

/** The float32 bit patterns of an array, as unsigned integers. */
export function float32Bits(array) {
  return Array.from(new Uint32Array(Float32Array.from(array).buffer));
}
