"""Models from elsewhere as Sources: your module (FILE_OR_MODULE:FACTORY), AntixK/PyTorch-VAE, diffusers, pythae.

    edgevae export --module my_vae.py:build --weights vae.safetensors --image-shape 3,64,64 --out exports/mine
    edgevae export --antixk models/vanilla_vae.py:VanillaVAE --factory-args '{"in_channels": 3, "latent_dim": 128}' \
        --weights last.ckpt --image-shape 3,64,64 --out exports/vanilla
    edgevae export --diffusers path/to/vae --out exports/sd-vae          # a folder written by save_pretrained
    edgevae export --pythae path/to/final_model --out exports/pythae-vae  # a folder written by model.save

Nothing here touches the network or unpickles code: weights load with torch.load(weights_only=True) or
safetensors; diffusers reads its folder with local_files_only; pythae's custom networks (stored pickled
in encoder.pkl/decoder.pkl) are refused, with the way round them.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import torch

from edgevae import spec as S

from .adapters import Source, SourceError, config_hash, from_module


def load_weights(path: str | Path) -> dict:
    """A state dict from .safetensors or a torch file read with weights_only=True (no pickled code runs).

    Accepts a bare state dict, or one under "state_dict" / "model_state_dict" / "model" (Lightning, pythae);
    a Lightning module's "model." prefix is dropped when every key has it.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"--weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpicklable, truncated, not a torch file ...
        raise SourceError(f"--weights {path}: cannot read it ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SourceError(f"--weights {path}: expected a state dict of tensors")
    if state and all(k.startswith("model.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items()}
    return state


def _apply_weights(model: torch.nn.Module, weights: str | Path | None) -> str | None:
    """Load `weights` into the model strictly; returns the file's sha256 (the spec's record of it)."""
    if weights is None:
        return None
    try:
        model.load_state_dict(load_weights(weights), strict=True)
    except RuntimeError as e:
        raise SourceError(f"--weights {weights} do not fit the model: {str(e).splitlines()[0]} "
                          f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else ''}") from None
    return hashlib.sha256(Path(weights).read_bytes()).hexdigest()


def resolve_factory(target: str):
    """(callable, its name for the spec) from FILE.py:NAME or package.module:NAME (NAME may be dotted).

    The spec records a file by its name only, never a local path.
    """
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise SourceError(f"--module must be FILE.py:FACTORY or package.module:FACTORY, got {target!r}")
    file = Path(where)
    try:
        if where.endswith(".py") or file.is_file():
            if not file.is_file():
                raise SourceError(f"--module {target}: no such file {where}")
            spec = importlib.util.spec_from_file_location(f"edgevae_user_{file.stem}", file)
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(file.resolve().parent))  # so it can import its neighbours
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(file.resolve().parent))
            label = f"{file.name}:{name}"
        else:
            module = importlib.import_module(where)
            label = f"{where}:{name}"
    except SourceError:
        raise
    except Exception as e:  # the user's code failed to import
        raise SourceError(f"--module {target}: importing {where} failed: {type(e).__name__}: {e}") from None
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise SourceError(f"--module {target}: {where} has no {name}")
    if not callable(obj):
        raise SourceError(f"--module {target}: {name} is not callable")
    return obj, label


def build_module(target: str, factory_args: dict | None = None):
    """Call FACTORY(**factory_args); (the module, its spec record)."""
    factory, label = resolve_factory(target)
    try:
        model = factory(**(factory_args or {}))
    except Exception as e:
        raise SourceError(f"{label}(**{factory_args or {}}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, torch.nn.Module):
        raise SourceError(f"{label} returned {type(model).__name__}, not a torch.nn.Module")
    return model, {"factory": label, **({"factory_args": factory_args} if factory_args else {})}


def module_source(target: str, image_shape, *, weights=None, factory_args=None, native_range=(0.0, 1.0),
                  prior: str | None = S.PRIOR, prior_note: str | None = None, tileable: bool | None = None) -> Source:
    """Your module: FACTORY() -> an nn.Module with encode(x) -> (mu, logvar), decode(z) -> x."""
    model, info = build_module(target, factory_args)
    info["weights_sha256"] = _apply_weights(model, weights)
    return from_module(model, image_shape, native_range=native_range, prior=prior, prior_note=prior_note,
                       info=info, tileable=tileable)


class AntixKSource(Source):
    """AntixK/PyTorch-VAE's models: encode(x) -> [mu, log_var], decode(z), images in [-1, 1] by default.

    Their decoders end in Tanh (outputs in [-1, 1]) and experiment.py fed images through
    SetRange = 2x - 1; the data module that replaced it (dataset.py) feeds ToTensor's [0, 1] instead,
    so a model trained after that change wants --native-range 0,1 on the input side. Conditional
    models (cvae: encode(x, labels=...)) are not supported.
    """

    family = "antixk"


def antixk_source(target: str, image_shape, *, weights=None, factory_args=None, native_range=(-1.0, 1.0),
                  prior: str | None = S.PRIOR, prior_note: str | None = None, tileable: bool | None = None):
    model, info = build_module(target, factory_args)
    info["weights_sha256"] = _apply_weights(model, weights)
    if not all(callable(getattr(model, m, None)) for m in ("encode", "decode", "sample")):
        raise SourceError(f"{type(model).__name__} is not an AntixK BaseVAE (encode, decode, sample)")
    return AntixKSource(model, image_shape, native_range=native_range, prior=prior, prior_note=prior_note,
                        info={"class": type(model).__name__, **info}, tileable=tileable)


DIFFUSERS_PRIOR_NOTE = ("a latent-diffusion VAE: trained with a tiny KL weight, its latents are not N(0, I) "
                        "(latent_scaling says how a diffusion model's latents map to them); decode latents "
                        "a diffusion model made, or encoded images")


class DiffusersSource(Source):
    """diffusers' AutoencoderKL: encode(x).latent_dist (mean, logvar clamped to [-30, 20]), decode(z).sample,
    x in [-1, 1]."""

    family = "diffusers"

    def native_encode(self, x, y=None):
        dist = self.net.encode(x).latent_dist
        return dist.mean, dist.logvar

    def native_decode(self, z, y=None):
        return self.net.decode(z).sample


def diffusers_source(folder: str | Path, image_shape=None) -> DiffusersSource:
    """An AutoencoderKL from a local folder written by save_pretrained (config.json + weights), no network."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from diffusers import AutoencoderKL
    except ModuleNotFoundError:
        raise SourceError("--diffusers needs the diffusers package: pip install 'edgevae[diffusers]'") from None
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SourceError(f"--diffusers {folder}: no config.json (expected a folder written by save_pretrained)")
    config = json.loads(config_path.read_text())
    if config.get("_class_name") != "AutoencoderKL":
        raise SourceError(f"--diffusers {folder}: {config.get('_class_name')!r} is not supported; "
                          f"AutoencoderKL is (its encoder predicts mean and logvar)")
    try:
        vae = AutoencoderKL.from_pretrained(folder, local_files_only=True, low_cpu_mem_usage=False)
    except Exception as e:
        raise SourceError(f"--diffusers {folder}: cannot load it ({type(e).__name__}: {str(e).splitlines()[0]})") \
            from None
    vae.disable_tiling()  # its own tiling would run inside the graph; the runtime tiles instead
    vae.disable_slicing()
    c = vae.config.in_channels
    side = vae.config.sample_size if isinstance(vae.config.sample_size, int) else vae.config.sample_size[0]
    image_shape = image_shape or (c, side, side)
    clean = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    scaling = {"scaling_factor": float(vae.config.scaling_factor),
               "shift_factor": float(vae.config.shift_factor or 0.0)}
    return DiffusersSource(vae, image_shape, native_range=(-1.0, 1.0), prior=None, prior_note=DIFFUSERS_PRIOR_NOTE,
                           latent_scaling=scaling, info={"class": "AutoencoderKL", "config_sha256": config_hash(clean)})


# pythae models whose encoder gives (embedding, log_covariance) with z = mu + sigma * eps, by their KL's prior
PYTHAE_STANDARD = ("VAE", "BetaVAE", "DisentangledBetaVAE", "BetaTCVAE", "FactorVAE", "InfoVAE", "MSSSIM_VAE",
                   "IWAE", "CIWAE", "MIWAE", "PIWAE")
PYTHAE_OTHER_PRIOR = {"VAMP": "a VampPrior model: its prior is a mixture over learned pseudo-inputs, not N(0, I)"}


class PythaeSource(Source):
    """pythae's VAE family: encoder(x).embedding / .log_covariance, decoder(z).reconstruction, x in [0, 1]."""

    family = "pythae"

    def native_encode(self, x, y=None):
        out = self.net.encoder(x)
        return out.embedding, out.log_covariance

    def native_decode(self, z, y=None):
        return self.net.decoder(z).reconstruction


def pythae_source(folder: str | Path) -> PythaeSource:
    """A pythae model from the folder `model.save(dir)` wrote: model_config.json + model.pt, default networks."""
    try:
        import pythae.models as models
    except ModuleNotFoundError:
        raise SourceError("--pythae needs the pythae package: pip install 'edgevae[pythae]'") from None
    folder = Path(folder)
    if not (folder / "model_config.json").is_file() or not (folder / "model.pt").is_file():
        raise SourceError(f"--pythae {folder}: expected model_config.json and model.pt (a folder written by "
                          f"model.save)")
    for pkl in ("encoder.pkl", "decoder.pkl"):
        if (folder / pkl).exists():
            raise SourceError(f"--pythae {folder}: its custom network is stored pickled ({pkl}), which this "
                              f"exporter does not unpickle; build the model in your code and export it with "
                              f"--module FILE:FACTORY --weights model.pt")
    config = json.loads((folder / "model_config.json").read_text())
    name = str(config.get("name", "")).removesuffix("Config")
    if name not in PYTHAE_STANDARD and name not in PYTHAE_OTHER_PRIOR:
        raise SourceError(f"--pythae {folder}: model {name!r} is not supported; supported: "
                          f"{', '.join(PYTHAE_STANDARD + tuple(PYTHAE_OTHER_PRIOR))}")
    config_cls, model_cls = getattr(models, f"{name}Config"), getattr(models, name)
    fields = {k: v for k, v in config.items() if k in config_cls.__dataclass_fields__}
    model = model_cls(config_cls(**fields))
    weights = folder / "model.pt"
    model.load_state_dict(load_weights(weights), strict=True)
    shape = tuple(config["input_dim"])
    if len(shape) == 1:
        raise SourceError(f"--pythae {folder}: input_dim {shape} is not an image shape (C, H, W)")
    return PythaeSource(model, shape, prior=None if name in PYTHAE_OTHER_PRIOR else S.PRIOR,
                        prior_note=PYTHAE_OTHER_PRIOR.get(name),
                        info={"class": name, "config_sha256": config_hash(config),
                              "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()})
