"""The VAE (and the plain autoencoder baseline on the same networks), optionally conditional.

Kingma & Welling, "Auto-Encoding Variational Bayes" (2014): an encoder body with two parallel dense
heads (mu, logvar), reparameterization z = mu + exp(0.5 * logvar) * eps, a decoder. eps ~ N(0, I) is
always an argument, drawn outside the network, so the same eps gives the same z here and in the
exported graphs. A conditional model (Sohn et al., 2015) appends the one-hot class label y to the
encoder's features and to z.

The interface export/ relies on (`m = build(config, image_shape, num_classes)`):
    m.kind                       "vae" or "ae"
    m.conditional, m.num_classes whether encoder and decoder take y (int64 (N,)), and how many classes
    m.latent_dim, m.image_shape  D and (C, H, W)
    m.encoder(x[, y])            -> (mu, logvar), each (N, D). For the AE: (code, None) -- there is no
                                 variance; its code z is mu itself and no noise is ever added.
    m.reparameterize(mu, logvar, eps)  static: mu + exp(0.5 * logvar) * eps (mu itself when logvar is None)
    m.decode(z[, y])             the decoder's MEAN image in [0, 1] under the likelihood (for the
                                 continuous Bernoulli that is its mean, not sigmoid(logits))
    m(x, eps[, y])               -> (logits, mu, logvar): what the loss needs
"""
from __future__ import annotations

import torch
from torch import nn

from .likelihood import Likelihood
from .nets import bodies

KINDS = ("vae", "ae")


class Encoder(nn.Module):
    """q(z|x[, y]): x (N, C, H, W) -> mu, logvar (N, D); the AE has no logvar head."""

    def __init__(self, body: nn.Module, latent_dim: int, num_classes: int, variational: bool):
        super().__init__()
        self.body, self.num_classes = body, num_classes
        self.mu = nn.Linear(body.out_features + num_classes, latent_dim)
        self.logvar = nn.Linear(body.out_features + num_classes, latent_dim) if variational else None
        self.register_buffer("one_hot", torch.eye(num_classes), persistent=False)  # row y = one-hot of y

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        h = _with_label(self.body(x), y, self.one_hot)  # (N, F [+ K])
        return self.mu(h), (self.logvar(h) if self.logvar is not None else None)


class Decoder(nn.Module):
    """p(x|z[, y]): z (N, D) -> logits (N, C, H, W)."""

    def __init__(self, body: nn.Module, num_classes: int):
        super().__init__()
        self.body = body
        self.register_buffer("one_hot", torch.eye(num_classes), persistent=False)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(_with_label(z, y, self.one_hot))


def _with_label(h: torch.Tensor, y: torch.Tensor | None, one_hot: torch.Tensor) -> torch.Tensor:
    if not len(one_hot):
        return h
    if y is None:
        raise ValueError("this model is conditional: pass the class labels y (int64, (N,))")
    return torch.cat([h, one_hot[y]], dim=1)


class VAE(nn.Module):
    """kind "vae": the VAE; kind "ae": the same networks as a plain autoencoder (no sampling, no KL)."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: tuple[int, ...] = (512, 256), latent_dim: int = 16,
                 *, arch: str = "mlp", conv_channels: tuple[int, ...] = (32, 64), kind: str = "vae",
                 num_classes: int = 0, likelihood: str = "bernoulli", sigma: float = 0.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.image_shape, self.latent_dim, self.kind = tuple(image_shape), latent_dim, kind
        self.conditional, self.num_classes = num_classes > 0, num_classes
        widths = conv_channels if arch == "conv" else hidden
        encoder_body, decoder_body = bodies(arch, widths, self.image_shape, latent_dim + num_classes)
        self.encoder = Encoder(encoder_body, latent_dim, num_classes, variational=kind == "vae")
        self.decoder = Decoder(decoder_body, num_classes)
        self.likelihood = Likelihood(likelihood, self.image_shape[0], sigma)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor | None, eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps with sigma = exp(0.5 * logvar): differentiable in mu and logvar."""
        return mu if logvar is None else mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None = None):
        """Returns decoder logits (N, C, H, W), mu and logvar (N, D) (logvar None for the AE)."""
        mu, logvar = self.encoder(x, y)
        return self.decoder(self.reparameterize(mu, logvar, eps), y), mu, logvar

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The mean image E[x|z] in [0, 1]."""
        return self.likelihood.mean(self.decoder(z, y))

    def nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image, (N,)."""
        return self.likelihood.nll(logits, x)


def build(config, image_shape: tuple[int, int, int], num_classes: int = 0) -> VAE:
    """The model a TrainConfig describes, for images of image_shape (C, H, W).

    num_classes: the dataset's class count; used only when config.conditional (len(checkpoint['classes'])).
    """
    return VAE(image_shape, config.hidden, config.latent_dim, arch=config.arch, conv_channels=config.conv_channels,
               kind=config.model, num_classes=num_classes if config.conditional else 0,
               likelihood=config.likelihood, sigma=config.sigma)
