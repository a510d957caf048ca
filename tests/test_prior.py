"""The fitted prior (train/prior.py): an exact change of variable of the trained model, kept through checkpoint,
export and runtime."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import run_cli

import edgevae
from edgevae.train import prior
from edgevae.train.checkpoint import load_run
from edgevae.train.model import VAE


def _vae(conditional: bool = False) -> VAE:
    torch.manual_seed(0)
    return VAE((3, 16, 16), latent_dim=6, arch="resnet", widths=(8, 16), likelihood="logistic",
               num_classes=3 if conditional else 0).eval()


def _images(n: int = 200) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, 16, 16), dtype=np.uint8))


def test_the_fit_whitens_the_training_latents():
    vae, x = _vae(), _images()
    entry = prior.fit(vae, x, None)
    with torch.no_grad():
        _, logvar_z = vae.encoder(x.float() / 255)
        vae.attach_prior(entry)
        mu, logvar = vae.encoder(x.float() / 255)
    mu = mu.double()
    inverse = torch.linalg.inv(entry["scale"].double())
    # in u the aggregate posterior is N(0, I) to float32 rounding: the means' covariance plus the mean posterior
    # covariance L^-1 diag(sigma_z^2) L^-T (full; the encoder reports its KL-optimal diagonal, at most its diagonal)
    posterior = inverse @ torch.diag(logvar_z.double().exp().mean(0)) @ inverse.T
    assert mu.mean(0).abs().max() < 1e-4
    assert torch.allclose(torch.cov(mu.T, correction=0) + posterior, torch.eye(6, dtype=torch.float64), atol=1e-4)
    assert (logvar.double().exp().mean(0) <= torch.diagonal(posterior) * (1 + 1e-4)).all()


def test_decoding_is_the_trained_model_at_m_plus_L_u_and_reconstructions_are_unchanged():
    vae, x = _vae(), _images()
    xf = x[:16].float() / 255
    with torch.no_grad():
        mu_z, _ = vae.encoder(xf)
        before = vae.decode(mu_z)
        entry = prior.fit(vae, x, None)
        vae.attach_prior(entry)
        mu_u, _ = vae.encoder(xf)
        after = vae.decode(mu_u)
        u = torch.randn(5, 6)
        direct = vae.decoder.body(entry["mean"] + u @ entry["scale"].T)
    # float32 round trip through L^-1 and L: agreement to float32 rounding of an 8-bit image's scale
    assert (after - before).abs().max() < 1e-4
    assert torch.allclose(vae.decoder(u), direct, atol=1e-5)


def test_the_encoder_variance_is_the_kl_optimal_diagonal_of_the_rotated_posterior():
    vae, x = _vae(), _images()
    entry = prior.fit(vae, x, None)
    with torch.no_grad():
        _, logvar_z = vae.encoder(x[:4].float() / 255)
        vae.attach_prior(entry)
        _, logvar_u = vae.encoder(x[:4].float() / 255)
    inverse = torch.linalg.inv(entry["scale"].double())
    for i in range(4):  # q(u|x) = N(., L^-1 diag(sigma^2) L^-T); the diagonal q closest in KL(q_diag || q): 1/diag(P)
        covariance = inverse @ torch.diag(logvar_z[i].double().exp()) @ inverse.T
        expected = 1 / torch.diagonal(torch.linalg.inv(covariance))
        assert torch.allclose(logvar_u[i].double().exp(), expected, rtol=1e-3)


def test_a_gaussian_fit_is_kept_and_the_export_carries_it(kind_export):
    run, out = kind_export("resnet-fitted")
    vae, ckpt, config = load_run(run)
    assert config.prior_fit == "gaussian" and ckpt["prior_fit"]["images"] == 461  # 512 less the validation 10%
    assert vae.prior_fit is not None and vae.decoder.latent_map is vae.encoder.latent_map
    spec = edgevae.load(out).spec
    assert spec["prior_fit"]["kind"] == "gaussian" and "z = m + L u" in spec["prior_fit"]["note"]
    # the graphs are the fitted model: export's parity checks ran against it; the runtime samples through it
    model = edgevae.load(out)
    eps = edgevae.standard_normal(0, (4, *model.latent_shape))
    with torch.no_grad():
        expected = vae.decode(torch.from_numpy(eps)).numpy()
    assert np.abs(model.sample(4, seed=0) - expected).max() < 1e-5  # float32 graph vs eager, same ops
    info = run_cli("info", str(out)).stdout
    assert "prior       Gaussian fitted to the latents of 461 training images" in info
    assert "latents far from" not in info  # the fit is what that warning asks for
    assert "folded in as z = m + L u\n" in info  # the notes whole, not cut mid-word
    assert "x_hat alone does not determine the likelihood\n" in info


def test_a_conditional_model_gets_a_gaussian_per_class():
    vae, x = _vae(conditional=True), _images()
    y = torch.from_numpy(np.random.default_rng(1).integers(0, 2, len(x)))  # class 2 has no training image
    entry = prior.fit(vae, x, y)
    assert entry["mean"].shape == (3, 6) and entry["scale"].shape == (3, 6, 6) and entry["classes"] == [
        int((y == 0).sum()), int((y == 1).sum()), 0]
    with torch.no_grad():
        mu_z, logvar_z = vae.encoder(x.float() / 255, y)
        vae.attach_prior(entry)
        mu, _ = vae.encoder(x.float() / 255, y)
    for k in (0, 1):  # each class's latents are whitened by its own Gaussian, to float32 rounding
        inverse = torch.linalg.inv(entry["scale"][k].double())
        posterior = inverse @ torch.diag(logvar_z[y == k].double().exp().mean(0)) @ inverse.T
        u = mu[y == k].double()
        assert u.mean(0).abs().max() < 1e-4
        assert torch.allclose(torch.cov(u.T, correction=0) + posterior, torch.eye(6, dtype=torch.float64), atol=1e-4)
    # the empty class takes the fit over all images: the same mean as the pooled latents'
    assert torch.allclose(entry["mean"][2], mu_z.mean(0), atol=1e-5)
    u, labels = torch.randn(6, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        direct = torch.stack([vae.decoder.body(torch.cat([entry["mean"][k] + u[i] @ entry["scale"][k].T,
                                                          torch.eye(3)[k]])[None])[0]
                              for i, k in enumerate(labels.tolist())])
        assert torch.allclose(vae.decoder(u, labels), direct, atol=1e-5)  # decode(u, y) = decoder at m_y + L_y u
    with pytest.raises(ValueError, match="not a fit for a 6-d latent$"):
        _vae().attach_prior(entry)  # a per-class fit on an unconditional model


def test_a_conditional_colour_run_exports_its_gaussian_per_class(kind_export):
    run, out = kind_export("resnet-fitted-conditional")
    vae, ckpt, _ = load_run(run)
    spec = edgevae.load(out).spec
    assert spec["prior_fit"]["kind"] == "gaussian-per-class" and sum(spec["prior_fit"]["classes"]) == 461
    model, labels = edgevae.load(out), np.array([0, 1, 2, 0])
    eps = edgevae.standard_normal(0, (4, *model.latent_shape))
    with torch.no_grad():
        expected = vae.decode(torch.from_numpy(eps), torch.from_numpy(labels)).numpy()
    assert np.abs(model.sample(4, seed=0, labels=labels) - expected).max() < 1e-5  # float32 graph vs eager
    info = run_cli("info", str(out)).stdout
    assert "a Gaussian per class (3 classes)" in info
    # the whitened latents' logvar reaches beyond 1: its parity was judged at its scale, which spec and info say
    assert spec["parity"]["scale"]["logvar"] > 1 and "x max(1, max |torch|): " in info


def test_binary_like_data_and_none_fit_nothing(run_dir):
    vae, ckpt, config = load_run(run_dir)  # the tiny `shapes` model: binary-like grey, auto -> none
    assert config.prior_fit == "none" and "prior_fit" not in ckpt and vae.prior_fit is None


def _with_fit_changed(run, tmp_path, field: str, change):
    """A copy of the run directory whose checkpoints' prior_fit[field] is change(it)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in ("checkpoint.pt", "best.pt"):
        if (copy / name).exists():
            ckpt = torch.load(copy / name, weights_only=True)
            ckpt["prior_fit"][field] = change(ckpt["prior_fit"][field])
            torch.save(ckpt, copy / name)
    return copy


def test_a_broken_fit_in_a_checkpoint_is_one_line(kind_export, tmp_path):
    copy = _with_fit_changed(kind_export("resnet-fitted")[0], tmp_path, "scale", lambda scale: scale[:2])
    with pytest.raises(ValueError, match=r"not a readable EdgeVAE checkpoint \(its prior_fit is not a fit for a 4-d"):
        load_run(copy)


def test_autoencoders_refuse_a_fit_and_large_latents_are_refused_before_training():
    from edgevae.train.config import TrainConfig

    torch.manual_seed(0)
    autoencoder = VAE((3, 16, 16), latent_dim=2, arch="resnet", widths=(8, 16), kind="ae", likelihood="logistic")
    with pytest.raises(ValueError, match="a fitted prior needs a VAE"):
        autoencoder.attach_prior({"mean": torch.zeros(2), "scale": torch.eye(2)})
    with pytest.raises(ValueError, match="--prior-fit gaussian needs a VAE"):
        TrainConfig(prior_fit="gaussian", model="ae")
    prior.check_size((2, 32, 32))  # 2,048 numbers: three 2,048 x 2,048 tables
    with pytest.raises(ValueError, match=r"over the latent's 2,304 numbers \(4x24x24\); it takes at most 2,048"):
        prior.check_size((4, 24, 24))


def test_a_spatial_latent_is_fitted_as_one_vector():
    # the default colour recipe's latent: C x h x w, one Gaussian over all its numbers, positions mixed
    torch.manual_seed(0)
    vae = VAE((3, 16, 16), arch="resnet", widths=(8, 16), latent_channels=2, likelihood="logistic").eval()
    x = _images()
    entry = prior.fit(vae, x, None)
    assert entry["mean"].shape == (128,) and entry["scale"].shape == (128, 128)  # 2 x 8 x 8
    with torch.no_grad():
        before = vae.decode(vae.encoder(x[:8].float() / 255)[0])
        vae.attach_prior(entry)
        mu, logvar = vae.encoder(x[:8].float() / 255)
        assert mu.shape == logvar.shape == (8, 2, 8, 8)
        assert torch.allclose(vae.decode(mu), before, atol=1e-5)  # reconstructions unchanged, exactly up to rounding
        u = torch.randn(4, 2, 8, 8)
        z = entry["mean"] + u.flatten(1) @ entry["scale"].T  # what the decoder's map computes, by hand
        vae.decoder.latent_map = None
        expected = vae.decode(z.reshape(4, 2, 8, 8))
        vae.decoder.latent_map = vae.encoder.latent_map
        assert torch.allclose(vae.decode(u), expected, atol=1e-5)


def test_extreme_posterior_variances_stay_finite():
    entry = prior.fit(_vae(), _images(), None)
    latent_map = prior.LatentMap(entry["mean"], entry["scale"])
    mu = torch.zeros(3, 6)
    logvar = torch.tensor([-100.0, 100.0, 0.0]).repeat_interleave(2).reshape(1, 6).repeat(3, 1)
    _, logvar_u = latent_map.to_latent(mu, logvar)  # unclipped, exp(100) is inf and inf * 0 is NaN
    assert torch.isfinite(logvar_u).all()


@pytest.mark.parametrize("kind,kept_ops", [
    ("resnet-fitted", {"encoder": {"Sub", "MatMul", "Gemm"}, "decoder": {"MatMul"}}),
    # the colour default: a 2 x h x w latent from a 1x1-conv head, flattened for the map and reshaped back
    ("resnet-default", {"encoder": {"Sub", "MatMul", "Conv", "Reshape"}, "decoder": {"MatMul", "Reshape"}}),
    # per class: the label's MatMul with each table, then the picked matrices' batched MatMul
    ("resnet-fitted-conditional", {"encoder": {"Sub", "MatMul", "Gemm", "Reshape", "Unsqueeze"},
                                   "decoder": {"MatMul", "Reshape", "Unsqueeze", "Add"}}),
])
def test_int8_keeps_the_latent_map_float(kind_export, kind, kept_ops):
    import onnx

    from edgevae.export.variants import _float_nodes

    _, out = kind_export(kind)
    for role, ops in kept_ops.items():
        graph = onnx.load(out / f"{role}.onnx").graph
        kept = set(_float_nodes(onnx.load(out / f"{role}.onnx")))
        assert ops <= {node.op_type for node in graph.node if node.name in kept}, role
        # every MatMul of these graphs is the latent map's (the networks' layers are Gemm and Conv): all stay float
        assert {node.name for node in graph.node if node.op_type == "MatMul"} <= kept, role
        int8 = out / f"{role}.int8.onnx"
        if int8.exists():  # written only within its bounds; its latent map is still float32 MatMul
            quantized = onnx.load(int8).graph
            assert not [node for node in quantized.node if node.op_type == "MatMulInteger"
                        and any("latent_map" in name for name in node.input)]


def test_ctrl_c_saves_a_fit_of_the_weights_it_saves(tmp_path, colour_npz):
    import signal

    from edgevae.train.checkpoint import load
    from edgevae.train.config import TrainConfig
    from edgevae.train.loop import Interrupted, train

    def interrupt(epoch, batch, model):
        if (epoch, batch) == (1, 3):  # before the first evaluation: no fit has been made yet
            signal.raise_signal(signal.SIGINT)

    config = TrainConfig(data=str(colour_npz(3)), image_size=16, arch="resnet", widths=(8, 16), latent_dim=4,
                         epochs=2, batch_size=32, out=str(tmp_path / "run"))
    with pytest.raises(Interrupted):
        train(config, on_step=interrupt)
    saved = load(tmp_path / "run" / "checkpoint.pt")
    assert saved["config"]["prior_fit"] == "mixture" and saved["next_batch"] == 4
    vae, _, _ = load_run(tmp_path / "run", "last")
    expected = prior.fit(vae, *_train_split(colour_npz(3)), seed=0, mixture=True)  # the saved weights' own fit
    assert torch.allclose(saved["prior_fit"]["weights"], expected["weights"])
    assert torch.allclose(saved["prior_fit"]["scale"], expected["scale"], atol=1e-5)


def _train_split(npz):
    """The training images and labels of the run above (train/data.py's split of the .npz: its own 10% held out)."""
    from edgevae.train import data as data_sources
    from edgevae.train.config import TrainConfig

    data = data_sources.load(TrainConfig(data=str(npz), image_size=16), log=lambda *_: None)
    return data.train_x, data.train_y


def _separated(seed: int = 0):
    """300 latents (float64) in 3 clusters whose centres lie ~10 apart, spread 1, posterior variances 0.01."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 6, generator=gen, dtype=torch.float64) * 10
    assigned = torch.arange(300) % 3
    mu = centres[assigned] + torch.randn(300, 6, generator=gen, dtype=torch.float64)
    return mu, torch.full((300, 6), 0.01, dtype=torch.float64), assigned


def test_the_mixture_fit_finds_separated_clusters_and_shrinks_their_covariances():
    mu, var, assigned = _separated()
    entry = prior._mixture(mu, var, 3, seed=0)
    means = entry["mean"].double()
    # k-means recovers the partition: each component is one cluster, its mean that cluster's, weight 1/3
    found = [int(torch.cdist(mu[assigned == j].mean(0, keepdim=True), means).argmin()) for j in range(3)]
    assert sorted(found) == [0, 1, 2] and entry["components"] == [100, 100, 100]
    assert torch.allclose(entry["weights"].double(), torch.full((3,), 1 / 3, dtype=torch.float64))
    own = [torch.cov(mu[assigned == j].T, correction=0) + torch.diag(var[assigned == j].mean(0)) for j in range(3)]
    pooled = sum(own) / 3
    for j, k in enumerate(found):  # (n_k C_k + SHRINK W) / (n_k + SHRINK), to float32 rounding of L
        assert torch.allclose(means[k], mu[assigned == j].mean(0), atol=1e-5)
        expected = (100 * own[j] + prior.SHRINK * pooled) / (100 + prior.SHRINK)
        scale = entry["scale"][k].double()
        assert torch.allclose(scale @ scale.T, expected, atol=1e-4)


def test_the_mixture_puts_its_largest_components_where_a_low_temperature_draws():
    gen = torch.Generator().manual_seed(0)
    sizes = [20, 150, 40, 90, 60]  # five separated clusters of unequal sizes
    centres = torch.randn(5, 6, generator=gen, dtype=torch.float64) * 50
    assigned = torch.cat([torch.full((n,), j) for j, n in enumerate(sizes)])
    mu = centres[assigned] + torch.randn(len(assigned), 6, generator=gen, dtype=torch.float64)
    entry = prior._mixture(mu, torch.full_like(mu, 0.01), 5, seed=0)
    # centre-out by size: the largest in the middle, the next ones alternately left and right of it
    assert entry["components"] == [40, 90, 150, 60, 20]
    latent_map = prior.LatentMap(entry["mean"], entry["scale"], entry["weights"])
    u = torch.randn(10_000, 6, generator=gen)
    for temperature, share in ((0.0, 1.0), (0.2, 0.9)):
        # t = 0 lies in the largest component's slab, between its cuts Phi^-1(130 / 360) = -0.36 and
        # Phi^-1(280 / 360) = 0.76; at temperature 0.2, t = 0.2 N(0, 1) stays in it in 96% of draws
        picked = latent_map._component(temperature * u[:, :1]).argmax(1)
        assert float((picked == 2).double().mean()) >= share
    assert [prior._centre_out(s) for s in ([1], [2, 2], [3, 1, 2])] == [[0], [1, 0], [2, 0, 1]]


def test_the_mixture_draws_each_component_with_its_weight():
    mean = torch.randn(3, 6, generator=torch.Generator().manual_seed(1)) * 5
    latent_map = prior.LatentMap(mean, torch.eye(6).repeat(3, 1, 1), torch.tensor([0.5, 0.3, 0.2]))
    u = torch.randn(400_000, 6, generator=torch.Generator().manual_seed(0))
    one_hot = latent_map._component(u[:, :1])
    assert (one_hot.sum(1) == 1).all()  # every u picks exactly one component
    # the cuts are the normal's quantiles of the cumulative weights: 400,000 draws put each frequency within
    # 4 binomial standard deviations (<= 0.0032) of its weight
    assert torch.allclose(one_hot.mean(0), torch.tensor([0.5, 0.3, 0.2]), atol=0.0032)
    z = latent_map.from_latent(u)
    assert torch.allclose(z[:, 1:] - (one_hot @ mean)[:, 1:], u[:, 1:], atol=1e-5)  # L_k = I: v's rest is u's
    v1 = z[:, 0] - (one_hot @ mean)[:, 0]  # the stretched first number: nearly, not exactly, standard normal
    assert abs(float(v1.mean())) < 0.02 and abs(float(v1.std()) - 1) < 0.02
    for k in range(3):
        picked = v1[one_hot[:, k] > 0]
        assert abs(float(picked.mean())) < 0.2 and abs(float(picked.std()) - 1) < 0.1


def test_the_mixture_keeps_reconstructions_and_encodes_into_the_most_responsible_component():
    vae, x = _vae(), _images()
    xf = x[:32].float() / 255
    entry = prior.fit(vae, x, None, mixture=True)
    assert len(entry["weights"]) == prior.components(200, 6) == 8 and sum(entry["components"]) == 200
    with torch.no_grad():
        mu_z, logvar_z = vae.encoder(xf)
        before = vae.decode(mu_z)
        vae.attach_prior(entry)
        mu_u, logvar_u = vae.encoder(xf)
        assert (vae.decode(mu_u) - before).abs().max() < 1e-4  # every component reproduces any latent: unchanged
        latent_map = vae.encoder.latent_map
        picked = latent_map._component(mu_u[:, :1]).argmax(1)
    # responsibilities by hand, in float64: log w_k + log N(mu; m_k, L_k L_k^T)
    scale, mean = entry["scale"].double(), entry["mean"].double()
    white = torch.linalg.solve_triangular(scale, (mu_z.double()[:, None, :] - mean).unsqueeze(-1), upper=False)
    score = entry["weights"].double().log() - torch.diagonal(scale, dim1=-2, dim2=-1).log().sum(-1) \
        - 0.5 * white.squeeze(-1).pow(2).sum(-1)
    assert (picked == score.argmax(1)).all()
    # the variances: the per-class formula's for v, and t's times the squared slope of v_1 -> t, by finite differences
    k, h = picked[0], 1e-3
    with torch.no_grad():
        step = h * scale[k][:, 0].float()  # moves v_1 alone by h
        t_up = latent_map.to_latent(mu_z[:1] + step, None)[0][0, 0]
        t_down = latent_map.to_latent(mu_z[:1] - step, None)[0][0, 0]
    slope = (t_up - t_down).double() / (2 * h)
    logvar_v = -torch.log(logvar_z[0].double().clamp(-60, 60).neg().exp() @ (scale[k] * scale[k]))
    assert torch.allclose(logvar_u[0, 1:].double(), logvar_v[1:], atol=1e-4)
    # t's: by the slope, where that keeps t in its slab (a posterior 10 nats of logvar narrower here)...
    with torch.no_grad():
        narrow = latent_map.to_latent(mu_z[:1], logvar_z[:1] - 10)[1]
    assert abs(float(narrow[0, 0]) - float(logvar_v[0] - 10 + 2 * slope.log())) < 1e-2
    # ... else capped, its standard deviation a quarter of its distance to the slab's nearer edge (every image here)
    low, width, end, sign = (latent_map._component(mu_u[:, :1]) @ latent_map.stretch)[:, :4].double().unbind(1)
    t = mu_u[:, 0].double()
    room = torch.where(end > 0.5, sign * (t - low), torch.minimum(t - low, low + width - t))
    cap = 2 * torch.log(room / prior.SLAB_SIGMAS)
    assert (logvar_u[:, 0].double() <= cap + 1e-4).all()
    assert abs(float(logvar_u[0, 0]) - min(float(logvar_v[0] + 2 * slope.log()), float(cap[0]))) < 1e-2
    # the room of a t in each kind of slab: the two end slabs (one edge each) and an inner one (the nearer edge)
    edges = latent_map.edges.double()
    probe = torch.tensor([[edges[1] - 0.5], [edges[-2] + 0.3], [edges[1] + 0.25 * (edges[2] - edges[1])]])
    one_hot = latent_map._component(probe.float())
    assert one_hot.argmax(1).tolist() == [0, len(edges) - 2, 1]
    expected = torch.tensor([0.5, 0.3, 0.25 * float(edges[2] - edges[1])], dtype=torch.float64)
    assert torch.allclose(latent_map._room(probe.float(), one_hot).double().flatten(), expected, rtol=1e-5)
    # so the encoder's noise, up to just under SLAB_SIGMAS standard deviations, keeps every image's component
    for sigmas in (-0.999 * prior.SLAB_SIGMAS, 0.999 * prior.SLAB_SIGMAS):
        t_moved = mu_u[:, :1] + sigmas * torch.exp(0.5 * logvar_u[:, :1])
        assert (latent_map._component(t_moved).argmax(1) == picked).all()


def test_a_small_latent_fits_a_mixture_of_full_covariances_and_the_export_samples_through_it(kind_export):
    run, out = kind_export("resnet-flat")
    vae, ckpt, config = load_run(run)
    entry = ckpt["prior_fit"]
    assert config.prior_fit == "mixture" and len(entry["weights"]) == prior.components(461, 128) == 19
    assert entry["scale"].shape == (19, 128, 128) and "directions" not in entry
    info = _samples_and_reconstructions_as_trained(vae, ckpt, out)
    assert "prior       a mixture of 19 Gaussians fitted to the latents of 461 training images" in info


def _samples_and_reconstructions_as_trained(vae, ckpt: dict, out) -> str:
    """Assert that an export of a mixture samples as its model does and reconstructs as the trained (unfitted) one
    did; `edgevae info`'s output."""
    spec = edgevae.load(out).spec
    assert spec["prior_fit"]["kind"] == "gaussian-mixture" and sum(spec["prior_fit"]["components"]) == 461
    model = edgevae.load(out)
    eps = edgevae.standard_normal(0, (64, *model.latent_shape))
    with torch.no_grad():
        expected = vae.decode(torch.from_numpy(eps)).numpy()
    # float32 graph vs eager, same ops; the stretch of u's first number onto the whole line magnifies rounding by
    # up to 1 / (its slab's weight), here ~ 19
    assert np.abs(model.sample(64, seed=0) - expected).max() < 1e-4
    images = ckpt["reference_x"][:16].float() / 255
    with torch.no_grad():
        vae.encoder.latent_map = vae.decoder.latent_map = None
        trained = vae.decode(vae.encoder(images)[0]).numpy()
    assert np.abs(model.reconstruct(images.numpy()) - trained).max() < 1e-4  # the graphs reconstruct as trained
    return run_cli("info", str(out)).stdout


def test_a_stack_of_factors_is_inverted_on_two_threads():
    # torch.linalg.inv of a stack of float64 matrices of this size fails under MKL on 2 threads ("Pivots given to
    # lu_solve must all be greater or equal to 1"): a run's 39 components of 162 numbers made its checkpoint
    # unreadable to `edgevae evaluate`. The factors are triangular and are inverted by a triangular solve
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 162, 162, generator=gen, dtype=torch.float64)
    scale = torch.linalg.cholesky(a @ a.transpose(1, 2) / 162 + 0.01 * torch.eye(162, dtype=torch.float64))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        latent_map = prior.LatentMap(torch.zeros(3, 162), scale.float(), torch.tensor([0.5, 0.3, 0.2]))
    finally:
        torch.set_num_threads(threads)
    inverse = latent_map.inverse_t.double().reshape(162, 3, 162).permute(1, 2, 0)  # back to (K, D, D): L_k^-1
    assert torch.allclose(inverse @ scale, torch.eye(162, dtype=torch.float64).expand(3, 162, 162), atol=1e-4)


def test_a_factored_mixture_is_the_mixture_of_its_full_scales():
    # clusters too large for K full covariances share a base L_B and keep R directions each: L_k = L_B F_k,
    # F_k = I + Q_k diag(c_k - 1) Q_k^T. The map must be the dense mixture of those L_k, both ways
    gen = torch.Generator().manual_seed(0)
    d, k = 40, 5
    centres = torch.randn(k, d, generator=gen, dtype=torch.float64) * 4
    mixing = torch.randn(d, d, generator=gen, dtype=torch.float64) * 0.3
    mu = centres[torch.arange(300) % k] + torch.randn(300, d, generator=gen, dtype=torch.float64) @ mixing
    entry = prior._factored(mu, torch.full_like(mu, 0.01), [torch.arange(300) % k == j for j in range(k)],
                            torch.full((k,), 60.0, dtype=torch.float64),
                            torch.stack([mu[j::k].mean(0) for j in range(k)]), rank=8)
    prior.check(entry, d)
    directions, spread = entry["directions"].double(), entry["spread"].double()
    assert torch.allclose(directions.transpose(1, 2) @ directions, torch.eye(8, dtype=torch.float64).expand(k, 8, 8),
                          atol=1e-5) and bool((spread >= 1).all())  # orthonormal directions, widened only
    base = entry["base"].double()
    full = torch.stack([base @ (torch.eye(d, dtype=torch.float64) + directions[j] @ torch.diag(spread[j] - 1)
                                @ directions[j].T) for j in range(k)])
    factored = prior.LatentMap.of(entry)
    # the dense map reads log det L_k off a triangular scale's diagonal: give it each L_k's QR-triangular twin
    # (the same covariance L_k L_k^T; z differs, so only the encoder and the density are compared through it)
    triangular = torch.linalg.cholesky(full @ full.transpose(1, 2))
    dense = prior.LatentMap(entry["mean"], triangular, entry["weights"])
    mu32 = mu.float()
    with torch.no_grad():
        u, logvar = factored.to_latent(mu32, torch.full_like(mu32, math.log(0.01)))
        assert torch.equal(factored._component(u[:, :1]), dense._component(dense.to_latent(mu32, None)[0][:, :1]))
        # round trip, so decode(encode(x).mu) is unchanged: float32 whitening by L_B and back, relative to |mu|
        assert (factored.from_latent(u) - mu32).abs().max() < 2e-5 * mu32.abs().max()
        assert torch.isfinite(logvar).all()
        eps = torch.randn(2000, d, generator=gen)
        one_hot = factored._component(eps[:, :1])
        v = torch.cat([factored._stretch(eps[:, :1], one_hot), eps[:, 1:]], 1).double()
        z = entry["mean"].double()[one_hot.argmax(1)] + (full[one_hot.argmax(1)] @ v.unsqueeze(-1)).squeeze(-1)
        assert (factored.from_latent(eps).double() - z).abs().max() < 1e-4  # z = m_k + L_B F_k v
    # the encoder's variances of v: 1 / diag(F_k diag(w) F_k), w the diagonal of W = L_B^T diag(1/sigma^2) L_B, the
    # posterior precision L_k^T diag(1/sigma^2) L_k with W's off-diagonal left out; by hand, densely, in float64
    logvar_z = -6 * torch.rand(len(mu), d, generator=gen)
    with torch.no_grad():
        u, logvar_u = factored.to_latent(mu32, logvar_z)
    picked = factored._component(u[:, :1]).argmax(1)
    w = torch.exp(-logvar_z.double()) @ (base * base)
    f = torch.eye(d, dtype=torch.float64) + directions[picked] @ torch.diag_embed(spread[picked] - 1) \
        @ directions[picked].transpose(1, 2)
    expected = -torch.log(((f * f) @ w.unsqueeze(2)).squeeze(2))
    # float32 products of precisions up to e^6 against float64: a few float32 ulps of the precision (measured 2e-6)
    assert (logvar_u[:, 1:].double() - expected[:, 1:]).abs().max() < 2e-5
    # closer to the full posterior N(v, Lambda^-1), Lambda = F W F, than the base's diagonal 1 / w, which leaves F out:
    # KL(diag(s) || Lambda^-1) = (sum s_i Lambda_ii - sum log s_i - log det Lambda - D) / 2 (tr and log det terms)
    lam = f @ (base.T @ torch.diag_embed(torch.exp(-logvar_z.double())) @ base) @ f
    diag = torch.diagonal(lam, dim1=1, dim2=2)[:, 1:]

    def kl(s):  # the terms that depend on s, over v's numbers past the first
        return (s * diag - s.log()).sum(1) / 2

    assert bool((kl(logvar_u[:, 1:].double().exp()) < kl(1 / w[:, 1:])).all())


def test_a_colour_run_fits_a_factored_mixture_by_default_and_the_export_samples_through_it(kind_export):
    run, out = kind_export("resnet-default")
    vae, ckpt, config = load_run(run)
    entry = ckpt["prior_fit"]
    assert config.prior_fit == "mixture" and config.latent_channels == 4 and tuple(vae.latent_shape) == (4, 8, 8)
    assert len(entry["weights"]) == prior.components(461, 256) == 19 and entry["directions"].shape == (19, 256, 32)
    info = _samples_and_reconstructions_as_trained(vae, ckpt, out)
    assert "a shared covariance plus 32 directions of its own each" in info
    assert edgevae.load(out).spec["prior_fit"]["directions"] == 32
    from edgevae.export.verify import format_table, verify_export

    rows = verify_export(run, out)  # every variant export wrote (int8 and fp16 asked for) passes its checks
    assert {r.variant for r in rows} >= {"fp32", "int8", "fp16"}, sorted({r.variant for r in rows})
    assert all(r.ok for r in rows), format_table([r for r in rows if not r.ok])


def test_a_mixture_is_for_unconditional_vaes_and_a_broken_one_is_one_line(kind_export, tmp_path):
    from edgevae.train.config import TrainConfig

    with pytest.raises(ValueError, match="--prior-fit mixture is for an unconditional model"):
        TrainConfig(prior_fit="mixture", conditional=True)
    with pytest.raises(ValueError, match="--prior-fit mixture needs a VAE"):
        TrainConfig(prior_fit="mixture", model="ae")
    copy = _with_fit_changed(kind_export("resnet-default")[0], tmp_path, "weights", lambda weights: weights * 2)
    with pytest.raises(ValueError, match=r"its prior_fit's mixture weights are not positive and summing to 1\)$"):
        load_run(copy)


def test_interpolating_through_a_mixture_keeps_its_first_number_at_the_nearer_end(kind_export):
    # a straight line through the number that picks the component would cross every component between the ends'
    # (and sweep each one's stretched number through its whole range); held, a strip stays in a's component for
    # its first half and in b's for the second
    from edgevae import _latent

    model = edgevae.load(kind_export("resnet-default")[1])
    ua, ub = (edgevae.standard_normal(seed, (1, *model.latent_shape))[0] for seed in (1, 2))
    path = _latent.interpolate(ua.ravel(), ub.ravel(), 5, "slerp", held=(0,))
    assert list(path[:, 0]) == [ua.flat[0]] * 2 + [ub.flat[0]] * 3
    others = _latent.interpolate(np.delete(ua.ravel(), 0), np.delete(ub.ravel(), 0), 5, "slerp")
    np.testing.assert_array_equal(path[:, 1:], others)  # the rest as without the held number
    strip = model.interpolate(ua, ub, steps=5, method="slerp")
    np.testing.assert_array_equal(strip, model.decode(path.reshape(5, *model.latent_shape)))
    assert _latent.held_numbers(model.spec) == (0,)
    assert _latent.held_numbers(edgevae.load(kind_export("resnet-fitted")[1]).spec) == ()  # one Gaussian: none


def test_latents_far_out_in_a_component_round_trip_finite_and_exact_where_a_slab_can_hold_them():
    # the encoder's stretched number of an image far out along its component's first direction must still land in
    # a slab the decoder reads back: a component whose slab cannot hold it in float32 is not picked, and past every
    # slab's reach the number is clipped, never NaN (before: t beyond the outer cuts gave no component and NaN)
    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(4, 6, generator=gen) * 3
    latent_map = prior.LatentMap(mean, torch.eye(6).repeat(4, 1, 1), torch.tensor([0.4, 0.3, 0.2, 0.1]))
    for k in range(4):
        offsets = torch.zeros(49, 6)
        offsets[:, 0] = torch.linspace(-12, 12, 49)
        z = mean[k] + offsets
        u, logvar = latent_map.to_latent(z, torch.zeros_like(z))
        back = latent_map.from_latent(u)
        assert torch.isfinite(u).all() and torch.isfinite(logvar).all() and torch.isfinite(back).all()
        assert (latent_map._component(u[:, :1]).sum(1) == 1).all()
        near = offsets[:, 0].abs() <= 4  # within 4 standard deviations some slab holds it: exact to float32
        assert torch.allclose(back[near], z[near], atol=1e-3)
    far = torch.full((2, 6), 1e4)
    far[1] *= -1
    assert torch.isfinite(latent_map.from_latent(latent_map.to_latent(far, None)[0])).all()
    # equal responsibilities (two identical components) pick exactly one, the lower index
    twins = prior.LatentMap(torch.zeros(2, 6), torch.eye(6).repeat(2, 1, 1), torch.tensor([0.5, 0.5]))
    u, _ = twins.to_latent(torch.randn(8, 6, generator=gen), None)
    assert (twins._component(u[:, :1]).argmax(1) == 0).all()


def test_k_means_on_fewer_distinct_latents_than_components_fits_what_there_is():
    mu = torch.tensor([[0.0, 0.0], [5.0, 5.0]], dtype=torch.float64).repeat(20, 1)  # two distinct latents
    entry = prior._mixture(mu, torch.full((40, 2), 0.01, dtype=torch.float64), 8, seed=0)
    assert entry["components"] == [20, 20]
    one = torch.zeros(40, 2, dtype=torch.float64)  # one distinct latent: a single cluster
    assert len(prior._mixture(one, torch.full((40, 2), 0.01, dtype=torch.float64), 8, seed=0)["weights"]) == 1
