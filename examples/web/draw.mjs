/**
 * Draw decoded images on a canvas: the grid of ../js/grid.mjs at one canvas pixel per image pixel,
 * enlarged by CSS (image-rendering: pixelated) to an integer scale.
 *
 *   drawImages(canvas, { data, shape }, { nrow: 8, maxWidth: 480 });
 *
 * Grey and RGB images are opaque (black padding); RGBA images keep their alpha and the canvas gets the
 * class "alpha", a checkerboard behind it (style.css). canvas.getImageData then returns exactly the
 * pixels runtime.make_grid computes for grey and RGB (tests/test_web.py compares them).
 */
import { makeGrid } from "../js/grid.mjs";

/** A makeGrid result as RGBA ImageData. */
function toImageData({ width, height, channels, pixels }) {
  const rgba = new ImageData(width, height);
  for (let p = 0, q = 0; p < width * height; p++, q += channels) {
    const o = p * 4;
    if (channels === 1) rgba.data.fill(pixels[q], o, o + 3);
    else rgba.data.set(pixels.subarray(q, q + 3), o);
    rgba.data[o + 3] = channels === 4 ? pixels[q + 3] : 255;
  }
  return rgba;
}

export function drawImages(canvas, { data, shape }, { nrow, maxWidth = 480 } = {}) {
  const grid = makeGrid(data, shape, nrow ? { nrow } : {});
  canvas.width = grid.width;
  canvas.height = grid.height;
  canvas.getContext("2d").putImageData(toImageData(grid), 0, 0);
  const scale = Math.max(1, Math.min(8, Math.floor(maxWidth / grid.width)));
  canvas.style.width = `${grid.width * scale}px`;
  canvas.style.height = `${grid.height * scale}px`;
  canvas.classList.toggle("alpha", grid.channels === 4);
}

export function clearCanvas(canvas) {
  canvas.width = canvas.height = 1;
  canvas.style.width = canvas.style.height = "0";
  delete canvas.dataset.shown;
}
