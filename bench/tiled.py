"""Tiled decoding: Stable Diffusion 1.x's VAE decoding a 512x512 image (64x64x4 latent), whole vs in tiles.

    python bench/tiled.py [--tiles 16,32,8] [--low-memory 16] [--blended 16:4] [--workdir bench/.work]

The model is diffusers' AutoencoderKL built from SD 1.x's VAE configuration (block_out_channels
128,256,512,512, layers_per_block 2, latent_channels 4, norm_num_groups 32, sample_size 512) with random
weights (seeded; no download), saved with save_pretrained and exported with `edgevae export --diffusers`,
which writes the tiled decoder beside decoder.onnx (export/tiled.py). Each decode runs in a fresh child
process through the runtime: untiled is `decode(z)` (decoder.onnx), tiled is `decode(z, tile=T)` (the
tiled decoder's units, runtime/_units.py; "low_memory": load(..., low_memory=True), each unit's session
built as it runs and let go after), and "blended" rows run decoder.onnx on overlapping tiles
with per-tile statistics (runtime/_tiles.py, what exports without a tiled decoder get). Sessions are
created on first use, so each child first decodes a 1x1-cell latent the same way (creating the
sessions it needs; the graphs' h and w are dynamic); its peak memory is the child's VmHWM (resident
high-water mark) over all of it, and, after resetting the high-water mark once the sessions exist
(/proc/self/clear_refs), the decode's own peak over the resident size then ("decode working"); its time
is the decode call alone.

Making the comparison meaningful with random weights: the latent is not white noise but the encoder's mu
of a 512x512 test picture (smooth colour fields, a disc, a bar: statistics that change across the image,
the hard case for per-tile GroupNorm), and the untiled image is checked not to be degenerate (its
standard deviation in [0, 1] after the [-1, 1] fold, and the fraction of pixels the clamp saturates, are
reported). Differences are max |tiled - untiled| of the images in [0, 1], also in 8-bit levels.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # noqa: E402
import numpy as np

SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
              latent_channels=4, norm_num_groups=32, sample_size=512)
GOAL_MEMORY, GOAL_DIFF = 4.0, 2 / 255
CHILD = """
import json, re, sys, time
import numpy as np, edgevae
from edgevae import _tiles
export, z_path, out_path, tile, overlap, low = sys.argv[1:7]
tile, overlap = int(tile), int(overlap)
def status(field):
    return int(re.search(field + r':\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024
# the untiled row needs more than the runtime's default bounds on one run (256 MiB of tensors, 2.5e10
# multiply-adds per image); raised for every row alike
model = edgevae.load(export, threads=2, low_memory=low == "1", max_run_bytes=16 << 30, max_image_macs=10**14)
if overlap:  # blended: decoder.onnx on overlapping tiles, each with its own statistics
    def decode(z):
        return _tiles.decode(lambda part: model._decoder.run(["x_hat"], {"z": part})[0], z, 8, 3, tile, overlap)
else:
    def decode(z):
        return model.decode(z, tile=tile or None)
z = np.load(z_path)
small = z[:, :, :1, :1]  # creates the sessions this way of decoding uses (decode() wants the full latent shape)
decode(small) if overlap else model._decode(np.ascontiguousarray(small), None, (tile, 0) if tile else None)
loaded, load_peak = status("VmRSS"), status("VmHWM")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS: the peak below is the decode's
start = time.perf_counter()
x = decode(z)
seconds = time.perf_counter() - start
np.save(out_path, x)
print(json.dumps({"seconds": seconds, "peak": max(status("VmHWM"), load_peak), "decode_peak": status("VmHWM"),
                  "loaded": loaded}))
"""


def prepare(workdir: Path) -> Path:
    """The SD-1.x-configured AutoencoderKL (seeded random weights) saved and exported; returns the export."""
    folder, export = workdir / "sd-vae", workdir / "export-sd-vae"
    if not (folder / "config.json").exists():
        import torch
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        AutoencoderKL(**SD_VAE).save_pretrained(folder)
    if not (export / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "edgevae", "export", "--diffusers", str(folder), "--out", str(export),
                        "--force"], cwd=C.ROOT, check=True)
    return export


def latent(export: Path, workdir: Path) -> Path:
    """mu of a 512x512 test picture, encoded in tiles (the comparison is of decoding), saved as z.npy."""
    import edgevae
    from edgevae.export.checks import reference_images

    path = workdir / "sd-z.npy"
    if not path.exists():
        x = reference_images(1, (3, 512, 512), seed=7).numpy().astype(np.float32) / 255
        model = edgevae.load(export, tile=32, overlap=8, max_run_bytes=16 << 30, max_image_macs=10**14)
        np.save(path, model.encode_mean(x))
    return path


def decode(export: Path, z: Path, out: Path, tile: int, overlap: int, low_memory: bool) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(export), str(z), str(out), str(tile), str(overlap),
                             str(int(low_memory))],
                            cwd=C.ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", default="16,32,8",
                        help="tile sides in latent cells (8 px each) for the tiled decoder, comma-separated "
                             "(default 16,32,8)")
    parser.add_argument("--low-memory", default="16",
                        help="tile sides for the tiled decoder with low_memory=True (one unit's weights at a "
                             "time), comma-separated (default 16; empty for none)")
    parser.add_argument("--blended", default="16:4",
                        help="tile:overlap pairs for decoder.onnx on blended tiles with per-tile statistics "
                             "(default 16:4; empty for none)")
    parser.add_argument("--workdir", default=str(C.ROOT / "bench" / ".work"), help="where the model is built")
    C.add_results_flag(parser)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    export = prepare(workdir)
    z = latent(export, workdir)
    runs = {"untiled": (0, 0, False)}
    runs |= {f"tiled decoder, tile {t}": (int(t), 0, False) for t in args.tiles.split(",") if t}
    runs |= {f"tiled decoder, tile {t}, low_memory": (int(t), 0, True) for t in args.low_memory.split(",") if t}
    runs |= {f"blended, tile {t}, overlap {o}": (int(t), int(o), False)
             for t, o in (p.split(":") for p in args.blended.split(",") if p)}
    measured = {}
    for name, (tile, overlap, low) in runs.items():
        out = workdir / f"sd-x-{tile}-{overlap}-{int(low)}.npy"
        start = time.perf_counter()
        measured[name] = {**decode(export, z, out, tile, overlap, low), "image": np.load(out)}
        print(f"{name}: {measured[name]['seconds']:.1f} s decode, peak {measured[name]['peak'] / 2**20:.0f} MiB, "
              f"{(measured[name]['decode_peak'] - measured[name]['loaded']) / 2**20:.0f} MiB over the loaded model "
              f"({time.perf_counter() - start:.0f} s with the process)")
    whole = measured["untiled"]
    image = whole["image"]
    saturated = float(np.mean((image <= 0) | (image >= 1)))
    rows, verdicts = [], []
    for name, m in measured.items():
        diff = float(np.abs(m["image"] - image).max())
        ratio = whole["peak"] / m["peak"]
        work = m["decode_peak"] - m["loaded"]
        work_ratio = (whole["decode_peak"] - whole["loaded"]) / work
        rows.append([name, f"{m['peak'] / 2**20:.0f}", f"{ratio:.2f}x", f"{m['loaded'] / 2**20:.0f}",
                     f"{work / 2**20:.0f}", f"{work_ratio:.1f}x", f"{m['seconds']:.1f}",
                     f"{diff:.4f} ({diff * 255:.2f}/255)", f"{float(np.abs(m['image'] - image).mean()) * 255:.3f}"])
        if name != "untiled":
            ok = ratio >= GOAL_MEMORY and diff <= GOAL_DIFF
            verdicts.append(f"- {name}: {ratio:.2f}x less peak process memory (goal >= {GOAL_MEMORY:g}x; the "
                            f"decode's own working memory {work_ratio:.1f}x less), max |diff| {diff * 255:.2f}/255 "
                            f"(goal <= 2/255): {'met' if ok else 'MISSED'}")
    text = (C.table(["decode", "peak RSS MiB", "less peak", "RSS with sessions MiB", "decode working MiB",
                     "less working", "decode s", "max |diff| vs untiled", "mean |diff| (/255)"], rows)
            + f"\n\nUntiled image (not degenerate): mean {image.mean():.3f}, std {image.std():.3f} in [0, 1], "
              f"{saturated:.2%} of values saturated by the clamp. Latent: mu of a 512x512 test picture, "
              f"std {float(np.load(z).std()):.3f}.\n\n" + "\n".join(verdicts))
    print(text)
    C.write_section("tiled", "Tiled decoding: Stable Diffusion 1.x's VAE configuration, 512x512", text, args.results)


if __name__ == "__main__":
    main()
