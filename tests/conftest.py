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


COLOUR3, COLOUR4 = "<colour-rgb>", "<colour-rgba>"  # placeholders for coloured_shapes .npz files (kind_export)


def coloured_shapes(n: int, size: int, channels: int, seed: int):
    """(uint8 images (n, C, size, size), labels): the `shapes` set in colour, one hue family per class, on white
    (C = 3) or on a transparent background (C = 4, alpha = coverage); deterministic by seed."""
    import numpy as np

    from edgevae.train.data import shapes

    grey, labels = shapes(n, size, seed)
    cover = grey[:, 0].astype(np.float64) / grey.max(axis=(1, 2, 3), keepdims=True)[:, 0]  # (n, H, W) in [0, 1]
    rng = np.random.default_rng(seed)
    base = np.array([[220, 60, 50], [60, 170, 80], [60, 90, 210]], np.float64)[labels]  # red, green, blue families
    colour = np.clip(base + rng.uniform(-30, 30, (n, 3)), 0, 255)[:, :, None, None]  # (n, 3, 1, 1)
    if channels == 3:
        rgb = 255 * (1 - cover[:, None]) + colour * cover[:, None]
        return np.rint(rgb).astype(np.uint8), labels
    alpha = np.rint(255 * cover[:, None]).astype(np.uint8)
    rgb = np.where(alpha > 0, colour, 0).astype(np.uint8) * np.ones_like(alpha)
    return np.concatenate([rgb, alpha], axis=1), labels


@pytest.fixture(scope="session")
def colour_npz(tmp_path_factory):
    """colour_npz(channels) -> an .npz of 16 x 16 coloured shapes (train 512, test 128), written once per session."""
    import numpy as np

    made = {}

    def get(channels: int) -> Path:
        if channels not in made:
            path = tmp_path_factory.mktemp(f"colour{channels}") / "shapes.npz"
            x, y = coloured_shapes(640, 16, channels, seed=0)
            np.savez(path, x_train=x[:512], y_train=y[:512], x_test=x[512:], y_test=y[512:],
                     classes=np.array(["circle", "square", "triangle"]))
            made[channels] = path
        return made[channels]

    return get


# Every other model kind, trained tiny and exported with its int8 and fp16 variants, on demand.
KINDS = {
    "conv": dict(arch="conv", conv_channels=(8, 16)),
    "conditional": dict(conditional=True),
    "conv-conditional": dict(arch="conv", conv_channels=(8, 16), conditional=True),
    "ae": dict(model="ae"),
    "gaussian": dict(likelihood="gaussian"),
    "continuous-bernoulli": dict(likelihood="continuous-bernoulli"),
    # the residual family on colour: RGB with the discretized logistic; RGBA, spatial latent, conditional, Gaussian
    # (6 epochs and 16 latent units: without normalization its encoder needs a few more than 21 steps to tell these
    # images apart, and export refuses a collapsed model)
    "resnet": dict(data=COLOUR3, image_size=16, arch="resnet", widths=(8, 16), likelihood="logistic", epochs=6,
                   latent_dim=16, prior_fit="none"),
    # the same with one fitted Gaussian (train/prior.py)
    "resnet-fitted": dict(data=COLOUR3, image_size=16, arch="resnet", widths=(8, 16), likelihood="logistic", epochs=3,
                          prior_fit="gaussian"),
    # the colour defaults: auto's spatial latent (4 x 8 x 8 = 256 numbers on these widths) and the fitted mixture
    # auto chooses on colour images, over the latent as one vector; 19 components of full 256 x 256 covariances
    # outgrow their table, so it is factored (a shared base and 32 directions a component)
    "resnet-default": dict(data=COLOUR3, image_size=16, arch="resnet", widths=(8, 16), likelihood="logistic",
                           latent_dim=0, epochs=3),
    # ... and conditional: a Gaussian per class
    "resnet-fitted-conditional": dict(data=COLOUR3, image_size=16, arch="resnet", widths=(8, 16),
                                      likelihood="logistic", conditional=True, epochs=3),
    # a small latent (--latent-channels 2: 2 x 8 x 8 = 128 numbers): the mixture of 19 full covariances
    "resnet-flat": dict(data=COLOUR3, image_size=16, arch="resnet", widths=(8, 16), likelihood="logistic",
                        latent_channels=2, epochs=3),
    "resnet-rgba": dict(data=COLOUR4, image_size="12x20", arch="resnet", widths=(8, 16), likelihood="gaussian",
                        latent_channels=2, conditional=True, epochs=3),  # non-square: 16 x 16 cropped and resized
}


@pytest.fixture(scope="session")
def kind_export(tmp_path_factory, colour_npz):
    """kind_export(name) -> (run_dir, export_dir) for a KINDS entry; each is built once per session."""
    from edgevae.export.build import export
    from edgevae.train.config import TrainConfig
    from edgevae.train.loop import train

    built = {}
    data = {COLOUR3: lambda: str(colour_npz(3)), COLOUR4: lambda: str(colour_npz(4))}

    def get(name: str) -> tuple[Path, Path]:
        if name not in built:
            base = tmp_path_factory.mktemp(name)
            kind = {k: data[v]() if isinstance(v, str) and v in data else v for k, v in KINDS[name].items()}
            run = train(TrainConfig(out=str(base / "run"), **{**TINY, **kind}))
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
