"""Quality of a pair of graphs measured through onnxruntime alone: negative ELBO and PSNR.

The same numbers as train/elbo.py computes in torch, but from the graphs' outputs, so a variant
(int8, fp16) can be scored against fp32, and fp32 against PyTorch.
"""
from __future__ import annotations

import numpy as np

_P_MIN = 1e-7  # x_hat is clipped to [_P_MIN, 1 - _P_MIN] before log, so saturated pixels stay finite


def neg_elbo(encode, decode, x: np.ndarray, eps: np.ndarray, likelihood: str = "bernoulli") -> np.ndarray:
    """Per-image negative ELBO, float64 (N,): -log p(x|z) + KL(q(z|x) || N(0, I)), z from eps.

    encode(x, eps) -> (z, mu, logvar) and decode(z) -> x_hat run the graphs (see `graph_functions`);
    x float32 (N, C, H, W) in [0, 1].
    """
    if likelihood != "bernoulli":
        raise ValueError(f"no ONNX-side ELBO for likelihood {likelihood!r}")
    z, mu, logvar = encode(x, eps)
    p = np.clip(decode(z).astype(np.float64), _P_MIN, 1 - _P_MIN)
    x = x.astype(np.float64)
    recon = -(x * np.log(p) + (1 - x) * np.log1p(-p)).reshape(len(x), -1).sum(axis=1)
    mu, logvar = mu.astype(np.float64), logvar.astype(np.float64)
    kl = -0.5 * np.sum(1 + logvar - mu**2 - np.exp(logvar), axis=1)  # Kingma & Welling (2014), Appendix B
    return recon + kl


def psnr(reference: np.ndarray, other: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (peak 1); inf when identical."""
    mse = float(np.mean((reference.astype(np.float64) - other.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def graph_functions(encoder, decoder):
    """(encode, decode) callables for neg_elbo from two onnxruntime sessions."""
    return (lambda x, eps: encoder.run(None, {"x": x, "eps": eps}),
            lambda z: decoder.run(None, {"z": z})[0])
