"""The fitted prior: a Gaussian fitted to the training set's aggregate posterior, folded into the model.

A VAE trained on few images (Twemoji: 1,715) ends with an aggregate posterior q(z) = mean over x of
q(z|x) far from its N(0, I) prior: on a 2 x 8 x 8 colour latent (128 numbers) the covariance of the posterior
means has eigenvalues from 0.007 to 21 (1 everywhere for N(0, I)). Prior samples then land where the
decoder saw no training latent and come out as coloured noise, while reconstructions are fine. The
cure of "ex-post density estimation" (Ghosh et al. 2020, "From Variational to Deterministic
Autoencoders", section 4; the same idea as the second stage of Dai & Wipf 2019's two-stage VAE) is to fit
a density to the latents of the training images after training and to sample from it instead.

Here the density is one Gaussian N(m, S), S = cov(mu) + mean(diag sigma^2) over up to FIT_IMAGES training
images, and it is folded into the model as a change of variable z = m + L u, L = cholesky(S), so that the
model keeps a standard normal prior on its new latent u and every client samples as before:
- the decoder gets z = m + L u in front: decode(u) is the trained decoder at z, exactly;
- the encoder maps mu to L^-1 (mu - m): decode(encode(x).mu) is the trained model's reconstruction, exactly;
- the posterior of u is N(L^-1 (mu - m), L^-1 diag(sigma^2) L^-T), a full covariance; the encoder's diagonal
  for it is the one closest in KL(q_diag || q): variances 1 / diag(L^T diag(1/sigma^2) L), i.e.
  logvar_u = -log(exp(-logvar) @ (L * L)). A valid posterior approximation of the same generative model,
  so the ELBO and the importance-weighted NLL stay bounds of it.
A latent of shape (C, h, w) is fitted as the vector of its C*h*w numbers (the default colour recipe's 4 x 16 x 16):
the Gaussian mixes its positions, which is what makes its samples hang together (an icon's colours and outline
agree across the grid); the graphs reshape to (N, C*h*w) around the map and back. At most FIT_MAX_DIM numbers:
the map holds three D x D tables.

A conditional model gets one Gaussian per class, N(m_y, S_y), fitted to the latents of that class's training
images, and z = m_y + L_y u: the class's samples come from where its images were encoded (with one Gaussian
over all classes, Twemoji's smileys decoded to orange blobs; per class they are yellow faces). A class with no
training image takes the fit over all classes. The class's rows are picked by its one-hot label's matrix
product with the stacked tables (N, K) @ (K, D*D), ops every host has; past PER_CLASS_LIMIT numbers per table
(K * D * D, 32 MB of float32) one Gaussian over all classes is fitted instead.

`--prior-fit mixture` (the default for an unconditional colour model) fits a mixture of K Gaussians instead of
one: the training latents are clustered by k-means (K = images / MIXTURE_IMAGES, at most MIXTURE_MAX and
MIXTURE_TABLE numbers per table), each cluster gets a Gaussian whose covariance is its own shrunk towards the
clusters' pooled one, (n_k C_k + SHRINK W) / (n_k + SHRINK) (regularized discriminant analysis, Friedman 1989:
a cluster of 20 images has no 128-d covariance of its own), and weight n_k / n. On Twemoji's default latent, one
Gaussian's samples were coloured blobs, the mixture's include yellow faces, flags and blue symbol squares, and
it gives the test images' latents a higher density than one Gaussian does (per number -0.81 against -0.93;
without the shrinking -11.9: its clusters learn their images by heart). Folded in, u ~ N(0, I) still:
- u's first number t picks the component: k where t lies between the cuts a_(k-1) < t <= a_k, a_k = Phi^-1(w_1 +
  ... + w_k), so component k is picked with probability w_k exactly; the components are ordered centre-out by
  weight (the largest where t is near 0), so a temperature below 1 favours the commonest kinds of image;
- t's slab is stretched back onto the whole line for v's first number: f = logit((t - low) / width) inside, f =
  log |t - edge| in the two end slabs, v_1 = f standardized to mean 0 and variance 1 over the slab (moments
  integrated at fit time, _stretch_table). Linear in t before its one Log, so ONNX Runtime and PyTorch compute the
  same v_1 (a stretch of sigmoid(1.702 t) was 5.8e-5 apart in x_hat: one-ulp Sigmoid differences magnified by
  1 / w_k); no Erf or inverse CDF, which no ONNX op computes. v_1 is nearly, not exactly, standard normal (logistic-
  like inside, Gumbel-like at the ends); v's other numbers are u's;
- z = m_k + L_k v (the per-class tables, picked by k's one-hot instead of the label's).
Past MIXTURE_TABLE numbers per K x D x D table (the default colour latent's 1,024 numbers: 64 M) the mixture is
factored (_factored): the components share a base L_B and each keeps its cluster's FACTOR_RANK main directions
Q_k, L_k = L_B (I + Q_k diag(c_k - 1) Q_k^T), which the graphs apply as two thin products with Q_k; its tables
are D x D three times and K x D x R once.
The encoder inverts it: k is the component of highest responsibility log w_k - log det L_k - |L_k^-1 (mu - m_k)|^2
/ 2 (a maximum by pairwise Greater and a MatMul count, ties to the lower index: no ArgMax) among those whose v_1
a slab can hold in float32 (f within the slab's [f_low, f_high]: t at least a few float32 steps inside its slab,
at most END_REACH beyond an end slab's edge), v = L_k^-1 (mu - m_k), t from v_1 by the same stretch backwards;
so decode(encode(x).mu) is the trained model's reconstruction. Only when no component can hold v_1 (a latent far
out along every component's first direction) is f clipped, and the reconstruction moves. Its variances are the
per-class formula's (factored: F_k's part in them too, _factored_precision), t's times the stretch's squared
slope, but t's standard deviation at most 1 / SLAB_SIGMAS of its distance to the slab's nearer edge: the posterior
of t lies inside its slab (the other slabs decode other components' images), and a Gaussian as wide as the slope
alone would make it crosses them.
"""
from __future__ import annotations

import math

import torch
from torch import nn

LOGVAR_CLIP = 60.0  # logvar is clipped to +-this before exp(-logvar): finite in float32 (e^60 ~ 1e26; sigma
# ~ 1e-13 is a point mass in practice), where an unclipped -89 would overflow and make NaN of inf * 0
FIT_IMAGES = 4096  # training images the fit reads (a fixed, seeded choice when the set is larger)
JITTER = 1e-6  # added to S's diagonal, relative to its mean eigenvalue, should S be singular
CHOICES = ("auto", "gaussian", "mixture", "none")
FIT_MAX_DIM = 2048  # latent numbers a fit takes: three D x D float32 tables, 48 MiB in each graph at 2048
PER_CLASS_LIMIT = 1 << 23  # K * D * D: a per-class table's size (float32: 32 MB) up to which classes get their own
MIXTURE_IMAGES = 24  # training images per mixture component (Twemoji's 1,543: 64 components)
MIXTURE_MAX = 64  # components at most
MIXTURE_TABLE = 1 << 20  # K * D * D at most for a mixture of full covariances (4 MB of float32 per table: 64
# components of 128 numbers); past it the mixture is factored: a shared base and FACTOR_RANK directions a component
FACTOR_RANK = 32  # a factored component's own directions (Twemoji's 4 x 16 x 16 latent: its samples at 32 look as
# those of 64 full 1,024 x 1,024 covariances; held-out density per number -0.688 at 32, -0.674 at 64)
FACTOR_TABLE = 1 << 22  # K * D * R at most (16 MB of float32)
FACTOR_BASE = 0.2  # the share of the pooled within-cluster scatter a factored mixture's shared base keeps. Looked at
# on Twemoji's default model (64 components, seed 0): at 0.68 (what SHRINK's weighting would give a cluster of 24)
# its 1,024 numbers of pooled noise turn a sample into mottled blobs, 5 of 32 recognisable; at 0.2, 14 of 32 are
# flags, faces, a cat, a person; 0.05 looks as 0.2. The cost: a tighter density around the training latents
SHRINK = 50.0  # images' worth of the pooled covariance in each component's (Twemoji: held-out density -0.81 per
# number at 50, -1.02 at 10, -11.9 at 0; one Gaussian -0.93)
KMEANS_ROUNDS = 30  # Lloyd iterations after k-means++ seeding
Q_MIN = 1e-7  # an inner slab's q = (t - low) / width is kept in [Q_MIN, 1 - Q_MIN]: logit(q) finite
D_MIN = 1e-30  # an end slab's distance from its inner edge, at least this: log finite
INSIDE = 16  # float32 steps of t a slab keeps between t and its edges (f_low, f_high): t stays in its slab
END_REACH = 64.0  # an end slab's t at most this far beyond its edge (u's first number within about +-66)
SLAB_SIGMAS = 4.0  # the encoder's t keeps this many of its standard deviations from its slab's edges. Without it
# a quarter of the Wesnoth sprites' posterior samples moved t into another slab, and their -ELBO was 34,495 nats
# against 18,295 at 4, 18,460 at 3, 18,296 at 6 (before _factored_precision; the narrower q costs under a nat of KL)
STRETCH_RANGE, STRETCH_POINTS = 40.0, 200_000  # the grid in f the stretch's moments are integrated on
OUT_OF_REACH = 1e6  # taken off the responsibility of a component whose slab cannot hold an image's v_1


class LatentMap(nn.Module):
    """z = mean + u @ scale^T (the decoder's side) and its inverse for mu, logvar (the encoder's side).

    mean (D,), scale (D, D): one Gaussian. mean (K, D), scale (K, D, D): one per class, picked by the one-hot
    label (N, K) every method then takes; with weights (K,), a mixture, its component picked from u's first number
    (the module doc)."""

    @classmethod
    def of(cls, entry: dict) -> LatentMap:
        """The map of a checkpoint's prior_fit entry (fit's dict)."""
        if "directions" in entry:  # a factored mixture: a shared base and each component's own directions
            return cls(entry["mean"], entry["base"], entry["weights"], entry["directions"], entry["spread"])
        return cls(entry["mean"], entry["scale"], entry.get("weights"))

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor | None = None,
                 directions: torch.Tensor | None = None, spread: torch.Tensor | None = None):
        """scale: (D, D), or (K, D, D) per class or per component; for a factored mixture, its base L_B (D, D),
        with directions Q_k (K, D, R) and spread c_k (K, R): L_k = L_B (I + Q_k diag(c_k - 1) Q_k^T)."""
        super().__init__()
        mean, scale = mean.double(), scale.double()
        self.mixture, self.factored = weights is not None, directions is not None
        self.per_class, self.dim = mean.dim() == 2 and not self.mixture, mean.shape[-1]
        if self.factored:
            self._factored_tables(mean, scale, torch.as_tensor(weights).double(), directions.double(), spread.double())
            return
        if self.mixture:
            self._mixture_tables(mean, scale, torch.as_tensor(weights).double())
            return
        # per class, each class's D x D matrix is one row of D * D numbers: label @ table picks it
        rows = (lambda m: m.reshape(len(m), -1)) if self.per_class else (lambda m: m)
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale_t", rows(scale.transpose(-1, -2)).contiguous().float())  # L^T: z = m + u L^T
        inverse = _lower_inverse(scale)
        self.register_buffer("inverse_t", rows(inverse.transpose(-1, -2)).contiguous().float())  # u = (z - m) L^-T
        self.register_buffer("squared", rows(scale * scale).float())  # L * L, elementwise

    def _slab_tables(self, mean: torch.Tensor, weights: torch.Tensor) -> None:
        """A mixture's tables for picking its component from u's first number, and back."""
        k, d = mean.shape
        cuts = torch.special.ndtri(torch.cumsum(weights, 0)[:-1].clamp(1e-12, 1 - 1e-12))  # a_1 .. a_(K-1)
        edges = torch.cat([torch.tensor([-math.inf], dtype=torch.double), cuts,
                           torch.tensor([math.inf], dtype=torch.double)])
        self.register_buffer("edges", edges.float())  # (K + 1,): t in (edges[k], edges[k + 1]] picks component k
        self.register_buffer("stretch", _stretch_table(edges).float())  # (K, 8): each slab's stretch
        # ties in the encoder's maximum go to the lower index: i beats j at an equal score when i < j
        self.register_buffer("earlier", torch.triu(torch.ones(k, k), diagonal=1))
        self.register_buffer("mean", mean.float())
        self.register_buffer("ones", torch.ones(k, 1))  # sums over components and numbers as MatMuls: no ReduceSum
        self.register_buffer("dim_ones", torch.ones(d, 1))

    def _factored_tables(self, mean: torch.Tensor, base: torch.Tensor, weights: torch.Tensor,
                         directions: torch.Tensor, spread: torch.Tensor) -> None:
        k, d, r = directions.shape
        self._slab_tables(mean, weights)
        inverse_t = _lower_inverse(base).transpose(0, 1)  # L_B^-T
        self.register_buffer("scale_t", base.transpose(0, 1).contiguous().float())  # z = m_k + (F_k v) L_B^T
        self.register_buffer("inverse_t", inverse_t.contiguous().float())
        self.register_buffer("offset", (mean @ inverse_t).float())  # m_k L_B^-T: each component's whitened mean
        self.register_buffer("squared", (base * base).float())  # the base's, for the encoder's variances
        self.register_buffer("directions", directions.reshape(k, d * r).float())  # Q_k, picked by a one-hot row
        self.register_buffer("grow", (spread - 1).float())  # F_k = I + Q_k diag(c_k - 1) Q_k^T
        self.register_buffer("shrink", (1 / spread - 1).float())  # F_k^-1 = I + Q_k diag(1 / c_k - 1) Q_k^T
        self.register_buffer("shrink_squared", (1 / spread**2 - 1).float())  # |F_k^-1 w|^2 = |w|^2 + this . q^2
        self.register_buffer("first_shrink", (directions[:, 0, :] * (1 / spread - 1)).float())  # F_k^-1's first row
        log_det = torch.diagonal(base).log().sum() + spread.log().sum(1)
        self.register_buffer("log_weight", (weights.log() - log_det).reshape(1, k).float())
        self.register_buffer("rank_ones", torch.ones(r, 1))
        self.rank = r

    def _mixture_tables(self, mean: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor) -> None:
        k, d = mean.shape
        self._slab_tables(mean, weights)
        self.register_buffer("scale_t", scale.transpose(-1, -2).reshape(k, -1).contiguous().float())
        inverse_t = _lower_inverse(scale).transpose(-1, -2)  # (K, D, D): L_k^-T
        # side by side, (D, K * D): mu @ it is every component's mu L_k^-T in one 2-d product
        self.register_buffer("inverse_t", inverse_t.permute(1, 0, 2).reshape(d, k * d).contiguous().float())
        self.register_buffer("offset", (mean.unsqueeze(1) @ inverse_t).reshape(k, d).float())  # m_k L_k^-T
        self.register_buffer("squared", (scale * scale).reshape(k, -1).float())
        log_det = torch.diagonal(scale, dim1=-2, dim2=-1).log().sum(-1)
        self.register_buffer("log_weight", (weights.log() - log_det).reshape(1, k).float())  # responsibility's terms

    def _component(self, t: torch.Tensor) -> torch.Tensor:
        """The one-hot (N, K) of the slab each t (N, 1) lies in."""
        above = (t > self.edges).float()  # (N, K + 1): 1 up to t's slab
        return above[:, :-1] - above[:, 1:]

    def _stretch(self, t: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """t in its slab -> v_1 on the whole line (N, 1): f(t) standardized (the module doc)."""
        low, width, end, sign, mean, std, f_low, f_high = (one_hot @ self.stretch).split(1, dim=1)  # (N, 1) each
        q = ((t - low) / width).clamp(Q_MIN, 1 - Q_MIN)
        inner = torch.log(q) - torch.log(1 - q)
        outer = torch.log((sign * (t - low)).clamp(min=D_MIN))
        f = _within(torch.where(end > 0.5, outer, inner), f_low, f_high)
        return sign * (f - mean) / std

    def _unstretch(self, v: torch.Tensor, one_hot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v_1 (N, 1) -> (t in its slab, log |dt / dv_1|), each (N, 1): _stretch backwards."""
        low, width, end, sign, mean, std, f_low, f_high = (one_hot @ self.stretch).split(1, dim=1)
        f = _within(mean + std * sign * v, f_low, f_high)  # logit(q) inside, log |t - edge| at an end; within what
        q = torch.sigmoid(f)  # the slab holds (the module doc)
        d = torch.exp(f)
        t = torch.where(end > 0.5, low + sign * d, low + width * q)
        log_slope = torch.where(end > 0.5, f, torch.log(width) + torch.log(q.clamp(min=Q_MIN))
                                + torch.log((1 - q).clamp(min=Q_MIN))) + torch.log(std)
        return t, log_slope

    def _mixture_to_latent(self, mu: torch.Tensor, logvar: torch.Tensor | None):
        k = len(self.mean)
        if self.factored:  # w_k = L_B^-1 (mu - m_k), v_k = F_k^-1 w_k: only its first number and length are needed
            white = (mu @ self.inverse_t).unsqueeze(1) - self.offset  # (N, K, D)
            q = (white.transpose(0, 1) @ self.directions.reshape(k, self.dim, self.rank)).transpose(0, 1)  # Q_k^T w_k
            first = white[:, :, :1].reshape(-1, k) + ((q * self.first_shrink) @ self.rank_ones).reshape(-1, k)
            length = ((white * white) @ self.dim_ones + (q * q * self.shrink_squared) @ self.rank_ones).reshape(-1, k)
        else:
            white = (mu @ self.inverse_t).reshape(-1, k, self.dim) - self.offset  # (N, K, D): L_k^-1 (mu - m_k)
            first, length = white[:, :, :1].reshape(-1, k), ((white * white) @ self.dim_ones).reshape(-1, k)
        _, _, _, sign, mean, std, f_low, f_high = self.stretch.T.unsqueeze(-1).unbind(0)  # each (K, 1)
        f = mean.T + std.T * sign.T * first  # (N, K): each component's f of its v_1
        outside = (f < f_low.T).float() + (f > f_high.T).float()  # 1 where the slab cannot hold it
        score = self.log_weight - 0.5 * length - OUT_OF_REACH * outside
        above = (score.unsqueeze(2) > score.unsqueeze(1)).float()  # (N, K, K): component i's score above j's
        beats = above + (1 - above - above.transpose(1, 2)) * self.earlier  # ... or equal, and i < j
        one_hot = ((beats @ self.ones).reshape(-1, k) > k - 1.5).float()  # beats all K - 1 others: the maximum
        v = (one_hot.unsqueeze(1) @ white).reshape(-1, self.dim)
        if self.factored:
            directions = self._picked_directions(one_hot)  # (N, D, R)
            picked_q = (one_hot.unsqueeze(1) @ q).reshape(-1, self.rank) * (one_hot @ self.shrink)
            v = v + (directions @ picked_q.unsqueeze(2)).reshape(-1, self.dim)
        t, log_slope = self._unstretch(v[:, :1], one_hot)
        mu_u = torch.cat([t, v[:, 1:]], 1)
        if logvar is None:
            return mu_u, None
        precision = torch.exp(-logvar.clamp(-LOGVAR_CLIP, LOGVAR_CLIP))
        if self.factored:
            logvar_v = -torch.log(self._factored_precision(precision @ self.squared, directions, one_hot))
        else:
            logvar_v = -torch.log(self._times(precision, (one_hot @ self.squared).reshape(-1, self.dim, self.dim)))
        # t's variance by the slope, but no wider than keeps t in its slab (SLAB_SIGMAS): a noise that moves t into
        # another slab decodes another component's image. A Mul, not a Div: README's mixture encoder row has none
        reach = 2 * torch.log(self._room(t, one_hot) * (1 / SLAB_SIGMAS))
        logvar_t = logvar_v[:, :1] + 2 * log_slope
        return mu_u, torch.cat([torch.where(logvar_t > reach, reach, logvar_t), logvar_v[:, 1:]], 1)

    def _room(self, t: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """How far each t (N, 1) lies inside its slab: its distance to the nearer edge (an end slab has one)."""
        low, width, end, sign = (one_hot @ self.stretch)[:, :4].split(1, dim=1)
        below, above = t - low, low + width - t
        room = torch.where(end > 0.5, sign * below, torch.where(below < above, below, above))
        return room.clamp(min=D_MIN)

    def _factored_precision(self, w: torch.Tensor, directions: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        """The diagonal of F_k diag(w) F_k (N, D), w (N, D) the diagonal of W = L_B^T diag(1/sigma^2) L_B: the
        precision of v = F_k^-1 L_B^-1 z with W's off-diagonal left out; directions (N, D, R): each row's Q_k.
        With a = Q_k diag(c_k - 1) Q_k^T and M = Q_k^T diag(w) Q_k (R x R),
        (F diag(w) F)_ii = w_i (1 + 2 a_ii) + sum_rs Q_ir (c_r - 1) M_rs (c_s - 1) Q_is: D R^2 multiply-adds per
        image, where F_k W F_k's own diagonal would take D^2 R (docs/design.md, "Factored components")."""
        grow = (one_hot @ self.grow).unsqueeze(2)  # (N, R, 1)
        own = ((directions * directions) @ grow).reshape(-1, self.dim)  # a_ii
        m = directions.transpose(1, 2) @ (w.unsqueeze(2) * directions)  # (N, R, R)
        cross = ((directions @ (grow * m * grow.transpose(1, 2))) * directions) @ self.rank_ones
        return w * (1 + 2 * own) + cross.reshape(-1, self.dim)

    def _picked_directions(self, one_hot: torch.Tensor) -> torch.Tensor:
        """Each row's component's Q_k, (N, D, R)."""
        return (one_hot @ self.directions).reshape(-1, self.dim, self.rank)

    def to_latent(self, mu: torch.Tensor, logvar: torch.Tensor | None, label: torch.Tensor | None = None):
        """The trained encoder's (mu, logvar) of z as the (mu, logvar) of u, both (N, *latent_shape)."""
        shape, mu = mu.shape[1:], mu.reshape(-1, self.dim)
        if self.mixture:
            mu_u, logvar_u = self._mixture_to_latent(mu, None if logvar is None else logvar.reshape(-1, self.dim))
            return mu_u.reshape(-1, *shape), (None if logvar_u is None else logvar_u.reshape(-1, *shape))
        mu_u = self._times(mu - self._pick(self.mean, label), self._pick(self.inverse_t, label, matrix=True))
        if logvar is None:
            return mu_u.reshape(-1, *shape), None
        precision = torch.exp(-logvar.reshape(-1, self.dim).clamp(-LOGVAR_CLIP, LOGVAR_CLIP))
        logvar_u = -torch.log(self._times(precision, self._pick(self.squared, label, matrix=True)))
        return mu_u.reshape(-1, *shape), logvar_u.reshape(-1, *shape)

    def from_latent(self, u: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """u (N, *latent_shape) -> the trained decoder's z, of the same shape."""
        shape, u = u.shape[1:], u.reshape(-1, self.dim)
        if self.mixture:
            label = self._component(u[:, :1])
            u = torch.cat([self._stretch(u[:, :1], label), u[:, 1:]], 1)
            if self.factored:  # F_k v = v + Q_k ((c_k - 1) * Q_k^T v), then L_B
                directions = self._picked_directions(label)
                grown = (u.unsqueeze(1) @ directions).reshape(-1, self.rank) * (label @ self.grow)
                z = label @ self.mean + (u + (directions @ grown.unsqueeze(2)).reshape(-1, self.dim)) @ self.scale_t
                return z.reshape(-1, *shape)
            z = label @ self.mean + self._times(u, (label @ self.scale_t).reshape(-1, self.dim, self.dim))
            return z.reshape(-1, *shape)
        z = self._pick(self.mean, label) + self._times(u, self._pick(self.scale_t, label, matrix=True))
        return z.reshape(-1, *shape)

    def _pick(self, table: torch.Tensor, label: torch.Tensor | None, matrix: bool = False) -> torch.Tensor:
        """The table itself; per class, each image's row of it ((N, D) means, (N, D, D) matrices)."""
        if not self.per_class:
            return table
        if label is None:
            raise ValueError("this prior is fitted per class: pass the class labels y")
        picked = label @ table
        return picked.reshape(-1, self.dim, self.dim) if matrix else picked

    @staticmethod
    def _times(v: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """v (N, D) times a matrix (D, D), or each row by its own (N, D, D)."""
        return v @ matrix if matrix.dim() == 2 else (v.unsqueeze(1) @ matrix).reshape(v.shape[0], -1)


def _lower_inverse(scale: torch.Tensor) -> torch.Tensor:
    """The inverse of lower-triangular scale(s) (..., D, D), by a triangular solve. Not torch.linalg.inv: its LU
    path failed on 2 threads with MKL for a stack of 39 162 x 162 float64 factors ("Parameter 6 was incorrect on
    entry to DLASWP", then "Pivots given to lu_solve must all be greater or equal to 1"), which made a checkpoint
    unreadable to `edgevae evaluate`; a triangular factor needs no pivoting."""
    eye = torch.eye(scale.shape[-1], dtype=scale.dtype).expand_as(scale)
    return torch.linalg.solve_triangular(scale, eye, upper=False)


def _within(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """x clipped to [low, high] elementwise, by Less, Greater and Where (Min and Max are not on the ops list)."""
    return torch.where(x < low, low, torch.where(x > high, high, x))


def _stretch_table(edges: torch.Tensor) -> torch.Tensor:
    """(K, 8) float64 rows [low, width, end, sign, mean, std, f_low, f_high] of each slab of t ~ N(0, 1) between
    edges (K + 1,): an inner slab's f = logit((t - low) / width), an end slab's f = log(sign (t - low)) with low its
    inner edge; the mean and standard deviation of f over the slab (midpoint rule on a grid in f, where f's density
    is smooth); and the range of f whose t lies at least INSIDE float32 steps inside the slab (an end slab: at most
    END_REACH beyond its edge), which a float32 t can carry there and back."""
    k = len(edges) - 1
    f = torch.linspace(-STRETCH_RANGE, STRETCH_RANGE, STRETCH_POINTS + 1, dtype=torch.float64)
    f = (f[1:] + f[:-1]) / 2
    rows = []
    for j in range(k):
        if j in (0, k - 1):  # an end slab: t = low + sign * exp(f), dt/df = exp(f)
            low, sign = (edges[1], -1.0) if j == 0 else (edges[k - 1], 1.0)
            t, jacobian, width, end = low + sign * f.exp(), f.exp(), 1.0, 1.0
        else:  # t = low + width * sigmoid(f), dt/df = width * q (1 - q)
            low, width, sign, end = edges[j], edges[j + 1] - edges[j], 1.0, 0.0
            q = torch.sigmoid(f)
            t, jacobian = low + width * q, width * q * (1 - q)
        density = torch.exp(-0.5 * t * t) * jacobian
        density = density / density.sum()
        mean = float((density * f).sum())
        std = float((density * (f - mean) ** 2).sum().sqrt())
        if end:
            step = INSIDE * _float32_step(abs(float(low)) + END_REACH)
            f_low, f_high = math.log(step), math.log(END_REACH)
        else:
            margin = min(INSIDE * _float32_step(max(abs(float(low)), abs(float(low + width)))) / float(width), 0.25)
            f_high = math.log((1 - margin) / margin)
            f_low = -f_high
        rows.append([float(low), float(width), end, sign, mean, std, f_low, f_high])
    return torch.tensor(rows, dtype=torch.float64)


def _float32_step(x: float) -> float:
    """The spacing of float32 numbers at |x| (at least at 1)."""
    import numpy as np

    return float(np.spacing(np.float32(max(abs(x), 1.0))))


def wanted(config) -> bool:
    """Whether a run fits the prior: --prior-fit gaussian or mixture, for a VAE."""
    return config.prior_fit in ("gaussian", "mixture") and config.model == "vae"


def components(images: int, dim: int) -> int:
    """Mixture components for a fit to `images` latents of `dim` numbers (the module doc); 1: one Gaussian."""
    return max(1, min(images // MIXTURE_IMAGES, MIXTURE_MAX, FACTOR_TABLE // dim))


def factor_rank(k: int, dim: int) -> int:
    """A factored mixture's directions per component; 0: K full covariances fit (MIXTURE_TABLE)."""
    return 0 if k * dim * dim <= MIXTURE_TABLE else max(1, min(FACTOR_RANK, FACTOR_TABLE // (k * dim)))


def check_size(latent_shape: tuple[int, ...]) -> None:
    """ValueError, before training starts, when a latent is too large for a fit (FIT_MAX_DIM)."""
    if math.prod(latent_shape) > FIT_MAX_DIM:
        raise ValueError(f"--prior-fit fits a covariance over the latent's {math.prod(latent_shape):,} "
                         f"numbers ({'x'.join(map(str, latent_shape))}); it takes at most {FIT_MAX_DIM:,}: use "
                         "--prior-fit none, or fewer --latent-channels")


@torch.no_grad()
def fit(model, x: torch.Tensor, y: torch.Tensor | None, batch: int = 64, seed: int = 0,
        binarize: bool = False, mixture: bool = False) -> dict:
    """The Gaussian fitted to the aggregate posterior of `model` (unfitted) on uint8 images x; a checkpoint entry.
    binarize: the images as training saw them, one Bernoulli sample each (seeded). A conditional model (labels y)
    gets one Gaussian per class (the module doc). mixture: an unconditional model gets a mixture of
    components(images, D) Gaussians (one Gaussian when that is 1).

    Returns {"mean": (D,), "scale": (D, D) lower-triangular, "images": n, "eigenvalues": [min, max] of S}; per
    class "mean" (K, D), "scale" (K, D, D), the eigenvalues over all classes, and "classes": images per class; a
    mixture the same with "weights" (K,) and "components": images per component.
    """
    if len(x) > FIT_IMAGES:
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:FIT_IMAGES]
        x, y = x[pick], (y[pick] if y is not None else None)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    mus, variances = [], []
    gen = torch.Generator().manual_seed(seed)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(device).float()
        xb = xb.div(255) if x.dtype == torch.uint8 else xb
        if binarize:
            xb = (torch.rand(xb.shape, generator=gen) < xb.cpu()).float().to(device)
        yb = y[i:i + batch].to(device) if y is not None and model.conditional else None
        mu, logvar = model.encoder.unmapped(xb, yb)  # a spatial latent's (N, C, h, w) as vectors of C*h*w
        mus.append(mu.flatten(1).double().cpu())
        variances.append(logvar.flatten(1).double().exp().cpu())
    model.train(was_training)
    mu, var = torch.cat(mus), torch.cat(variances)
    if mixture and not model.conditional and components(len(mu), mu.shape[1]) > 1:
        fitted = _mixture(mu, var, components(len(mu), mu.shape[1]), seed)
        if len(fitted["weights"]) > 1:  # else the latents were one cluster: one Gaussian
            return {**fitted, "images": len(mu)}
    overall = _gaussian(mu, var)
    classes = model.num_classes if model.conditional and y is not None else 0
    if not classes or classes * mu.shape[1] ** 2 > PER_CLASS_LIMIT:
        return {**overall, "images": len(mu)}
    y = y.cpu()
    fits = [_gaussian(mu[y == k], var[y == k]) if bool((y == k).any()) else overall for k in range(classes)]
    return {"mean": torch.stack([f["mean"] for f in fits]), "scale": torch.stack([f["scale"] for f in fits]),
            "images": len(mu), "classes": [int((y == k).sum()) for k in range(classes)],
            "eigenvalues": [min(f["eigenvalues"][0] for f in fits), max(f["eigenvalues"][1] for f in fits)]}


def _gaussian(mu: torch.Tensor, var: torch.Tensor) -> dict:
    """N(m, S) of posteriors N(mu_i, diag var_i) (float64 rows): m = mean mu, S = cov(mu) + mean diag var."""
    mean = mu.mean(0)
    centred = mu - mean
    cov = centred.T @ centred / len(mu) + torch.diag(var.mean(0))
    eigenvalues = torch.linalg.eigvalsh(cov)
    jitter = JITTER * float(eigenvalues.clamp(min=0).mean())
    scale = torch.linalg.cholesky(cov + jitter * torch.eye(len(cov), dtype=cov.dtype))
    return {"mean": mean.float(), "scale": scale.float(),
            "eigenvalues": [float(eigenvalues.min()), float(eigenvalues.max())]}


def _kmeans(points: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Cluster index (n,) of each row: k-means++ seeding (Arthur & Vassilvitskii 2007), then KMEANS_ROUNDS of Lloyd."""
    gen = torch.Generator().manual_seed(seed)
    centres = points[torch.randint(len(points), (1,), generator=gen)]
    nearest = torch.full((len(points),), math.inf, dtype=points.dtype)  # squared distance to the nearest centre
    for _ in range(k - 1):  # each round measures the distances to the newest centre only
        nearest = torch.minimum(nearest, (points - centres[-1]).pow(2).sum(1))
        if not float(nearest.sum()) > 0:  # every point is a centre already (fewer distinct latents than k)
            break
        centres = torch.cat([centres, points[torch.multinomial(nearest / nearest.sum(), 1, generator=gen)]])
    for _ in range(KMEANS_ROUNDS):
        assigned = torch.cdist(points, centres).argmin(1)
        centres = torch.stack([points[assigned == j].mean(0) if bool((assigned == j).any()) else centres[j]
                               for j in range(len(centres))])
    return torch.cdist(points, centres).argmin(1)


def _mixture(mu: torch.Tensor, var: torch.Tensor, k: int, seed: int) -> dict:
    """K Gaussians of the k-means clusters of mu, each covariance shrunk towards the pooled one (the module doc)."""
    assigned = _kmeans(mu, k, seed)
    members = [assigned == j for j in range(k) if bool((assigned == j).any())]  # an emptied cluster is dropped
    members = [members[j] for j in _centre_out([int(m.sum()) for m in members])]
    counts = torch.tensor([float(m.sum()) for m in members], dtype=torch.float64)
    means = torch.stack([mu[m].mean(0) for m in members])
    if rank := factor_rank(len(members), mu.shape[1]):
        return _factored(mu, var, members, counts, means, rank)
    own = torch.stack([torch.cov(mu[m].T, correction=0).reshape(mu.shape[1], -1) if int(m.sum()) > 1
                       else torch.zeros(mu.shape[1], mu.shape[1], dtype=mu.dtype) for m in members])
    own = own + torch.stack([torch.diag(var[m].mean(0)) for m in members])
    pooled = (counts[:, None, None] * own).sum(0) / counts.sum()
    cov = (counts[:, None, None] * own + SHRINK * pooled) / (counts[:, None, None] + SHRINK)
    eigenvalues = torch.linalg.eigvalsh(cov)
    jitter = JITTER * eigenvalues.clamp(min=0).mean(-1)
    scale = torch.linalg.cholesky(cov + jitter[:, None, None] * torch.eye(mu.shape[1], dtype=cov.dtype))
    return {"mean": means.float(), "scale": scale.float(), "weights": (counts / counts.sum()).float(),
            "components": [int(c) for c in counts],
            "eigenvalues": [float(eigenvalues.min()), float(eigenvalues.max())]}


def _factored(mu: torch.Tensor, var: torch.Tensor, members: list, counts: torch.Tensor, means: torch.Tensor,
              rank: int) -> dict:
    """_mixture's Gaussians for a latent too large for K full covariances: S_k = B + beta_k U_k U_k^T restricted to
    U_k's top `rank` directions (whitened by B), with B = FACTOR_BASE W_s + diag(mean posterior variance), W_s the
    pooled within-cluster scatter, U_k U_k^T cluster k's own scatter and beta_k = n_k / (n_k + SHRINK): the full
    covariances' shrinking, with one weight for the pooled part so that B is shared, and a smaller one (FACTOR_BASE).
    L_k = L_B F_k, F_k = I + Q_k diag(c_k - 1) Q_k^T, c_k = sqrt(1 + beta_k s_k^2) for Q_k, s_k the SVD of
    L_B^-1 U_k (the module doc)."""
    d = mu.shape[1]
    centred = [mu[m] - mean for m, mean in zip(members, means)]
    scatter = sum(c.T @ c for c in centred) / counts.sum()
    base = FACTOR_BASE * scatter + torch.diag(var.mean(0))
    eigenvalues = torch.linalg.eigvalsh(base)
    jitter = JITTER * float(eigenvalues.clamp(min=0).mean())
    base_scale = torch.linalg.cholesky(base + jitter * torch.eye(d, dtype=base.dtype))
    directions = torch.zeros(len(members), d, rank, dtype=torch.float64)
    spread = torch.ones(len(members), rank, dtype=torch.float64)
    for j, (c, n) in enumerate(zip(centred, counts)):
        whitened = torch.linalg.solve_triangular(base_scale, c.T / math.sqrt(float(n)), upper=False)  # (D, n_k)
        q, s, _ = torch.linalg.svd(whitened, full_matrices=False)
        r = min(rank, len(s))
        directions[j, :, :r] = q[:, :r]
        spread[j, :r] = (1 + float(n) / (float(n) + SHRINK) * s[:r] ** 2).sqrt()
    return {"mean": means.float(), "base": base_scale.float(), "directions": directions.float(),
            "spread": spread.float(), "weights": (counts / counts.sum()).float(),
            "components": [int(c) for c in counts],
            "eigenvalues": [float(eigenvalues.min()), float(eigenvalues.max() * spread.max() ** 2)]}


def _centre_out(sizes: list[int]) -> list[int]:
    """An order of components by size, the largest in the middle and the next ones alternately to its left and
    right: u's first number t near 0 then falls in the largest components' slabs (t = 0 always in the largest's,
    since the sizes left of it sum to at most it plus those right of it), so a temperature below 1 draws the
    commonest kinds of image. Of two equal sizes, the earlier counts as the larger."""
    by_size = sorted(range(len(sizes)), key=lambda j: -sizes[j])
    return by_size[1::2][::-1] + by_size[0::2]


def describe(entry: dict) -> str:
    """One line for logs, `info` and the spec."""
    low, high = entry["eigenvalues"]
    if "weights" in entry:
        sizes = entry["components"]
        shared = (f"a shared covariance plus {entry['directions'].shape[-1]} directions of its own each; "
                  if "directions" in entry else "")
        return (f"a mixture of {len(sizes)} Gaussians fitted to the latents of {entry['images']:,} training images "
                f"(k-means clusters of {min(sizes)} to {max(sizes)} images; {shared}covariance eigenvalues "
                f"{low:.3g} to {high:.3g}, where N(0, I) has 1), folded in as z = m_k + L_k v, k and v from u")
    if entry["mean"].dim() == 2:
        return (f"a Gaussian per class ({len(entry['mean'])} classes) fitted to the latents of {entry['images']:,} "
                f"training images (covariance eigenvalues {low:.3g} to {high:.3g}, where N(0, I) has 1), folded in "
                f"as z = m_y + L_y u")
    return (f"Gaussian fitted to the latents of {entry['images']:,} training images (covariance eigenvalues "
            f"{low:.3g} to {high:.3g}, where N(0, I) has 1), folded in as z = m + L u")


def check(entry: dict, latent_dim: int, num_classes: int = 0) -> None:
    """ValueError unless `entry` is a fit for a latent of latent_dim (per class: of a model with num_classes)
    (a checkpoint being read)."""
    mean, weights = entry.get("mean"), entry.get("weights")
    scale = entry.get("base" if "directions" in entry else "scale")
    shapes = [((latent_dim,), (latent_dim, latent_dim))]
    if "directions" in entry:
        directions, spread = entry["directions"], entry.get("spread")
        k = len(weights) if isinstance(weights, torch.Tensor) and weights.dim() == 1 else 0
        if not (isinstance(directions, torch.Tensor) and isinstance(spread, torch.Tensor) and directions.dim() == 3
                and tuple(directions.shape[:2]) == (k, latent_dim) and tuple(spread.shape) == (k, directions.shape[2])
                and bool(torch.isfinite(directions).all()) and bool((spread >= 1).all())
                and bool(torch.isfinite(spread).all())):
            raise ValueError(f"its prior_fit's directions are not those of a mixture for a {latent_dim}-d latent")
    if weights is not None:
        if num_classes:
            raise ValueError("its prior_fit is a mixture, which only an unconditional model takes")
        k = len(weights) if isinstance(weights, torch.Tensor) and weights.dim() == 1 else 0
        if not (2 <= k and bool(torch.isfinite(weights).all()) and bool((weights > 0).all())
                and abs(float(weights.double().sum()) - 1) < 1e-4):
            raise ValueError("its prior_fit's mixture weights are not positive and summing to 1")
        shapes = [((k, latent_dim), (latent_dim, latent_dim) if "directions" in entry else (k, latent_dim, latent_dim))]
    elif num_classes:
        shapes.append(((num_classes, latent_dim), (num_classes, latent_dim, latent_dim)))
    if not (isinstance(mean, torch.Tensor) and isinstance(scale, torch.Tensor)
            and (tuple(mean.shape), tuple(scale.shape)) in shapes
            and bool(torch.isfinite(mean).all()) and bool(torch.isfinite(scale).all())
            and bool((torch.diagonal(scale, dim1=-2, dim2=-1) > 0).all())):
        raise ValueError(f"its prior_fit is not a fit for a {latent_dim}-d latent"
                         + (f" of {num_classes} classes" if num_classes else ""))
    if not math.isfinite(float(torch.diagonal(scale.double(), dim1=-2, dim2=-1).log().sum())):  # log det
        raise ValueError("its prior_fit's scale is singular")
