"""p(x|z): the decoder outputs logits (N, C, H, W); a likelihood turns them into -log p(x|z) and a mean image.

    bernoulli             NLL = BCE(logits, x); mean = sigmoid(logits). For binary or binary-like pixels
                          (with --binarize, a fresh binary sample of x each step: dynamic binarization).
    continuous-bernoulli  Loaiza-Ganem & Cunningham (2019): the Bernoulli density on [0, 1] with its
                          normaliser C(lambda), so grey pixels have a proper likelihood;
                          mean = 1 / (1 - exp(-l)) - 1 / l (not sigmoid(l)).
    gaussian              N(x; sigmoid(logits), sigma^2); sigma fixed (--sigma) or learned per channel.

All NLLs are in nats per image (summed over pixels). In terms of the logit l (lambda = sigmoid(l)):
2 artanh(1 - 2 lambda) = -l and 1 - 2 lambda = -tanh(l / 2), so log C = log(l / tanh(l / 2)).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NAMES = ("bernoulli", "continuous-bernoulli", "gaussian")
CB_TAYLOR_BELOW = 0.5  # |l| under which the continuous Bernoulli's log C and mean use their Taylor series
LOG_2PI = math.log(2 * math.pi)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, (N,), summed over pixels; x in [0, 1], from logits for stability."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def _safe(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(small, l_far): where |l| < CB_TAYLOR_BELOW, and l moved away from 0 there (no 0/0 in either branch)."""
    small = logits.abs() < CB_TAYLOR_BELOW
    return small, torch.where(small, torch.full_like(logits, CB_TAYLOR_BELOW), logits)


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) per pixel: log(l / tanh(l / 2)); near 0 its series, log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720
    (the next term, -127 l^8/4838400, is < 1e-7 at |l| = CB_TAYLOR_BELOW)."""
    small, far = _safe(logits)
    l2 = logits * logits
    taylor = math.log(2.0) + l2 * (1 / 12 - 7 * l2 / 1440 + 31 * l2 * l2 / 90720)
    return torch.where(small, taylor, torch.log(far / torch.tanh(far / 2)))


def cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] under the continuous Bernoulli: sigmoid(l) / tanh(l / 2) - 1 / l;
    near 0, 1/2 + l/12 - l^3/720 + l^5/30240."""
    small, far = _safe(logits)
    l2 = logits * logits
    taylor = 0.5 + logits * (1 / 12 - l2 / 720 + l2 * l2 / 30240)
    return torch.where(small, taylor, torch.sigmoid(far) / torch.tanh(far / 2) - 1 / far)


def continuous_bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, (N,): BCE(logits, x) - log C(lambda), summed over pixels."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none") - cb_log_norm(logits)
    return per_pixel.flatten(1).sum(dim=1)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, sigma^2) per image, (N,), summed over pixels; log_sigma broadcasts (C, 1, 1)."""
    per_pixel = 0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * LOG_2PI
    return per_pixel.flatten(1).sum(dim=1)


class Likelihood(nn.Module):
    """The chosen p(x|z); holds the Gaussian's log sigma (a parameter when learned, a buffer when fixed)."""

    def __init__(self, name: str, channels: int, sigma: float = 0.0):
        super().__init__()
        if name not in NAMES:
            raise ValueError(f"likelihood must be one of {', '.join(NAMES)}, got {name!r}")
        self.name = name
        if name == "gaussian":
            log_sigma = torch.full((channels, 1, 1), math.log(sigma) if sigma else 0.0)
            if sigma:
                self.register_buffer("log_sigma", log_sigma)
            else:
                self.log_sigma = nn.Parameter(log_sigma)

    def nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image, (N,)."""
        if self.name == "bernoulli":
            return bernoulli_nll(logits, x)
        if self.name == "continuous-bernoulli":
            return continuous_bernoulli_nll(logits, x)
        return gaussian_nll(torch.sigmoid(logits), x, self.log_sigma)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """The mean image E[x|z] in [0, 1]."""
        return cb_mean(logits) if self.name == "continuous-bernoulli" else torch.sigmoid(logits)
