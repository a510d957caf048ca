"""The VAE: an encoder body with two parallel dense heads (mu, logvar), reparameterization, a decoder.

Kingma & Welling, "Auto-Encoding Variational Bayes" (2014). eps ~ N(0, I) is always an argument,
drawn outside the network, so the same eps gives the same z here and in the exported graphs.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """q(z|x): x (N, C, H, W) -> mu, logvar (N, D)."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), mlp([math.prod(image_shape), *hidden]), nn.ReLU())
        self.mu = nn.Linear(hidden[-1], latent_dim)
        self.logvar = nn.Linear(hidden[-1], latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (N, hidden[-1])
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """p(x|z): z (N, D) -> Bernoulli logits (N, C, H, W); sigmoid(logits) is the mean image."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = mlp([latent_dim, *reversed(hidden), math.prod(image_shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.image_shape)  # (N, C, H, W)


class VAE(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.image_shape, self.latent_dim = tuple(image_shape), latent_dim
        self.encoder = Encoder(image_shape, hidden, latent_dim)
        self.decoder = Decoder(image_shape, hidden, latent_dim)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps with sigma = exp(0.5 * logvar): differentiable in mu and logvar."""
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns decoder logits (N, C, H, W), mu and logvar (N, D)."""
        mu, logvar = self.encoder(x)
        return self.decoder(self.reparameterize(mu, logvar, eps)), mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean image sigmoid(logits), in [0, 1]."""
        return torch.sigmoid(self.decoder(z))


def build(config, image_shape: tuple[int, int, int]) -> VAE:
    """The model a TrainConfig describes, for images of image_shape (C, H, W)."""
    return VAE(image_shape, config.hidden, config.latent_dim)
