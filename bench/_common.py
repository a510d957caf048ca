"""Shared by the bench scripts: machine facts, timing, model preparation, and bench/RESULTS.md sections.

Each script owns one section of RESULTS.md, between `<!-- begin NAME -->` and `<!-- end NAME -->`,
and rewrites only that section, with the machine, library versions and its own command line.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
_LOAD_AT_START = os.getloadavg()[0]


def machine() -> str:
    cpu = "unknown CPU"
    flags = ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", info)[1].strip()
        have = set(re.search(r"flags\s*:\s*(.+)", info)[1].split())
        flags = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in have)
    except (OSError, TypeError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.system()} {platform.machine()}" + \
        (f"; CPU flags: {flags}" if flags else "")


def versions() -> str:
    names = ("numpy", "onnxruntime", "onnx", "torch")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}, " + ", ".join(found)


def median_time(fn, min_repeats: int = 20, min_seconds: float = 1.0, warmup: int = 3) -> float:
    """Median seconds per call over at least min_repeats calls and min_seconds of calls."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run_child(args: list[str], env: dict | None = None) -> dict:
    """Run `python bench/<script> --child ...` in a fresh process; it prints one JSON object last."""
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare_export(workdir: Path, arch: str, data: str = "shapes", epochs: int = 1, latent_dim: int = 16,
                   extra: tuple = (), name: str | None = None) -> tuple[Path, Path]:
    """Train a small real model with the project's CLI and export it with int8 and fp16 variants.

    The trained run is kept in workdir/run-NAME (NAME defaults to arch) and reused by later runs; the export
    (workdir/export-NAME) is made again every time, so a bench measures what today's exporter writes.
    """
    run, exp = workdir / f"run-{name or arch}", workdir / f"export-{name or arch}"
    if not (run / "checkpoint.pt").exists():
        subprocess.run([sys.executable, "-m", "edgevae", "train", "--data", data, "--arch", arch,
                        "--epochs", str(epochs), "--latent-dim", str(latent_dim), "--num-train", "4000",
                        "--out", str(run), *extra],
                       cwd=ROOT, check=True, capture_output=True)
    # exported every time (seconds for these small models): a kept export could come from an older exporter
    subprocess.run([sys.executable, "-m", "edgevae", "export", str(run), "--out", str(exp), "--int8", "--fp16",
                    "--force"], cwd=ROOT, check=True, capture_output=True)
    return run, exp


# The models the speed benches time, by name: the README demo's MLP (784-512-256-8, 30 epochs on shapes),
# the conv model (stride-2 convs, transposed-conv decoder) and the residual family (SiLU; with GroupNorm, --norm
# group, as when RESULTS.md's figures for it were measured, before --norm none became the default).
# Speed depends on the layers, not the weights.
MODELS = {
    "mlp": {"arch": "mlp", "latent_dim": 8, "epochs": 30},
    "conv": {"arch": "conv", "latent_dim": 16, "epochs": 3},
    "resnet": {"arch": "resnet", "latent_dim": 16, "epochs": 2, "extra": ("--norm", "group")},  # nearest upsampling
}


def prepare_model(workdir: Path, name: str) -> tuple[Path, Path]:
    """(run directory, export directory) of one of MODELS, trained and exported on first use."""
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return prepare_export(workdir, name=f"bench-{name}", **MODELS[name])


def interleaved(cases: dict, min_rounds: int = 5, min_seconds: float = 1.0, block: int = 10) -> dict[str, float]:
    """Median seconds per call of each case, timed side by side.

    Every round runs each case in turn for `block` consecutive calls, so whatever else runs on the
    machine slows all cases alike, while each case is timed in its steady state, as a loop calling it
    sees it: the first call of a block (whose weights another case has just pushed out of the CPU's
    caches) is not counted.
    """
    times: dict[str, list[float]] = {name: [] for name in cases}
    start, rounds = time.perf_counter(), 0
    while rounds < min_rounds or time.perf_counter() - start < min_seconds:
        for name, fn in cases.items():
            fn()
            for _ in range(block):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        rounds += 1
    return {name: float(np.median(t)) for name, t in times.items()}


def add_results_flag(parser) -> None:
    """--results: the Markdown file a bench writes its section to (default bench/RESULTS.md)."""
    parser.add_argument("--results", type=Path, default=RESULTS, help="file to write this bench's section to "
                        "(default bench/RESULTS.md)")


def write_section(name: str, title: str, body: str, results: Path = RESULTS) -> None:
    """Replace (or append) this script's section of `results` (bench/RESULTS.md)."""
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = f"{_LOAD_AT_START:.2f} at start, {os.getloadavg()[0]:.2f} at the end"
    section = (f"<!-- begin {name} -->\n## {title}\n\n`{command}` — {stamp}\n\n"
               f"Machine: {machine()}  \nVersions: {versions()}  \n"
               f"Load average (1 min): {load} (other work on the machine slows both sides of a comparison)\n\n"
               f"{body.strip()}\n<!-- end {name} -->")
    text = results.read_text() if results.exists() else (
        "# EdgeVAE benchmarks\n\nEvery figure below was written by the bench script named in its section; "
        "rerun it to refresh that section.\n")
    pattern = re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    results.write_text(text)
    print(f"wrote {os.path.relpath(results, ROOT)} (section '{name}')")


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; also fine to print."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
