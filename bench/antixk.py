"""The most-used VAE baseline, re-implemented in plain PyTorch: AntixK/PyTorch-VAE's VanillaVAE as its configs/vae.yaml
configures it, for bench/quality_rgb.py to train for the same wall time as EdgeVAE's recipe.

    model      encoder: five Conv2d(3x3, stride 2, padding 1) + BatchNorm2d + LeakyReLU, widths 32-64-128-256-512
               (64 x 64 -> 2 x 2), dense mu and log-variance heads of 128; decoder: dense layer to 512 x 2 x 2, four
               ConvTranspose2d(3x3, stride 2, padding 1, output padding 1) + BatchNorm2d + LeakyReLU back to 32 x 32,
               a fifth to 64 x 64, then Conv2d(3x3) to the image channels and Tanh
    loss       F.mse_loss(x_hat, x) (mean over pixels) + kld_weight * KL (summed over the latent, mean over the
               batch), kld_weight = 0.00025
    training   Adam, lr 0.005, no weight decay; ExponentialLR, gamma 0.95 per epoch; batch 64
    data       pixels in [0, 1] as torchvision's ToTensor gives them (no Normalize); the Tanh output is compared
               with them as it is. Reconstructions and samples are clamped to [0, 1] for PSNR and pictures.

Written from the description above (the repository's models/vanilla_vae.py and experiment.py), not copied.
The image channels follow the data (the original is fixed at 3), so RGBA runs too.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN = (32, 64, 128, 256, 512)
LATENT = 128
KLD_WEIGHT = 0.00025
LR, GAMMA, BATCH = 0.005, 0.95, 64


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU())


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU())


class VanillaVAE(nn.Module):
    def __init__(self, channels: int = 3, size: int = 64, latent: int = LATENT, hidden: tuple = HIDDEN):
        super().__init__()
        self.grid = size // 2 ** len(hidden)  # 2 for 64 x 64
        self.hidden = hidden
        self.encoder = nn.Sequential(*[_down(a, b) for a, b in zip((channels, *hidden[:-1]), hidden)])
        flat = hidden[-1] * self.grid**2
        self.fc_mu, self.fc_var = nn.Linear(flat, latent), nn.Linear(flat, latent)
        self.decoder_input = nn.Linear(latent, flat)
        back = hidden[::-1]
        self.decoder = nn.Sequential(*[_up(a, b) for a, b in zip(back[:-1], back[1:])])
        self.final_layer = nn.Sequential(_up(back[-1], back[-1]), nn.Conv2d(back[-1], channels, 3, padding=1),
                                         nn.Tanh())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        return self.fc_mu(h), self.fc_var(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = self.decoder_input(z).view(-1, self.hidden[-1], self.grid, self.grid)
        return self.final_layer(self.decoder(h))

    def forward(self, x: torch.Tensor):
        mu, log_var = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        return self.decode(z), mu, log_var


def loss_function(x_hat: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    recons = F.mse_loss(x_hat, x)
    kld = torch.mean(-0.5 * torch.sum(1 + log_var - mu**2 - log_var.exp(), dim=1), dim=0)
    return recons + KLD_WEIGHT * kld


def train_for(train_x: torch.Tensor, minutes: float, seed: int = 0, log=print) -> tuple[VanillaVAE, dict]:
    """Train on uint8 images (N, C, 64, 64) until `minutes` of wall clock have passed (checked after every step).

    Returns the model (eval mode) and a record: epochs (completed, and the fraction of the last), steps, seconds.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = VanillaVAE(train_x.shape[1], train_x.shape[2])
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=GAMMA)
    start, steps, epoch, done = time.perf_counter(), 0, 0, False
    batches = math.ceil(len(train_x) / BATCH)
    while not done:
        order = torch.randperm(len(train_x), generator=gen)
        for b in range(batches):
            x = train_x[order[b * BATCH:(b + 1) * BATCH]].float() / 255
            x_hat, mu, log_var = model(x)
            loss = loss_function(x_hat, x, mu, log_var)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= 60 * minutes:
                done, epoch = True, epoch + (b + 1) / batches
                break
        else:
            epoch += 1
            scheduler.step()
            log(f"baseline epoch {epoch}: loss {loss.item():.5f} ({time.perf_counter() - start:.0f} s)")
    return model.eval(), {"epochs": round(epoch, 2), "steps": steps, "seconds": time.perf_counter() - start}


@torch.no_grad()
def reconstruct(model: VanillaVAE, x: torch.Tensor) -> torch.Tensor:
    """decode(mu) clamped to [0, 1]: the mean reconstruction, as EdgeVAE's decoder gives it."""
    return torch.cat([model.decode(model.encode(x[i:i + 256])[0]) for i in range(0, len(x), 256)]).clamp(0, 1)


@torch.no_grad()
def sample(model: VanillaVAE, n: int, seed: int) -> torch.Tensor:
    return model.decode(torch.randn(n, LATENT, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
