"""Models and likelihoods against torch as the oracle: shapes and the interface export relies on,
the conv decoder's settings, continuous Bernoulli and Gaussian against torch.distributions, IWAE."""
import math

import pytest
import torch
from torch import nn
from torch.distributions import ContinuousBernoulli, Normal

from edgevae.train.config import TrainConfig
from edgevae.train.elbo import Objective, iwae_log_weights, negative_elbo
from edgevae.train.likelihood import cb_log_norm, cb_mean, continuous_bernoulli_nll, gaussian_nll
from edgevae.train.model import build

SHAPE, D, K = (3, 16, 16), 4, 5


def _model(**overrides):
    config = TrainConfig(**{"hidden": (32,), "conv_channels": (4, 8), "latent_dim": D, "arch": "mlp",
                            "likelihood": "bernoulli", **overrides})
    torch.manual_seed(0)
    return build(config, SHAPE, num_classes=K)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("conditional", [False, True])
def test_interface_export_relies_on(arch, kind, conditional):
    m = _model(arch=arch, model=kind, conditional=conditional).eval()
    assert (m.kind, m.conditional, m.num_classes, m.latent_dim, m.image_shape) == \
        (kind, conditional, K if conditional else 0, D, SHAPE)
    x, eps = torch.rand(6, *SHAPE), torch.randn(6, D)
    y = torch.arange(6) % K if conditional else None
    mu, logvar = m.encoder(x, y)
    assert mu.shape == (6, D)
    assert (logvar is None) if kind == "ae" else logvar.shape == (6, D)
    z = m.reparameterize(mu, logvar, eps)
    if kind == "vae":  # the same float32 formula: bit-identical
        assert torch.equal(z, mu + torch.exp(0.5 * logvar) * eps)
    else:
        assert torch.equal(z, mu)  # the AE never samples
    x_hat = m.decode(z, y)
    assert x_hat.shape == (6, *SHAPE) and x_hat.min() >= 0 and x_hat.max() <= 1


def test_conditional_model_needs_labels_and_uses_them():
    m = _model(conditional=True).eval()
    z = torch.randn(2, D)
    with pytest.raises(ValueError, match="pass the class labels y"):
        m.decode(z)
    assert not torch.allclose(m.decode(z, torch.tensor([0, 0])), m.decode(z, torch.tensor([1, 1])))


def test_conv_decoder_is_kernel_4_stride_2_padding_1_and_sizes_follow_config():
    m = _model(arch="conv", conv_channels=(6, 10))
    transposed = [l for l in m.decoder.modules() if isinstance(l, nn.ConvTranspose2d)]
    convs = [l for l in m.encoder.modules() if isinstance(l, nn.Conv2d)]
    assert [(l.in_channels, l.out_channels) for l in convs] == [(3, 6), (6, 10)]
    assert [(l.in_channels, l.out_channels) for l in transposed] == [(10, 6), (6, 3)]
    assert all((l.kernel_size, l.stride, l.padding) == ((4, 4), (2, 2), (1, 1)) for l in transposed + convs)
    with pytest.raises(ValueError, match="divisible by 8"):
        build(TrainConfig(arch="conv", conv_channels=(4, 4, 4), likelihood="bernoulli", latent_dim=2), (1, 28, 28))


def test_mlp_widths_follow_config():
    m = _model(hidden=(40, 24))
    widths = [(l.in_features, l.out_features) for l in m.modules() if isinstance(l, nn.Linear)]
    assert widths == [(768, 40), (40, 24), (24, D), (24, D), (D, 24), (24, 40), (40, 768)]


def test_continuous_bernoulli_matches_torch_distributions():
    logits = torch.cat([torch.linspace(-12, 12, 241), torch.tensor([0.0, 1e-6, -1e-6, 0.4999, 0.5001])]).double()
    x = torch.rand(logits.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    oracle = ContinuousBernoulli(logits=logits)
    # torch.distributions uses its own Taylor expansion within lambda in (0.499, 0.501), accurate to ~1e-5
    # there; elsewhere both are exact formulas in float64. 2e-5 covers torch's expansion, not a wrong formula.
    nll = continuous_bernoulli_nll(logits.view(1, -1), x.view(1, -1))
    assert torch.allclose(nll, -oracle.log_prob(x).sum().view(1), atol=2e-5 * len(x), rtol=0)
    assert torch.allclose(cb_mean(logits), oracle.mean, atol=2e-5, rtol=0)


def test_continuous_bernoulli_is_accurate_in_float32_near_zero_logit():
    """Our series near l = 0 against the exact formula in float64 (exact there for |l| >= 1e-3)."""
    l = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    l = l[l.abs() >= 1e-3]
    exact_norm = torch.log(l / torch.tanh(l / 2))
    exact_mean = 1 / (1 - torch.exp(-l)) - 1 / l
    # float32 has a unit roundoff of 6e-8; 1e-6 allows a few roundings on values of order 1.
    assert torch.allclose(cb_log_norm(l.float()).double(), exact_norm, atol=1e-6, rtol=0)
    assert torch.allclose(cb_mean(l.float()).double(), exact_mean, atol=1e-6, rtol=0)


def test_gaussian_nll_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, x = torch.rand(4, 3, 5, 5, generator=g, dtype=torch.float64), torch.rand(4, 3, 5, 5, generator=g,
                                                                                     dtype=torch.float64)
    log_sigma = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float64).view(3, 1, 1)
    oracle = -Normal(mean, log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gaussian_nll(mean, x, log_sigma), oracle, atol=1e-10, rtol=0)  # float64: rounding only


def test_learned_sigma_is_a_parameter_fixed_sigma_is_not():
    learned, fixed = _model(likelihood="gaussian", sigma_fit="learned"), _model(likelihood="gaussian", sigma=0.2)
    assert any(n == "likelihood.log_sigma" for n, _ in learned.named_parameters())
    assert not any(n == "likelihood.log_sigma" for n, _ in fixed.named_parameters())
    assert math.isclose(fixed.likelihood.log_sigma.exp().flatten()[0].item(), 0.2, rel_tol=1e-6)


def test_iwae_with_one_sample_is_the_single_sample_elbo_and_more_samples_tighten_it():
    m = _model(likelihood="bernoulli").double()
    x = torch.rand(8, *SHAPE, dtype=torch.float64)
    eps = torch.randn(1, 8, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    log_w, recon = iwae_log_weights(m, x, eps)
    logits, mu, logvar = m(x, eps[0])
    z = mu + torch.exp(0.5 * logvar) * eps[0]
    prior, posterior = Normal(0.0, 1.0), Normal(mu, torch.exp(0.5 * logvar))
    direct = -m.nll(logits, x) + prior.log_prob(z).sum(1) - posterior.log_prob(z).sum(1)
    assert torch.allclose(log_w[0], direct, atol=1e-9, rtol=0)  # float64: rounding only
    objective = Objective(m)
    many = torch.randn(256, 8, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    loss_k, neg_elbo_k, _, _ = objective(x, many)
    # Burda et al., Theorem 1: log p(x) >= L_k >= L_1 in expectation; with 256 samples the estimates of
    # both sides are far tighter than their gap (tens of nats for an untrained model).
    assert (loss_k < neg_elbo_k).all()


def test_ae_loss_is_reconstruction_only():
    m = _model(model="ae")
    x = torch.rand(3, *SHAPE)
    loss, recon, kl = negative_elbo(m, x, torch.randn(3, D), beta=5.0)
    assert torch.equal(kl, torch.zeros(3)) and math.isclose(loss.item(), recon.mean().item(), rel_tol=1e-6)
