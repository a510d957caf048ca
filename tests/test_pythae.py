"""pythae's VAEs: a folder written by model.save, exported with --pythae and run against pythae's own networks.

Needs the pythae extra (pip install 'edgevae[pythae]'); skipped without it, failing under CI=true.
"""
import numpy as np
import pytest
import torch
from conftest import run_cli, skip_or_fail

import edgevae

try:
    from pythae.models import VAE, VAMP, VAEConfig, VAMPConfig
except ModuleNotFoundError:
    VAE = None

TOL = 1e-5  # pythae's default networks are MLPs like EdgeVAE's: ~3e-7 measured


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    if VAE is None:
        skip_or_fail("needs pythae: pip install 'edgevae[pythae]'")
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=8)).eval()
    folder = tmp_path_factory.mktemp("pythae") / "vae"
    model.save(str(folder))
    return model, folder


def test_pythae_vae_through_the_cli(saved, tmp_path):
    model, folder = saved
    r = run_cli("export", "--pythae", str(folder), "--out", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("exporting VAE (pythae): image 1x28x28, latent 8, native range [0, 1], prior N(0, I)")
    exp = edgevae.load(tmp_path / "e")
    assert exp.spec["source"]["kind"] == "pythae" and exp.spec["source"]["class"] == "VAE"
    x = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)
    eps = edgevae.standard_normal(1, (7, 8))
    with torch.no_grad():
        out = model.encoder(torch.from_numpy(x))
        z = out.embedding + torch.exp(0.5 * out.log_covariance) * torch.from_numpy(eps)
        want = model.decoder(z).reconstruction.clamp(0, 1).numpy()
    enc = exp.encode(x, eps=eps)
    assert np.abs(enc.z - z.numpy()).max() <= TOL and np.abs(exp.decode(enc.z) - want).max() <= TOL
    r = run_cli("verify", "--pythae", str(folder), str(tmp_path / "e"))
    assert r.returncode == 0 and "checks within bounds" in r.stdout, r.stderr


def test_vamp_has_no_standard_normal_prior(tmp_path):
    if VAE is None:
        skip_or_fail("needs pythae: pip install 'edgevae[pythae]'")
    torch.manual_seed(0)
    VAMP(VAMPConfig(input_dim=(1, 28, 28), latent_dim=4, number_components=5)).save(str(tmp_path / "vamp"))
    from edgevae.export.importers import pythae_source

    source = pythae_source(tmp_path / "vamp")
    assert source.prior is None and "VampPrior" in source.prior_note


def test_pickled_custom_networks_are_refused(saved, tmp_path):
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(saved[1], folder)
    (folder / "encoder.pkl").write_bytes(b"not unpickled")
    r = run_cli("export", "--pythae", str(folder), "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and "does not unpickle" in r.stderr and len(r.stderr.strip().splitlines()) == 1
