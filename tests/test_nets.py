"""DCGAN shapes, depth, normalization and init at every supported resolution; normalizations of one's own."""

import functools

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from gan_lab.errors import ConfigError
from gan_lab.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from gan_lab.nets.layers import NORMS, Norm, one_hot
from gan_lab.nets.resnet import ResNetDiscriminator, ResNetGenerator
from gan_lab.nets.sagan import SAGANDiscriminator, SAGANGenerator
from gan_lab.utils.config import compose_config


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


# --- normalizations from outside the table ------------------------------------------------------------------
FAMILIES = {
    "dcgan": (DCGANGenerator, DCGANDiscriminator),
    "sagan": (SAGANGenerator, SAGANDiscriminator),
    "resnet": (ResNetGenerator, ResNetDiscriminator),
}
OWN_NORMS = {  # name -> (Norm, the module type its features make)
    "weight_group": (Norm(weight=weight_norm, features=functools.partial(nn.GroupNorm, 2)), nn.GroupNorm),
    "instance": (Norm(features=functools.partial(nn.InstanceNorm2d, affine=True)), nn.InstanceNorm2d),
}


def reweighted(net: nn.Module) -> set[str]:
    return {name for name, m in net.named_modules() if parametrize.is_parametrized(m, "weight")}


def of_type(net: nn.Module, kind: type) -> set[str]:
    return {name for name, m in net.named_modules() if type(m) is kind}


def conv_biases(net: nn.Module) -> list[bool]:
    return [m.bias is not None for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize("own", list(OWN_NORMS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_norm_of_ones_own_goes_where_the_builtin_would(family, own):
    """A Norm not in the table: its weight wraps exactly the layers spectral norm wraps, its features sit exactly
    where batch norm sits (and the same conv biases are dropped), and the nets run."""
    spec, kind = OWN_NORMS[own]
    g_cls, d_cls = FAMILIES[family]
    g = g_cls(z_dim=8, resolution=32, width=4, norm=spec)
    d = d_cls(resolution=32, width=4, norm=spec, num_classes=3)
    builtin_g = g_cls(z_dim=8, resolution=32, width=4, norm="spectral_batch")
    builtin_d = d_cls(resolution=32, width=4, norm="spectral_batch", num_classes=3)
    for net, builtin in [(g, builtin_g), (d, builtin_d)]:
        assert of_type(net, kind) == of_type(builtin, nn.BatchNorm2d) != set()
        assert not of_type(net, nn.BatchNorm2d)
        assert conv_biases(net) == conv_biases(builtin)
        if spec.weight is weight_norm:
            assert reweighted(net) == reweighted(builtin) != set()  # convs, linears and projection embeddings
            for name in reweighted(net):
                assert type(net.get_submodule(name).parametrizations.weight[0]).__name__ == "_WeightNorm"
        else:
            assert reweighted(net) == set()
    images = g(torch.randn(4, 8))
    assert images.shape == (4, 3, 32, 32) and torch.isfinite(images).all()
    assert d(images, torch.tensor([0, 1, 2, 0])).shape == (4,)


def test_a_norm_without_a_conditional_version_cannot_condition_a_generator():
    spec, _ = OWN_NORMS["weight_group"]
    for g_cls, _ in FAMILIES.values():
        with pytest.raises(
            ConfigError,
            match="takes the labels through batch norm: set normalization.generator to "
            "batch or spectral_batch",
        ):
            g_cls(resolution=32, width=4, norm=spec, num_classes=3)


def test_a_norm_of_ones_own_from_a_yaml(tmp_path, monkeypatch):
    """The researcher's YAML names a function of their own package returning a Norm; Hydra builds it when the
    real config's model.discriminator is instantiated, and the net uses it."""
    (tmp_path / "my_norms_pkg.py").write_text(
        "from torch.nn.utils.parametrizations import weight_norm\n"
        "from gan_lab.nets.layers import Norm\n\n"
        "def weight_only() -> Norm:\n"
        "    return Norm(weight=weight_norm)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "conf" / "normalization").mkdir(parents=True)
    (tmp_path / "conf" / "normalization" / "weight.yaml").write_text(
        "generator: batch\ndiscriminator:\n  _target_: my_norms_pkg.weight_only\n"
    )
    for model in FAMILIES:
        overrides = [f"model={model}", "dataset.resolution=32", "model.width=4", "normalization=weight"]
        cfg = compose_config([*overrides, f"hydra.searchpath=[file://{(tmp_path / 'conf').as_posix()}]"])
        d, g = instantiate(cfg.model.discriminator), instantiate(cfg.model.generator)
        convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
        assert all(type(m.parametrizations.weight[0]).__name__ == "_WeightNorm" for m in convs)
        assert not of_type(d, nn.BatchNorm2d)  # weight_only has no features
        assert of_type(g, nn.BatchNorm2d)  # the generator keeps its batch norm


@pytest.mark.parametrize("bad", [3, None, {"weight": "spectral"}, ["spectral", "batch"]])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_norm_that_is_neither_a_name_nor_a_norm_is_a_one_line_error(family, bad):
    for net_cls in FAMILIES[family]:
        with pytest.raises(ConfigError) as caught:
            net_cls(resolution=32, width=4, norm=bad)
        assert str(caught.value) == (
            f"normalization {bad!r} is neither a name (none, batch, spectral, spectral_batch) nor a "
            "gan_lab.nets.layers.Norm; a normalization of your own is a `_target_` that returns a Norm"
        )


def test_one_hot_is_torchs_and_still_refuses_labels_out_of_range():
    """The conditional D's one-hot maps without F.one_hot's host sync: equal to F.one_hot, and labels outside
    0..num_classes-1 still raise (checked on the device; on the CPU at once)."""
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(0))
    ours = one_hot(labels, 10)
    assert ours.dtype == torch.long and torch.equal(ours, torch.nn.functional.one_hot(labels, 10))
    for bad in (torch.tensor([0, 10]), torch.tensor([-1, 3])):
        with pytest.raises(RuntimeError, match=r"class labels must be in 0\.\.9"):
            one_hot(bad, 10)
