"""The likelihoods for 8-bit images against closed forms and torch.distributions: the discretized logistic
(a probability mass over 256 levels, its mean), the calibrated Gaussian (the optimal sigma), bits/dim,
free bits."""
import math

import pytest
import torch
from torch.distributions import AffineTransform, SigmoidTransform, TransformedDistribution, Uniform

from edgevae.train.elbo import free_bits_kl, kl_terms
from edgevae.train.likelihood import (
    HALF_BIN,
    LEVELS,
    MIN_LOG_SCALE,
    Likelihood,
    bits_per_dim,
    gaussian_nll,
    logistic_log_mass,
    logistic_mean,
    logistic_nll,
)

LEVEL_VALUES = torch.arange(LEVELS + 1, dtype=torch.float64) / LEVELS  # the 256 values an 8-bit pixel takes


def _grid(dtype=torch.float64):
    """Locations inside and outside [0, 1] crossed with scales from the floor to wider than the range."""
    loc = torch.tensor([-0.3, -0.01, 0.0, 0.001, 0.2, 0.5, 0.77, 0.999, 1.0, 1.02, 1.4], dtype=dtype)
    log_scale = torch.tensor([MIN_LOG_SCALE, -6.0, -4.5, -3.0, -1.5, 0.0, 1.0], dtype=dtype)
    return loc[:, None].expand(-1, len(log_scale)).reshape(-1), log_scale[None, :].expand(len(loc), -1).reshape(-1)


def test_discretized_logistic_sums_to_one_over_the_256_levels():
    loc, log_scale = _grid()
    mass = logistic_log_mass(loc[:, None], log_scale[:, None], LEVEL_VALUES[None, :]).exp()  # (cases, 256)
    # float64 throughout: the 256 masses add to 1 up to rounding (~1e-15 each)
    assert torch.allclose(mass.sum(dim=1), torch.ones(len(loc), dtype=torch.float64), atol=1e-12, rtol=0)
    assert (mass >= 0).all()


def test_discretized_logistic_matches_the_logistic_cdf_of_torch_distributions():
    loc, log_scale = _grid()
    logistic = TransformedDistribution(Uniform(torch.zeros_like(loc), torch.ones_like(loc)),
                                       [SigmoidTransform().inv, AffineTransform(loc, log_scale.exp())])
    edges = torch.cat([LEVEL_VALUES[:1] - HALF_BIN, LEVEL_VALUES + HALF_BIN])  # 257 bin edges

    def cdf(t):
        return logistic.cdf(t.expand(len(loc)))

    cdfs = torch.stack([cdf(e) for e in edges], dim=1)  # (cases, 257)
    oracle = cdfs[:, 1:] - cdfs[:, :-1]
    oracle[:, 0], oracle[:, -1] = cdfs[:, 1], 1 - cdfs[:, -2]  # the end bins take the tails
    ours = logistic_log_mass(loc[:, None], log_scale[:, None], LEVEL_VALUES[None, :]).exp()
    # Both float64; the oracle subtracts CDFs (absolute rounding ~1e-16), ours works in logs: 1e-12 absolute.
    assert torch.allclose(ours, oracle, atol=1e-12, rtol=0)


def test_discretized_logistic_is_finite_and_accurate_in_float32_where_the_cdf_difference_is_not():
    """A sharp logistic far from a bin: the CDF difference underflows in float32, the log-space formula does not."""
    loc, log_scale = torch.tensor([0.5]), torch.tensor([MIN_LOG_SCALE])
    x = torch.tensor([0.5 + 40 / LEVELS])  # 40 levels away at s = 3.4e-4: log mass ~ -460
    got = logistic_log_mass(loc, log_scale, x)
    want = logistic_log_mass(loc.double(), log_scale.double(), x.double())
    assert torch.isfinite(got).all() and want.item() < -400
    assert abs(got.item() - want.item()) < 1e-4 * abs(want.item())  # float32 relative rounding of a few ops


def test_discretized_logistic_has_finite_gradients_at_every_scale_in_float32():
    """The mass's gradient stays finite from the scale floor to scales far wider than [0, 1]: a NaN gradient,
    clipped, turns every weight NaN (torch.where's unused branch once gave 0 * inf at log_scale > 11)."""
    log_scale = torch.tensor([MIN_LOG_SCALE, -2.0, 0.0, 5.0, 11.0, 12.0, 20.0, 40.0]).repeat_interleave(3)
    loc = torch.tensor([0.2, 0.5, 1.3]).repeat(8)
    x = torch.tensor([0.0, 100 / LEVELS, 1.0]).repeat(8)  # the first bin, a middle one, the last
    log_scale.requires_grad_(True)
    loc.requires_grad_(True)
    mass = logistic_log_mass(loc, log_scale, x)
    mass.sum().backward()
    assert torch.isfinite(mass).all() and torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()
    # and the values are those of float64 (a wide logistic spreads its mass: ~log(1 / (255 s)) per bin)
    want = logistic_log_mass(loc.detach().double(), log_scale.detach().double(), x.double())
    assert torch.allclose(mass.detach().double(), want, rtol=1e-4, atol=1e-4)


def test_logistic_mean_is_the_discretized_mean_up_to_the_midpoint_rule():
    loc, log_scale = _grid()
    mass = logistic_log_mass(loc[:, None], log_scale[:, None], LEVEL_VALUES[None, :]).exp()
    exact = (mass * LEVEL_VALUES).sum(dim=1)  # the discretized distribution's mean
    ours = logistic_mean(loc, log_scale)
    # The closed form integrates P(X > t) over [0, 1]; the discretized mean is its midpoint rule with 255
    # panels, whose error is at most (1/255)^2 / 24 * max|f''| * (region of width ~s) ~ 1e-7 / s: at the
    # floor (s = 3.4e-4) that is ~3e-4, a tenth of one 8-bit level. 1e-3 holds it with room.
    assert (ours - exact).abs().max() < 1e-3
    assert ((ours >= 0) & (ours <= 1)).all()
    sharp = log_scale == MIN_LOG_SCALE  # a sharp logistic's mean is its location, clamped to [0, 1]
    assert torch.allclose(ours[sharp], loc[sharp].clamp(0, 1), atol=1e-3)


def test_logistic_mean_has_no_overflow_in_float32():
    loc = torch.tensor([-50.0, -1.0, 0.0, 0.3, 1.0, 2.0, 50.0])
    for log_scale in (MIN_LOG_SCALE, 0.0, 5.0):
        mean = logistic_mean(loc, torch.full_like(loc, log_scale))
        assert torch.isfinite(mean).all() and mean.min() >= 0 and mean.max() <= 1


def test_logistic_likelihood_splits_location_and_scale_and_is_scored_on_8_bit_images():
    lik = Likelihood("logistic", channels=3)
    assert lik.params == 2
    out = torch.randn(2, 6, 4, 5, generator=torch.Generator().manual_seed(0))
    x = torch.randint(0, 256, (2, 3, 4, 5), generator=torch.Generator().manual_seed(1)).float() / 255
    loc, log_scale = out[:, :3] + 0.5, (out[:, 3:] - 2.0).clamp(min=MIN_LOG_SCALE)
    assert torch.allclose(lik.nll(out, x), logistic_nll(loc, log_scale, x))
    assert torch.allclose(lik.mean(out), logistic_mean(loc, log_scale))


def test_calibrated_gaussian_uses_the_optimal_sigma_in_training_and_its_running_value_after():
    g = torch.Generator().manual_seed(0)
    lik = Likelihood("gaussian", channels=3)
    assert not list(lik.parameters())  # nothing to learn: sigma is computed
    mean = torch.rand(16, 3, 8, 8, generator=g)  # inside [0, 1]: training's unclipped mean is the model's
    logits = mean - 0.5  # the decoder's output; the mean is output + 0.5
    noise = torch.tensor([0.02, 0.1, 0.3]).view(1, 3, 1, 1)
    x = (mean + noise * torch.randn(16, 3, 8, 8, generator=g)).clamp(0, 1)
    mse = (x - mean).pow(2).mean(dim=(0, 2, 3))
    nll = lik.train().nll(logits, x)
    # The optimum of sum_pixels 0.5 r^2 / sigma^2 + log sigma is sigma^2 = mean r^2 (Rybkin et al. 2021, eq. 6).
    assert torch.allclose(nll, gaussian_nll(mean, x, 0.5 * mse.log().view(3, 1, 1)), rtol=1e-5)
    for scale in (0.8, 1.25):  # any other sigma scores the batch worse
        other = gaussian_nll(mean, x, 0.5 * (mse * scale).log().view(3, 1, 1))
        assert other.sum() > nll.sum()
    # After one batch the bias-corrected running MSE is that batch's; evaluation uses it.
    assert torch.allclose(lik.log_sigma.flatten(), 0.5 * mse.log(), atol=1e-6)
    assert torch.allclose(lik.eval().nll(logits, x), nll, rtol=1e-5)
    # The running value follows later batches: after many batches with half the error it is close to theirs.
    for _ in range(400):
        lik.train().nll(logits, mean + 0.5 * (x - mean))
    # (1 - 0.02)^400 = 3e-4 of the first batch is left: log sigma within 1e-3 of log(sqrt(mse) / 2)
    assert torch.allclose(lik.log_sigma.flatten(), 0.5 * (mse / 4).log(), atol=1e-3)


def test_linear_gaussian_trains_on_a_bound_of_its_clipped_nll_with_a_gradient_everywhere():
    """--gaussian-mean linear: the model's mean is clip(out + 0.5, 0, 1) (mean(), evaluation); training scores the
    unclipped out + 0.5, which is never closer to an x in [0, 1], so its NLL bounds the model's from above, equal
    where out + 0.5 is inside [0, 1]. Its gradient stays 1 / sigma^2 per unit of error at out = -900, where the
    old sigmoid mean's is 0 (what collapsed a model on transparent sprites: the module doc)."""
    g = torch.Generator().manual_seed(0)
    lik = Likelihood("gaussian", 4, sigma=0.1)  # a fixed sigma: training and evaluation score with the same one
    out = 3 * torch.randn(8, 4, 6, 6, generator=g, dtype=torch.float64)  # a third of the means outside [0, 1]
    x = torch.rand(8, 4, 6, 6, generator=g, dtype=torch.float64)
    assert torch.equal(lik.mean(out), (out + 0.5).clamp(0, 1))
    trained, model = lik.train().nll(out, x), lik.eval().nll(out, x)
    assert torch.equal(model, gaussian_nll((out + 0.5).clamp(0, 1), x, lik.log_sigma))
    assert torch.equal(trained, gaussian_nll(out + 0.5, x, lik.log_sigma))
    assert (model < trained).all()  # every image has means outside [0, 1]
    inside = torch.rand(8, 4, 6, 6, generator=g, dtype=torch.float64) - 0.5
    assert torch.allclose(lik.train().nll(inside, x), lik.eval().nll(inside, x), rtol=1e-12)
    for name, expected in (("linear", -899.5), ("sigmoid", 0.0)):  # x = 0, sigma 1: d/d out = the mean, -900 + 0.5
        far = torch.full((1, 4, 2, 2), -900.0, dtype=torch.float64, requires_grad=True)
        lik = Likelihood("gaussian", 4, sigma=1.0, gaussian_mean=name).train()
        lik.nll(far, torch.zeros_like(far)).sum().backward()
        assert torch.allclose(far.grad, torch.full_like(far, expected)), name


def test_a_run_saved_before_gaussian_mean_existed_keeps_its_sigmoid():
    from edgevae.train.config import TrainConfig

    saved = {k: v for k, v in TrainConfig(likelihood="gaussian").to_dict().items() if k != "gaussian_mean"}
    assert TrainConfig.from_dict(saved).gaussian_mean == "sigmoid"
    assert TrainConfig(likelihood="gaussian").gaussian_mean == "linear"  # new runs
    out = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(Likelihood("gaussian", 3, gaussian_mean="sigmoid").mean(out), torch.sigmoid(out))
    with pytest.raises(ValueError, match="gaussian mean must be one of linear, sigmoid"):
        Likelihood("gaussian", 3, gaussian_mean="tanh")


def test_bits_per_dim_of_a_mass_and_of_a_density():
    # The uniform distribution over 256 levels is 8 bits a dimension; as a density on [0, 1] (value 1, NLL 0)
    # it is also 8 bits once each level's width 1/256 is accounted for.
    dims = 3 * 4 * 5
    assert math.isclose(bits_per_dim(dims * math.log(256), dims, "logistic"), 8.0)
    assert math.isclose(bits_per_dim(0.0, dims, "gaussian"), 8.0)
    # A known case through the likelihood: a logistic centred on each pixel's level with scale s gives every
    # pixel the same mass 1 - 2 sigmoid(-1/(510 s)) (middle levels); bits/dim is minus its log2.
    x = torch.randint(1, 255, (2, 3, 4, 5), generator=torch.Generator().manual_seed(0)).double() / 255
    s = 0.01
    nll = logistic_nll(x, torch.full_like(x, math.log(s)), x).mean().item()
    mass = 1 - 2 * torch.sigmoid(torch.tensor(-HALF_BIN / s, dtype=torch.float64)).item()
    assert math.isclose(bits_per_dim(nll, dims, "logistic"), -math.log2(mass), rel_tol=1e-9)


def test_free_bits_charge_the_floor_for_quiet_dimensions_and_the_kl_for_the_rest():
    g = torch.Generator().manual_seed(0)
    mu = torch.cat([torch.randn(32, 2, generator=g) * 2, torch.randn(32, 3, generator=g) * 0.01], dim=1)
    logvar = torch.cat([torch.full((32, 2), -2.0), torch.zeros(32, 3)], dim=1).requires_grad_()
    mu.requires_grad_()
    fb = 0.5
    penalty = free_bits_kl(mu, logvar, fb)
    per_dim = kl_terms(mu, logvar).mean(dim=0)
    assert per_dim[:2].min() > fb and per_dim[2:].max() < fb  # two busy, three quiet dimensions
    assert torch.allclose(penalty.mean(), torch.clamp(per_dim, min=fb).sum(), rtol=1e-6)
    penalty.mean().backward()
    assert (mu.grad[:, 2:] == 0).all() and (logvar.grad[:, 2:] == 0).all()  # quiet ones are not pushed to 0
    assert (mu.grad[:, :2] != 0).any()


@pytest.mark.parametrize("name", ["bernoulli", "continuous-bernoulli", "gaussian", "logistic"])
def test_every_likelihood_names_what_export_needs(name):
    params = Likelihood(name, 3).export_params()
    if name == "gaussian":
        assert len(params["log_sigma"]) == 3 and params["sigma_fit"] == "optimal"
    if name == "logistic":
        assert params["bins"] == 256
