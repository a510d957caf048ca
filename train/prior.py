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
A latent of shape (C, h, w) is fitted as the vector of its C*h*w numbers (the default colour recipe's 2 x 8 x 8):
the Gaussian mixes its positions, which is what makes its samples hang together (an icon's colours and outline
agree across the grid); the graphs reshape to (N, C*h*w) around the map and back. At most FIT_MAX_DIM numbers:
the map holds three D x D tables.

A conditional model gets one Gaussian per class, N(m_y, S_y), fitted to the latents of that class's training
images, and z = m_y + L_y u: the class's samples come from where its images were encoded (with one Gaussian
over all classes, Twemoji's smileys decoded to orange blobs; per class they are yellow faces). A class with no
training image takes the fit over all classes. The class's rows are picked by its one-hot label's matrix
product with the stacked tables (N, K) @ (K, D*D), ops every host has; past PER_CLASS_LIMIT numbers per table
(K * D * D, 32 MB of float32) one Gaussian over all classes is fitted instead.
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
FIT_MAX_DIM = 2048  # latent numbers a fit takes: three D x D float32 tables, 48 MiB in each graph at 2048
PER_CLASS_LIMIT = 1 << 23  # K * D * D: a per-class table's size (float32: 32 MB) up to which classes get their own


class LatentMap(nn.Module):
    """z = mean + u @ scale^T (the decoder's side) and its inverse for mu, logvar (the encoder's side).

    mean (D,), scale (D, D): one Gaussian. mean (K, D), scale (K, D, D): one per class, picked by the one-hot
    label (N, K) every method then takes."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        mean, scale = mean.double(), scale.double()
        self.per_class, self.dim = mean.dim() == 2, mean.shape[-1]
        # per class, each class's D x D matrix is one row of D * D numbers: label @ table picks it
        rows = (lambda m: m.reshape(len(m), -1)) if self.per_class else (lambda m: m)
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale_t", rows(scale.transpose(-1, -2)).contiguous().float())  # L^T: z = m + u L^T
        inverse = torch.linalg.inv(scale)
        self.register_buffer("inverse_t", rows(inverse.transpose(-1, -2)).contiguous().float())  # u = (z - m) L^-T
        self.register_buffer("squared", rows(scale * scale).float())  # L * L, elementwise

    def to_latent(self, mu: torch.Tensor, logvar: torch.Tensor | None, label: torch.Tensor | None = None):
        """The trained encoder's (mu, logvar) of z as the (mu, logvar) of u, both (N, *latent_shape)."""
        shape, mu = mu.shape[1:], mu.reshape(-1, self.dim)
        mu_u = self._times(mu - self._pick(self.mean, label), self._pick(self.inverse_t, label, matrix=True))
        if logvar is None:
            return mu_u.reshape(-1, *shape), None
        precision = torch.exp(-logvar.reshape(-1, self.dim).clamp(-LOGVAR_CLIP, LOGVAR_CLIP))
        logvar_u = -torch.log(self._times(precision, self._pick(self.squared, label, matrix=True)))
        return mu_u.reshape(-1, *shape), logvar_u.reshape(-1, *shape)

    def from_latent(self, u: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """u (N, *latent_shape) -> the trained decoder's z, of the same shape."""
        shape, u = u.shape[1:], u.reshape(-1, self.dim)
        z = self._pick(self.mean, label) + self._times(u, self._pick(self.scale_t, label, matrix=True))
        return z.reshape(-1, *shape)

    def _pick(self, table: torch.Tensor, label: torch.Tensor | None, matrix: bool = False) -> torch.Tensor:
        """The table itself; per class, each image's row of it ((N, D) means, (N, D, D) matrices)."""
        if not self.per_class:
            return table
        if label is None:
            raise ValueError("this prior is fitted per class: pass the class labels y")
        picked = label @ table
        return picked.reshape(-1, self.dim, self.dim) if matrix else picked

    @staticmethod
    def _times(v: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """v (N, D) times a matrix (D, D), or each row by its own (N, D, D)."""
        return v @ matrix if matrix.dim() == 2 else (v.unsqueeze(1) @ matrix).reshape(v.shape[0], -1)


def wanted(config) -> bool:
    """Whether a run fits the prior: --prior-fit gaussian, for a VAE."""
    return config.prior_fit == "gaussian" and config.model == "vae"


def check_size(latent_shape: tuple[int, ...]) -> None:
    """ValueError, before training starts, when a latent is too large for a fit (FIT_MAX_DIM)."""
    if math.prod(latent_shape) > FIT_MAX_DIM:
        raise ValueError(f"--prior-fit gaussian fits a covariance over the latent's {math.prod(latent_shape):,} "
                         f"numbers ({'x'.join(map(str, latent_shape))}); it takes at most {FIT_MAX_DIM:,}: use "
                         "--prior-fit none, or fewer --latent-channels")


@torch.no_grad()
def fit(model, x: torch.Tensor, y: torch.Tensor | None, batch: int = 256, seed: int = 0,
        binarize: bool = False) -> dict:
    """The Gaussian fitted to the aggregate posterior of `model` (unfitted) on uint8 images x; a checkpoint entry.
    binarize: the images as training saw them, one Bernoulli sample each (seeded). A conditional model (labels y)
    gets one Gaussian per class (the module doc).

    Returns {"mean": (D,), "scale": (D, D) lower-triangular, "images": n, "eigenvalues": [min, max] of S}; per
    class "mean" (K, D), "scale" (K, D, D), the eigenvalues over all classes, and "classes": images per class.
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
        mu, logvar = model.encoder.unmapped(xb, yb)  # a spatial latent's (N, C, h, w) as vectors of C*h*w
        mus.append(mu.flatten(1).double().cpu())
        variances.append(logvar.flatten(1).double().exp().cpu())
    model.train(was_training)
    mu, var = torch.cat(mus), torch.cat(variances)
    overall = _gaussian(mu, var)
    classes = model.num_classes if model.conditional and y is not None else 0
    if not classes or classes * mu.shape[1] ** 2 > PER_CLASS_LIMIT:
        return {**overall, "images": len(mu)}
    y = y.cpu()
    fits = [_gaussian(mu[y == k], var[y == k]) if bool((y == k).any()) else overall for k in range(classes)]
    return {"mean": torch.stack([f["mean"] for f in fits]), "scale": torch.stack([f["scale"] for f in fits]),
            "images": len(mu), "classes": [int((y == k).sum()) for k in range(classes)],
            "eigenvalues": [min(f["eigenvalues"][0] for f in fits), max(f["eigenvalues"][1] for f in fits)]}


def _gaussian(mu: torch.Tensor, var: torch.Tensor) -> dict:
    """N(m, S) of posteriors N(mu_i, diag var_i) (float64 rows): m = mean mu, S = cov(mu) + mean diag var."""
    mean = mu.mean(0)
    centred = mu - mean
    cov = centred.T @ centred / len(mu) + torch.diag(var.mean(0))
    eigenvalues = torch.linalg.eigvalsh(cov)
    jitter = JITTER * float(eigenvalues.clamp(min=0).mean())
    scale = torch.linalg.cholesky(cov + jitter * torch.eye(len(cov), dtype=cov.dtype))
    return {"mean": mean.float(), "scale": scale.float(),
            "eigenvalues": [float(eigenvalues.min()), float(eigenvalues.max())]}


def describe(entry: dict) -> str:
    """One line for logs, `info` and the spec."""
    low, high = entry["eigenvalues"]
    if entry["mean"].dim() == 2:
        return (f"a Gaussian per class ({len(entry['mean'])} classes) fitted to the latents of {entry['images']:,} "
                f"training images (covariance eigenvalues {low:.3g} to {high:.3g}, where N(0, I) has 1), folded in "
                f"as z = m_y + L_y u")
    return (f"Gaussian fitted to the latents of {entry['images']:,} training images (covariance eigenvalues "
            f"{low:.3g} to {high:.3g}, where N(0, I) has 1), folded in as z = m + L u")


def check(entry: dict, latent_dim: int, num_classes: int = 0) -> None:
    """ValueError unless `entry` is a fit for a latent of latent_dim (per class: of a model with num_classes)
    (a checkpoint being read)."""
    mean, scale = entry.get("mean"), entry.get("scale")
    shapes = [((latent_dim,), (latent_dim, latent_dim))]
    if num_classes:
        shapes.append(((num_classes, latent_dim), (num_classes, latent_dim, latent_dim)))
    if not (isinstance(mean, torch.Tensor) and isinstance(scale, torch.Tensor)
            and (tuple(mean.shape), tuple(scale.shape)) in shapes
            and bool(torch.isfinite(mean).all()) and bool(torch.isfinite(scale).all())
            and bool((torch.diagonal(scale, dim1=-2, dim2=-1) > 0).all())):
        raise ValueError(f"its prior_fit is not a fit for a {latent_dim}-d latent"
                         + (f" of {num_classes} classes" if num_classes else ""))
    if not math.isfinite(float(torch.diagonal(scale.double(), dim1=-2, dim2=-1).log().sum())):  # log det
        raise ValueError("its prior_fit's scale is singular")
