"""Is the latent used, and does it look like the prior? Active units, KL per dimension, collapse, scale.

    active units   dimensions u with Cov_x(E_q[z_u|x]) > 0.01 (Burda, Grosse & Salakhutdinov 2016, Section 5.2)
    KL per dim     KL(q(z_u|x) || N(0, 1)) averaged over images (Kingma & Welling 2014, Appendix B)
    collapsed      no active unit: q(z|x) is the prior for every x, the decoder ignores z, and every sample
                   and reconstruction is the same image (posterior collapse)
    latent rms     sqrt(E_x E_q[z_u^2]) per dimension: 1 under the prior. Far above it (over LATENT_RMS_FAR
                   across all dimensions, or DIM_RMS_FAR in one), the aggregate posterior sits where N(0, I)
                   rarely goes, so prior samples do not look like the data; far below it only matters with
                   collapse, which is reported as such

The training loop checks these on the validation images every epoch (a one-line warning with what to
try), stores the last check in the checkpoint as ckpt["diagnostics"] (Diagnostics.to_dict()), export copies
it into the spec and `edgevae info` prints it. `edgevae evaluate` reports the same quantities on the test set.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .elbo import kl_terms

ACTIVE_THRESHOLD = 0.01  # Burda et al.: a unit is active when Cov_x(E_q[z_u|x]) exceeds this
LATENT_RMS_FAR = 2.5  # z's rms over all dimensions, in prior sds: 1 for a VAE at its optimum, ~10 at KL weight 1e-4
DIM_RMS_FAR = 6.0  # one dimension's rms: a few reach 2-4 in healthy models (measured on Twemoji after KL warm-up)
COLLAPSE_ADVICE = ("try --kl-warmup 10 or --free-bits 0.1, --beta 1 or lower, and a calibrated likelihood "
                   "(--likelihood logistic, or gaussian without a fixed --sigma)")
FAR_ADVICE = ("fit the prior to them (--prior-fit mixture, the default on colour images), train with --beta 1 "
              "(the ELBO) or longer, or sample at a lower temperature")


def activity(mu: torch.Tensor) -> torch.Tensor:
    """Cov_x(E_q[z_u|x]) per dimension u, (D,) float64: the variance of mu over images (mu flattened per image)."""
    mu = mu.flatten(1).double()
    return mu.var(dim=0) if len(mu) > 1 else torch.zeros(mu.shape[1], dtype=torch.float64)


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z_u|x) || N(0, 1)) per dimension u, averaged over images, (D,) float64."""
    return kl_terms(mu.flatten(1).double(), logvar.flatten(1).double()).mean(dim=0)


def latent_rms(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """sqrt(E_x[mu_u^2 + exp(logvar_u)]) per dimension u, (D,) float64: z's rms under the aggregate posterior."""
    return (mu.flatten(1).double().pow(2) + logvar.flatten(1).double().exp()).mean(dim=0).sqrt()


@dataclass
class Diagnostics:
    active_units: int
    latent_dim: int
    kl_per_dim: list[float]  # nats, per dimension
    kl: float  # nats per image, the sum over dimensions
    latent_rms: float  # rms of z over all dimensions under the aggregate posterior (1 under the prior)
    max_dim_rms: float  # the largest per-dimension rms
    collapsed: bool
    far_from_prior: bool
    images: int  # how many images this was measured on
    note: str = field(default="")

    def to_dict(self) -> dict:
        return asdict(self)

    def warnings(self) -> list[str]:
        """One line per problem, each saying what to try; empty when there is none."""
        out = []
        if self.collapsed:
            out.append(f"posterior collapse: 0 of {self.latent_dim} latent units active (KL {self.kl:.3g} "
                       f"nats/image): the decoder ignores z, so every sample and reconstruction is the same image; "
                       f"{COLLAPSE_ADVICE}")
        if self.far_from_prior:
            out.append(f"latents far from N(0, I): z's rms is {self.latent_rms:.2f} (largest dimension "
                       f"{self.max_dim_rms:.1f}; 1 under the prior), so prior samples land where no image was "
                       f"encoded; {FAR_ADVICE}")
        return out

    def summary(self) -> str:
        return (f"{self.active_units} of {self.latent_dim} latent units active, KL {self.kl:.2f} nats/image, "
                f"z rms {self.latent_rms:.2f} (1 under the prior)")


def diagnose(mu: torch.Tensor, logvar: torch.Tensor) -> Diagnostics:
    """Diagnostics of q(z|x) over a set of images: mu, logvar (N, *latent_shape)."""
    act, kl, rms = activity(mu), kl_per_dim(mu, logvar), latent_rms(mu, logvar)
    active = int((act > ACTIVE_THRESHOLD).sum())
    d = Diagnostics(active_units=active, latent_dim=int(act.numel()), kl_per_dim=[round(v, 6) for v in kl.tolist()],
                    kl=float(kl.sum()), latent_rms=float(rms.pow(2).mean().sqrt()), max_dim_rms=float(rms.max()),
                    collapsed=active == 0, images=len(mu),
                    far_from_prior=bool(rms.pow(2).mean().sqrt() > LATENT_RMS_FAR or rms.max() > DIM_RMS_FAR))
    d.note = " ".join(d.warnings()) or d.summary()
    return d
