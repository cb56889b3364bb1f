"""SelfAttention, the SAGAN and ResNet SNGAN nets (shapes, attention placement, norms, conditioning) and presets."""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from gan_lab.errors import ConfigError
from gan_lab.nets.layers import SelfAttention
from gan_lab.nets.resnet import ResNetDiscriminator, ResNetGenerator
from gan_lab.nets.sagan import SAGANDiscriminator, SAGANGenerator
from gan_lab.train import train
from gan_lab.utils.config import compose_config

Z = 16


def weighted(module: nn.Module) -> list[nn.Module]:
    return [
        m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding))
    ]


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def attention_sizes(net: nn.Module, *inputs: torch.Tensor) -> list[int]:
    """The spatial size of the map each SelfAttention block sees in one forward (module order)."""
    seen: list[int] = []
    blocks = [m for m in net.modules() if isinstance(m, SelfAttention)]
    hooks = [b.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[-1])) for b in blocks]
    net(*inputs)
    for hook in hooks:
        hook.remove()
    assert len(seen) == len(blocks)
    return seen


# --- SelfAttention ------------------------------------------------------------------------------------------
def test_self_attention_is_identity_at_init_and_preserves_shape():
    torch.manual_seed(0)
    block = SelfAttention(16)
    x = torch.randn(2, 16, 8, 6)
    assert block.gamma.item() == 0.0
    assert torch.equal(block(x), x)


def test_attention_weights_sum_to_one_over_positions():
    torch.manual_seed(0)
    block = SelfAttention(16)
    attn = block.attention(torch.randn(2, 16, 8, 6) * 5)
    assert attn.shape == (2, 48, 48)
    assert (attn >= 0).all()
    assert torch.allclose(attn.sum(dim=-1), torch.ones(2, 48), atol=1e-5)
    assert not torch.allclose(attn, torch.full_like(attn, 1 / 48), atol=1e-3)  # not trivially uniform


def test_self_attention_acts_once_gamma_moves():
    torch.manual_seed(0)
    block = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        block.gamma.fill_(0.5)
    out = block(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    # attention mixes positions: changing one input pixel changes the output elsewhere
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0
    assert not torch.allclose(block(x2)[:, :, 7, 7], out[:, :, 7, 7])


@pytest.mark.parametrize("channels", [1, 4, 64])
def test_self_attention_weight_norm_and_tiny_widths(channels):
    sn, plain = SelfAttention(channels, weight=spectral_norm), SelfAttention(channels)
    assert len(weighted(sn)) == 4
    assert all(parametrize.is_parametrized(m, "weight") for m in weighted(sn))
    assert not any(parametrize.is_parametrized(m, "weight") for m in weighted(plain))
    assert sn(torch.randn(2, channels, 4, 4)).shape == (2, channels, 4, 4)


# --- shapes at every resolution -----------------------------------------------------------------------------
NETS = {
    "sagan": (SAGANGenerator, SAGANDiscriminator, [32, 64, 128]),
    "resnet": (ResNetGenerator, ResNetDiscriminator, [32, 48, 64, 128]),
}
CASES = [(name, r) for name, (_, _, rs) in NETS.items() for r in rs]


@pytest.mark.parametrize(("name", "resolution"), CASES)
def test_shapes_and_range(name, resolution):
    g_cls, d_cls, _ = NETS[name]
    g = g_cls(z_dim=Z, resolution=resolution, width=4, norm="batch")
    d = d_cls(resolution=resolution, width=4, norm="spectral")
    images = g(torch.randn(3, Z) * 50)  # large z saturates tanh: still inside [-1, 1]
    assert images.shape == (3, 3, resolution, resolution)
    assert images.min() >= -1 and images.max() <= 1
    assert d(images).shape == (3,)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("resolution", [16, 40, 96])
def test_unsupported_resolution_is_a_config_error(name, resolution):
    g_cls, d_cls, _ = NETS[name]
    for cls in (g_cls, d_cls):
        with pytest.raises(ConfigError, match="resolution"):
            cls(resolution=resolution, width=4)


# --- SAGAN attention placement and spectral norm ------------------------------------------------------------
@pytest.mark.parametrize(
    ("resolution", "g_sizes", "d_sizes"), [(32, [8, 16], [8, 4]), (64, [16, 32], [16, 8])]
)
def test_sagan_default_attention_placement(resolution, g_sizes, d_sizes):
    g = SAGANGenerator(z_dim=Z, resolution=resolution, width=4)
    d = SAGANDiscriminator(resolution=resolution, width=4)
    images = g(torch.randn(2, Z))
    assert attention_sizes(g, torch.randn(2, Z)) == g_sizes
    assert attention_sizes(d, images) == d_sizes


def test_sagan_attention_resolutions_are_configurable():
    g = SAGANGenerator(z_dim=Z, resolution=64, width=4, attention_resolutions=[4, 8, 32])
    d = SAGANDiscriminator(resolution=64, width=4, attention_resolutions=[32])
    assert attention_sizes(g, torch.randn(2, Z)) == [4, 8, 32]
    assert attention_sizes(d, torch.randn(2, 3, 64, 64)) == [32]
    assert (
        attention_sizes(
            SAGANGenerator(z_dim=Z, resolution=32, width=4, attention_resolutions=[]), torch.randn(2, Z)
        )
        == []
    )


@pytest.mark.parametrize("bad", [[64], [3]])
def test_sagan_attention_at_a_missing_map_lists_the_valid_sizes(bad):
    with pytest.raises(ConfigError, match=r"attention_resolutions.*\[4, 8, 16, 32\]"):
        SAGANGenerator(resolution=64, width=4, attention_resolutions=bad)


def test_sagan_preset_norms_put_spectral_norm_everywhere():
    g = SAGANGenerator(z_dim=Z, resolution=32, width=4, norm="spectral_batch")
    d = SAGANDiscriminator(resolution=32, width=4, norm="spectral", num_classes=3)
    for net in (g, d):
        layers = weighted(net)
        assert len(layers) > 8 and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == 3  # after each G layer but the last
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert not any(
        parametrize.is_parametrized(m) for m in SAGANGenerator(resolution=32, width=4, norm="batch").modules()
    )


# --- ResNet structure -----------------------------------------------------------------------------------------
def test_resnet_32_matches_the_sngan_cifar_model():
    g, d = ResNetGenerator(z_dim=128, resolution=32), ResNetDiscriminator(resolution=32)
    assert params(g) == pytest.approx(4.3e6, rel=0.1)  # SNGAN CIFAR: G ~4.3M, D ~1.0M parameters
    assert params(d) == pytest.approx(1.0e6, rel=0.1)
    assert {m.out_channels for m in g.modules() if isinstance(m, nn.Conv2d)} == {256, 3}
    assert {m.out_channels for m in d.modules() if isinstance(m, nn.Conv2d)} == {128}
    sizes = []
    hooks = [b.register_forward_hook(lambda _m, _a, out: sizes.append(out.shape[-1])) for b in d.blocks[:4]]
    d(torch.randn(2, 3, 32, 32))
    assert sizes == [16, 8, 8, 8]  # the last two blocks do not downsample
    for hook in hooks:
        hook.remove()


def test_resnet_48_starts_from_6x6():
    g = ResNetGenerator(z_dim=Z, resolution=48, width=4)
    assert g.linear.out_features == 6 * 6 * 32
    assert g(torch.randn(2, Z)).shape == (2, 3, 48, 48)


@pytest.mark.parametrize("resolution", [32, 64])
def test_resnet_discriminator_is_spectral_throughout(resolution):
    d = ResNetDiscriminator(resolution=resolution, width=4, norm="spectral", num_classes=3)
    layers = weighted(d)
    assert len(layers) >= 10 and all(parametrize.is_parametrized(m, "weight") for m in layers)
    g = ResNetGenerator(resolution=resolution, width=4, norm="batch")
    assert not any(parametrize.is_parametrized(m) for m in g.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in g.modules())


# --- conditioning -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NETS))
def test_conditional_nets_use_the_labels(name):
    g_cls, d_cls, _ = NETS[name]
    torch.manual_seed(0)
    g = g_cls(z_dim=Z, resolution=32, width=4, norm="batch", num_classes=3)
    d = d_cls(resolution=32, width=4, norm="spectral", num_classes=3)
    with torch.no_grad():  # class embeddings start at the identity: move them so the classes differ
        for m in g.modules():
            if hasattr(m, "scale") and isinstance(m.scale, nn.Embedding):
                m.scale.weight.normal_(1.0, 0.5)
                m.shift.weight.normal_(0.0, 0.5)
    z = torch.randn(4, Z)
    zeros, twos = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    a, b = g(z, zeros), g(z, twos)
    assert a.shape == (4, 3, 32, 32) and not torch.allclose(a, b)
    assert d(a, zeros).shape == (4,) and not torch.allclose(d(a, zeros), d(a, twos))
    with pytest.raises(ConfigError, match="needs class labels"):
        g(z)
    with pytest.raises(ConfigError, match="needs class labels"):
        d(a)


@pytest.mark.parametrize("name", list(NETS))
def test_conditional_generator_without_batch_norm_is_a_config_error(name):
    with pytest.raises(ConfigError, match="normalization.generator"):
        NETS[name][0](resolution=32, width=4, norm="spectral", num_classes=3)


# --- presets --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "d_norm", "g_norm"),
    [
        (["model=sagan"], "spectral", "spectral_batch"),
        (["model=sagan", "normalization=batch"], "batch", "spectral_batch"),
        (["model=sagan", "normalization.generator=batch"], "spectral", "batch"),
        (["model=resnet"], "spectral", "batch"),
        (["model=resnet", "normalization=batch"], "batch", "batch"),
    ],
)
def test_presets_compose_with_their_norms(tmp_path, overrides, d_norm, g_norm):
    cfg = compose_config([*overrides, "dataset=fake", "model.width=4"], output_dir=tmp_path)
    assert (cfg.model.discriminator.norm, cfg.model.generator.norm) == (d_norm, g_norm)
    g, d = instantiate(cfg.model.generator), instantiate(cfg.model.discriminator)
    images = g(torch.randn(2, cfg.model.z_dim))
    assert images.shape == (2, 3, 32, 32) and d(images).shape == (2,)
    assert parametrize.is_parametrized(weighted(d)[0]) == d_norm.startswith("spectral")
    assert parametrize.is_parametrized(weighted(g)[0]) == g_norm.startswith("spectral")


@pytest.mark.parametrize("model", ["sagan", "resnet"])
def test_conditional_preset_trains(tiny_config, model):
    module = train(
        tiny_config(f"model={model}", "model.num_classes=null", "dataset.num_classes=3", "steps=2")
    )
    assert module.g_steps == 2 and module.generator.num_classes == 3
    assert module.discriminator.head.embed is not None  # projection discriminator
