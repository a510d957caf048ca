"""Shared fixtures: one tiny model trained and exported once per session (about 10 s on 2 cores)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The tiny model: small enough to train in seconds, big enough that every code path is real.
TINY = dict(data="shapes", num_train=512, num_test=128, image_size=28, hidden=(64,), latent_dim=4,
            epochs=2, batch_size=64, seed=0)


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    from edgevae.train.config import TrainConfig
    from edgevae.train.loop import train

    return train(TrainConfig(out=str(tmp_path_factory.mktemp("run") / "tiny"), **TINY))


@pytest.fixture(scope="session")
def export_dir(run_dir, tmp_path_factory) -> Path:
    from edgevae.export.build import export

    return export(run_dir, tmp_path_factory.mktemp("export") / "tiny", log=lambda *_: None)


# Every other model kind, trained tiny and exported with its int8 and fp16 variants, on demand.
KINDS = {
    "conv": dict(arch="conv", conv_channels=(8, 16)),
    "conditional": dict(conditional=True),
    "conv-conditional": dict(arch="conv", conv_channels=(8, 16), conditional=True),
    "ae": dict(model="ae"),
    "gaussian": dict(likelihood="gaussian"),
    "continuous-bernoulli": dict(likelihood="continuous-bernoulli"),
}


@pytest.fixture(scope="session")
def kind_export(tmp_path_factory):
    """kind_export(name) -> (run_dir, export_dir) for a KINDS entry; each is built once per session."""
    from edgevae.export.build import export
    from edgevae.train.config import TrainConfig
    from edgevae.train.loop import train

    built = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in built:
            base = tmp_path_factory.mktemp(name)
            run = train(TrainConfig(out=str(base / "run"), **{**TINY, **KINDS[name]}))
            built[name] = run, export(run, base / "export", variants_=("int8", "fp16"), log=lambda *_: None)
        return built[name]

    return get


@pytest.fixture(scope="session")
def export_dir_2d(tmp_path_factory) -> Path:
    """A tiny model with a 2-D latent, for the manifold grid."""
    from edgevae.export.build import export
    from edgevae.train.config import TrainConfig
    from edgevae.train.loop import train

    run = train(TrainConfig(out=str(tmp_path_factory.mktemp("run2d") / "tiny"), **{**TINY, "latent_dim": 2}))
    return export(run, tmp_path_factory.mktemp("export2d") / "tiny", log=lambda *_: None)


@pytest.fixture(scope="session")
def variants_dir(run_dir, tmp_path_factory):
    """The tiny model exported with its int8 and fp16 variants; (directory, lines the export printed)."""
    from edgevae.export.build import export

    lines = []
    out = export(run_dir, tmp_path_factory.mktemp("variants") / "tiny", variants_=("int8", "fp16"), log=lines.append)
    return out, lines


@pytest.fixture(scope="session")
def trained(run_dir):
    """(vae, checkpoint) as export reads them."""
    from edgevae.export.build import load_run

    return load_run(run_dir)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m edgevae ARGS` (the installed package, as a user runs it) in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "edgevae", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout)


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine that lacks what a test needs; fail in CI (CI=true), which must have it all."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs this, so a missing tool is a failure, not a skip)",
                    pytrace=False)
    pytest.skip(reason)


def require_tools(*tools: str, hint: str) -> None:
    """skip_or_fail unless every command in `tools` is on PATH; `hint` says how to install them."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"needs {', '.join(missing)} on PATH ({hint})")
