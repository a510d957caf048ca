"""train/evaluate.py's estimators against closed forms: a linear-Gaussian model, whose marginal likelihood
p(x) = N(b, W W^T + s^2 I) and posterior are known exactly (torch.distributions is the oracle), and a
model built to have a known number of active units."""
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from edgevae.train.evaluate import ACTIVE_THRESHOLD, evaluate_model, importance_weighted
from edgevae.train.likelihood import gaussian_nll
from edgevae.train.model import VAE


class LinearGaussian(nn.Module):
    """z ~ N(0, I_D), x | z ~ N(W z + b, s^2 I_P), with the interface the estimator uses.

    The encoder is the exact posterior p(z|x) = N(S W^T (x - b) / s^2, S), S = (I + W^T W / s^2)^-1, reduced
    to its diagonal (exact when W's columns are orthogonal), then made deliberately wrong on request:
    mean moved by `shift` posterior sds, variances times `widen`.
    """
    kind, conditional, num_classes = "vae", False, 0
    reparameterize = staticmethod(VAE.reparameterize)

    def __init__(self, W: torch.Tensor, b: torch.Tensor, s: float, shift: float = 0.0, widen: float = 1.0):
        super().__init__()
        self.latent_dim = W.shape[1]
        self.W, self.b, self.s, self.shift, self.widen = W, b, s, shift, widen
        self.post_cov = torch.linalg.inv(torch.eye(self.latent_dim, dtype=W.dtype) + W.T @ W / s**2)  # S (D, D)

    def post_mean(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1).to(self.W.dtype) - self.b) @ self.W @ self.post_cov / self.s**2  # (N, D)

    def q(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variances) of q(z|x) in float64."""
        var = torch.diagonal(self.post_cov)
        return self.post_mean(x) + self.shift * var.sqrt(), (self.widen * var).expand(len(x), -1)

    def encoder(self, x, y=None):
        mean, var = self.q(x)
        return mean.float(), var.log().float()

    def decoder(self, z, y=None):
        return (z @ self.W.T.float() + self.b.float()).view(-1, 1, 1, len(self.b))  # (N, 1, 1, P)

    def nll(self, mean, x):
        return gaussian_nll(mean, x, torch.tensor(math.log(self.s)))

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log p(x) per image, float64 (N,)."""
        cov = self.W @ self.W.T + self.s**2 * torch.eye(len(self.b), dtype=self.W.dtype)
        return MultivariateNormal(self.b, cov).log_prob(x.flatten(1).double())

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=gen, dtype=torch.float64)
        x = z @ self.W.T + self.b + self.s * torch.randn(n, len(self.b), generator=gen, dtype=torch.float64)
        return x.float().view(n, 1, 1, -1)  # (N, 1, 1, P): images one pixel high


def _model(orthogonal: bool, scales=(2.0, 1.5, 1.0), p: int = 6, **wrong) -> LinearGaussian:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(p, len(scales), generator=g, dtype=torch.float64)
    W = torch.linalg.qr(a)[0] * torch.tensor(scales, dtype=torch.float64) if orthogonal else a
    return LinearGaussian(W, torch.randn(p, generator=g, dtype=torch.float64), 0.5, **wrong)


def test_exact_posterior_gives_the_exact_likelihood_at_any_k():
    model = _model(orthogonal=True)
    x = model.sample(200, torch.Generator().manual_seed(1))
    truth = model.log_px(x)
    for k in (1, 3, 50):
        # q = p(z|x) makes every weight p(x, z) / q(z|x) equal to p(x): no Monte Carlo error is left, only
        # float32 rounding of log-weights of ~10 nats (~1e-6 each); 1e-4 nats allows for it 100 times over.
        nll = importance_weighted(model, x, None, k, chunk=64)["nll"]
        assert torch.allclose(-nll, truth, atol=1e-4, rtol=0), (k, (nll + truth).abs().max())
    result = evaluate_model(model, x, None, k=2000)
    # -ELBO = -log p(x) + KL(q || posterior) = -log p(x) here; its reconstruction term is a Monte Carlo mean
    # over 2000 samples of 200 images (0.003 nats off, measured), so 0.05 nats.
    assert abs(result["neg_elbo"] - (-truth.mean().item())) < 0.05
    assert abs(result["nll"] - (-truth.mean().item())) < 1e-4  # as above: exact up to float32 rounding


def test_iwae_nll_tends_to_the_true_value_as_k_grows():
    model = _model(orthogonal=False, shift=0.7, widen=1.8)  # correlated posterior, shifted and too wide q
    x = model.sample(300, torch.Generator().manual_seed(2))
    truth = -model.log_px(x)
    # The ELBO's gap is KL(q(z|x) || p(z|x)) per image, in closed form (full-covariance posterior).
    mean, var = model.q(x)
    post = MultivariateNormal(model.post_mean(x), model.post_cov)
    gap = kl_divergence(MultivariateNormal(mean, torch.diag_embed(var)), post).mean().item()
    assert gap > 0.5  # the posterior is deliberately imperfect: the test would be vacuous otherwise
    bias = {}
    for k in (1, 10, 100, 5000):
        result = evaluate_model(model, x, None, k=k)
        bias[k] = result["nll"] - truth.mean().item()
        if k == 5000:
            # -ELBO - (-log p(x)): the closed-form gap up to the Monte Carlo error of the reconstruction mean
            # (0.003 nats off at k = 5000 over 300 images, measured); 0.05 nats.
            assert abs(result["neg_elbo"] - truth.mean().item() - gap) < 0.05
    # Burda et al., Theorem 1: the k-sample bound decreases in k towards -log p(x). k = 1 is a one-sample
    # ELBO: its bias is the gap up to Monte Carlo error (sd of log w ~1.7 nats / sqrt(300) ~0.1; 0.19 measured),
    # so 0.4 nats. Each tenfold k must at least halve a bias of this size (measured 1.84, 0.11, 0.017).
    assert abs(bias[1] - gap) < 0.4
    assert bias[1] > 2 * bias[10] > 0 and bias[10] > 2 * bias[100]
    # At k = 5000 the bias, about Var(w) / (2 k p(x)^2), is ~0.002 nats here (measured; the k = 100 bias
    # over 50). 0.01 nats either side.
    assert abs(bias[5000]) < 0.01, bias


def test_active_units_and_kl_per_dimension_on_a_model_built_to_have_three():
    # Columns of W: three strong (var of the posterior mean ~0.9), one weak (lambda / s^2 = 0.002: var ~0.002,
    # under the 0.01 threshold) and one zero (the posterior is the prior: mu = 0 and KL = 0 exactly).
    model = _model(orthogonal=True, scales=(2.0, 1.5, 1.0, math.sqrt(0.002) * 0.5, 0.0))
    x = model.sample(2000, torch.Generator().manual_seed(3))
    result = evaluate_model(model, x, None, k=4)
    assert result["active_units"] == 3
    activity = result["activity"]
    assert min(activity[:3]) > 0.5 and activity[3] < ACTIVE_THRESHOLD / 2 and activity[4] < 1e-12
    mu = model.q(x)[0]
    # the estimator's mu is float32, the oracle's float64: 1e-4 relative
    assert torch.allclose(torch.tensor(activity, dtype=torch.float64), mu.var(dim=0), rtol=1e-4, atol=1e-9)
    kl = result["kl_per_dim"]
    assert min(kl[:3]) > 0.3 and kl[4] < 1e-6  # a dead unit costs nothing (float32 rounding of log 1)
    assert math.isclose(sum(kl), result["kl"], rel_tol=1e-6)  # the dimensions add up to the total KL


def test_result_does_not_depend_on_chunking():
    model = _model(orthogonal=False, shift=0.5, widen=1.5)
    x = model.sample(20, torch.Generator().manual_seed(4))
    a = importance_weighted(model, x, None, 300, chunk=7)["nll"]
    b = importance_weighted(model, x, None, 300, chunk=4096)
    # image i's noise comes from its own seeded generator: the same samples however they are batched;
    # only float32 summation order differs (~1e-6 nats)
    assert torch.allclose(a, b["nll"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 7])
def test_autoencoder_gets_its_reconstruction_nll_only(k):
    torch.manual_seed(0)
    ae = VAE((1, 4, 4), (8,), 2, kind="ae").eval()
    x = (torch.rand(5, 1, 4, 4) > 0.5).float()
    with torch.inference_mode():
        result = evaluate_model(ae, x, None, k=k)
        direct = ae.nll(ae.decoder(ae.encoder(x)[0]), x).mean().item()
    assert "nll" not in result and "neg_elbo" not in result and "posterior" in result["note"]
    assert math.isclose(result["recon_nll"], direct, rel_tol=1e-6)
