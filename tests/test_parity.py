"""onnxruntime against PyTorch, the source of truth, with identical x and eps.

Tolerance 1e-5 max |diff|: float32 on both sides, but different GEMM kernels (onnxruntime's MLAS,
PyTorch's CPU BLAS) sum in different orders; we measure ~1e-6, and a real defect (a wrong op, a
frozen constant) is >= 1e-2. See export/gates.py.
"""
import numpy as np
import pytest
import torch

import edgevae
from edgevae.noise import standard_normal

TOL = 1e-5


@pytest.mark.parametrize("n", [1, 7, 64, 256])
def test_runtime_matches_torch(export_dir, trained, n):
    vae, ckpt = trained
    model = edgevae.load(export_dir)
    x = (ckpt["reference_x"][torch.arange(n) % len(ckpt["reference_x"])].float() / 255).numpy()
    eps = standard_normal(n, (n, vae.latent_dim))
    with torch.no_grad():
        mu, logvar = vae.encoder(torch.from_numpy(x))
        z = vae.reparameterize(mu, logvar, torch.from_numpy(eps))
        x_hat = vae.decode(z)
    got = model.encode(x, eps=eps)
    for name, want, have in (("z", z, got.z), ("mu", mu, got.mu), ("logvar", logvar, got.logvar)):
        assert np.max(np.abs(have - want.numpy())) <= TOL, name
    assert np.max(np.abs(model.decode(z.numpy()) - x_hat.numpy())) <= TOL
    # sample(eps=...) is decode(eps): the generative path end to end.
    with torch.no_grad():
        want_samples = vae.decode(torch.from_numpy(eps)).numpy()
    assert np.max(np.abs(model.sample(n, eps=eps) - want_samples)) <= TOL
