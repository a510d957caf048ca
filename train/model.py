"""The VAE (and the plain autoencoder baseline on the same networks), optionally conditional.

Kingma & Welling, "Auto-Encoding Variational Bayes" (2014): an encoder body with two parallel dense
heads (mu, logvar), reparameterization z = mu + exp(0.5 * logvar) * eps, a decoder. eps ~ N(0, I) is
always an argument, drawn outside the network, so the same eps gives the same z here and in the
exported graphs. A conditional model (Sohn et al., 2015) appends the one-hot class label y to the
encoder's features and to z.

The interface export/ relies on (`m = build(config, image_shape, num_classes)`):
    m.kind                       "vae" or "ae"
    m.conditional, m.num_classes whether encoder and decoder take y (int64 (N,)), and how many classes
    m.latent_shape, m.latent_dim (D,) or (Cz, h, w) for a spatial latent; D = its product
    m.image_shape                (C, H, W)
    m.encoder(x[, y])            -> (mu, logvar), each (N, *latent_shape). For the AE: (code, None) -- there is
                                 no variance; its code z is mu itself and no noise is ever added.
    m.reparameterize(mu, logvar, eps)  static: mu + exp(0.5 * logvar) * eps (mu itself when logvar is None)
    m.decode(z[, y])             the decoder's MEAN image in [0, 1] under the likelihood (for the
                                 continuous Bernoulli that is its mean, not sigmoid(logits))
    m(x, eps[, y])               -> (out, mu, logvar): what the loss needs; out holds the likelihood's
                                 parameters, (N, P*C, H, W)

Heads: a flat latent takes dense layers on the encoder body's flattened features (the one-hot label
appended); a spatial latent (--arch resnet --latent-channels Cz) takes 1x1 convs on its feature map (the
one-hot label appended as constant planes), so z keeps the image's layout at 1/2^(levels-1) of its size.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .likelihood import Likelihood
from .nets import bodies
from .resnet import ResNetDecoderBody, ResNetEncoderBody, auto_widths, in_float32

KINDS = ("vae", "ae")


class Encoder(nn.Module):
    """q(z|x[, y]): x (N, C, H, W) -> mu, logvar (N, *latent_shape); the AE has no logvar head."""

    def __init__(self, body: nn.Module, latent_channels: int, num_classes: int, variational: bool,
                 spatial: bool = False):
        super().__init__()
        self.body, self.num_classes = body, num_classes
        if spatial:  # 1x1 convs on the feature map (N, F [+ K], h, w)
            def head():
                return nn.Conv2d(body.out_channels + num_classes, latent_channels, 1)
        else:  # dense layers on the features (N, F [+ K])
            def head():
                return nn.Linear(body.out_features + num_classes, latent_channels)
        self.mu = head()
        self.logvar = head() if variational else None
        self.register_buffer("one_hot", torch.eye(num_classes), persistent=False)  # row y = one-hot of y
        self.latent_map = None  # the fitted prior's change of variable (train/prior.py), once attached

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None):
        mu, logvar = self.unmapped(x, y)
        if self.latent_map is None:
            return mu, logvar
        return self.latent_map.to_latent(mu, logvar, self.one_hot[y] if len(self.one_hot) else None)

    def unmapped(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """mu, logvar of the trained latent z, before a fitted prior's change of variable."""
        h = _with_label(self.body(x), y, self.one_hot)  # (N, F [+ K]) or (N, F [+ K], h, w)
        return in_float32(self.mu, h), (in_float32(self.logvar, h) if self.logvar is not None else None)


class Decoder(nn.Module):
    """p(x|z[, y]): z (N, *latent_shape) -> the likelihood's parameters (N, P*C, H, W)."""

    def __init__(self, body: nn.Module, num_classes: int):
        super().__init__()
        self.body = body
        self.register_buffer("one_hot", torch.eye(num_classes), persistent=False)
        self.latent_map = None  # the fitted prior's change of variable (train/prior.py), once attached

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.latent_map is not None:
            z = self.latent_map.from_latent(z, self.one_hot[y] if len(self.one_hot) else None)
        return self.body(_with_label(z, y, self.one_hot))


def _with_label(h: torch.Tensor, y: torch.Tensor | None, one_hot: torch.Tensor) -> torch.Tensor:
    """h with the one-hot label appended: as features (N, F) or as constant planes (N, F, h, w)."""
    if not len(one_hot):
        return h
    if y is None:
        raise ValueError("this model is conditional: pass the class labels y (int64, (N,))")
    label = one_hot[y]  # (N, K)
    if h.dim() == 4:
        label = label[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
    return torch.cat([h, label], dim=1)


class VAE(nn.Module):
    """kind "vae": the VAE; kind "ae": the same networks as a plain autoencoder (no sampling, no KL)."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: tuple[int, ...] = (512, 256), latent_dim: int = 16,
                 *, arch: str = "mlp", conv_channels: tuple[int, ...] = (32, 64), kind: str = "vae",
                 num_classes: int = 0, likelihood: str = "bernoulli", sigma: float = 0.0, sigma_fit: str = "optimal",
                 gaussian_mean: str = "linear", widths: tuple[int, ...] = (), blocks: int = 1, latent_channels: int = 0,
                 norm: str = "none"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if latent_channels and arch != "resnet":
            raise ValueError(f"a spatial latent (--latent-channels {latent_channels}) needs --arch resnet, got {arch}")
        self.image_shape, self.kind = tuple(image_shape), kind
        self.conditional, self.num_classes = num_classes > 0, num_classes
        likelihood = Likelihood(likelihood, self.image_shape[0], sigma, sigma_fit, gaussian_mean)
        c, h, w = self.image_shape
        out_shape = (c * likelihood.params, h, w)  # what the decoder body produces
        variational = kind == "vae"
        if arch == "resnet":
            widths = widths or auto_widths(self.image_shape)
            spatial = latent_channels > 0
            encoder_body = ResNetEncoderBody(self.image_shape, widths, blocks, flat=not spatial, kind=norm)
            if spatial:
                self.latent_shape = (latent_channels, *encoder_body.geometry.grid)
                decoder_body = ResNetDecoderBody(self.image_shape, widths, blocks, out_shape[0],
                                                 in_channels=latent_channels + num_classes, kind=norm)
            else:
                self.latent_shape = (latent_dim,)
                decoder_body = ResNetDecoderBody(self.image_shape, widths, blocks, out_shape[0],
                                                 in_features=latent_dim + num_classes, kind=norm)
            self.encoder = Encoder(encoder_body, self.latent_shape[0], num_classes, variational, spatial)
        else:
            self.latent_shape = (latent_dim,)
            encoder_body, decoder_body = bodies(arch, conv_channels if arch == "conv" else hidden, self.image_shape,
                                                latent_dim + num_classes, out_shape)
            self.encoder = Encoder(encoder_body, latent_dim, num_classes, variational)
        self.latent_dim = math.prod(self.latent_shape)
        self.decoder = Decoder(decoder_body, num_classes)
        self.likelihood = likelihood  # registered last: parameter order (and saved optimizer state) as before
        self.prior_fit = None  # the fitted prior's checkpoint entry, once attached

    def attach_prior(self, entry: dict) -> None:
        """Fold a fitted prior (train/prior.py) into encoder and decoder: z = m + L u (per class, or a mixture's
        component), u ~ N(0, I)."""
        from .prior import LatentMap, check

        if self.kind != "vae":
            raise ValueError("a fitted prior needs a VAE")
        check(entry, self.latent_dim, self.num_classes)
        latent_map = LatentMap.of(entry).to(self.encoder.one_hot.device)
        self.encoder.latent_map = self.decoder.latent_map = latent_map
        self.prior_fit = entry

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor | None, eps: torch.Tensor) -> torch.Tensor:
        """z = mu + sigma * eps with sigma = exp(0.5 * logvar): differentiable in mu and logvar."""
        return mu if logvar is None else mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None = None):
        """Returns the decoder's output (N, P*C, H, W), mu and logvar (N, *latent_shape) (logvar None for the AE)."""
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
    The config's auto choices must be made (train/auto.py resolve, which the training loop calls).
    """
    if not config.resolved:
        raise ValueError(f"the config still has data-dependent choices (arch {config.arch}, likelihood "
                         f"{config.likelihood}, latent_dim {config.latent_dim}); resolve them with "
                         f"edgevae.train.auto.resolve(config, images) first")
    return VAE(image_shape, config.hidden, config.latent_dim, arch=config.arch, conv_channels=config.conv_channels,
               kind=config.model, num_classes=num_classes if config.conditional else 0,
               likelihood=config.likelihood, sigma=config.sigma, sigma_fit=config.sigma_fit,
               gaussian_mean=config.gaussian_mean, widths=config.widths,
               blocks=config.blocks, latent_channels=config.latent_channels, norm=config.norm)
