"""Cold start: a fresh process that imports the runtime, loads an export and writes a PNG of 64 samples,
against a fresh process that only runs `import torch`, and one that generates the same grid in PyTorch.

    python bench/cold_start.py [--repeats 5] [--model mlp]

Wall time is measured by the parent from process start to exit (interpreter start-up included);
peak memory is the child's VmHWM (resident high-water mark) read from /proc just before it exits.
The paths alternate run by run, so load on the machine falls on all of them alike; figures are medians.
Each child starts with an empty environment but PATH (no PYTHON* variables, no thread settings).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # noqa: E402

_PEAK = "print(__import__('re').search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])"
PATHS = {
    "runtime: import edgevae, load, sample(64), save_grid": """
import sys, edgevae
edgevae.save_grid(edgevae.load(sys.argv[1]).sample(64, seed=0), sys.argv[3])
""",
    "import torch (nothing else)": """
import torch
""",
    "python -c pass (interpreter start-up, in both)": "",
    "PyTorch: checkpoint, decode 64, PNG": """
import sys, torch
from PIL import Image
from edgevae.train.config import TrainConfig
from edgevae.train.model import build
ckpt = torch.load(sys.argv[2] + "/checkpoint.pt", map_location="cpu", weights_only=True)
vae = build(TrainConfig.from_dict(ckpt["config"]), tuple(ckpt["image_shape"]))
vae.load_state_dict(ckpt["model"])
vae.eval()
with torch.inference_mode():
    x = vae.decode(torch.randn(64, vae.latent_dim, generator=torch.Generator().manual_seed(0)))
n, c, h, w = x.shape
grid = x.view(8, 8, c, h, w).permute(0, 3, 1, 4, 2).reshape(8 * h, 8 * w, c).mul(255).round().to(torch.uint8)
Image.fromarray(grid[:, :, 0].numpy() if c == 1 else grid.numpy()).save(sys.argv[3])
""",
}
RUNTIME, IMPORT_TORCH, STARTUP, TORCH = PATHS
# The runtime path again, stage by stage: peak memory and time after each (one run, for the bound).
STAGES = """
import json, re, sys, time
peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) * 1024
out, t = [], time.perf_counter()
def stage(name):
    global t
    out.append((name, time.perf_counter() - t, peak())); t = time.perf_counter()
stage("interpreter start-up (before the script)")
import numpy; stage("import numpy")
import onnxruntime; stage("import onnxruntime")
import edgevae; stage("import edgevae (the rest)")
model = edgevae.load(sys.argv[1]); stage("load: both graphs, hashes, sessions")
images = model.sample(64, seed=0); stage("sample(64)")
edgevae.save_grid(images, sys.argv[3]); stage("save_grid (PNG)")
print(json.dumps(out))
"""


def measure(code: str, args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak resident bytes) of one fresh `python -c code args` process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code + _PEAK, *args], cwd=C.ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return seconds, int(result.stdout.split()[-1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each path (default 5)")
    parser.add_argument("--model", default="mlp", help=f"model to load, of {', '.join(C.MODELS)} (default mlp)")
    parser.add_argument("--workdir", default=str(C.ROOT / "bench" / ".work"), help="where models are trained")
    C.add_results_flag(parser)
    args = parser.parse_args()
    run, exp = C.prepare_model(Path(args.workdir), args.model)
    png = Path(args.workdir) / "cold.png"
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in PATHS}
    for _ in range(args.repeats):
        for name, code in PATHS.items():
            results[name].append(measure(code, [str(exp), str(run), str(png)]))
    med = {k: (statistics.median(s for s, _ in v), statistics.median(m for _, m in v)) for k, v in results.items()}
    rows = [[name, f"{s:.3f}", ", ".join(f"{t:.3f}" for t, _ in results[name]), f"{m / 2**20:.1f}"]
            for name, (s, m) in med.items()]
    lines = []
    lines.append(f"- interpreter start-up (site, this checkout's editable-install finder) is "
                 f"{med[STARTUP][0] * 1e3:.0f} ms and {med[STARTUP][1] / 2**20:.1f} MiB of every process here")
    for name, goal in ((IMPORT_TORCH, "goal >= 8x faster, >= 3.5x less memory"), (TORCH, "")):
        speed, memory = med[name][0] / med[RUNTIME][0], med[name][1] / med[RUNTIME][1]
        lines.append(f"- against `{name}`: the runtime is {speed:.1f}x faster and uses {memory:.1f}x less peak memory"
                     + (f" ({goal})" if goal else ""))
    stages = json.loads(subprocess.run([sys.executable, "-c", STAGES, str(exp), str(run), str(png)], cwd=C.ROOT,
                                       capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                                       check=True).stdout)
    stage_rows = [[name, "-" if i == 0 else f"{seconds * 1e3:.1f}", f"{peak / 2**20:.1f}"]
                  for i, (name, seconds, peak) in enumerate(stages)]
    text = (C.table(["process", "wall s (median)", "runs", "peak RSS MiB (median)"], rows)
            + f"\n\n{args.repeats} alternating runs of each, {args.model} model (`{exp.relative_to(C.ROOT)}`).\n\n"
            + "\n".join(lines) + "\n\nThe runtime's process stage by stage (one run; peak RSS after each stage):\n\n"
            + C.table(["stage", "ms", "peak RSS MiB"], stage_rows))
    print(text)
    C.write_section("cold_start", "Cold start: a fresh process writing 64 samples to PNG", text, args.results)


if __name__ == "__main__":
    main()
