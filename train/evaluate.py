"""Evaluate a run on its test set: negative ELBO, importance-weighted NLL, active units, KL per dimension.

    edgevae evaluate runs/mnist                      # k = 5000, best.pt, the whole test set
    edgevae evaluate runs/mnist --k 100 --limit 500  # a quick look

    test -ELBO     recon + KL per image: recon = E_q[-log p(x|z)] averaged over the k samples, KL in closed form
    IWAE NLL       -log (1/k) sum_i p(x, z_i) / q(z_i|x), z_i ~ q(z|x) (Burda, Grosse & Salakhutdinov, 2016,
                   k = 5000 as in their Table 1): an upper bound on -log p(x) that tightens as k grows.
                   The log-sum-exp is taken in float64; the standard error is across test images.
    bits/dim       the NLL per dimension in bits, as the literature reports 8-bit images:
                   nll / (C*H*W ln 2) for a probability mass (logistic over 256 levels, bernoulli on binary
                   pixels), + 8 for a density over [0, 1] (gaussian, continuous-bernoulli); likelihood.bits_per_dim
    active units   dimensions u with Cov_x(E_q[z_u|x]) > 0.01 (Burda et al., Section 5.2); train/diagnostics.py
    KL per dim     the closed-form KL(q(z_u|x) || N(0, 1)) averaged over test images

Bernoulli models are scored on one FIXED binarization of the test set (pixel ~ Bernoulli(grey level), drawn
from a generator seeded BINARIZATION_SEED), so every model sees the same bits and the NLL is a likelihood
of binary images, comparable with the literature on dynamically binarized MNIST. Continuous-Bernoulli models
are scored as they were trained, on one fixed dequantization of the test set (level k spread uniformly over
[k, k + 1) / 256, seeded DEQUANTIZATION_SEED; likelihood.dequantize), so their bits/dim bound the 8-bit
images' NLL. Other likelihoods are scored on the images as given (a Gaussian's NLL is a density and can be
negative). The plain autoencoder has no
posterior: it gets its reconstruction NLL -log p(x|z = code) only (no ELBO, no IWAE, no active units).
The noise of image i comes from a generator seeded NOISE_SEED + i, so results do not depend on --chunk
or --limit. A progress bar (tqdm: images done, rate, time left) runs on stderr; the first line says how
many decoder passes the estimate takes. Writes RUN_DIR/evaluation.json (or --out) and prints a table.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import arg, run_dir_main
from .diagnostics import ACTIVE_THRESHOLD, activity, diagnose, kl_per_dim  # noqa: F401  (re-exported)
from .elbo import kl_divergence, latent_shape_of
from .likelihood import bits_per_dim, dequantize, dequantized

DEQUANTIZATION_SEED = 0  # the continuous Bernoulli's fixed dequantization of the test set
BINARIZATION_SEED = 2015  # the test set's one fixed binarization (the IWAE paper's year)
NOISE_SEED = 5_000  # eps of test image i: torch.Generator seeded NOISE_SEED + i
ENCODE_BATCH = 1024  # images per encoder pass
TABLE_DIMS = 10  # latent dimensions per row of the printed KL / activity table
TABLE_MAX_DIMS = 30  # latents with more dimensions print the TABLE_DIMS highest-KL ones and a summary; the JSON has all


@dataclass(frozen=True)
class EvalConfig:
    k: int = arg(5000, "importance samples per test image for the NLL (the IWAE paper's 5000)")
    checkpoint: str = arg("auto", "which checkpoint: best (lowest validation -ELBO), last, or auto (best when "
                          "the run has one)",
                          ("auto", "best", "last"))
    limit: int = arg(0, "score only the first N test images (0 = all)")
    chunk: int = arg(1024, "decoder rows (samples x images) per forward pass: bounds memory")
    threads: int = arg(0, "torch threads (0 = all cores)")
    data: str = arg("", "the data source, if not where the run's config says (same test set, moved)")
    out: str = arg("", "JSON file to write (default RUN_DIR/evaluation.json)")

    def __post_init__(self):
        for name in ("k", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.limit < 0 or self.threads < 0:
            raise ValueError(f"--limit and --threads must be >= 0, got {self.limit}, {self.threads}")


def binarize(x: torch.Tensor, seed: int = BINARIZATION_SEED) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> one seeded Bernoulli sample of each, float32 0/1; the same bits every call."""
    uniform = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    return (uniform < x.float() / 255).float()


def load_test_set(config, data: str = "", limit: int = 0, binarized: bool | None = None):
    """(x float32 (N, C, H, W) in [0, 1], y (N,), class names): the run's test images.

    binarized: None = as evaluation scores them (the fixed binarization for a Bernoulli model).
    """
    from . import data as data_sources

    if data:
        config = dataclasses.replace(config, data=data)
    loaded = data_sources.load(config, log=lambda *_: None)
    if binarized is None:
        binarized = config.likelihood == "bernoulli"
    x = binarize(loaded.test_x) if binarized else loaded.test_x.float() / 255
    n = limit or len(x)
    return x[:n], loaded.test_y[:n], loaded.classes


def encode(model, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """mu, logvar (N, D) of every image, in batches (logvar None for the autoencoder)."""
    parts = [model.encoder(x[i:i + ENCODE_BATCH], None if y is None else y[i:i + ENCODE_BATCH])
             for i in range(0, len(x), ENCODE_BATCH)]
    mu = torch.cat([p[0] for p in parts])
    return mu, (torch.cat([p[1] for p in parts]) if parts[0][1] is not None else None)


def importance_weighted(model, x: torch.Tensor, y: torch.Tensor | None, k: int, chunk: int,
                        progress: bool = False) -> dict:
    """Per image (N,) float64: IWAE NLL estimate with k samples, MC reconstruction NLL; and mu, logvar.

    Images go through in groups and their k samples in slices, at most `chunk` decoder rows at a time.
    progress: a tqdm bar over images on stderr (rate and time left).
    """
    from tqdm import tqdm

    from .elbo import log_weights

    mu, logvar = encode(model, x, y)
    shape = latent_shape_of(model)
    images = max(1, chunk // k)  # images per pass when k is small
    samples = min(k, chunk)  # samples per pass when k is large
    nll, recon = torch.empty(len(x), dtype=torch.float64), torch.empty(len(x), dtype=torch.float64)
    bar = tqdm(total=len(x), desc=f"IWAE k={k}", unit="image", disable=not progress, smoothing=0.1)
    for start in range(0, len(x), images):
        stop = min(start + images, len(x))
        eps = torch.stack([torch.randn(k, *shape, generator=torch.Generator().manual_seed(NOISE_SEED + i))
                           for i in range(start, stop)], dim=1)  # (k, n, *latent_shape)
        log_w = torch.empty(k, stop - start, dtype=torch.float64)
        recon_sum = torch.zeros(stop - start, dtype=torch.float64)
        for s in range(0, k, samples):
            part, part_recon = log_weights(model, mu[start:stop], logvar[start:stop], eps[s:s + samples],
                                           x[start:stop], None if y is None else y[start:stop])
            log_w[s:s + samples] = part.double()
            recon_sum += part_recon.double().sum(dim=0)
        nll[start:stop] = math.log(k) - torch.logsumexp(log_w, dim=0)
        recon[start:stop] = recon_sum / k
        bar.update(stop - start)
    bar.close()
    return {"nll": nll, "recon": recon, "mu": mu, "logvar": logvar}


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error across images."""
    n = len(values)
    return values.mean().item(), (values.std().item() / math.sqrt(n) if n > 1 else math.nan)


def evaluate_model(model, x: torch.Tensor, y: torch.Tensor | None, k: int = 5000, chunk: int = 1024,
                   progress: bool = False, pixels: torch.Tensor | None = None) -> dict:
    """Every metric of this module for one model on (x, y); plain numbers and lists, ready for JSON.

    With a likelihood name (model.likelihood.name), the NLL and -ELBO are also given in bits per dimension, and
    the PSNR of the mean reconstructions against `pixels` (default x; the images themselves when x is their
    dequantization).
    """
    if model.kind == "ae":
        code, _ = encode(model, x, y)
        recon = torch.cat([model.nll(model.decoder(code[i:i + chunk], None if y is None else y[i:i + chunk]),
                                     x[i:i + chunk]) for i in range(0, len(x), chunk)]).double()
        mean, se = mean_and_stderr(recon)
        return {"recon_nll": mean, "recon_nll_stderr": se,
                "note": "plain autoencoder: reconstruction NLL -log p(x|z = code) only; it has no posterior "
                        "q(z|x), so no ELBO, no importance-weighted NLL and no active units"}
    iw = importance_weighted(model, x, y, k, chunk, progress)
    per_image_kl = kl_divergence(iw["mu"].double(), iw["logvar"].double())
    neg_elbo, neg_elbo_se = mean_and_stderr(iw["recon"] + per_image_kl)
    nll, nll_se = mean_and_stderr(iw["nll"])
    found = diagnose(iw["mu"], iw["logvar"])
    result = {"neg_elbo": neg_elbo, "neg_elbo_stderr": neg_elbo_se, "recon": iw["recon"].mean().item(),
              "kl": per_image_kl.mean().item(), "nll": nll, "nll_stderr": nll_se, "k": k,
              "active_units": found.active_units, "active_threshold": ACTIVE_THRESHOLD,
              "activity": activity(iw["mu"]).tolist(), "kl_per_dim": found.kl_per_dim,
              "latent_rms": found.latent_rms, "collapsed": found.collapsed, "far_from_prior": found.far_from_prior,
              "warnings": found.warnings()}
    name = getattr(getattr(model, "likelihood", None), "name", None)
    if name is not None:
        dims = math.prod(x.shape[1:])
        result.update(bits_per_dim=bits_per_dim(nll, dims, name), bits_per_dim_stderr=nll_se / (dims * math.log(2)),
                      neg_elbo_bits_per_dim=bits_per_dim(neg_elbo, dims, name),
                      **mean_psnr(model, x if pixels is None else pixels, y, iw["mu"], chunk))
    return result


@torch.no_grad()
def mean_psnr(model, x: torch.Tensor, y: torch.Tensor | None, mu: torch.Tensor, chunk: int) -> dict:
    """{"psnr_db": PSNR in dB (peak 1) of the mean reconstructions decode(mu) against x in [0, 1], over every pixel
    and channel, alpha included (what bench/quality_rgb.py scores)}; for RGBA also "visible_psnr_db", the same of
    the premultiplied colour (R, G, B times alpha) and alpha: what shows, wherever it is composited. A model may put
    any colour under the pixels it makes fully transparent; the first counts it, the second does not."""
    squared = torch.zeros(2, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        recon = model.decode(mu[i:i + chunk], None if y is None else y[i:i + chunk]).double()
        xb = x[i:i + chunk].double()
        squared[0] += ((recon - xb) ** 2).sum()
        if x.shape[1] == 4:
            squared[1] += ((premultiplied(recon) - premultiplied(xb)) ** 2).sum()
    psnr = [10 * math.log10(x.numel() / float(s)) if s > 0 else math.inf for s in squared]
    return {"psnr_db": psnr[0], **({"visible_psnr_db": psnr[1]} if x.shape[1] == 4 else {})}


def premultiplied(x: torch.Tensor) -> torch.Tensor:
    """RGBA images (N, 4, H, W) as premultiplied colour and alpha: (R a, G a, B a, a)."""
    return torch.cat([x[:, :3] * x[:, 3:], x[:, 3:]], dim=1)


def evaluate_run(run_dir: str | Path, cfg: EvalConfig, log=print) -> dict:
    """Load RUN_DIR's checkpoint and test set, evaluate, write the JSON; returns what it wrote."""
    from .checkpoint import load_run

    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    model, ckpt, config = load_run(run_dir, cfg.checkpoint)
    x, y, _ = load_test_set(config, cfg.data, cfg.limit)
    y = y if model.conditional else None
    bits = config.likelihood == "bernoulli"
    spread = dequantized(config.likelihood)
    pixels = x  # what the PSNR compares with: the images
    if spread:  # the first n images get the same noise whatever --limit: a prefix of one seeded stream
        x = dequantize(x, torch.rand(x.shape, generator=torch.Generator().manual_seed(DEQUANTIZATION_SEED)))
    passes = len(x) * (1 if config.model == "ae" else cfg.k)
    log(f"evaluating {ckpt['path']} ({config.model}, {config.arch}, {config.likelihood}, epoch {ckpt['epoch']}) on "
        f"{len(x)} test images" + (f" binarized with seed {BINARIZATION_SEED}" if bits else "")
        + (f" dequantized with seed {DEQUANTIZATION_SEED}" if spread else "")
        + ("" if config.model == "ae" else f", k = {cfg.k}") + f", {torch.get_num_threads()} threads: "
        f"{passes:,} decoder passes" + ("" if config.model == "ae" or cfg.k <= 100 else
                                        " (--k 100 for a quicker, looser bound)"))
    start = time.perf_counter()
    with torch.inference_mode():
        result = evaluate_model(model, x, y, cfg.k, cfg.chunk, progress=True, pixels=pixels)
    result = {"run": str(run_dir), "checkpoint": ckpt["path"], "epoch": ckpt["epoch"], "model": config.model,
              "arch": config.arch, "likelihood": config.likelihood, "dataset": ckpt["dataset"],
              "latent_dim": model.latent_dim, "latent_shape": list(latent_shape_of(model)), "test_images": len(x),
              "test_data": f"binarized once, seed {BINARIZATION_SEED}" if bits else
              f"dequantized once, seed {DEQUANTIZATION_SEED}" if spread else "as given",
              "noise_seed": NOISE_SEED, **result, "seconds": round(time.perf_counter() - start, 1)}
    if model.conditional:
        result["conditional"] = "the likelihoods are given the test labels: -log p(x|y), not -log p(x)"
    out = Path(cfg.out or Path(run_dir) / "evaluation.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(format_table(result))
    log(f"wrote {out}")
    return result


def format_table(r: dict) -> str:
    """The printed summary: one metric a row, then KL and activity per dimension."""
    rows = [("test images", f"{r['test_images']} ({r['test_data']})")]
    if r["model"] == "ae":
        rows.append(("reconstruction NLL", f"{r['recon_nll']:.2f} ± {r['recon_nll_stderr']:.2f} nats"))
        rows.append(("note", r["note"]))
    else:
        rows += [("test -ELBO", f"{r['neg_elbo']:.2f} ± {r['neg_elbo_stderr']:.2f} nats "
                                f"(recon {r['recon']:.2f} + KL {r['kl']:.2f})"),
                 (f"IWAE NLL, k = {r['k']}", f"{r['nll']:.2f} ± {r['nll_stderr']:.2f} nats")]
        if "bits_per_dim" in r:
            rows.append((f"NLL, k = {r['k']}", f"{r['bits_per_dim']:.3f} ± {r['bits_per_dim_stderr']:.3f} bits/dim "
                                               f"(-ELBO {r['neg_elbo_bits_per_dim']:.3f})"))
        if "psnr_db" in r:
            rows.append(("PSNR", f"{r['psnr_db']:.2f} dB (mean reconstructions decode(mu), every pixel and channel)"))
        if "visible_psnr_db" in r:
            rows.append(("PSNR visible", f"{r['visible_psnr_db']:.2f} dB (the same of premultiplied colour and alpha: "
                                         "colour under fully transparent pixels left out)"))
        rows.append(("active units", f"{r['active_units']} of {r['latent_dim']} (Cov_x(E_q[z|x]) > "
                                     f"{r['active_threshold']}), z rms {r['latent_rms']:.2f}"))
        rows += [("warning", w) for w in r.get("warnings", [])]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if r["model"] == "ae":
        return "\n".join(lines)
    dims = list(range(r["latent_dim"]))
    if len(dims) > TABLE_MAX_DIMS:
        kl = np.asarray(r["kl_per_dim"])
        dims = [int(u) for u in np.argsort(-kl, kind="stable")[:TABLE_DIMS]]
        lines.append(f"KL per dimension over {r['latent_dim']}: median {np.median(kl):.2f}, "
                     f"min {kl.min():.2f}; the {TABLE_DIMS} highest (all in the JSON):")
    for start in range(0, len(dims), TABLE_DIMS):
        dims_row = dims[start:start + TABLE_DIMS]
        lines.append("dim   " + " ".join(f"{u:>6d}" for u in dims_row))
        lines.append("KL    " + " ".join(f"{r['kl_per_dim'][u]:6.2f}" for u in dims_row))
        lines.append("Cov   " + " ".join(f"{r['activity'][u]:6.2f}" for u in dims_row))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run_dir_main(argv, "edgevae evaluate", __doc__.splitlines()[0], EvalConfig, evaluate_run)


if __name__ == "__main__":
    raise SystemExit(main())
