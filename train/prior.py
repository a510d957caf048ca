"""The fitted prior: a Gaussian fitted to the training set's aggregate posterior, folded into the model.

A VAE trained on few images (Twemoji: 1,715) ends with an aggregate posterior q(z) = mean over x of
q(z|x) far from its N(0, I) prior: on the colour recipe's 128-d latent the covariance of the posterior
means has eigenvalues from 0.007 to 21 (1 everywhere for N(0, I)). Prior samples then land where the
decoder saw no training latent and come out as coloured noise, while reconstructions are fine. The
cure of "ex-post density estimation" (Ghosh et al. 2020, "From Variational to Deterministic
Autoencoders", section 4; the same idea as the second stage of Dai & Wipf 2019's two-stage VAE) is to fit
a density to the latents of the training images after training and to sample from it instead.

Here the density is one Gaussian N(m, S), S = cov(mu) + mean(diag sigma^2) over up to FIT_IMAGES training
images, and it is folded into the model as a change of variable z = m + L u, L = cholesky(S), so that the
model keeps a standard normal prior on its new latent u and every client samples as before:
- the decoder gets z = m + L u in front: decode(u) is the trained decoder at z, exactly;
- the encoder maps mu to L^-1 (mu - m): decode(encode(x).mu) is the trained model's reconstruction, exactly;
- the posterior of u is N(L^-1 (mu - m), L^-1 diag(sigma^2) L^-T), a full covariance; the encoder's diagonal
  for it is the one closest in KL(q_diag || q): variances 1 / diag(L^T diag(1/sigma^2) L), i.e.
  logvar_u = -log(exp(-logvar) @ (L * L)). A valid posterior approximation of the same generative model,
  so the ELBO and the importance-weighted NLL stay bounds of it.
Flat latents only: a spatial latent's channels would be mixed across positions, breaking tiling.
"""
from __future__ import annotations

import math

import torch
from torch import nn

LOGVAR_CLIP = 60.0  # logvar is clipped to +-this before exp(-logvar): finite in float32 (e^60 ~ 1e26; sigma
# ~ 1e-13 is a point mass in practice), where an unclipped -89 would overflow and make NaN of inf * 0
FIT_IMAGES = 4096  # training images the fit reads (a fixed, seeded choice when the set is larger)
JITTER = 1e-6  # added to S's diagonal, relative to its mean eigenvalue, should S be singular
CHOICES = ("auto", "gaussian", "none")


class LatentMap(nn.Module):
    """z = mean + u @ scale^T (the decoder's side) and its inverse for mu, logvar (the encoder's side)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        mean, scale = mean.double(), scale.double()
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale_t", scale.T.contiguous().float())  # L^T: z = m + u L^T
        self.register_buffer("inverse_t", torch.linalg.inv(scale).T.contiguous().float())  # L^-T: u = (z - m) L^-T
        self.register_buffer("squared", (scale * scale).float())  # L * L, elementwise

    def to_latent(self, mu: torch.Tensor, logvar: torch.Tensor | None):
        """The trained encoder's (mu, logvar) of z as the (mu, logvar) of u."""
        mu_u = (mu - self.mean) @ self.inverse_t
        if logvar is None:
            return mu_u, None
        return mu_u, -torch.log(torch.exp(-logvar.clamp(-LOGVAR_CLIP, LOGVAR_CLIP)) @ self.squared)

    def from_latent(self, u: torch.Tensor) -> torch.Tensor:
        """u -> the trained decoder's z."""
        return self.mean + u @ self.scale_t


def wanted(config) -> bool:
    """Whether a run fits the prior: --prior-fit gaussian, for a VAE with a flat latent."""
    return config.prior_fit == "gaussian" and config.model == "vae" and not config.latent_channels


@torch.no_grad()
def fit(model, x: torch.Tensor, y: torch.Tensor | None, batch: int = 256, seed: int = 0,
        binarize: bool = False) -> dict:
    """The Gaussian fitted to the aggregate posterior of `model` (unfitted) on uint8 images x; a checkpoint entry.
    binarize: the images as training saw them, one Bernoulli sample each (seeded).

    Returns {"mean": (D,), "scale": (D, D) lower-triangular, "images": n, "eigenvalues": [min, max] of S}.
    """
    if len(x) > FIT_IMAGES:
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:FIT_IMAGES]
        x, y = x[pick], (y[pick] if y is not None else None)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    mus, variances = [], []
    gen = torch.Generator().manual_seed(seed)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(device).float()
        xb = xb.div(255) if x.dtype == torch.uint8 else xb
        if binarize:
            xb = (torch.rand(xb.shape, generator=gen) < xb.cpu()).float().to(device)
        yb = y[i:i + batch].to(device) if y is not None and model.conditional else None
        mu, logvar = model.encoder.unmapped(xb, yb)
        mus.append(mu.double().cpu())
        variances.append(logvar.double().exp().cpu())
    model.train(was_training)
    mu, var = torch.cat(mus), torch.cat(variances)
    mean = mu.mean(0)
    centred = mu - mean
    cov = centred.T @ centred / len(mu) + torch.diag(var.mean(0))
    eigenvalues = torch.linalg.eigvalsh(cov)
    jitter = JITTER * float(eigenvalues.clamp(min=0).mean())
    scale = torch.linalg.cholesky(cov + jitter * torch.eye(len(cov), dtype=cov.dtype))
    return {"mean": mean.float(), "scale": scale.float(), "images": len(mu),
            "eigenvalues": [float(eigenvalues.min()), float(eigenvalues.max())]}


def describe(entry: dict) -> str:
    """One line for logs, `info` and the spec."""
    low, high = entry["eigenvalues"]
    return (f"Gaussian fitted to the latents of {entry['images']:,} training images (covariance eigenvalues "
            f"{low:.3g} to {high:.3g}, where N(0, I) has 1), folded in as z = m + L u")


def check(entry: dict, latent_dim: int) -> None:
    """ValueError unless `entry` is a fit for a latent of latent_dim (a checkpoint being read)."""
    mean, scale = entry.get("mean"), entry.get("scale")
    if not (isinstance(mean, torch.Tensor) and isinstance(scale, torch.Tensor)
            and tuple(mean.shape) == (latent_dim,) and tuple(scale.shape) == (latent_dim, latent_dim)
            and bool(torch.isfinite(mean).all()) and bool(torch.isfinite(scale).all())
            and bool((torch.diagonal(scale) > 0).all())):
        raise ValueError(f"its prior_fit is not a fit for a {latent_dim}-d latent")
    if not math.isfinite(float(torch.diagonal(scale.double()).log().sum())):  # log det of a triangular matrix
        raise ValueError("its prior_fit's scale is singular")
