"""R3GAN nets: shapes, identity blocks and fix-up init, grouped convs, no norms, conditioning, errors, preset."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from gan_lab.build import build_module
from gan_lab.errors import ConfigError, user_error
from gan_lab.nets.layers import Norm
from gan_lab.nets.r3gan import R3GANDiscriminator, R3GANGenerator, Resample, ResidualBlock
from gan_lab.train import train
from gan_lab.utils.images import to_uint8

Z = 16
SMALL = {"width": 32, "channels_per_group": 8}  # hidden width 64 in 8 groups of 8
LEAKY_GAIN = math.sqrt(2 / (1 + 0.2**2))  # He's gain for LeakyReLU(0.2)


def nets(resolution: int = 32, num_classes: int = 0, **kwargs) -> tuple[R3GANGenerator, R3GANDiscriminator]:
    g = R3GANGenerator(z_dim=Z, resolution=resolution, num_classes=num_classes, **{**SMALL, **kwargs})
    d = R3GANDiscriminator(resolution=resolution, num_classes=num_classes, **{**SMALL, **kwargs})
    return g, d


def blocks(net: nn.Module) -> list[ResidualBlock]:
    return [m for m in net.modules() if isinstance(m, ResidualBlock)]


# --- shapes ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [0, 10])
@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes(resolution, num_classes):
    torch.manual_seed(0)
    g, d = nets(resolution, num_classes)
    labels = torch.tensor([0, 9]) if num_classes else None
    images = g(torch.randn(2, Z), labels)
    assert images.shape == (2, 3, resolution, resolution)
    assert d(images, labels).shape == (2,)
    stages = int(math.log2(resolution)) - 1  # 4x4 up to the image
    assert len(blocks(g)) == len(blocks(d)) == 2 * stages
    assert sum(isinstance(m, Resample) for m in g.modules()) == stages - 1


def test_stage_map_sizes():
    g, d = nets(32)
    sizes = {"g": [], "d": []}
    for key, net in (("g", g), ("d", d)):
        for block in blocks(net):
            block.register_forward_hook(lambda _m, _a, out, key=key: sizes[key].append(out.shape[-1]))
    d(g(torch.randn(2, Z)))
    assert sizes["g"] == [4, 4, 8, 8, 16, 16, 32, 32]
    assert sizes["d"] == [32, 32, 16, 16, 8, 8, 4, 4]


def test_output_is_linear_and_bytes_clamp_it():
    torch.manual_seed(0)
    g, _ = nets(32)
    images = g(torch.randn(4, Z) * 50)
    assert images.abs().max() > 1  # no tanh: R3GAN's output layer is linear
    pixels = to_uint8(images)
    assert pixels.min() == 0 and pixels.max() == 255


def test_stage_widths_set_each_stage_from_4x4_up():
    g, d = nets(32, stage_widths=[64, 32, 32, 16])
    assert g.basis.shape == (64, 4, 4) and g.aggregate.in_channels == 16
    assert d.extract.out_channels == 16 and d.basis.out_channels == 64  # D lists them the same way
    assert d(g(torch.randn(2, Z))).shape == (2,)


def test_resampling_is_bilinear():
    torch.manual_seed(0)
    up, down, x = Resample(8, 4, up=True), Resample(8, 4, up=False), torch.randn(2, 8, 8, 8)
    bilinear = {"mode": "bilinear", "align_corners": False}
    assert torch.allclose(up(x), up.conv(F.interpolate(x, scale_factor=2.0, **bilinear)), atol=1e-6)
    assert torch.allclose(down(x), F.interpolate(down.conv(x), scale_factor=0.5, **bilinear), atol=1e-6)
    assert up(x).shape == (2, 4, 16, 16) and down(x).shape == (2, 4, 4, 4)


def test_runs_under_bfloat16_autocast_on_the_cpu():
    g, d = nets(32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = d(g(torch.randn(2, Z)))
    assert logits.shape == (2,) and torch.isfinite(logits).all()


# --- init ----------------------------------------------------------------------------------------------------
def test_every_block_is_the_identity_at_init():
    torch.manual_seed(0)
    g, d = nets(32)
    for block in blocks(g) + blocks(d):
        x = torch.randn(2, 32, 8, 8)
        assert torch.equal(block(x), x)
        assert not torch.equal(block.expand(x), torch.zeros_like(block.expand(x)))  # only the last conv is 0


@pytest.mark.parametrize(("resolution", "per_stage", "num_blocks"), [(32, 2, 8), (64, 3, 15)])
def test_fixup_scales_the_first_two_convs_by_l_to_the_minus_quarter(resolution, per_stage, num_blocks):
    torch.manual_seed(0)
    for net in nets(resolution, blocks_per_stage=per_stage):
        assert len(blocks(net)) == num_blocks
        expand = torch.cat([b.expand.weight.flatten() for b in blocks(net)])
        grouped = torch.cat([b.conv.weight.flatten() for b in blocks(net)])
        # He std = gain / sqrt(fan_in): fan_in 32 for the 1x1 conv from the stream, 8 * 3 * 3 for the grouped one
        assert expand.std().item() == pytest.approx(LEAKY_GAIN / math.sqrt(32) * num_blocks**-0.25, rel=0.03)
        assert grouped.std().item() == pytest.approx(LEAKY_GAIN / math.sqrt(72) * num_blocks**-0.25, rel=0.03)
        for block in blocks(net):
            assert not block.project.weight.any() and not block.project.bias.any()


def test_fixup_value_by_hand():
    expand = torch.cat([b.expand.weight.flatten() for b in blocks(nets(32)[0])])
    # sqrt(2 / 1.04) / sqrt(32) * 8^(-1/4) = 1.38675 * 0.176777 * 0.594604 = 0.14577
    assert expand.std().item() == pytest.approx(0.1458, rel=0.03)


def test_grouped_conv_has_expansion_width_over_channels_per_group_groups():
    for block in blocks(nets(32)[0]) + blocks(nets(32, expansion=4)[1]):
        hidden = block.expand.out_channels
        assert block.conv.groups == hidden // 8 and block.conv.kernel_size == (3, 3)
        assert block.conv.weight.shape == (hidden, 8, 3, 3)
    paper = ResidualBlock(768, expansion=2, channels_per_group=16, num_blocks=1)
    assert paper.conv.groups == 96  # R3GAN's CIFAR-10 cardinality


def test_no_normalization_anywhere():
    norms = (
        nn.modules.batchnorm._BatchNorm,
        nn.GroupNorm,
        nn.LayerNorm,
        nn.modules.instancenorm._InstanceNorm,
    )
    for net in (*nets(32), *nets(32, num_classes=3)):
        assert not any(isinstance(m, norms) for m in net.modules())
        assert not any(parametrize.is_parametrized(m) for m in net.modules())
        assert not any(m._forward_pre_hooks for m in net.modules())  # the old-style spectral_norm hook


# --- conditioning ----------------------------------------------------------------------------------------------
def test_conditional_nets_use_the_labels():
    torch.manual_seed(0)
    g, d = nets(32, num_classes=10)
    z, zeros, nines = torch.randn(4, Z), torch.zeros(4, dtype=torch.long), torch.full((4,), 9)
    a, b = g(z, zeros), g(z, nines)
    assert not torch.allclose(a, b)
    assert not torch.allclose(d(a, zeros), d(a, nines))
    with pytest.raises(ConfigError, match="needs class labels"):
        g(z)
    with pytest.raises(ConfigError, match="needs class labels"):
        d(a)


# --- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resolution", [4, 24, 48, 100])
def test_unsupported_resolution_is_a_one_line_config_error(resolution):
    for cls in (R3GANGenerator, R3GANDiscriminator):
        with pytest.raises(ConfigError) as err:
            cls(resolution=resolution, **SMALL)
        assert str(err.value) == (
            f"dataset.resolution={resolution} cannot be built: model=r3gan supports powers of two >= 8 "
            "(8, 16, 32, 64, 128, 256, ...)"
        )


@pytest.mark.parametrize("norm", ["spectral", "batch", "spectral_batch"])
def test_a_normalization_is_a_one_line_config_error(norm):
    with pytest.raises(ConfigError) as err:
        R3GANDiscriminator(norm=norm, **SMALL)
    assert str(err.value) == (
        f"model=r3gan has no normalization layers (R3GAN's design); drop normalization={norm} "
        "(the preset sets none)"
    )
    with pytest.raises(ConfigError, match=rf"drop normalization.generator={norm} \(the preset sets none\)$"):
        R3GANGenerator(norm=norm, **SMALL)
    with pytest.raises(ConfigError, match="no normalization layers"):
        R3GANGenerator(norm=Norm(weight=spectral_norm), **SMALL)


def test_bad_widths_are_config_errors():
    with pytest.raises(
        ConfigError, match=r"40 channels cannot be split into groups of model.channels_per_group=16"
    ):
        R3GANGenerator(width=20)
    with pytest.raises(ConfigError, match="stage_widths has 3 entries but this resolution has 4 stages"):
        R3GANDiscriminator(stage_widths=[32, 32, 32], **SMALL)
    with pytest.raises(ConfigError, match="model.z_dim=0"):
        R3GANGenerator(z_dim=0, **SMALL)


# --- gradients -------------------------------------------------------------------------------------------------
def _behind_zero(net: nn.Module) -> set[int]:
    """The parameters of each branch's first two convs: only the zero last conv leads from them to the output."""
    return {id(p) for b in blocks(net) for layer in (b.expand, b.conv) for p in layer.parameters()}


@pytest.mark.parametrize("num_classes", [0, 3])
def test_gradients_flow(num_classes):
    """With each branch's last conv zero, the convs before it get exactly zero gradient at init; everything else
    (the last convs included: their input is not zero) a finite non-zero one. One step later all of them do."""
    torch.manual_seed(0)
    g, d = nets(32, num_classes)
    labels = torch.tensor([0, 1, 2, 0]) if num_classes else None

    def backward() -> None:
        g.zero_grad(), d.zero_grad()
        d(g(torch.randn(4, Z), labels), labels).mean().backward()

    backward()
    for net in (g, d):
        zero = _behind_zero(net)
        assert len(zero) == 4 * len(blocks(net))  # weight and bias of two convs per block
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert bool(p.grad.any()) == (id(p) not in zero), name
    with torch.no_grad():
        for p in [*g.parameters(), *d.parameters()]:
            p -= 0.1 * p.grad
    backward()
    for net in (g, d):
        assert all(p.grad.any() for p in net.parameters())


# --- preset ----------------------------------------------------------------------------------------------------
R3GAN = ["model=r3gan", "model.width=32", "model.channels_per_group=8"]


def test_preset_composes_builds_and_trains(tiny_config):
    cfg = tiny_config(*R3GAN, "steps=2")
    assert (cfg.model.generator.norm, cfg.model.discriminator.norm) == ("none", "none")
    module = build_module(cfg)
    assert type(module.generator) is R3GANGenerator and type(module.discriminator) is R3GANDiscriminator
    assert len(blocks(module.generator)) == 8 and module.generator.basis.shape == (32, 4, 4)
    assert train(cfg).g_steps == 2


def test_conditional_preset_trains(tiny_config):
    module = train(tiny_config(*R3GAN, "model.num_classes=null", "dataset.num_classes=3", "steps=2"))
    assert module.g_steps == 2 and module.generator.num_classes == 3
    assert module.discriminator.head.embed is not None  # projection discriminator


def test_preset_refuses_a_normalization_in_one_line(tiny_config):
    with pytest.raises(Exception) as err:
        build_module(tiny_config(*R3GAN, "normalization=spectral"))
    assert str(user_error(err.value)) == (
        "model=r3gan has no normalization layers (R3GAN's design); drop normalization=spectral "
        "(the preset sets none)"
    )
