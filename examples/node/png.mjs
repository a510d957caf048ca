/**
 * Image grids and a minimal PNG encoder on node:zlib, laid out exactly as runtime.save_grid does.
 *
 *   import { makeGrid, encodePng } from "./png.mjs";
 *   const grid = makeGrid(xHat, [n, c, h, w]);          // { width, height, channels, pixels: Uint8Array }
 *   fs.writeFileSync("grid.png", encodePng(grid));
 *
 * Layout (runtime/_images.py): ceil(sqrt(n)) images per row, 2 px of black padding around and between
 * them, pixel = round-half-to-even(float32(clip(x, 0, 1) * 255)), 8-bit grayscale (C = 1) or RGB (C = 3).
 */
import { deflateSync } from "node:zlib";

/** numpy's rint: round half to even, for the float32 product clip(x, 0, 1) * 255. */
function toUint8(x) {
  const v = Math.fround(Math.min(Math.max(x, 0), 1) * 255); // numpy computes this product in float32
  const floor = Math.floor(v);
  const diff = v - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Tile float images (flat Float32Array in (N, C, H, W) order) into an interleaved uint8 grid. */
export function makeGrid(data, [n, c, h, w], { nrow = Math.ceil(Math.sqrt(n)), padding = 2 } = {}) {
  if (c !== 1 && c !== 3) throw new RangeError(`images must have 1 or 3 channels, got ${c}`);
  const rows = Math.ceil(n / nrow);
  const width = nrow * (w + padding) + padding;
  const height = rows * (h + padding) + padding;
  const pixels = new Uint8Array(width * height * c); // zeros: black padding
  for (let i = 0; i < n; i++) {
    const top = padding + Math.floor(i / nrow) * (h + padding);
    const left = padding + (i % nrow) * (w + padding);
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const value = data[((i * c + ch) * h + y) * w + x];
          pixels[((top + y) * width + left + x) * c + ch] = toUint8(value);
        }
      }
    }
  }
  return { width, height, channels: c, pixels };
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  body.copy(out, 4);
  out.writeUInt32BE(crc32(body), 8 + data.length);
  return out;
}

/** A PNG file (Buffer) for a grid from makeGrid: 8-bit, colour type 0 (grey) or 2 (RGB), filter 0 per row. */
export function encodePng({ width, height, channels, pixels }) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, channels === 1 ? 0 : 2, 0, 0, 0], 8); // bit depth, colour type, compression, filter, interlace
  const stride = width * channels;
  const raw = Buffer.alloc(height * (stride + 1)); // each scanline: filter byte 0 (None), then pixels
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk("IHDR", header), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}
