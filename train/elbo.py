"""The negative ELBO, per image: Bernoulli reconstruction NLL + beta * KL(q(z|x) || N(0, I))."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, (N,).

    Kingma & Welling (2014), Appendix B: -KL = 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2).
    """
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, (N,), summed over pixels; x in [0, 1], from logits for stability."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def negative_elbo(model, x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0):
    """(loss, recon, kl): loss = mean over images of recon + beta * kl; recon and kl are per image."""
    logits, mu, logvar = model(x, eps)
    recon, kl = bernoulli_nll(logits, x), kl_divergence(mu, logvar)
    return (recon + beta * kl).mean(), recon, kl
