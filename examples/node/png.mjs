/**
 * A minimal PNG encoder on node:zlib for the grids of ../js/grid.mjs (laid out as runtime.save_grid does).
 *
 *   import { makeGrid } from "../js/grid.mjs";
 *   import { encodePng } from "./png.mjs";
 *   fs.writeFileSync("grid.png", encodePng(makeGrid(xHat, [n, c, h, w])));
 *
 * 8-bit grayscale (C = 1), RGB (C = 3) or RGBA (C = 4), filter 0 on every row, one IDAT chunk.
 */
import { deflateSync } from "node:zlib";

const COLOUR_TYPE = { 1: 0, 3: 2, 4: 6 }; // channels -> PNG colour type: grey, RGB, RGBA

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

/** A PNG file (Buffer) for a grid from makeGrid: 8-bit, colour type 0 (grey), 2 (RGB) or 6 (RGBA). */
export function encodePng({ width, height, channels, pixels }) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, COLOUR_TYPE[channels], 0, 0, 0], 8); // bit depth, colour type, compression, filter, interlace
  const stride = width * channels;
  const raw = Buffer.alloc(height * (stride + 1)); // each scanline: filter byte 0 (None), then pixels
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk("IHDR", header), chunk("IDAT", deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]);
}
