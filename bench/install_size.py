"""Install size: the runtime-only wheel against the same wheel with the train extra, each in a fresh virtualenv.

    python bench/install_size.py

Builds the wheel (`python -m build --wheel`), installs it into one virtualenv with the base dependencies
(numpy, onnxruntime, Pillow) and into another with `[train]` (torch first, the CPU build the Makefile pins),
and measures each site-packages on disk, leaving out what every virtualenv starts with (pip, setuptools).
Writes its section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C

BOOTSTRAP = ("pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth")


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python*/site-packages"))


def size_by_package(venv: Path) -> dict[str, int]:
    """Bytes per top-level entry of site-packages (dist-info folders counted with their package's name)."""
    sizes: dict[str, int] = {}
    for entry in site_packages(venv).iterdir():
        if entry.name.startswith(BOOTSTRAP):
            continue
        name = re.sub(r"-[^-]+\.dist-info$", "", entry.name).lower()
        files = [entry] if entry.is_file() else [f for f in entry.rglob("*") if f.is_file() and not f.is_symlink()]
        sizes[name] = sizes.get(name, 0) + sum(f.stat().st_size for f in files)
    return sizes


def install(venv: Path, *requirements: str) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for group in requirements:  # in order: torch's CPU build before anything can ask for torch
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *group.split()], check=True)


def torch_pin() -> str:
    text = (C.ROOT / "pyproject.toml").read_text()
    return re.search(r'"torch>=([0-9.]+),', text)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_results_flag(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp), str(C.ROOT)],
                       check=True, capture_output=True)
        wheel = next(tmp.glob("edgevae-*.whl"))
        install(tmp / "base", str(wheel))
        install(tmp / "train", f"torch=={torch_pin()}", f"{wheel}[train]")
        base, train = size_by_package(tmp / "base"), size_by_package(tmp / "train")
    mib = 2**20
    rows = [["runtime only: `pip install edgevae`", f"{sum(base.values()) / mib:,.0f}",
             ", ".join(f"{k} {v / mib:.0f}" for k, v in sorted(base.items(), key=lambda kv: -kv[1])[:5])],
            ["with the train extra: `pip install 'edgevae[train]'`", f"{sum(train.values()) / mib:,.0f}",
             ", ".join(f"{k} {v / mib:.0f}" for k, v in sorted(train.items(), key=lambda kv: -kv[1])[:5])]]
    text = C.table(["install", "site-packages (MiB)", "largest packages (MiB)"], rows)
    ratio = sum(train.values()) / sum(base.values())
    text += (f"\n\nThe train extra is {ratio:.1f}x the runtime-only install (torch {torch_pin()} CPU build; pip and "
             f"setuptools, present in every virtualenv, are left out of both).")
    print(text)
    C.write_section("install_size", "Install size: runtime only vs the train extra", text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
