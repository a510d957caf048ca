"""p(x|z): the decoder outputs parameters (N, P*C, H, W); a likelihood turns them into -log p(x|z) and a mean image.

    bernoulli             NLL = BCE(logits, x); mean = sigmoid(logits). For binary or binary-like pixels
                          (with --binarize, a fresh binary sample of x each step: dynamic binarization).
    continuous-bernoulli  Loaiza-Ganem & Cunningham (2019): the Bernoulli density on [0, 1] with its
                          normaliser C(lambda), so grey pixels have a proper likelihood;
                          mean = 1 / (1 - exp(-l)) - 1 / l (not sigmoid(l)).
    gaussian              N(x; m, sigma_c^2), one sigma per channel: fixed (--sigma S), the
                          analytic optimum sigma_c^2 = MSE_c of each batch (--sigma-fit optimal, Rybkin, Daniilidis
                          & Levine 2021, "Simple and Effective VAE Training with Calibrated Decoders"; a running
                          average of it is what evaluation and export use), or a learned parameter
                          (--sigma-fit learned). The mean m = clip(out + 0.5, 0, 1) (--gaussian-mean linear);
                          training scores the unclipped out + 0.5 instead. For x in [0, 1] the clipped mean is
                          never farther from x, so training minimises a bound on the model's NLL, and its
                          gradient does not vanish where the clip is flat. The former m = sigmoid(out)
                          (--gaussian-mean sigmoid, runs saved before) saturates on images whose pixels are
                          mostly exactly 0 or 1: on 1,352 RGBA sprites (90% of the subpixels 0, transparent)
                          the posterior collapsed in the first epoch and never came back (0 of 952 units active,
                          test PSNR 12.8 dB): the decoder's outputs sat at -37 to -900, where sigmoid's gradient
                          is 0. The linear mean on the same sprites: 647 units, 25.7 dB in 3 minutes.
    logistic              the discretized logistic of PixelCNN++ (Salimans et al. 2017) on 8-bit pixels: each
                          subpixel has a location and a log scale (P = 2 decoder outputs per channel), the
                          mass of its 1/255-wide bin, the end bins taking the tails. NLL is a probability
                          mass, so NLL / (C*H*W ln 2) is bits per dimension as the literature reports it.
                          mean = E[clamp(X, 0, 1)] of the logistic in closed form (below).

All NLLs are in nats per image (summed over pixels). Continuous-Bernoulli algebra, with the logit l
(lambda = sigmoid(l)): 2 artanh(1 - 2 lambda) = -l and 1 - 2 lambda = -tanh(l / 2), so log C = log(l / tanh(l / 2)).

The logistic's mean: with X ~ Logistic(m, s), E[clamp(X, 0, 1)] = int_0^1 P(X > t) dt
= s (softplus(m / s) - softplus((m - 1) / s)) = clamp(m, 0, 1) + s (softplus(-|m| / s) - softplus(-|m - 1| / s)),
the last form free of overflow. It is the discretized distribution's mean up to the midpoint rule over the
255 bin edges (tests/test_likelihoods.py bounds the difference).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

NAMES = ("bernoulli", "continuous-bernoulli", "gaussian", "logistic")
SIGMA_FITS = ("optimal", "learned")
GAUSSIAN_MEANS = ("linear", "sigmoid")
DISCRETE = ("bernoulli", "logistic")  # NLL is a probability mass (binary pixels, 256 bins), not a density on [0, 1]
CB_TAYLOR_BELOW = 0.5  # |l| under which the continuous Bernoulli's log C and mean use their Taylor series
LOG_2PI = math.log(2 * math.pi)
LEVELS = 255  # 8-bit pixels: x = k / 255, k = 0 .. 255
HALF_BIN = 0.5 / LEVELS
MIN_LOG_SCALE = -8.0  # logistic: s >= 3.4e-4, a bin then holds > 99% of the mass at its centre
LOG_SCALE_INIT = -2.0  # logistic: added to the decoder's raw output, so training starts near s = 0.14
MIN_SIGMA = 1e-3  # gaussian, optimal fit: below 8-bit quantization noise (1 / (255 sqrt 12) = 1.1e-3) is overfitting
DEQUANTIZE_MARGIN = 2.0 ** -16  # dequantize's noise keeps this far from its bin's edges
SIGMA_MOMENTUM = 0.02  # gaussian, optimal fit: weight of each batch in the running MSE (bias-corrected average)


def dequantized(name: str) -> bool:
    """Whether a likelihood scores images dequantized (dequantize) in training, validation and evaluation."""
    return name == "continuous-bernoulli"


def dequantize(x: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """8-bit images in [0, 1] -> level k spread uniformly over [k, k + 1) / 256, by uniform noise in [0, 1)
    (Theis, van den Oord & Bethge 2016). A density on [0, 1] is unbounded at pixels exactly 0 or 1: on 1,352 RGBA
    sprites, 90% of whose subpixels are transparent 0, the continuous Bernoulli drove their logits towards
    -infinity (-217,000 nats per image by epoch 6), its gradients overflowed and training stopped at epoch 7.
    Dequantized, the best density is finite and its -ELBO bounds the 8-bit images' (in bits/dim, + 8 for the
    1/256-wide bins); the same run trained for its whole 3 minutes, to a validation PSNR of 24.3 dB. It still
    keeps less colour than the other likelihoods: 66% of the validation images' saturation, against 78% for the
    calibrated Gaussian and 84% for the discretized logistic (3 minutes each, the same sprites).
    The noise is kept in [2^-16, 1 - 2^-16]: k + u is then exact in float32 for every k <= 255 (a u within 2^-17 of
    1 rounded 255 + u up to 256, a pixel exactly 1), and no pixel is exactly 0 or 1."""
    return ((x * 255).round() + uniform.clamp(DEQUANTIZE_MARGIN, 1 - DEQUANTIZE_MARGIN)) / 256


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, (N,), summed over pixels; x in [0, 1], from logits for stability."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def _safe(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(small, l_far): where |l| < CB_TAYLOR_BELOW, and l moved away from 0 there (no 0/0 in either branch)."""
    small = logits.abs() < CB_TAYLOR_BELOW
    return small, torch.where(small, torch.full_like(logits, CB_TAYLOR_BELOW), logits)


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) per pixel: log(l / tanh(l / 2)); near 0 its series, log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720
    (the next term, -127 l^8/4838400, is < 1e-7 at |l| = CB_TAYLOR_BELOW)."""
    small, far = _safe(logits)
    l2 = logits * logits
    taylor = math.log(2.0) + l2 * (1 / 12 - 7 * l2 / 1440 + 31 * l2 * l2 / 90720)
    return torch.where(small, taylor, torch.log(far / torch.tanh(far / 2)))


def cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] under the continuous Bernoulli: sigmoid(l) / tanh(l / 2) - 1 / l;
    near 0, 1/2 + l/12 - l^3/720 + l^5/30240."""
    small, far = _safe(logits)
    l2 = logits * logits
    taylor = 0.5 + logits * (1 / 12 - l2 / 720 + l2 * l2 / 30240)
    return torch.where(small, taylor, torch.sigmoid(far) / torch.tanh(far / 2) - 1 / far)


def continuous_bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image, (N,): BCE(logits, x) - log C(lambda), summed over pixels."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none") - cb_log_norm(logits)
    return per_pixel.flatten(1).sum(dim=1)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """-log N(x; mean, sigma^2) per image, (N,), summed over pixels; log_sigma broadcasts (C, 1, 1)."""
    per_pixel = 0.5 * ((x - mean) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * LOG_2PI
    return per_pixel.flatten(1).sum(dim=1)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d > 0, accurate at both ends (Maechler 2012).

    Each branch sees only its own range of d: torch.where's gradient is 0 * (the other branch's), which is
    NaN where that branch is infinite -- log1p(-exp(-d)) at d < 6e-8, a logistic scale above e^11 -- and one
    NaN gradient clipped makes every weight NaN (a 20-minute Twemoji run died so at epoch 82)."""
    small = d < math.log(2)
    return torch.where(small, torch.log(-torch.expm1(-d.clamp(max=math.log(2)))),
                       torch.log1p(-torch.exp(-d.clamp(min=math.log(2)))))


def logistic_log_mass(loc: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log P(x) per subpixel under the discretized logistic; x = k / 255.

    With a = (x + 1/510 - m) / s and b = (x - 1/510 - m) / s, the bin's mass sigmoid(a) - sigmoid(b) is
    sigmoid(a) * (1 - sigmoid(b)) * (1 - exp(b - a)), so its log is
    -softplus(-a) - softplus(b) + log(1 - exp(-1/(255 s))): no difference of nearly equal numbers anywhere. The
    first bin's mass is sigmoid(a), the last's 1 - sigmoid(b).
    """
    inv_s = torch.exp(-log_scale)
    centred = x - loc
    upper, lower = inv_s * (centred + HALF_BIN), inv_s * (centred - HALF_BIN)
    log_below_upper, log_above_lower = -F.softplus(-upper), -F.softplus(lower)
    middle = log_below_upper + log_above_lower + _log1mexp(2 * HALF_BIN * inv_s)
    return torch.where(x < HALF_BIN, log_below_upper, torch.where(x > 1 - HALF_BIN, log_above_lower, middle))


def logistic_nll(loc: torch.Tensor, log_scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log P(x|z) per image, (N,), in nats: a probability mass over the 256 levels of every subpixel."""
    return -logistic_log_mass(loc, log_scale, x).flatten(1).sum(dim=1)


def logistic_mean(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """E[clamp(X, 0, 1)], X ~ Logistic(loc, exp(log_scale)): in [0, 1], overflow-free (module docstring)."""
    s = torch.exp(log_scale)
    return loc.clamp(0.0, 1.0) + s * (F.softplus(-(loc.abs() / s)) - F.softplus(-((loc - 1.0).abs() / s)))


def bits_per_dim(nll_nats: float, dims: int, likelihood: str) -> float:
    """NLL in bits per dimension as the literature reports it for 8-bit images.

    A probability mass (logistic over 256 levels; bernoulli over binary pixels) converts directly:
    nll / (dims ln 2). A density over [0, 1] (gaussian, continuous-bernoulli) is one over 256 levels
    of width 1/256 each, so its mass is density / 256: add log2(256) = 8 bits per dimension.
    """
    return nll_nats / (dims * math.log(2)) + (0.0 if likelihood in DISCRETE else 8.0)


class Likelihood(nn.Module):
    """The chosen p(x|z); holds the Gaussian's log sigma (a parameter when learned, a buffer otherwise).

    params: decoder outputs per image channel (2 for the logistic: location, log scale; else 1).
    """

    def __init__(self, name: str, channels: int, sigma: float = 0.0, sigma_fit: str = "optimal",
                 gaussian_mean: str = "linear"):
        super().__init__()
        if name not in NAMES:
            raise ValueError(f"likelihood must be one of {', '.join(NAMES)}, got {name!r}")
        if sigma_fit not in SIGMA_FITS:
            raise ValueError(f"sigma fit must be one of {', '.join(SIGMA_FITS)}, got {sigma_fit!r}")
        if gaussian_mean not in GAUSSIAN_MEANS:
            raise ValueError(f"gaussian mean must be one of {', '.join(GAUSSIAN_MEANS)}, got {gaussian_mean!r}")
        self.gaussian_mean = gaussian_mean
        self.name, self.channels = name, channels
        self.params = 2 if name == "logistic" else 1
        self.optimal = name == "gaussian" and not sigma and sigma_fit == "optimal"
        if name == "gaussian":
            log_sigma = torch.full((channels, 1, 1), math.log(sigma) if sigma else 0.0)
            if sigma or self.optimal:
                self.register_buffer("log_sigma", log_sigma)
            else:
                self.log_sigma = nn.Parameter(log_sigma)
            if self.optimal:  # bias-corrected running average of the per-channel MSE: sum of weights, weighted sum
                self.register_buffer("mse_weight", torch.zeros(()))
                self.register_buffer("mse_sum", torch.zeros(channels))

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logistic: (location, log scale), each (N, C, H, W), from the decoder's (N, 2C, H, W)."""
        c = self.channels
        return out[:, :c] + 0.5, (out[:, c:] + LOG_SCALE_INIT).clamp(min=MIN_LOG_SCALE)

    def _optimal_log_sigma(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Training: log sqrt(MSE_c) of this batch (the sigma that minimises its NLL), and update the running one."""
        mse = (x - mean).detach().pow(2).mean(dim=(0, 2, 3)).clamp(min=MIN_SIGMA**2)  # (C,)
        with torch.no_grad():
            self.mse_weight.mul_(1 - SIGMA_MOMENTUM).add_(SIGMA_MOMENTUM)
            self.mse_sum.mul_(1 - SIGMA_MOMENTUM).add_(SIGMA_MOMENTUM * mse)
            self.log_sigma.copy_(0.5 * torch.log(self.mse_sum / self.mse_weight).view(-1, 1, 1))
        return 0.5 * torch.log(mse).view(-1, 1, 1)

    def nll(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image, (N,), from the decoder's output."""
        if self.name == "bernoulli":
            return bernoulli_nll(out, x)
        if self.name == "continuous-bernoulli":
            return continuous_bernoulli_nll(out, x)
        if self.name == "logistic":
            return logistic_nll(*self._split(out), x)
        mean = self._gaussian(out, clip=not self.training)  # training: the bound (module doc)
        log_sigma = self._optimal_log_sigma(mean, x) if self.optimal and self.training else self.log_sigma
        return gaussian_nll(mean, x, log_sigma)

    def _gaussian(self, out: torch.Tensor, clip: bool = True) -> torch.Tensor:
        """The Gaussian's mean (N, C, H, W): clip(out + 0.5, 0, 1), unclipped for training; or sigmoid(out)."""
        if self.gaussian_mean == "sigmoid":
            return torch.sigmoid(out)
        return (out + 0.5).clamp(0, 1) if clip else out + 0.5

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The mean image E[x|z] in [0, 1]."""
        if self.name == "continuous-bernoulli":
            return cb_mean(out)
        if self.name == "logistic":
            return logistic_mean(*self._split(out))
        if self.name == "gaussian":
            return self._gaussian(out)
        return torch.sigmoid(out)

    def export_params(self) -> dict:
        """What scoring -log p(x|z) from x_hat needs besides x_hat (the spec's likelihood_params)."""
        if self.name == "gaussian":
            fit = "fixed" if not self.optimal and not isinstance(self.log_sigma, nn.Parameter) else \
                "optimal" if self.optimal else "learned"
            return {"log_sigma": self.log_sigma.detach().flatten().tolist(), "sigma_fit": fit}
        if self.name == "logistic":
            return {"bins": LEVELS + 1, "scale": "per subpixel, computed by the decoder (not a graph output)"}
        return {}
