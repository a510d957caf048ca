"""The residual family (--arch resnet): shapes for 1, 3 and 4 channels and non-square sizes, flat and spatial
latents, conditioning, no transposed convolution anywhere, and the auto choices from the data."""
import dataclasses

import pytest
import torch
from torch import nn

from edgevae.train import auto
from edgevae.train.config import TrainConfig
from edgevae.train.model import build
from edgevae.train.resnet import ResBlock, auto_widths


def _model(shape, **overrides):
    config = TrainConfig(**{"arch": "resnet", "likelihood": "logistic", "latent_dim": 6, "widths": (8, 16, 16),
                            **overrides})
    torch.manual_seed(0)
    return build(config, shape, num_classes=3).eval()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (4, 56, 68), (3, 21, 27), (4, 17, 40)])
@pytest.mark.parametrize("latent_channels", [0, 5])
@pytest.mark.parametrize("conditional", [False, True])
def test_shapes_for_every_channel_count_and_non_square_sizes(shape, latent_channels, conditional):
    m = _model(shape, latent_channels=latent_channels, conditional=conditional)
    grid = tuple(-(-side // 4) for side in shape[1:])  # two halvings, padded up: ceil(side / 4)
    assert m.latent_shape == ((latent_channels, *grid) if latent_channels else (6,))
    x, y = torch.rand(2, *shape), (torch.tensor([0, 2]) if conditional else None)
    mu, logvar = m.encoder(x, y)
    assert mu.shape == logvar.shape == (2, *m.latent_shape)
    out, _, _ = m(x, torch.randn(2, *m.latent_shape), y)
    assert out.shape == (2, 2 * shape[0], *shape[1:])  # the logistic's location and log scale per channel
    x_hat = m.decode(mu, y)
    assert x_hat.shape == (2, *shape) and x_hat.min() >= 0 and x_hat.max() <= 1


def test_widths_and_blocks_follow_config_and_no_transposed_convolution():
    m = _model((3, 32, 32), widths=(4, 8, 12), blocks=2)
    assert not any(isinstance(mod, nn.ConvTranspose2d) for mod in m.modules())
    blocks = [mod for mod in m.encoder.modules() if isinstance(mod, ResBlock)]
    # full resolution holds the stem conv only; each coarser level `blocks` blocks at its width
    assert [(b.conv1.in_channels, b.conv1.out_channels) for b in blocks] == [(4, 8), (8, 8), (8, 12), (12, 12)]
    upsamples = [mod for mod in m.decoder.modules() if isinstance(mod, nn.Upsample)]
    assert len(upsamples) == 2 and all(u.mode == "nearest" and u.scale_factor == 2 for u in upsamples)
    assert not any(isinstance(mod, nn.GroupNorm) for mod in m.modules())  # --norm none, the default
    grouped = _model((3, 32, 32), widths=(4, 8, 12), blocks=2, norm="group")
    norms = [mod for mod in grouped.modules() if isinstance(mod, nn.GroupNorm)]
    assert norms and all(n.num_channels % n.num_groups == 0 for n in norms)
    # an Identity stands where a GroupNorm would: both kinds name their convolutions alike
    def layers(model):
        return [name for name, mod in model.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert layers(grouped) and layers(grouped) == layers(m)


def test_a_residual_block_starts_as_the_identity():
    block = ResBlock(8, 8)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(block(x), x)  # the last conv starts at zero: deep stacks train from an identity map


def test_conditioning_changes_the_decoded_image_for_flat_and_spatial_latents():
    for latent_channels in (0, 2):
        m = _model((3, 16, 16), latent_channels=latent_channels, conditional=True)
        for p in m.decoder.parameters():  # move off the zero-initialised start, so labels can show
            p.data += 0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1))
        z = torch.randn(1, *m.latent_shape).expand(2, *m.latent_shape)
        a, b = m.decode(z, torch.tensor([0, 1])).unbind(0)
        assert not torch.allclose(a, b)


def test_auto_widths_by_image_size():
    assert auto_widths((1, 28, 28)) == (16, 32, 64)  # 7 x 7 at the coarsest
    assert auto_widths((3, 64, 64)) == (16, 32, 64, 128)  # 8 x 8
    assert auto_widths((4, 56, 68)) == (16, 32, 64, 128)  # 7 x 9 after padding 68 to 72
    assert auto_widths((3, 128, 128)) == (16, 32, 64, 128, 256)


def test_too_many_levels_for_the_image_is_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="too small.*use fewer widths"):
        _model((3, 8, 8), widths=(4, 8, 8, 8, 8))


def test_auto_picks_bernoulli_mlp_for_binary_like_grey_and_logistic_resnet_for_colour_and_grey_levels():
    g = torch.Generator().manual_seed(0)
    binary = (torch.rand(64, 1, 8, 8, generator=g) < 0.3).to(torch.uint8) * 255
    colour = torch.randint(0, 256, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
    grey_levels = torch.randint(60, 200, (64, 1, 8, 8), generator=g, dtype=torch.uint8)
    said = []
    picked = auto.resolve(TrainConfig(), binary, log=said.append)
    assert (picked.arch, picked.likelihood, picked.latent_dim, picked.kl_warmup) == ("mlp", "bernoulli", 16, 0)
    assert (picked.batch_size, picked.lr, picked.schedule, picked.grad_clip) == (128, 1e-3, "constant", 0.0)
    assert "--grad-clip 0 " in said[0] and picked.augment == "none"  # a mirrored digit is not a digit
    for images in (colour, grey_levels, colour[:, :1].expand(-1, 3, -1, -1)):  # grey stored as RGB counts as grey
        picked = auto.resolve(TrainConfig(), images, log=said.append)
        # a spatial latent of at most 1,024 numbers, 2 to 4 channels (8 x 8 images: 4 x 2 x 2 after two halvings)
        assert (picked.arch, picked.likelihood, picked.latent_channels, picked.widths) == (
            "resnet", "logistic", 4, (16, 32, 64))
        assert picked.kl_warmup == 5
        assert (picked.batch_size, picked.lr, picked.schedule, picked.grad_clip) == (32, 2e-3, "cosine", 1.0)
        assert picked.augment == "flip" and picked.prior_fit == "mixture" and picked.latent_dim == 0
    # a latent the user gives is kept and fitted: --latent-dim a dense flat one, --latent-channels a spatial one
    dense = auto.resolve(TrainConfig(latent_dim=128), colour, log=said.append)
    assert (dense.latent_dim, dense.latent_channels, dense.prior_fit) == (128, 0, "mixture")
    conditional = auto.resolve(TrainConfig(conditional=True), colour, log=said.append)
    # a Gaussian per class (the classes are the clusters), over the small latent its tables allow
    assert (conditional.prior_fit, conditional.latent_channels, conditional.widths) == ("gaussian", 2, ())
    spatial = auto.resolve(TrainConfig(latent_channels=4), colour, log=said.append)
    assert (spatial.latent_channels, spatial.widths, spatial.prior_fit) == (4, (), "mixture")
    too_large = auto.resolve(TrainConfig(latent_channels=64), colour, log=said.append)  # 64 x 8 x 8 > 2,048
    assert too_large.prior_fit == "none"
    assert auto.resolve(TrainConfig(latent_channels=4, conditional=True), colour, log=said.append).prior_fit == "none"
    assert auto.resolve(TrainConfig(arch="conv"), colour, log=said.append).latent_dim == 128  # no grid to put it on
    del said[-6:]
    assert len(said) == 4 and said[0].startswith("auto: binary-like grey images") and "--arch mlp" in said[0]
    assert "3-channel colour images" in said[1] and "--likelihood logistic" in said[1]
    # what the user gives is kept; a resolved config is left alone and nothing is printed
    kept = auto.resolve(TrainConfig(arch="conv", latent_dim=8, kl_warmup=0, lr=5e-4, grad_clip=0), colour,
                        log=said.append)
    assert (kept.arch, kept.likelihood, kept.latent_dim, kept.lr, kept.batch_size, kept.grad_clip) == (
        "conv", "logistic", 8, 5e-4, 32, 0.0)
    assert auto.resolve(kept, binary, log=said.append) is kept and len(said) == 5
    with pytest.raises(ValueError, match="resolve them"):
        build(TrainConfig(), (3, 8, 8))
    with pytest.raises(ValueError, match=r"--grad-clip must be >= 0 \(or -1: by the data\), got -2"):
        TrainConfig(grad_clip=-2)


def test_exported_decoder_has_no_transposed_convolution_and_keeps_the_layout():
    """The ONNX decoder of the family: Conv and Resize (nearest) only, any H x W, flat and spatial latents."""
    from edgevae.export.adapters import from_edgevae
    from edgevae.export.graphs import export_graphs, op_types

    for latent_channels in (0, 3):
        source = from_edgevae(_model((4, 20, 28), latent_channels=latent_channels, widths=(4, 8, 8)))
        encoder, decoder = export_graphs(source)
        ops = op_types(decoder)
        assert "ConvTranspose" not in ops and {"Conv", "Resize"} <= ops
        resize = [n for n in decoder.graph.node if n.op_type == "Resize"]
        assert all(a.s == b"nearest" for n in resize for a in n.attribute if a.name == "mode")
        out = decoder.graph.output[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in out[1:]] == [4, 20, 28]


def test_a_checkpoint_saved_before_norm_existed_builds_its_groupnorm_model():
    saved = TrainConfig(arch="resnet", likelihood="logistic", latent_dim=6, widths=(8, 16)).to_dict()
    del saved["norm"]  # what a checkpoint written before --norm holds
    config = TrainConfig.from_dict(saved)
    assert config.norm == "group"
    assert any(isinstance(mod, nn.GroupNorm) for mod in build(config, (3, 16, 16)).modules())
    with pytest.raises(ValueError, match="--norm must be one of none, group"):
        _model((3, 16, 16), norm="batch")


def test_training_flushes_subnormal_floats_and_gives_them_back_after(tmp_path):
    import sys

    from edgevae.train import loop

    seen = []
    loop.flush_denormals()
    # 1e-39 is a float32 subnormal: flushed, it reads as zero (and costs no slow path in the backward pass)
    assert (torch.tensor([1e-39]) * 1.0).item() == 0.0
    loop.flush_denormals(False)
    assert (torch.tensor([1e-39]) * 1.0).item() > 0
    config = TrainConfig(data="shapes", num_train=64, num_test=16, image_size=16, arch="resnet", widths=(4, 8),
                         likelihood="logistic", latent_dim=2, epochs=1, batch_size=32, out=str(tmp_path / "run"))
    loop.train(config, on_step=lambda *_: seen.append((torch.tensor([1e-39]) * 1.0).item()))
    assert seen and set(seen) == {0.0}  # flushed while training
    assert (torch.tensor([1e-39]) * 1.0).item() > 0 and sys.float_info.min / 2 > 0  # IEEE again after it


def test_a_network_without_normalization_warms_its_learning_rate_up_over_the_first_epoch():
    from edgevae.train.loop import LR_WARMUP_STEPS, warmed

    plain = TrainConfig(arch="resnet", likelihood="logistic", latent_dim=6)
    grouped, mlp = dataclasses.replace(plain, norm="group"), dataclasses.replace(plain, arch="mlp")
    # one epoch of 49 steps: lr/49, 2 lr/49, ... lr from step 48 on
    assert [warmed(1.0, plain, s, 49) for s in (0, 1, 48, 500)] == pytest.approx([1 / 49, 2 / 49, 1.0, 1.0])
    assert warmed(1.0, plain, 99, 10_000) == pytest.approx(100 / LR_WARMUP_STEPS)  # long epochs: at most 200 steps
    assert warmed(1.0, grouped, 0, 49) == 1.0 and warmed(1.0, mlp, 0, 49) == 1.0  # normalized, or not this family


def test_bfloat16_steps_keep_the_layers_the_loss_reads_in_float32_and_leave_evaluation_exact():
    from edgevae.train.loop import bfloat16_steps

    model = _model((4, 20, 24), latent_channels=3)
    x, eps = torch.rand(5, 4, 20, 24), torch.randn(5, *model.latent_shape)
    with torch.no_grad():
        exact = model(x, eps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = model(x, eps)
        again = model(x, eps)
    # out (the likelihood's locations and scales), mu and logvar come out float32 under the autocast: bfloat16's
    # spacing near 1 is 1/256, an 8-bit level, which the discretized likelihood must resolve
    assert all(t.dtype == torch.float32 for t in rounded)
    # the body's convolutions did run in bfloat16: close to the exact values, not equal (relative 2^-8 per rounding)
    assert not torch.equal(rounded[0], exact[0]) and torch.allclose(rounded[0], exact[0], atol=0.05)
    assert all(torch.equal(a, b) for a, b in zip(exact, again))  # outside the autocast: float32 again, bit for bit
    cpu = torch.device("cpu")
    assert not bfloat16_steps(TrainConfig(arch="mlp"), cpu)  # auto: the residual family only
    assert not bfloat16_steps(TrainConfig(arch="resnet", precision="float32"), cpu)
    assert bfloat16_steps(TrainConfig(arch="resnet", precision="bfloat16"), cpu)
    with pytest.raises(ValueError, match=r"^--precision bfloat16 is for --arch resnet .*this run's --arch is mlp$"):
        bfloat16_steps(TrainConfig(arch="mlp", precision="bfloat16"), cpu)  # its output layer would round
    assert bfloat16_steps(TrainConfig(arch="resnet"), cpu) == torch.ops.mkldnn._is_mkldnn_bf16_supported()


def test_a_bfloat16_run_trains_and_exports_float32_graphs_that_match_its_checkpoint(tmp_path):
    from edgevae.export.build import export
    from edgevae.export.verify import format_table, verify_export
    from edgevae.train import checkpoint, loop

    config = TrainConfig(data="shapes", num_train=64, num_test=16, image_size=16, arch="resnet", widths=(4, 8),
                         likelihood="logistic", latent_channels=2, prior_fit="none", epochs=2, batch_size=16,
                         precision="bfloat16", out=str(tmp_path / "run"))
    loop.train(config)
    model, ckpt, _ = checkpoint.load_run(tmp_path / "run")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights never left float32
    assert all(torch.isfinite(p).all() for p in model.parameters())
    export(tmp_path / "run", tmp_path / "export", log=lambda *_: None)  # export's parity gates: float32 graphs
    rows = verify_export(tmp_path / "run", tmp_path / "export")
    assert rows and all(r.ok for r in rows), format_table([r for r in rows if not r.ok])
