"""Cold start: a fresh process writes a PNG of 64 samples — the runtime against PyTorch from the checkpoint.

    python bench/cold_start.py [--repeats 7]

Wall time is measured by the parent from process start to exit (interpreter start-up included);
peak memory is the child's VmHWM (resident high-water mark) read from /proc just before it exits.
The two paths alternate, so load on the machine falls on both alike.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # noqa: E402

_PEAK = "print(__import__('re').search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
RUNTIME = """
import sys, edgevae
edgevae.save_grid(edgevae.load(sys.argv[1]).sample(64, seed=0), sys.argv[2])
""" + _PEAK
TORCH = """
import sys, torch
from PIL import Image
from edgevae.train.config import TrainConfig
from edgevae.train.model import build
ckpt = torch.load(sys.argv[1] + "/checkpoint.pt", map_location="cpu", weights_only=True)
vae = build(TrainConfig.from_dict(ckpt["config"]), tuple(ckpt["image_shape"]))
vae.load_state_dict(ckpt["model"])
vae.eval()
with torch.inference_mode():
    x = vae.decode(torch.randn(64, vae.latent_dim, generator=torch.Generator().manual_seed(0)))
n, c, h, w = x.shape
grid = x.view(8, 8, c, h, w).permute(0, 3, 1, 4, 2).reshape(8 * h, 8 * w, c).mul(255).round().to(torch.uint8)
Image.fromarray(grid[:, :, 0].numpy() if c == 1 else grid.numpy()).save(sys.argv[2])
""" + _PEAK


def measure(code: str, args: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=C.ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return seconds, int(result.stdout.split()[-1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each path (default 7)")
    parser.add_argument("--arch", default="mlp", help="model to load (default mlp)")
    parser.add_argument("--workdir", default=str(C.ROOT / "bench" / ".work"), help="where models are trained")
    args = parser.parse_args()
    run, exp = C.prepare_export(Path(args.workdir), args.arch)
    out = Path(args.workdir)
    results = {"runtime": [], "torch": []}
    for _ in range(args.repeats):
        results["runtime"].append(measure(RUNTIME, [str(exp), str(out / "cold-runtime.png")]))
        results["torch"].append(measure(TORCH, [str(run), str(out / "cold-torch.png")]))
    med = {k: (statistics.median(s for s, _ in v), statistics.median(m for _, m in v)) for k, v in results.items()}
    rows = [[name, f"{s:.3f}", f"{m / 2**20:.0f}"] for name, (s, m) in med.items()]
    speed, memory = med["torch"][0] / med["runtime"][0], med["torch"][1] / med["runtime"][1]
    text = (C.table(["path", "wall s (median)", "peak RSS MiB (median)"], rows)
            + f"\n\n- runtime is {speed:.1f}x faster (goal >= 6x) and uses {memory:.1f}x less peak memory "
              f"(goal >= 3x) than PyTorch, over {args.repeats} alternating runs of each ({args.arch} model).")
    print(text)
    C.write_section("cold_start", "Cold start: a fresh process writing 64 samples to PNG", text)


if __name__ == "__main__":
    main()
