"""SAGAN (Zhang et al. 2019): DCGAN-like conv stacks with self-attention, for any power-of-two resolution >= 32.

G: a 4x4 transposed conv from the 1x1 noise, then stride-2 transposed convs doubling to R, BN-ReLU after each but
the last (tanh). D: stride-2 4x4 convs halving R down to 4x4, LeakyReLU(0.1), global sum pooling, then the
projection head (the plain linear logit when unconditional). Channels as in DCGAN: `width` next to the image,
doubled at each halving (G at 64x64: 512, 256, 128, 64).

Self-attention blocks follow the layers whose output has a size listed in `attention_resolutions`. The default
(None) follows the reproduced study, attention after the 3rd and 4th layers, which at 64x64 means G's 16x16 and
32x32 maps (R/4, R/2) and D's 16x16 and 8x8 maps (R/4, R/8). The PyTorch reproduction of heykeetae puts D's at
8x8 and 4x4 instead: `model.discriminator.attention_resolutions=[8,4]`.

Init: N(0, 0.02) for every conv, as DCGAN (the nets are DCGAN stacks; spectral norm, which SAGAN uses in both
nets, removes the weight scale anyway); the projection head keeps PyTorch's default init.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from torch import Tensor, nn

from gan_lab.errors import ConfigError
from gan_lab.nets.layers import (
    LabelSequential,
    ProjectionHead,
    SelfAttention,
    check_conditional_norm,
    check_labels,
    check_sizes,
    generator_norm,
    get_norm,
    init_dcgan_weights,
    num_doublings,
    with_spectral_norm,
)

log = logging.getLogger(__name__)
MAX_CHEAP_ATTENTION = 64  # attention over a larger map needs GiBs per image: warned about


def _attention_sizes(
    chosen: Sequence[int] | None, default: list[int], valid: list[int], key: str
) -> set[int]:
    """The feature-map sizes that get self-attention, or a ConfigError listing the sizes this net has."""
    sizes = set(default if chosen is None else chosen)
    if not sizes <= set(valid):
        raise ConfigError(
            f"{key}={sorted(sizes)} names maps this network does not have; choose from {sorted(valid)}"
        )
    if max(sizes, default=0) > MAX_CHEAP_ATTENTION:
        # The (HW, HW) attention map grows with the 4th power of the size: 1 GiB per image at 128x128.
        gib = max(sizes) ** 4 * 4 / 2**30
        smaller = sorted(s for s in valid if s <= MAX_CHEAP_ATTENTION)[-2:]
        log.warning(
            "%s=%s: self-attention over a %dx%d map stores %.0f GiB per image (float32, before gradients), so a "
            "training batch rarely fits in memory; attend to smaller maps, e.g. %s=[%s]",
            *(key, sorted(sizes), max(sizes), max(sizes), gib, key, ",".join(map(str, smaller))),
        )
    return sizes


def _conv(layer: nn.Module, spectral: bool) -> nn.Module:
    """Init N(0, 0.02) first, then wrap in spectral norm, so the two compose in either order of settings."""
    init_dcgan_weights(layer)
    return with_spectral_norm(layer, spectral)


class SAGANGenerator(nn.Module):
    """z (N, z_dim), labels (N,) | None -> images (N, 3, R, R) in [-1, 1]."""

    def __init__(
        self,
        z_dim: int = 128,
        resolution: int = 64,
        width: int = 64,
        norm: str = "spectral_batch",
        num_classes: int = 0,
        attention_resolutions: Sequence[int] | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(z_dim=z_dim, width=width)
        n_up = num_doublings(resolution)
        spec = get_norm(norm)
        check_conditional_norm(num_classes, spec.batch)
        self.z_dim, self.num_classes = z_dim, num_classes
        sizes = [4 * 2**i for i in range(n_up)]  # map after each layer but the last: 4, 8, ..., R/2
        attend = _attention_sizes(
            attention_resolutions,
            [resolution // 4, resolution // 2],
            sizes,
            "model.generator.attention_resolutions",
        )
        layers: list[nn.Module] = []
        in_ch = z_dim
        for i, size in enumerate(sizes):
            out_ch = width * 2 ** (n_up - 1 - i)
            stride, padding = (1, 0) if i == 0 else (2, 1)  # first layer: 1x1 -> 4x4, then x2 each
            conv = nn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=not spec.batch)
            layers += [_conv(conv, spec.spectral), generator_norm(spec, out_ch, num_classes), nn.ReLU()]
            if size in attend:
                layers.append(SelfAttention(out_ch, spec.spectral))
            in_ch = out_ch
        layers += [_conv(nn.ConvTranspose2d(in_ch, channels, 4, 2, 1), spec.spectral), nn.Tanh()]
        self.net = LabelSequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        return self.net(z.view(z.shape[0], -1, 1, 1), labels)


class SAGANDiscriminator(nn.Module):
    """images (N, 3, R, R), labels (N,) | None -> logits (N,), higher = more real."""

    def __init__(
        self,
        resolution: int = 64,
        width: int = 64,
        norm: str = "spectral",
        num_classes: int = 0,
        attention_resolutions: Sequence[int] | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(width=width)
        n_down = num_doublings(resolution)
        spec = get_norm(norm)
        self.num_classes = num_classes
        sizes = [resolution // 2 ** (i + 1) for i in range(n_down)]  # map after each conv: R/2, ..., 4
        attend = _attention_sizes(
            attention_resolutions,
            [resolution // 4, resolution // 8],
            sizes,
            "model.discriminator.attention_resolutions",
        )
        layers: list[nn.Module] = []
        in_ch = channels
        for i, size in enumerate(sizes):
            out_ch = width * 2**i
            use_bn = (
                spec.batch and i > 0
            )  # as DCGAN: batch norm on the first layer would erase input statistics
            conv = _conv(nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not use_bn), spec.spectral)
            layers += [conv, nn.BatchNorm2d(out_ch) if use_bn else nn.Identity(), nn.LeakyReLU(0.1)]
            if size in attend:
                layers.append(SelfAttention(out_ch, spec.spectral))
            in_ch = out_ch
        self.net = nn.Sequential(*layers)
        self.head = ProjectionHead(in_ch, num_classes, spec.spectral)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        return self.head(self.net(x).sum(dim=(2, 3)), labels)  # global sum pooling, as SAGAN's code
