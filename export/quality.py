"""Quality of a pair of graphs measured through onnxruntime alone: negative ELBO and PSNR.

The same numbers train/elbo.py computes in torch, but from the graphs' outputs, so a variant
(int8, fp16) can be scored against fp32, and fp32 against PyTorch.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from edgevae.train.elbo import kl_divergence

_P_MIN = 1e-7  # Bernoulli x_hat is clipped to [_P_MIN, 1 - _P_MIN] before log, so saturated pixels stay finite
NO_GRAPH_ELBO = {  # likelihoods whose -log p(x|z) the graphs' outputs do not determine
    "continuous-bernoulli": "not computed: x_hat is the continuous Bernoulli's mean, which fixes its "
                            "parameter too loosely in float32 to score a likelihood to 0.01 nats",
    "logistic": "not computed: the discretized logistic's scale is per subpixel, computed inside the decoder and "
                "not a graph output; x_hat alone does not determine the likelihood",
}


def neg_elbo(encode, decode, inputs: dict, likelihood: str, params: dict) -> np.ndarray | None:
    """Per-image negative ELBO, float64 (N,): -log p(x|z) + KL(q(z|x) || N(0, I)), or None.

    encode(inputs) -> {"z", "mu", "logvar"} ({"z"} for the autoencoder: no KL), decode({"z"[, "y"]})
    -> x_hat; inputs holds x float32 (N, C, H, W) in [0, 1], eps and, for conditional models, y.
    """
    if likelihood in NO_GRAPH_ELBO:
        return None
    out = encode(inputs)
    x_hat = decode({"z": out["z"], **({"y": inputs["y"]} if "y" in inputs else {})}).astype(np.float64)
    x = inputs["x"].astype(np.float64)
    if likelihood == "bernoulli":
        p = np.clip(x_hat, _P_MIN, 1 - _P_MIN)
        per_pixel = -(x * np.log(p) + (1 - x) * np.log1p(-p))
    elif likelihood == "gaussian":
        log_sigma = np.asarray(params["log_sigma"], np.float64).reshape(-1, 1, 1)  # (C, 1, 1)
        per_pixel = 0.5 * ((x - x_hat) * np.exp(-log_sigma)) ** 2 + log_sigma + 0.5 * math.log(2 * math.pi)
    else:
        raise ValueError(f"no ONNX-side likelihood for {likelihood!r}")
    recon = per_pixel.reshape(len(x), -1).sum(axis=1)
    if "logvar" not in out:
        return recon  # the plain autoencoder: reconstruction alone
    kl = kl_divergence(torch.from_numpy(out["mu"]).double(), torch.from_numpy(out["logvar"]).double())
    return recon + kl.numpy()


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (peak 1); inf when identical."""
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
