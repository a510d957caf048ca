"""Quality on colour images: EdgeVAE's default colour recipe against AntixK's VanillaVAE, same data, same wall time.

    python bench/quality_rgb.py                                  # ../shared/data/twemoji-64, RGBA, 20 minutes each
    python bench/quality_rgb.py --minutes 3 --cond-minutes 3 --flat-minutes 3   # a quick look
    python bench/quality_rgb.py --train flat                     # train one row again, reuse the others
    python bench/quality_rgb.py --measure ours                   # measure a saved run again, reuse the others
    python bench/quality_rgb.py --channels 3 --matte white       # RGB on a white matte instead of RGBA

Protocol: the image folder is read with EdgeVAE's own loader (sub-folders are the classes; RGBA keeps alpha
as a 4th channel), which sets the colour of fully transparent pixels -- invisible, and in Twemoji's PNGs whatever the
drawing program left there -- to 0 (--alpha clear); the images are split 90/10 with numpy's default_rng(0) into
train and test, and written to WORK/data.npz. Then, one after the other
in this process and each for the same wall-clock budget (--minutes, which includes everything training
does: data loading, per-epoch evaluation, checkpoints):
    ours          `edgevae train --data WORK/data.npz RECIPE --minutes M`: the defaults a user gets on a colour
                  folder (auto: resnet, discretized logistic, a spatial 4 x 16 x 16 latent with a factored mixture of
                  Gaussians fitted over its 1,024 numbers after training, gradient norm clipped to 1, batch 32,
                  lr 2e-3 cosine; 10% of the training images held out for validation) plus the measurement's flags
                  in RECIPE
    conditional   the same with --conditional (the folder's categories; auto keeps a small 2 x 8 x 8 latent there,
                  with a Gaussian fitted per category), for --cond-minutes
    flat          the same with --latent-channels 2: the small 2 x 8 x 8 latent (128 numbers, a mixture of 64 full
                  covariances fitted over it), the unconditional default before the spatial one, for --flat-minutes
    baseline      bench/antixk.py: AntixK/PyTorch-VAE's VanillaVAE as its configs/vae.yaml configures it
Measured on the test split, with the checkpoint export takes (best.pt: the lowest validation -ELBO): PSNR of
the mean reconstruction decode(mu) (peak 1, over all pixels and
channels, alpha included); how far each reconstruction's colour moved (colour_shift: Delta E*ab between the mean
colours of the visible pixels, median and 90th percentile over the test images); NLL in bits per dimension by
importance sampling (train/evaluate.py, k = --k) and the ELBO's.
The baseline, trained on MSE, has no likelihood of its own: it is scored as a Gaussian decoder with the
per-channel sigma that best fits its training reconstructions (its calibrated reading; an ELBO, k = 1).
Grids (first test images above their reconstructions; prior samples of N(0, I), seed 0, through the fitted prior
when the run fitted one; conditional samples one class a row) are written to bench/quality_rgb/ and shown in RESULTS.md.

Twemoji graphics by Twitter, Inc. and other contributors, CC BY 4.0 (the default data).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common as C  # noqa: E402
import numpy as np

# EdgeVAE's colour recipe is what a user gets: every model and optimizer choice is left to the data (train/auto.py),
# and, as for a user, 10% of the training split is held out for validation and the checkpoint export would take
# (best.pt, the lowest validation -ELBO) is the one scored. Only the measurement is set: evaluation, grids and
# checkpoints every 5 epochs.
RECIPE = dict(eval_every=5, seed=0)
# the rows EdgeVAE trains: the default recipe, and the flags each other row adds to it
ROWS = {"ours": {}, "conditional": {"conditional": True},
        # the small latent of 2 channels on auto's coarsest grid (8 x 8 for 64 px), what the conditional row keeps
        "flat": {"latent_channels": 2}}
NAMES = (*ROWS, "antixk")
CHECKPOINT = "auto"  # best.pt, as `edgevae export` and `edgevae evaluate` choose
PREVIEW = "white"  # RGBA grids are shown composited onto white, as an app would put them on a page
SPLIT_SEED, TEST_FRACTION = 0, 0.1
GRID_IMAGES, GRID_COLUMNS = 32, 8
PICTURES = C.ROOT / "bench" / "quality_rgb"
WHERE = {"pictures": PICTURES, "results": C.ROOT / "bench"}  # --pictures, and the folder RESULTS.md links from
SHOWN_CLASSES = ("smileys-emotion", "flags")


def flags(options: dict) -> str:
    """Command-line flags for config fields: --key value, --key for True, lists comma-separated."""
    parts = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        value = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
        parts.append(flag if value is True else f"{flag} {value}")
    return " ".join(parts)


def recipe_flags(extra: dict | None = None) -> str:
    return flags({**RECIPE, **(extra or {})})


def reusable(before: dict | None, budget: float, split: dict) -> bool:
    """Whether an earlier invocation's row stands for this one: same data and split, budget within 5%."""
    return bool(before) and before.get("split") == split and "budget" in before \
        and abs(before["budget"] - budget) <= 0.05 * budget


def split_folder(folder: str, channels: int, matte: str, size: int, work: Path) -> tuple[Path, dict]:
    """Read the folder with EdgeVAE's loader, split 90/10 with default_rng(SPLIT_SEED), save WORK/data.npz."""
    from edgevae.train.config import TrainConfig
    from edgevae.train.folder import image_folder

    config = TrainConfig(data=folder, channels=channels, matte=matte, image_size=size)
    data = image_folder(Path(folder), config, log=lambda *_: None)
    x, y = data.train_x.numpy(), data.train_y.numpy()  # RGBA: the loader set the invisible colour to 0 (--alpha clear)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test, train = np.sort(order[:round(TEST_FRACTION * len(x))]), np.sort(order[round(TEST_FRACTION * len(x)):])
    path = work / "data.npz"
    np.savez(path, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test], classes=np.array(data.classes))
    return path, {"images": len(x), "train": len(train), "test": len(test), "classes": list(data.classes),
                  "shape": list(x.shape[1:])}


def psnr(x, x_hat) -> float:
    """PSNR in dB (peak 1) of image tensors: export/quality.py's, the one the export's bounds use."""
    from edgevae.export.quality import psnr as psnr_

    return psnr_(x.detach().cpu().numpy(), x_hat.detach().cpu().numpy())


def mean_recon(model, x, labels=None):
    """decode(mu) of every image x (labels for a conditional model), 256 at a time: what PSNR and colour shift read."""
    import torch

    parts = []
    for i in range(0, len(x), 256):
        y = None if labels is None else labels[i:i + 256]
        parts.append(model.decode(model.encoder(x[i:i + 256], y)[0], y))
    return torch.cat(parts)


def colour_shift(x, x_hat) -> np.ndarray:
    """Per image (N,): how far x_hat's colour is from x's, as the CIE76 distance Delta E*ab between the mean colour of
    x's visible pixels (alpha >= 0.5; every pixel without alpha) in x and in x_hat. Means are taken in linear light
    (what the eye would see mixed), then converted to CIELAB (sRGB, D65). About 2.3 is a just-noticeable difference;
    pure red against orange (1, 0.5, 0) is 40. Shape errors barely move it: it reads colour, not detail."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = np.clip(np.asarray(x_hat, dtype=np.float64), 0.0, 1.0)
    if x.shape[1] not in (3, 4):
        raise ValueError(f"colour_shift needs RGB or RGBA images (N, 3|4, H, W), got {x.shape}")
    mask = (x[:, 3:4] >= 0.5) if x.shape[1] == 4 else np.ones_like(x[:, :1], dtype=bool)
    weight = mask.sum(axis=(2, 3)).clip(min=1)  # (N, 1)
    mean = [(linear(v[:, :3]) * mask).sum(axis=(2, 3)) / weight for v in (x, x_hat)]  # (N, 3) linear RGB
    return np.linalg.norm(lab(mean[0]) - lab(mean[1]), axis=1)


def linear(v: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] to linear light (IEC 61966-2-1)."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def lab(rgb: np.ndarray) -> np.ndarray:
    """Linear sRGB (..., 3) to CIELAB (..., 3), D65 white."""
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = rgb @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def colour_summary(x, x_hat) -> dict:
    """The median and 90th percentile of colour_shift over the images, and its worst image's index."""
    shift = colour_shift(x, x_hat)
    return {"colour_median": float(np.median(shift)), "colour_p90": float(np.percentile(shift, 90)),
            "colour_worst": int(shift.argmax())}


def save_grid(images, name: str, nrow: int = GRID_COLUMNS) -> str:
    """Write a grid into the pictures folder (--pictures); returns its path relative to RESULTS.md's folder."""
    import os

    import edgevae

    WHERE["pictures"].mkdir(parents=True, exist_ok=True)
    path = edgevae.save_grid(images.detach().float().cpu().numpy(), WHERE["pictures"] / name, nrow=nrow,
                             background=PREVIEW)
    return os.path.relpath(path, WHERE["results"])


def _pairs(x, recon, report):
    """Two rows of test images, each above the row of its reconstructions."""
    cols = min(GRID_COLUMNS, len(x))
    return report.interleave_rows(x[:2 * cols], recon[:2 * cols], cols)


def ours(npz: Path, work: Path, name: str, minutes: float, k: int) -> dict:
    """Train the recipe with ROWS[name]'s flags for `minutes`, then measure it on the test split and draw its
    grids."""
    from edgevae.train.config import TrainConfig
    from edgevae.train.loop import train

    with np.load(npz) as f:
        size = "x".join(map(str, f["x_train"].shape[2:]))  # the data's own size: nothing is resized
    config = TrainConfig(**RECIPE, **ROWS[name], data=str(npz), out=str(work / name), minutes=minutes,
                         image_size=size)
    start = time.perf_counter()
    train(config)
    return {"name": name, "seconds": time.perf_counter() - start, **measure(npz, work, name, k)}


def measure(npz: Path, work: Path, name: str, k: int) -> dict:
    """Measure ROWS[name]'s saved run on the test split and draw its grids (everything but the training time)."""
    import torch

    from edgevae.train import report
    from edgevae.train.checkpoint import load_run
    from edgevae.train.evaluate import evaluate_model
    from edgevae.train.loop import to_unit
    from edgevae.train.prior import describe

    out = work / name
    conditional = ROWS[name].get("conditional", False)
    model, ckpt, config = load_run(out, CHECKPOINT)
    with np.load(npz) as f:
        x, y = to_unit(torch.from_numpy(f["x_test"])), torch.from_numpy(f["y_test"])
        classes = [str(c) for c in f["classes"]]
    labels = y if conditional else None
    start = time.perf_counter()
    with torch.inference_mode():
        recon = mean_recon(model, x, labels)
        result = evaluate_model(model, x, labels, k=k, chunk=512, progress=True)
        eval_minutes = (time.perf_counter() - start) / 60
        z = torch.randn(GRID_IMAGES, *model.latent_shape, generator=torch.Generator().manual_seed(0))
        if conditional:
            rows = [classes.index(c) for c in SHOWN_CLASSES if c in classes] + \
                [i for i in range(len(classes)) if classes[i] not in SHOWN_CLASSES]
            z = torch.randn(len(rows) * GRID_COLUMNS, *model.latent_shape, generator=torch.Generator().manual_seed(0))
            samples = model.decode(z, torch.tensor(rows).repeat_interleave(GRID_COLUMNS))
            grids = {"samples": save_grid(samples, f"{name}_samples.png")}
            grids["rows"] = [classes[r] for r in rows]
        else:
            grids = {"samples": save_grid(model.decode(z), f"{name}_samples.png")}
            if model.prior_fit is not None:  # the same z decoded as if no prior had been fitted: what it changes
                fitted, model.decoder.latent_map = model.decoder.latent_map, None
                grids["unfitted"] = save_grid(model.decode(z), f"{name}_samples_unfitted.png")
                model.decoder.latent_map = fitted
        grids["recon"] = save_grid(_pairs(x, recon, report), f"{name}_recon.png", min(GRID_COLUMNS, len(x)))
    last = load_run(out, "last")[1]
    return {"epochs": ckpt["epoch"], "steps": ckpt["step"],
            "epochs_run": last["epoch"],
            "psnr": psnr(x, recon), **colour_summary(x, recon), "bits_per_dim": result["bits_per_dim"],
            "bits_per_dim_stderr": result["bits_per_dim_stderr"], "elbo_bits_per_dim": result["neg_elbo_bits_per_dim"],
            "k": k, "eval_minutes": eval_minutes, "active_units": result["active_units"],
            "latent_dim": model.latent_dim, "latent_shape": list(model.latent_shape),
            "latent_rms": result["latent_rms"], "warnings": result["warnings"],
            "config": {k_: v for k_, v in ckpt["config"].items()
                       if k_ in ("arch", "likelihood", "latent_dim", "latent_channels", "widths", "blocks",
                                 "grad_clip", "augment",
                                 "batch_size", "lr", "schedule", "prior_fit")},
            "grids": grids, "parameters": sum(p.numel() for p in model.parameters()),
            "prior_fit": describe(ckpt["prior_fit"]) if ckpt.get("prior_fit") else None, **progress(npz, out)}


def progress(npz: Path, out: Path) -> dict:
    """What limits a run's PSNR, from its saved run: PSNR on the training images beside the test images'
    (equal: underfitted, the budget is what stops it; far above: overfitted), and validation PSNR along the way
    (test PSNR when nothing was held out)."""
    import json as json_

    import torch

    from edgevae.train.checkpoint import load_run
    from edgevae.train.loop import to_unit

    model, ckpt, config = load_run(out, CHECKPOINT)
    with np.load(npz) as f:
        x, y = to_unit(torch.from_numpy(f["x_train"][:512])), torch.from_numpy(f["y_train"][:512])
    with torch.inference_mode():
        recon = mean_recon(model, x, y if config.conditional else None)
    rows = [json_.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    key = "val_psnr_db" if any("val_psnr_db" in r for r in rows) else "test_psnr_db"  # validation when held out
    curve = [(r["epoch"], r["step"], r[key]) for r in rows if key in r]
    return {"train_psnr": psnr(x, recon), "curve": curve}


def test_colours(npz: Path, work: Path, name: str) -> dict:
    """colour_summary of a saved row's test reconstructions (for rows measured before it was); {} when the row's
    model was not saved (AntixK's before its weights were)."""
    import antixk
    import torch

    from edgevae.train.checkpoint import load_run
    from edgevae.train.loop import to_unit

    with np.load(npz) as f:
        x, y = to_unit(torch.from_numpy(f["x_test"])), torch.from_numpy(f["y_test"])
    with torch.inference_mode():
        if name == "antixk":
            if not (work / "antixk.pt").is_file():
                return {}
            model = antixk.VanillaVAE(x.shape[1], x.shape[2])
            model.load_state_dict(torch.load(work / "antixk.pt", weights_only=True))
            recon = antixk.reconstruct(model.eval(), x)
        else:
            model, _, config = load_run(work / name, CHECKPOINT)
            recon = mean_recon(model, x, y if config.conditional else None)
    return colour_summary(x.numpy(), recon.numpy())


def thumbnails(npz: Path) -> dict:
    """PSNR of the test images shrunk to a side of 8, 16, 32 pixels and scaled back up (bilinear): what a
    reconstruction's PSNR means in resolution."""
    import torch
    import torch.nn.functional as F

    with np.load(npz) as f:
        x = torch.from_numpy(f["x_test"]).float() / 255
    side = x.shape[-1]
    out = {}
    for s in (8, 16, 32):
        small = F.interpolate(x, size=(s, s * x.shape[-1] // x.shape[-2]), mode="bilinear", antialias=True)
        out[s] = psnr(x, F.interpolate(small, size=x.shape[-2:], mode="bilinear").clamp(0, 1)) if s < side else None
    return out


def baseline(npz: Path, work: Path, minutes: float) -> dict:
    """AntixK's VanillaVAE for `minutes` on the same training split; measured like ours. Its weights are saved to
    WORK/antixk.pt, so a later invocation that reuses the row can measure it again."""
    import antixk
    import torch

    from edgevae.train import report
    from edgevae.train.likelihood import bits_per_dim, gaussian_nll

    with np.load(npz) as f:
        train_x, test_x = torch.from_numpy(f["x_train"]), torch.from_numpy(f["x_test"])
    model, record = antixk.train_for(train_x, minutes)
    torch.save(model.state_dict(), work / "antixk.pt")
    x = test_x.float() / 255
    with torch.inference_mode():
        recon = antixk.reconstruct(model, x)
        train_recon = antixk.reconstruct(model, train_x.float() / 255)
        mse = ((train_recon - train_x.float() / 255) ** 2).mean(dim=(0, 2, 3))  # per channel
        train_psnr = psnr(train_x.float() / 255, train_recon)
        log_sigma = 0.5 * mse.clamp(min=1e-6).log().view(-1, 1, 1)
        gen = torch.Generator().manual_seed(0)
        mu, log_var = model.encode(x)
        z = mu + torch.randn(mu.shape, generator=gen) * torch.exp(0.5 * log_var)
        nll = gaussian_nll(model.decode(z).clamp(0, 1), x, log_sigma)
        kl = -0.5 * (1 + log_var - mu**2 - log_var.exp()).sum(dim=1)
        elbo_bpd = bits_per_dim(float((nll + kl).mean()), int(np.prod(x.shape[1:])), "gaussian")
        grids = {"samples": save_grid(antixk.sample(model, GRID_IMAGES, 0), "antixk_samples.png"),
                 "recon": save_grid(_pairs(x, recon, report), "antixk_recon.png", min(GRID_COLUMNS, len(x)))}
        rms = float((mu.pow(2) + log_var.exp()).mean().sqrt())
    return {"name": "antixk", **record, "psnr": psnr(x, recon), **colour_summary(x, recon), "train_psnr": train_psnr,
            "elbo_bits_per_dim": elbo_bpd, "grids": grids,
            "latent_rms": rms, "parameters": sum(p.numel() for p in model.parameters())}


GOAL_PSNR, GOAL_BITS = 24.0, 5.0  # test PSNR of decode(mu) in dB (at least), test NLL in bits/dim (at most)


def goals(r: dict, thumbs: dict, who: str = "EdgeVAE default recipe") -> str:
    """The goals, each met or missed by run r (the default recipe's, or another row's), with what was measured."""
    psnr_ok, bits_ok = r["psnr"] >= GOAL_PSNR, r["bits_per_dim"] <= GOAL_BITS
    sides = [s for s, v in thumbs.items() if v is not None and v <= r["psnr"]]
    like = f"the test images shrunk to {max(sides)} px a side score as much" if sides else \
        f"below what the test images shrunk to {min(thumbs)} px a side score"
    return (f"Goals ({who}): test PSNR >= {GOAL_PSNR:g} dB -- "
            + ("**met**" if psnr_ok else "**missed**") + f" ({r['psnr']:.2f} dB measured; {like}); "
            + f"test NLL <= {GOAL_BITS:g} bits/dim -- " + ("**met**" if bits_ok else "**missed**")
            + f" ({r['bits_per_dim']:.3f} measured).")


def section(rows: list[dict], meta: dict, args, thumbs: dict) -> str:
    header = ["model", "training (wall clock)", "epochs (scored / run)", "test PSNR, decode(mu)", "train PSNR",
              "colour shift (ΔE*ab median / p90)",
              "test NLL (bits/dim)", "test -ELBO (bits/dim)", "z rms", "parameters"]
    table = []
    for r in rows:
        nll = f"**{r['bits_per_dim']:.3f}** ± {r['bits_per_dim_stderr']:.3f} (k = {r['k']})" if "k" in r else "—"
        what = {"ours": "EdgeVAE default colour recipe", "conditional": "EdgeVAE, `--conditional` (9 categories)",
                "flat": f"EdgeVAE, small latent {'x'.join(map(str, r.get('latent_shape', [])))} "
                        f"(`{flags(ROWS['flat'])}`)",
                "antixk": "AntixK VanillaVAE (configs/vae.yaml)"}[r["name"]]
        train = f"{r['train_psnr']:.2f} dB" if "train_psnr" in r else "—"
        run = f"{r['epochs']} / {r['epochs_run']}" if "epochs_run" in r else f"{r['epochs']}"
        colour = f"{r['colour_median']:.1f} / {r['colour_p90']:.1f}" if "colour_median" in r else "—"
        table.append([what, f"{r['seconds'] / 60:.1f} min", run, f"**{r['psnr']:.2f} dB**", train, colour, nll,
                      f"{r['elbo_bits_per_dim']:.3f}", f"{r['latent_rms']:.2f}", f"{r['parameters']:,}"])
    by = {r["name"]: r for r in rows}
    lines = [C.table(header, table), ""]
    notes = [
        f"Data: `{args.data}`, {meta['images']:,} images {'x'.join(map(str, meta['shape']))} "
        f"({'RGBA, alpha kept' if meta['shape'][0] == 4 else 'RGB on a ' + args.matte + ' matte'}), "
        f"{len(meta['classes'])} categories; split 90/10 with numpy default_rng({SPLIT_SEED}): "
        f"{meta['train']:,} train, {meta['test']:,} test. Twemoji graphics by Twitter, Inc. and other contributors, "
        "CC BY 4.0.",
        f"Ours: `edgevae train --data WORK/data.npz {recipe_flags()} --minutes {args.minutes:g}` "
        f"(auto chose {', '.join(f'{k} {v}' for k, v in by['ours']['config'].items())}); "
        "10% of the training images held out for validation, and evaluated on best.pt (the lowest validation -ELBO, "
        "what export takes) of epoch " + f"{by['ours']['epochs']}" + ". Conditional: the same with `--conditional`"
        + (f" for {args.cond_minutes:g} minutes" if "conditional" in by else " (not run)") + ".",
        "Baseline: bench/antixk.py, a plain-PyTorch re-implementation of AntixK/PyTorch-VAE's VanillaVAE with "
        "configs/vae.yaml (conv 32-64-128-256-512 + BatchNorm + LeakyReLU, latent 128, MSE + 0.00025 KL, Adam "
        "0.005, ExponentialLR 0.95, batch 64, pixels in [0, 1]), trained for the same wall time. Its -ELBO is "
        "scored with a Gaussian decoder of the per-channel sigma that fits its training reconstructions best.",
        f"NLL: importance-weighted with k = {args.k} samples per test image (an upper bound that k = 5000 "
        "would tighten slightly); the discretized logistic's NLL is a probability mass over the 256 levels, so "
        "bits/dim need no offset. Evaluation took "
        + ", ".join(f"{r['eval_minutes']:.1f} min ({r['name']})" for r in rows if "eval_minutes" in r) + ".",
        *(f"Prior ({title}): {by[n]['prior_fit']}; the sample grids decode N(0, I) through it."
          for n, title in (("ours", "ours"), ("conditional", "conditional"), ("flat", "small latent"))
          if by.get(n, {}).get("prior_fit")),
        goals(by["ours"], thumbs),
        *([goals(by["flat"], thumbs, "EdgeVAE with the small latent")] if "flat" in by else []),
        "Colour shift: per test image, the CIE76 distance between the mean colour of its visible pixels (alpha "
        ">= 0.5) in the image and in its reconstruction, in CIELAB from linear-light means; about 2.3 is just "
        "noticeable, pure red against orange (1, 0.5, 0) is 40 (`colour_shift` in this script)."
        + ("" if all("colour_median" in r for r in rows) else
           " A row without it was measured before the script measured colour, and its model was not saved."),
        "What a PSNR means here: the test images shrunk to a side of "
        + ", ".join(f"{s} px and scaled back up score {v:.2f} dB" for s, v in thumbs.items() if v is not None)
        + ". Ours along the way (epoch: validation PSNR): "
        + ", ".join(f"{e}: {p:.2f} dB" for e, _, p in by["ours"].get("curve", [])[::3][-5:])
        + ". Train PSNR equal to test PSNR means the model is underfitted: the time budget, not the data, "
        "is what stops it.",
    ]
    reused = [r for r in rows if r.get("reused")]
    if reused:
        notes.append("Taken from earlier invocations on the same split and budget (`--train` left them out; "
                     "WORK/rows.json), with their grids: " + "; ".join(
                         f"{r['name']} ({r.get('trained_at', 'an earlier invocation')})"
                         for r in reused) + ("." if args.reuse or not any(
                             not r.get("reused") and not r.get("measured_at") for r in rows) else
                                             ". The other rows were trained and measured in this invocation."))
    remeasured = [r for r in rows if r.get("measured_at")]
    if remeasured:
        notes.append("Measured again from the saved run without training again (`--measure`): " + "; ".join(
            f"{r['name']} (trained {r.get('trained_at', 'earlier')}, measured {r['measured_at']})"
            for r in remeasured) + ". Their training time and epochs are the training invocation's.")
    if args.reuse:
        notes.append("This section was rewritten by `--reuse` from the runs and measurements an earlier invocation "
                     "saved (WORK/rows.json), without training again: the load average above is the rewrite's.")
    lines += [f"- {n}" for n in notes]
    lines.append("")
    for r in rows:
        title = {"ours": "EdgeVAE", "conditional": "EdgeVAE conditional", "flat": "EdgeVAE small latent",
                 "antixk": "AntixK VanillaVAE"}[r["name"]]
        lines.append(f"{title}: test images (odd rows) above their reconstructions, and "
                     + ("samples, one category a row: " + ", ".join(r["grids"]["rows"]) if "rows" in r["grids"]
                        else "samples of N(0, I), seed 0") + ".")
        lines.append("")
        lines.append(f"![{title} reconstructions]({r['grids']['recon']}) ![{title} samples]({r['grids']['samples']})")
        lines.append("")
        if "unfitted" in r["grids"]:
            lines.append(f"{title}, the same N(0, I) samples decoded without the fitted prior (what the trained "
                         "decoder makes of the standard normal it was trained towards):")
            lines.append("")
            lines.append(f"![{title} samples without the fitted prior]({r['grids']['unfitted']})")
            lines.append("")
    return "\n".join(lines)


def _rows_asked(args, parser) -> tuple[dict, list[str], list[str]]:
    """Each row's budget, the rows to train and the rows to measure again, from the flags (parser.error when they
    contradict each other)."""
    if args.reuse and args.measure:
        parser.error("--reuse rewrites the section without measuring; --measure measures: one or the other")
    budgets = {"ours": args.minutes, "conditional": args.cond_minutes, "flat": args.flat_minutes,
               "antixk": args.minutes}
    measured = [n for n in args.measure.split(",") if n]
    # --train: every row by default; with --measure, none: the others are taken from the earlier invocation
    default = "" if measured else ",".join(NAMES)
    trained = [n for n in (default if args.train is None else args.train).split(",") if n]
    if both := set(trained) & set(measured):
        parser.error(f"--train and --measure both name {sorted(both)}: a row is trained (and measured) or measured "
                     "again, not both")
    if unknown := set(trained) - set(NAMES):
        parser.error(f"--train: unknown rows {sorted(unknown)}; rows are {','.join(NAMES)}")
    if unknown := set(measured) - set(ROWS):
        parser.error(f"--measure: not a saved EdgeVAE row: {sorted(unknown)}; they are {','.join(ROWS)}")
    if skipped := [n for n in measured if not budgets[n]]:
        parser.error(f"--measure {','.join(skipped)}: a budget of 0 skips the row; give the one it was trained with")
    return budgets, trained, measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(C.ROOT.parent / "shared" / "data" / "twemoji-64"),
                        help="image folder, one sub-folder per class")
    parser.add_argument("--channels", type=int, default=4, choices=(3, 4), help="4: RGBA (alpha kept); 3: RGB on "
                                                                               "--matte")
    parser.add_argument("--matte", default="white", choices=("white", "black"), help="background for RGB")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of ours and of the baseline")
    parser.add_argument("--cond-minutes", type=float, default=20.0, help="training budget of the conditional run "
                                                                         "(0 skips it)")
    parser.add_argument("--flat-minutes", type=float, default=20.0, help="training budget of the small-latent "
                        "run (0 skips it)")
    parser.add_argument("--k", type=int, default=100, help="importance samples per test image for the NLL")
    parser.add_argument("--work", default=str(C.ROOT / "runs" / "quality_rgb"), help="run directories go here")
    parser.add_argument("--reuse", action="store_true", help="take the runs and measurements of an earlier "
                                                             "invocation (WORK/rows.json) and rewrite the section")
    parser.add_argument("--train", default=None, help=f"the rows to train and measure (default "
                        f"{','.join(NAMES)}, none with --measure); the others are taken from an earlier invocation's "
                        "WORK/rows.json when it ran them on the same data, split and budget, and the section says so")
    parser.add_argument("--measure", default="", help="rows (of ours,conditional,flat) to measure again from "
                        "their saved runs in WORK without training them again, after a change to how a run is "
                        "evaluated; their training time and epochs stay the earlier invocation's, and the section "
                        "says so")
    parser.add_argument("--pictures", type=Path, default=PICTURES, help="folder for the grids (default "
                                                                         "bench/quality_rgb, linked from RESULTS.md)")
    C.add_results_flag(parser)
    args = parser.parse_args(argv)
    budgets, trained, measured = _rows_asked(args, parser)  # before any work: a flag's mistake costs nothing
    WHERE.update(pictures=args.pictures, results=args.results.resolve().parent)
    import torch

    from edgevae.train.loop import flush_denormals

    flush_denormals()  # before torch's worker threads exist, so they flush subnormals as `edgevae train`'s do
    torch.set_num_threads(min(2, torch.get_num_threads()))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    npz, meta = split_folder(args.data, args.channels, args.matte, args.size, work)
    print(f"data: {meta['train']} train / {meta['test']} test images {meta['shape']}, {len(meta['classes'])} classes")
    saved = work / "rows.json"
    if args.reuse and saved.is_file():  # the runs of an earlier invocation, with what it did not yet measure
        rows = json.loads(saved.read_text())
        for r in rows:
            if r["name"] != "antixk" and "curve" not in r:
                r.update(progress(npz, work / r["name"]))
        print(f"reusing {saved}: " + ", ".join(r["name"] for r in rows))
    else:
        earlier = {r["name"]: r for r in json.loads(saved.read_text())} if saved.is_file() else {}
        split = {"data": str(Path(args.data).resolve()), "size": args.size, "channels": args.channels,
                 "matte": args.matte, **meta}
        rows = []
        for name in (n for n in NAMES if budgets[n]):
            if name in measured:
                if not reusable(earlier.get(name), budgets[name], split) or not (work / name / "config.json").is_file():
                    parser.error(f"--measure {name}: WORK has no run of it on this data, split and budget; train it")
                kept = {k: v for k, v in earlier[name].items() if k != "reused"}
                row = measure(npz, work, name, args.k)
                rows.append({**kept, **row, "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
                continue
            if name not in trained and reusable(earlier.get(name), budgets[name], split):
                rows.append({**earlier[name], "reused": True})
                continue
            row = baseline(npz, work, budgets[name]) if name == "antixk" else \
                ours(npz, work, name, budgets[name], args.k)
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            rows.append({**row, "budget": budgets[name], "split": split, "trained_at": stamp})
    for r in rows:  # a row saved before colour was measured gets it from its saved model
        if "colour_median" not in r:
            r.update(test_colours(npz, work, r["name"]))
    saved.write_text(json.dumps(rows, indent=2) + "\n")
    body = section(rows, meta, args, thumbnails(npz))
    print("\n" + body)
    C.write_section("quality_rgb", "Quality on colour images: Twemoji 64 x 64, EdgeVAE against AntixK's VanillaVAE",
                    body, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
