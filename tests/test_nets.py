"""DCGAN shapes, depth, normalization and init at every supported resolution."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gan_lab.errors import ConfigError
from gan_lab.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_lab.nets.layers import NORMS


def convs(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("norm", list(NORMS))
@pytest.mark.parametrize("resolution", [32, 64, 128, 256])
def test_shapes_and_ranges(resolution, norm):
    g = DCGANGenerator(z_dim=16, resolution=resolution, width=4, norm=norm)
    d = DCGANDiscriminator(resolution=resolution, width=4, norm=norm)
    images = g(torch.randn(3, 16) * 50)  # large z saturates tanh: still inside [-1, 1]
    assert images.shape == (3, 3, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert d(images).shape == (3,)


@pytest.mark.parametrize(("resolution", "layers"), [(32, 4), (64, 5), (128, 6)])
def test_depth_follows_resolution(resolution, layers):
    # 64x64: the classic 5-layer DCGAN (SN-DCGAN study); 128x128: the 6-layer nets of the LSUN study
    assert len(convs(DCGANGenerator(resolution=resolution, width=8), nn.ConvTranspose2d)) == layers
    assert len(convs(DCGANDiscriminator(resolution=resolution, width=8), nn.Conv2d)) == layers


def test_classic_widths_at_64():
    g = DCGANGenerator(z_dim=100, resolution=64, width=64)
    assert [c.out_channels for c in convs(g, nn.ConvTranspose2d)] == [512, 256, 128, 64, 3]
    d = DCGANDiscriminator(resolution=64, width=64)
    assert [c.out_channels for c in convs(d, nn.Conv2d)] == [64, 128, 256, 512, 1]


def test_batch_norm_placement():
    d = DCGANDiscriminator(resolution=64, width=8, norm="batch")
    assert len(convs(d, nn.BatchNorm2d)) == 3  # not after the first conv, none on the logit
    assert len(convs(DCGANDiscriminator(resolution=64, width=8, norm="spectral"), nn.BatchNorm2d)) == 0
    assert len(convs(DCGANGenerator(resolution=64, width=8, norm="batch"), nn.BatchNorm2d)) == 4


@pytest.mark.parametrize("norm", ["spectral", "spectral_batch"])
def test_spectral_norm_holds(norm):
    d = DCGANDiscriminator(resolution=32, width=8, norm=norm)
    layers = convs(d, nn.Conv2d)
    assert all(parametrize.is_parametrized(layer, "weight") for layer in layers)
    for _ in range(50):  # each training-mode forward runs one power iteration
        d(torch.randn(4, 3, 32, 32))
    for layer in layers:
        weight = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=0.02)
        original = layer.parametrizations.weight.original.detach().reshape(weight.shape[0], -1)
        assert torch.linalg.matrix_norm(original, ord=2).item() != pytest.approx(1.0, abs=0.1)


def test_dcgan_init():
    g = DCGANGenerator(resolution=64, width=64)
    weights = torch.cat([c.weight.detach().flatten() for c in convs(g, nn.ConvTranspose2d)])
    assert weights.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert weights.std().item() == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize("resolution", [16, 48, 100])
def test_unbuildable_resolution_is_a_clear_error(resolution):
    with pytest.raises(ConfigError, match="power of two"):
        DCGANGenerator(resolution=resolution)


def test_unknown_norm_lists_choices():
    with pytest.raises(ConfigError, match="spectral_batch"):
        DCGANDiscriminator(norm="layer")
