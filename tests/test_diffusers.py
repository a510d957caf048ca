"""diffusers' AutoencoderKL, the VAE of latent-diffusion pipelines: a small one built from a config (two down
blocks, 4 latent channels, mid-block attention on, 32x32 images, random weights), saved with save_pretrained,
exported and verified through the CLI with no network, and run in the runtime against diffusers itself.

Needs the diffusers extra (pip install 'edgevae[diffusers]'); skipped without it, failing under CI=true.
"""
import numpy as np
import pytest
import torch
from conftest import run_cli, skip_or_fail

import edgevae

try:
    import diffusers
except ModuleNotFoundError:
    diffusers = None

# GroupNorm, attention and ~20 conv layers in float32: ~3e-6 measured for this model; the family's bound is 5e-4
# (export/adapters.py TOLERANCES: Stable Diffusion 1.x's VAE configuration measures 9.3e-5).
TOL = 5e-4


@pytest.fixture(scope="module")
def kl_dir(tmp_path_factory):
    if diffusers is None:
        skip_or_fail("needs diffusers: pip install 'edgevae[diffusers]'")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), layers_per_block=1,
        latent_channels=4, norm_num_groups=32, sample_size=32, mid_block_add_attention=True)
    folder = tmp_path_factory.mktemp("kl") / "vae"
    vae.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def kl_export(kl_dir):
    out = kl_dir.parent / "export"
    r = run_cli("export", "--diffusers", str(kl_dir), "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def test_export_prints_what_it_checked(kl_export):
    _, stdout = kl_export
    assert stdout.startswith("exporting AutoencoderKL (diffusers): image 3x32x32, latent 4x16x16, native range "
                             "[-1, 1] folded to [0, 1], no prior, tileable (2 px per latent cell)")
    assert "verified: onnx.checker ok, no random op" in stdout and "batch 1, 7, 64 at 32x32" in stdout


def test_spec_of_an_imported_latent_diffusion_vae(kl_export, kl_dir):
    model = edgevae.load(kl_export[0])
    spec = model.spec
    assert model.latent_shape == (4, 16, 16) and model.image_shape == (3, 32, 32) and model.prior is None
    assert "latent-diffusion VAE" in spec["prior_note"]
    assert spec["latent_scaling"] == {"scaling_factor": 0.18215, "shift_factor": 0.0}
    assert spec["source"]["kind"] == "diffusers" and spec["source"]["class"] == "AutoencoderKL"
    assert len(spec["source"]["config_sha256"]) == 64 and str(kl_dir) not in str(spec)
    assert spec["native_range"] == [-1.0, 1.0] and spec["tileable"] and spec["latent_scale"] == 2
    assert {"InstanceNormalization", "MatMul", "Softmax", "Resize"} <= set(model.specs["decoder"]["ops"])
    assert max(spec["parity"]["max_abs_diff"].values()) <= TOL
    with pytest.raises(edgevae.EdgeVAEError, match="no prior to sample from"):
        model.sample(1, seed=0)


def test_runtime_equals_diffusers_forward_with_the_same_eps(kl_export, kl_dir):
    """encode -> decode through the runtime against diffusers' own code path, posterior.mean + posterior.std * eps."""
    model = edgevae.load(kl_export[0])
    vae = diffusers.AutoencoderKL.from_pretrained(kl_dir, low_cpu_mem_usage=False).eval()
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    eps = edgevae.standard_normal(9, (3, 4, 16, 16))
    with torch.no_grad():
        posterior = vae.encode(torch.from_numpy(x) * 2 - 1).latent_dist
        z = posterior.mean + posterior.std * torch.from_numpy(eps)
        want = ((vae.decode(z).sample + 1) / 2).clamp(0, 1).numpy()
    enc = model.encode(x, eps=eps)
    assert np.abs(enc.mu - posterior.mean.numpy()).max() <= TOL
    assert np.abs(enc.logvar - posterior.logvar.numpy()).max() <= TOL
    assert np.abs(enc.z - z.numpy()).max() <= TOL
    assert np.abs(model.decode(enc.z) - want).max() <= TOL
    # the same through the pipeline's scaling: a diffusion model's latent s * (z - shift) decodes back
    s = model.spec["latent_scaling"]["scaling_factor"]
    assert np.abs(model.decode((enc.z * s) / s) - want).max() <= TOL


def test_verify_cli(kl_export, kl_dir):
    r = run_cli("verify", "--diffusers", str(kl_dir), str(kl_export[0]), "--batch-sizes", "1,7", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "onnx.reference vs onnxruntime" in r.stdout and "all 7 checks within bounds" in r.stdout


def test_tiled_decode_of_the_kl_model(kl_export):
    model = edgevae.load(kl_export[0])
    z = edgevae.standard_normal(0, (2, 4, 16, 16))
    whole = model.decode(z)
    assert np.array_equal(model.decode(z, tile=16), whole)  # one tile covering the latent is the whole decode
    tiled = model.decode(z, tile=12, overlap=8)
    assert tiled.shape == whole.shape and 0 <= tiled.min() and tiled.max() <= 1
