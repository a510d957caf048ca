"""The fitted prior (train/prior.py): an exact change of variable of the trained model, kept through checkpoint,
export and runtime."""
from __future__ import annotations

import json

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


def test_a_colour_run_fits_it_by_default_and_the_export_carries_it(kind_export):
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


def test_binary_like_data_and_none_fit_nothing(run_dir):
    vae, ckpt, config = load_run(run_dir)  # the tiny `shapes` model: binary-like grey, auto -> none
    assert config.prior_fit == "none" and "prior_fit" not in ckpt and vae.prior_fit is None


def test_a_broken_fit_in_a_checkpoint_is_one_line(kind_export, tmp_path):
    import shutil

    run, _ = kind_export("resnet-fitted")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in ("checkpoint.pt", "best.pt"):
        if (copy / name).exists():
            ckpt = torch.load(copy / name, weights_only=True)
            ckpt["prior_fit"]["scale"] = ckpt["prior_fit"]["scale"][:2]
            torch.save(ckpt, copy / name)
    with pytest.raises(ValueError, match=r"not a readable EdgeVAE checkpoint \(its prior_fit is not a fit for a 4-d"):
        load_run(copy)


def test_spatial_latents_and_autoencoders_refuse_a_fit():
    torch.manual_seed(0)
    spatial = VAE((3, 16, 16), arch="resnet", widths=(8, 16), latent_channels=2, likelihood="logistic")
    with pytest.raises(ValueError, match="flat latent"):
        spatial.attach_prior({"mean": torch.zeros(2), "scale": torch.eye(2)})
    config = json.loads(json.dumps({"prior_fit": "gaussian", "model": "vae", "latent_channels": 2}))
    assert not prior.wanted(type("C", (), config))
