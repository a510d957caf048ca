"""The objectives, per image: the negative ELBO with beta (and warm-up), the IWAE bound, the AE's loss.

    negative ELBO   recon + beta * KL,  recon = -log p(x|z), z = mu + sigma * eps, KL in closed form
    IWAE (k > 1)    -log (1/k) sum_i p(x, z_i) / q(z_i|x)   (Burda, Grosse & Salakhutdinov, 2016)
    AE              recon at z = mu (no sampling, no KL)

`Objective` wraps a model so one forward gives every term; it is the module DistributedDataParallel
wraps, so gradients of anything the loss touches (the Gaussian's learned sigma too) are synchronised.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .likelihood import bernoulli_nll  # noqa: F401  (re-exported: the Bernoulli NLL lives with its siblings)

LOG_2PI = math.log(2 * math.pi)


def kl_terms(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) of each latent element, shaped like mu: the one KL formula.

    Kingma & Welling (2014), Appendix B: -KL = 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2).
    """
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image, (N,): kl_terms summed over the latent (flat or spatial)."""
    return kl_terms(mu, logvar).flatten(1).sum(dim=1)


def free_bits_kl(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL penalty per image, (N,), with free bits (Kingma et al. 2016, "Improved Variational Inference with
    Inverse Autoregressive Flow", Section C.8) per latent element: an element whose batch-mean KL is under
    free_bits nats costs the constant free_bits (no gradient); the others their KL. Its batch mean is
    sum_u max(free_bits, mean_x KL_u).
    """
    terms = kl_terms(mu, logvar).flatten(1)  # (N, D)
    kept = (terms.detach().mean(dim=0) >= free_bits).to(terms.dtype)  # (D,)
    return (terms * kept).sum(dim=1) + free_bits * (1 - kept).sum()


def negative_elbo(model, x: torch.Tensor, eps: torch.Tensor, beta: float = 1.0, y: torch.Tensor | None = None,
                  target: torch.Tensor | None = None, free_bits: float = 0.0):
    """(loss, recon, kl): loss = mean over images of recon + beta * kl; recon and kl are per image (N,).

    target: what the likelihood scores (the binarized x under dynamic binarization); default x.
    free_bits: the loss's KL has free bits (free_bits_kl); the kl returned is always the plain one.
    For the AE, kl is zero.
    """
    recon, kl, penalty = elbo_terms(model, x, eps, y, target, free_bits)
    return (recon + beta * penalty).mean(), recon, kl


def elbo_terms(model, x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None = None,
               target: torch.Tensor | None = None, free_bits: float = 0.0):
    """(recon, kl, penalty) per image (N,): -log p(x|z), the closed-form KL, and the KL the loss charges."""
    logits, mu, logvar = model(x, eps, y)
    recon = model.nll(logits, x if target is None else target)
    kl = kl_divergence(mu, logvar) if logvar is not None else torch.zeros_like(recon)
    penalty = free_bits_kl(mu, logvar, free_bits) if free_bits and logvar is not None else kl
    return recon, kl, penalty


def iwae_log_weights(model, x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None = None,
                     target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_w, recon), each (k, N): log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x), eps (k, N, *latent_shape)."""
    mu, logvar = model.encoder(x, y)  # (N, D), once for all k samples
    return log_weights(model, mu, logvar, eps, x if target is None else target, y)


def log_weights(model, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor, scored: torch.Tensor,
                y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_w, recon), each (k, N), for q(z|x) = N(mu, exp(logvar)) given, eps (k, N, *latent_shape), scored x
    (N, C, H, W).

    With z - mu = sigma * eps: log q(z|x) = -0.5 * sum(eps^2 + logvar + log 2 pi) and
    log p(z) = -0.5 * sum(z^2 + log 2 pi); the log 2 pi terms cancel.
    """
    k, n = eps.shape[:2]
    z = model.reparameterize(mu, logvar, eps)  # (k, N, *latent_shape)
    labels = y.repeat(k) if y is not None else None
    logits = model.decoder(z.flatten(0, 1), labels)  # (k * N, P*C, H, W)
    recon = model.nll(logits, scored.repeat(k, 1, 1, 1)).view(k, n)
    log_p_z = -0.5 * z.pow(2).flatten(2).sum(dim=2)
    log_q_z = -0.5 * (eps.pow(2) + logvar).flatten(2).sum(dim=2)
    return -recon + log_p_z - log_q_z, recon


class Objective(nn.Module):
    """forward(x, eps, y, target, beta, free_bits) -> (loss, neg_elbo, recon, kl), each per image (N,).

    eps (N, *latent_shape): the ELBO with closed-form KL, loss = recon + beta * kl (the AE: recon alone;
    with free bits, free_bits_kl in place of kl).
    eps (k, N, *latent_shape): the IWAE bound, loss = -log mean_i w_i; neg_elbo = -mean_i log w_i from the
    same samples, kl = its Monte Carlo part, mean_i (log q - log p).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None = None,
                target: torch.Tensor | None = None, beta: float = 1.0, free_bits: float = 0.0):
        if eps.dim() == 2 + len(latent_shape_of(self.model)):
            log_w, recon = iwae_log_weights(self.model, x, eps, y, target)
            loss = -(torch.logsumexp(log_w, dim=0) - math.log(len(eps)))
            neg_elbo = -log_w.mean(dim=0)
            recon = recon.mean(dim=0)
            return loss, neg_elbo, recon, neg_elbo - recon
        recon, kl, penalty = elbo_terms(self.model, x, eps, y, target, free_bits)
        return recon + beta * penalty, recon + kl, recon, kl


def latent_shape_of(model) -> tuple[int, ...]:
    """A model's latent_shape, or (latent_dim,) for a model that only says latent_dim (flat)."""
    return tuple(getattr(model, "latent_shape", None) or (model.latent_dim,))
