"""Hand-written VAEs that keep the export protocol, as a user would write them (tests/test_byo.py exports them).

    edgevae export --module tests/byo/user_vaes.py:flat --image-shape 1,16,16 --out exports/flat

Each factory builds its model with seeded random weights; `--weights` tests save and reload them.
"""
import torch
from torch import nn


class FlatVAE(nn.Module):
    """An MLP VAE on (C, H, W) images in [-1, 1] (Tanh out), flat latent (N, D)."""

    def __init__(self, image_shape=(1, 16, 16), latent_dim=6, hidden=64):
        super().__init__()
        self.image_shape = tuple(image_shape)
        pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU())
        self.mu, self.logvar = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)
        self.out = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, pixels), nn.Tanh())

    def encode(self, x):
        h = self.body(x)
        return self.mu(h), self.logvar(h)

    def decode(self, z):
        return self.out(z).view(-1, *self.image_shape)


class SpatialVAE(nn.Module):
    """A convolutional VAE with a spatial latent (N, 4, H/4, W/4), GroupNorm and SiLU, sigmoid out in [0, 1]."""

    def __init__(self, channels=3, width=16, latent_channels=4):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(channels, width, 3, 2, 1), nn.GroupNorm(4, width), nn.SiLU(),
                                  nn.Conv2d(width, width, 3, 2, 1), nn.SiLU(), nn.Conv2d(width, 2 * latent_channels, 1))
        self.up = nn.Sequential(nn.Conv2d(latent_channels, width, 3, 1, 1), nn.SiLU(),
                                nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, 1, 1),
                                nn.GroupNorm(4, width), nn.SiLU(), nn.Upsample(scale_factor=2, mode="nearest"),
                                nn.Conv2d(width, channels, 3, 1, 1), nn.Sigmoid())

    def encode(self, x):
        mu, logvar = self.down(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z):
        return self.up(z)


class TinyVanilla(nn.Module):
    """Shaped like AntixK/PyTorch-VAE's VanillaVAE (BaseVAE API): stride-2 conv + BatchNorm + LeakyReLU, Linear
    heads, encode -> [mu, log_var], a ConvTranspose decoder ending in Tanh, images in [-1, 1]."""

    def __init__(self, in_channels=3, latent_dim=8, hidden_dims=(8, 16)):
        super().__init__()
        layers, c = [], in_channels
        for h in hidden_dims:
            layers += [nn.Conv2d(c, h, 3, 2, 1), nn.BatchNorm2d(h), nn.LeakyReLU()]
            c = h
        self.encoder = nn.Sequential(*layers)
        self.last = hidden_dims[-1]
        self.fc_mu, self.fc_var = nn.Linear(self.last * 16, latent_dim), nn.Linear(self.last * 16, latent_dim)
        self.decoder_input = nn.Linear(latent_dim, self.last * 16)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(self.last, hidden_dims[0], 3, 2, 1, output_padding=1),
                                     nn.BatchNorm2d(hidden_dims[0]), nn.LeakyReLU(),
                                     nn.ConvTranspose2d(hidden_dims[0], in_channels, 3, 2, 1, output_padding=1),
                                     nn.Tanh())

    def encode(self, x):
        h = torch.flatten(self.encoder(x), start_dim=1)
        return [self.fc_mu(h), self.fc_var(h)]

    def decode(self, z):
        return self.decoder(self.decoder_input(z).view(-1, self.last, 4, 4))

    def sample(self, num_samples, current_device):
        return self.decode(torch.randn(num_samples, self.fc_mu.out_features, device=current_device))


def _seeded(cls, seed, **kwargs):
    torch.manual_seed(seed)
    model = cls(**kwargs).eval()
    for m in model.modules():  # BatchNorm with non-trivial running statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def flat(latent_dim=6):
    return _seeded(FlatVAE, 0, latent_dim=latent_dim)


def spatial():
    return _seeded(SpatialVAE, 1)


def vanilla(latent_dim=8):
    return _seeded(TinyVanilla, 2, latent_dim=latent_dim)
