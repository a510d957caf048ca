"""Checkpoints: written atomically, read with weights_only=True, and the rules of `--resume`.

checkpoint.pt (the last state) and best.pt (lowest validation negative ELBO) hold:
    config, model, optimizer, epoch (completed), metrics (the last epoch's row), dataset, image_shape,
    classes, reference_x, reference_y (256 test images and labels, for export's checks), kind, prior_fit
    (the fitted prior, train/prior.py: when the run fits one; load_run folds it into the model),
    step (optimizer steps so far), next_batch (0, or the batch to continue from after Ctrl-C),
    order (that epoch's image order), generator (the batching/noise RNG state), sums (running
    train totals of a partial epoch), best (the best score so far), history (every epoch's row).
Only tensors, numbers, strings, lists and dicts: torch.load(path, weights_only=True) reads it.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

LAST, BEST = "checkpoint.pt", "best.pt"
# What --checkpoint names: best (lowest validation -ELBO), last, or auto (best when the run wrote one).
CHOICES = {"best": (BEST,), "last": (LAST,), "auto": (BEST, LAST)}
# config fields --resume may change; the rest must match
RESUMABLE = ("epochs", "device", "resume", "eval_every", "minutes", "patience", "out", "precision")  # "out": a run
# directory copied or moved elsewhere resumes there; "precision": the machine decides what its steps can do


def save(state: dict, path: Path) -> None:
    """Write atomically (temp file + rename): a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict:
    """A checkpoint's dict, read with weights_only=True (no pickled code runs); ValueError if unreadable."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (train without --resume first)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: not a readable EdgeVAE checkpoint (torch.load(weights_only=True) refuses it: it "
                         f"holds objects other than tensors and plain data, which would run code)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable EdgeVAE checkpoint ({(str(e).splitlines() or [''])[0]})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a readable EdgeVAE checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    config, shape = ckpt.get("config"), ckpt.get("image_shape")
    if isinstance(config, dict) and config.get("alpha") == "auto" and isinstance(shape, (list, tuple)) and shape \
            and shape[0] == 4:  # an RGBA run saved before --alpha clear: it trained on the colour as stored
        config["alpha"] = "keep"
    return ckpt


def load_run(run_dir: str | Path, which: str = "auto"):
    """(model in eval mode, checkpoint dict, TrainConfig) of a run directory: the one lookup export,
    evaluation and reports share. which: "best", "last" or "auto" (best.pt when the run wrote one).
    Raises FileNotFoundError for a directory without the checkpoint, ValueError for an unreadable one.
    """
    from .config import TrainConfig
    from .model import build

    if which not in CHOICES:
        raise ValueError(f"--checkpoint must be one of {', '.join(CHOICES)}, got {which!r}")
    names = CHOICES[which]
    path = next((Path(run_dir) / n for n in names if (Path(run_dir) / n).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no {' or '.join(names)} (is it a run directory written by "
                                f"`edgevae train`?)")
    ckpt = load(path)
    try:
        config = TrainConfig.from_dict(ckpt["config"])
        shape, classes = tuple(ckpt["image_shape"]), ckpt["classes"]
        if shape[0] not in (1, 3, 4) or shape[1:] != tuple(config.image_hw) \
                or not 1 <= len(classes) <= 1 << 16:
            raise ValueError(f"image_shape {shape} and {len(classes)} classes do not fit its config")
        model = build(config, shape, num_classes=len(classes))
        model.load_state_dict(ckpt["model"])
        if ckpt.get("prior_fit"):  # the fitted prior (train/prior.py), folded into encoder and decoder
            model.attach_prior(ckpt["prior_fit"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable EdgeVAE checkpoint ({str(e).splitlines()[0]})") from None
    ckpt["path"] = str(path)
    return model.eval(), ckpt, config


def check_resume(saved: dict, config) -> None:
    """The run being resumed must be the run that was saved, but for RESUMABLE fields; a field the saved config
    predates is compared with what that run was trained with (TrainConfig.migrated: an old Gaussian run's sigmoid
    mean cannot become linear on resume)."""
    saved = type(config).migrated(saved)
    current = config.to_dict()
    differ = [k for k in current if k not in RESUMABLE and k in saved and _norm(saved[k]) != _norm(current[k])]
    if differ:
        detail = ", ".join(f"--{k.replace('_', '-')} {current[k]!r} (checkpoint: {saved[k]!r})" for k in differ)
        raise ValueError(f"cannot resume with a different config: {detail}; only {', '.join(RESUMABLE)} may change")


def resume_config(config_cls, out: str, explicit: dict):
    """The checkpoint's config with the flags the user gave (`explicit`) on top, for `--resume`."""
    saved = load(Path(out) / LAST)["config"]
    # a run saved before --prior-fit existed was trained to be used unfitted, and one saved before --patience trained
    # to its end: each stays so unless asked
    return config_cls.from_dict({"prior_fit": "none", "patience": 0, **saved, **explicit, "out": out, "resume": True})


def _norm(value):
    return list(value) if isinstance(value, (tuple, list)) else value
