"""Bring your own VAE: hand-written modules (flat and spatial latents, an AntixK-shaped one) exported through
the Python API and the CLI, verified, and run in the runtime against the modules themselves.

The modules are in tests/byo/user_vaes.py, as a user would write them; torch is the oracle.
"""
import json
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli

import edgevae
from edgevae import spec as S

USER = ROOT / "tests" / "byo" / "user_vaes.py"
sys.path.insert(0, str(USER.parent))
import user_vaes  # noqa: E402

# Both sides float32 over a few small layers: ~1e-6 measured; the module family's bound is 1e-4.
TOL = 1e-4


@pytest.fixture(scope="module")
def flat_export(tmp_path_factory):
    from edgevae.export import export_vae

    lines = []
    out = export_vae(user_vaes.flat(), (1, 16, 16), tmp_path_factory.mktemp("flat") / "e", native_range=(-1, 1),
                     log=lines.append)
    return out, lines


@pytest.fixture(scope="module")
def spatial_export(tmp_path_factory):
    """The spatial module through the CLI, its weights saved as safetensors and loaded back by --weights."""
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("spatial")
    save_file(user_vaes.spatial().state_dict(), str(base / "w.safetensors"))
    r = run_cli("export", "--module", f"{USER}:SpatialVAE", "--weights", str(base / "w.safetensors"),
                "--image-shape", "3,32,32", "--out", str(base / "e"))
    assert r.returncode == 0, r.stderr
    return base / "e", r.stdout


def test_flat_module_spec_and_parity(flat_export):
    out, lines = flat_export
    model = edgevae.load(out)
    spec = model.spec
    assert model.latent_shape == (6,) and model.image_shape == (1, 16, 16) and model.prior == S.PRIOR
    assert spec["source"] == {"kind": "module", "class": "FlatVAE"}
    assert spec["native_range"] == [-1.0, 1.0] and spec["pixel_range"] == [0.0, 1.0] and not spec["tileable"]
    assert spec["parity"]["tolerance"] == TOL and max(spec["parity"]["max_abs_diff"].values()) <= TOL
    assert lines[0].startswith("exporting FlatVAE (module): image 1x16x16, latent 6, native range [-1, 1] folded")


def test_flat_module_runtime_equals_the_module(flat_export):
    model, net = edgevae.load(flat_export[0]), user_vaes.flat()
    x = np.random.default_rng(0).random((7, 1, 16, 16), dtype=np.float32)
    eps = edgevae.standard_normal(3, (7, 6))
    enc = model.encode(x, eps=eps)
    with torch.no_grad():
        mu, logvar = net.encode(torch.from_numpy(x) * 2 - 1)  # the module's own range: [-1, 1]
        z = mu + torch.exp(0.5 * logvar) * torch.from_numpy(eps)
        x_hat = ((net.decode(z) + 1) / 2).clamp(0, 1)
    assert np.abs(enc.mu - mu.numpy()).max() <= TOL and np.abs(enc.z - z.numpy()).max() <= TOL
    assert np.abs(model.decode(enc.z) - x_hat.numpy()).max() <= TOL
    assert np.abs(model.sample(7, eps=eps) - ((net.decode(torch.from_numpy(eps)) + 1) / 2).clamp(0, 1)
                  .detach().numpy()).max() <= TOL


def test_spatial_module_through_the_cli(spatial_export):
    out, stdout = spatial_export
    assert "latent 4x8x8" in stdout and "tileable (4 px per latent cell)" in stdout and "wrote" in stdout
    model, net = edgevae.load(out), user_vaes.spatial()
    spec = model.spec
    assert model.latent_shape == (4, 8, 8) and spec["tileable"] and spec["latent_scale"] == 4
    assert spec["source"]["factory"] == "user_vaes.py:SpatialVAE" and len(spec["source"]["weights_sha256"]) == 64
    assert str(ROOT) not in json.dumps(spec)  # never a local path
    x = np.random.default_rng(1).random((3, 3, 32, 32), dtype=np.float32)
    eps = edgevae.standard_normal(5, (3, 4, 8, 8))
    enc = model.encode(x, eps=eps)
    with torch.no_grad():
        mu, logvar = net.encode(torch.from_numpy(x))
        x_hat = net.decode(mu + torch.exp(0.5 * logvar) * torch.from_numpy(eps))
    assert enc.z.shape == (3, 4, 8, 8) and np.abs(enc.mu - mu.numpy()).max() <= TOL
    assert np.abs(model.decode(enc.z) - x_hat.numpy()).max() <= TOL


def test_spatial_latents_through_every_runtime_call(spatial_export):
    model = edgevae.load(spatial_export[0])
    images = model.sample(5, seed=0)
    assert images.shape == (5, 3, 32, 32) and np.array_equal(images, model.sample(5, seed=0))
    assert np.array_equal(model.sample(2, seed=0), images[:2])  # the first k of n are those of k
    z = edgevae.standard_normal(0, (5, 4, 8, 8))
    assert np.array_equal(model.decode(z), images)
    strip = model.interpolate(z[0], z[1], steps=4, method="slerp")
    assert strip.shape == (4, 3, 32, 32) and np.allclose(strip[0], images[0], atol=1e-6)
    assert model.interpolate(images[0], images[1], steps=3).shape == (3, 3, 32, 32)  # images are encoded
    sweep = model.traverse(4 * 8 * 8 - 1, steps=3)  # the last element: channel 3, bottom-right cell
    assert sweep.shape == (3, 3, 32, 32) and not np.array_equal(sweep[0], sweep[2])
    assert model.reconstruct(images).shape == images.shape
    assert model.encode_mean(images).shape == (5, 4, 8, 8)
    with pytest.raises(edgevae.EdgeVAEError, match=r"z must have shape \(N, 4, 8, 8\), got \(2, 256\)"):
        model.decode(np.zeros((2, 256), np.float32))


def test_verify_cli_on_an_imported_module(spatial_export):
    r = run_cli("verify", "--module", f"{USER}:spatial", "--image-shape", "3,32,32", str(spatial_export[0]))
    assert r.returncode == 0, r.stderr
    assert "blended tiles vs whole decode" in r.stdout and "checks within bounds" in r.stdout
    # a different model (other weights) is caught
    r = run_cli("verify", "--module", f"{USER}:SpatialVAE", "--image-shape", "3,32,32", "--batch-sizes", "1",
                str(spatial_export[0]))
    assert r.returncode == 1 and "bound(s) broken" in r.stderr


def test_antixk_shaped_model(tmp_path):
    """encode -> [mu, log_var], BatchNorm, Tanh, a Lightning checkpoint ("model." prefix), [-1, 1] by default."""
    net = user_vaes.vanilla()
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}, tmp_path / "l.ckpt")
    r = run_cli("export", "--antixk", f"{USER}:TinyVanilla", "--factory-args", '{"latent_dim": 8}',
                "--weights", str(tmp_path / "l.ckpt"), "--image-shape", "3,16,16", "--out", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr
    model = edgevae.load(tmp_path / "e")
    assert model.spec["source"]["kind"] == "antixk" and model.spec["native_range"] == [-1.0, 1.0]
    assert model.spec["source"]["factory_args"] == {"latent_dim": 8}
    eps = edgevae.standard_normal(1, (4, 8))
    with torch.no_grad():
        want = ((net.decode(torch.from_numpy(eps)) + 1) / 2).clamp(0, 1).numpy()
    assert np.abs(model.sample(4, eps=eps) - want).max() <= TOL


@pytest.mark.parametrize("args,message", [
    (["--module", "nowhere.py:f", "--image-shape", "1,16,16"], "no such file"),
    (["--module", f"{USER}:missing", "--image-shape", "1,16,16"], "has no missing"),
    (["--module", f"{USER}:flat"], "needs --image-shape"),
    (["--module", f"{USER}:flat", "--image-shape", "1,8,8"], "failed on images of shape"),
    (["--module", f"{USER}:flat", "--image-shape", "1,16,16", "--weights", str(USER)], "cannot read it"),
    (["--diffusers", str(ROOT)], "no config.json"),
])
def test_bad_sources_are_one_line_exit_2(tmp_path, args, message):
    r = run_cli("export", *args, "--out", str(tmp_path / "e"))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "e").exists()


def test_no_prior_refuses_sample_but_decodes(tmp_path):
    from edgevae.export import export_vae

    out = export_vae(user_vaes.flat(), (1, 16, 16), tmp_path / "e", prior=None, prior_note="trained as a WAE",
                     log=lambda *_: None)
    model = edgevae.load(out)
    assert model.prior is None and model.spec["prior_note"] == "trained as a WAE"
    with pytest.raises(edgevae.EdgeVAEError, match=r"no prior to sample from \(trained as a WAE\)"):
        model.sample(2, seed=0)
    assert model.decode(np.zeros((2, 6), np.float32)).shape == (2, 1, 16, 16)
