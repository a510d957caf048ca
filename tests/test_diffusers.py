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


def test_tiled_decode_of_the_kl_model_equals_the_whole_decode(kl_export):
    """The tiled decoder (export/tiled.py, runtime/_units.py): whole-image GroupNorm statistics, halos that
    cover each unit's receptive field; tiles of every size give the whole decode."""
    model = edgevae.load(kl_export[0])
    spec = model.spec["tiled_decoder"]
    files = [u["file"] for u in spec["units"]]
    assert files == model.manifest["variants"]["fp32"]["decoder_tiled"] and len(files) == 6
    assert spec["units"][0]["whole"] and spec["units"][-1]["channels"][1] == 3
    assert model.spec["parity"]["tiled_decoder"]["max_abs_diff"] <= TOL
    z = edgevae.standard_normal(0, (2, 4, 16, 16)) * 3  # far from the probe's latents: statistics that move
    whole = model.decode(z)
    for tile in (16, 7, 2):
        tiled = model.decode(z, tile=tile)
        # the same float32 operations in another order (moments in float64 over tiles): ~5e-7 measured
        assert np.abs(tiled - whole).max() <= TOL, tile


def test_tiled_encode_equals_the_whole_encode(kl_export):
    """The tiled encoder: conv_in and resnets in tiles (downsampling units cut on their stride), the mid
    block and the reparameterization on the whole latent."""
    model = edgevae.load(kl_export[0])
    assert [u["file"] for u in model.spec["tiled_encoder"]["units"]] == model.manifest["variants"]["fp32"][
        "encoder_tiled"]
    assert model.spec["parity"]["tiled_encoder"]["max_abs_diff"] <= TOL
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    whole = model.encode(x, seed=1)
    for tile in (16, 5, 1):
        tiled = model.encode(x, seed=1, tile=tile)
        for a, b in zip(tiled, whole):  # float32 in another order: ~1e-6 measured
            assert np.abs(a - b).max() <= TOL, tile


def test_per_tile_statistics_are_not_the_whole_decode(kl_export):
    """What the tiled decoder fixes: the blended tiles of decoder.onnx normalise each tile by its own
    statistics, and differ from the whole decode by far more than the tolerance."""
    from edgevae import _tiles

    model = edgevae.load(kl_export[0])
    z = edgevae.standard_normal(0, (1, 4, 16, 16)) * 3
    blended = _tiles.decode(lambda part: model._decoder.run(["x_hat"], {"z": part})[0], z, 2, 3, 8, 4)
    assert np.abs(blended - model.decode(z)).max() > 100 * TOL  # ~0.26 measured


def test_sessions_are_created_when_first_used(kl_export):
    """A process that decodes in tiles never builds encoder.onnx's or decoder.onnx's session: memory for what
    it uses (every file is still checked at load)."""
    model = edgevae.load(kl_export[0])
    assert model._encoder._session is None and model._decoder._session is None
    assert all(unit._session is None for role in ("decoder", "encoder") for unit in model._units[role])
    model.decode(edgevae.standard_normal(0, (1, 4, 16, 16)), tile=8)
    assert model._encoder._session is None and model._decoder._session is None
    assert all(unit._session is not None for unit in model._units["decoder"])
    model.encode(np.full((1, 3, 32, 32), 0.5, np.float32), seed=0, tile=8)
    assert model._encoder._session is None and all(unit._session is not None for unit in model._units["encoder"])
    model.encode_mean(np.full((1, 3, 32, 32), 0.5, np.float32))
    assert model._encoder._session is not None and model._decoder._session is None
    # low_memory: each unit's session lives while the unit runs; the result is the same
    lean = edgevae.load(kl_export[0], low_memory=True)
    z = edgevae.standard_normal(0, (2, 4, 16, 16))
    assert np.array_equal(lean.decode(z, tile=8), model.decode(z, tile=8))
    assert all(unit._session is None for unit in lean._units["decoder"])


@pytest.mark.parametrize("role,change", [
    ("decoder", lambda units: units.pop(2)),  # a unit missing: channels or scales no longer chain
    ("decoder", lambda units: units[1].update(halo=-1)),
    ("encoder", lambda units: units[0].update(whole=True)),
    ("encoder", lambda units: units[0]["norms"][0].update(input="norm_in_7")),
    ("encoder", lambda units: units[-1].update(file="../encoder.onnx")),
])
def test_a_broken_tiled_plan_is_refused(kl_export, role, change):
    import copy

    from edgevae import spec as S

    spec = copy.deepcopy(edgevae.load(kl_export[0]).spec)
    change(spec[f"tiled_{role}"]["units"])
    with pytest.raises(edgevae.EdgeVAEError, match=f"spec tiled_{role} must be"):
        S.check(spec, "decoder.onnx")


def test_a_tileable_model_beyond_max_run_bytes_runs_in_tiles_only(kl_export):
    model = edgevae.load(kl_export[0], max_run_bytes=1 << 20)  # 1 MiB: this model's 16x16 latent needs more
    cells = model._decoder.max_cells
    assert cells is not None and 1 <= cells < 16
    z = np.random.default_rng(0).standard_normal((1, 4, 16, 16)).astype(np.float32)
    with pytest.raises(edgevae.EdgeVAEError, match=f"decode in tiles of at most {cells} cells"):
        model.decode(z)
    tiled = model.decode(z, tile=cells, overlap=cells // 4)
    assert np.array_equal(tiled, edgevae.load(kl_export[0]).decode(z, tile=cells, overlap=cells // 4))


def _rehashed_copy(src, tmp_path, change):
    """A copy of the export with `change(directory)` applied and manifest.json re-hashed to match."""
    import hashlib
    import json
    import shutil

    d = shutil.copytree(src, tmp_path / "export")
    change(d)
    manifest = json.loads((d / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        entry["sha256"] = hashlib.sha256((d / name).read_bytes()).hexdigest()
        entry["bytes"] = (d / name).stat().st_size
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_tiled_units_are_checked_like_the_graphs(kl_export, tmp_path):
    # a unit changed without re-hashing: refused at load, not at the first tiled call
    import shutil

    changed = shutil.copytree(kl_export[0], tmp_path / "changed")
    unit = changed / "decoder.tiled.03.onnx"
    unit.write_bytes(unit.read_bytes()[:-1] + b"\x00")
    with pytest.raises(edgevae.EdgeVAEError, match="decoder.tiled.03.onnx: sha256 .* does not match"):
        edgevae.load(changed)
    # two units' files swapped and the manifest re-hashed: each unit's spec names its place in the plan
    def swap(d):
        a, b = d / "decoder.tiled.02.onnx", d / "decoder.tiled.03.onnx"
        data = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(data)

    model = edgevae.load(_rehashed_copy(kl_export[0], tmp_path, swap))
    with pytest.raises(edgevae.EdgeVAEError, match="expected the spec of unit"):
        model.decode(edgevae.standard_normal(0, (1, 4, 16, 16)), tile=8)
    # a tile beyond load's bound on one run is refused with the tile that fits
    small = edgevae.load(kl_export[0], max_run_bytes=1 << 20)
    with pytest.raises(edgevae.EdgeVAEError, match=f"use tile={small._decoder.max_cells} or less"):
        small.decode(edgevae.standard_normal(0, (1, 4, 16, 16)), tile=16)
