/**
 * Float images to 8-bit pixels and grids, laid out exactly as runtime.make_grid / save_grid do.
 *
 *   import { makeGrid } from "../js/grid.mjs";
 *   const grid = makeGrid(xHat, [n, c, h, w]);   // { width, height, channels: c, pixels: Uint8Array }
 *
 * Layout (runtime/_images.py): ceil(sqrt(n)) images per row, 2 px of zeros around and between them
 * (black; transparent for RGBA), pixel = round-half-to-even(float32(clip(x, 0, 1) * 255)), channels
 * interleaved: 1 (grey), 3 (RGB) or 4 (RGBA).
 */

/** numpy's rint(clip(x, 0, 1) * 255) with the product in float32: round half to even. */
export function toUint8(x) {
  const v = Math.fround(Math.min(Math.max(x, 0), 1) * 255);
  const floor = Math.floor(v);
  const diff = v - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Tile float images (flat Float32Array in (N, C, H, W) order) into an interleaved uint8 grid. */
export function makeGrid(data, [n, c, h, w], { nrow = Math.ceil(Math.sqrt(n)), padding = 2 } = {}) {
  if (![1, 3, 4].includes(c)) throw new RangeError(`images must have 1, 3 or 4 channels, got ${c}`);
  const rows = Math.ceil(n / nrow);
  const width = nrow * (w + padding) + padding;
  const height = rows * (h + padding) + padding;
  const pixels = new Uint8Array(width * height * c); // zeros: the padding
  for (let i = 0; i < n; i++) {
    const top = padding + Math.floor(i / nrow) * (h + padding);
    const left = padding + (i % nrow) * (w + padding);
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          pixels[((top + y) * width + left + x) * c + ch] = toUint8(data[((i * c + ch) * h + y) * w + x]);
        }
      }
    }
  }
  return { width, height, channels: c, pixels };
}
