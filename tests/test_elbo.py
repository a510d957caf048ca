"""The loss: closed-form KL and Bernoulli NLL against direct computations; it falls when optimised."""
import math

import torch
from torch.distributions import Bernoulli, Normal
from torch.distributions import kl_divergence as torch_kl

from edgevae.train.elbo import bernoulli_nll, kl_divergence, negative_elbo
from edgevae.train.model import VAE


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 5, generator=g, dtype=torch.float64)
    logvar = torch.randn(6, 5, generator=g, dtype=torch.float64)
    direct = torch_kl(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(dim=1)
    # float64 on both sides: agreement to rounding, 1e-12.
    assert torch.allclose(kl_divergence(mu, logvar), direct, atol=1e-12, rtol=0)
    assert torch.all(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)) == 0)  # q = prior


def test_bernoulli_nll_matches_log_prob():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    x = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64).round()  # binary pixels
    direct = -Bernoulli(logits=logits).log_prob(x).flatten(1).sum(dim=1)
    assert torch.allclose(bernoulli_nll(logits, x), direct, atol=1e-12, rtol=0)


def test_negative_elbo_is_recon_plus_beta_kl_per_image():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), (8,), 2)
    x, eps = torch.rand(3, 1, 4, 4), torch.randn(3, 2)
    loss, recon, kl = negative_elbo(vae, x, eps, beta=0.5)
    assert recon.shape == kl.shape == (3,)
    assert math.isclose(loss.item(), (recon + 0.5 * kl).mean().item(), rel_tol=1e-6)


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), (32,), 4)
    x = (torch.rand(16, 1, 8, 8) > 0.5).float()
    eps = torch.randn(16, 4)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    first = negative_elbo(vae, x, eps)[0].item()
    for _ in range(100):
        loss = negative_elbo(vae, x, eps)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first  # memorising 16 images with fixed noise must cut the loss a lot
