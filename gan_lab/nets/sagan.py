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
from gan_lab.nets.dcgan import After, discriminator_stack, generator_stack
from gan_lab.nets.layers import (
    LayerFn,
    Norm,
    ProjectionHead,
    SelfAttention,
    check_conditional_norm,
    check_labels,
    check_sizes,
    get_norm,
    init_dcgan_weights,
    num_doublings,
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


def _init_then(spec: Norm) -> LayerFn:
    """Each layer as it is built: init N(0, 0.02) first, then the norm's weight (spectral norm) wraps it."""

    def layer(module: nn.Module) -> nn.Module:
        init_dcgan_weights(module)
        return spec.weight(module)

    return layer


def _attention_after(attend: set[int], spec: Norm) -> After:
    """Self-attention after the layers whose output map size is in `attend`."""
    return lambda size, channels: [SelfAttention(channels, spec.weight)] if size in attend else []


class SAGANGenerator(nn.Module):
    """z (N, z_dim), labels (N,) | None -> images (N, 3, R, R) in [-1, 1]."""

    def __init__(
        self,
        z_dim: int = 128,
        resolution: int = 64,
        width: int = 64,
        norm: str | Norm = "spectral_batch",
        num_classes: int = 0,
        attention_resolutions: Sequence[int] | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(z_dim=z_dim, width=width)
        n_up = num_doublings(resolution)
        spec = get_norm(norm)
        check_conditional_norm(num_classes, spec)
        self.z_dim, self.num_classes = z_dim, num_classes
        sizes = [4 * 2**i for i in range(n_up)]  # map after each layer but the last: 4, 8, ..., R/2
        attend = _attention_sizes(
            attention_resolutions,
            [resolution // 4, resolution // 2],
            sizes,
            "model.generator.attention_resolutions",
        )
        self.net = generator_stack(
            z_dim,
            resolution,
            width,
            channels,
            spec,
            num_classes,
            layer=_init_then(spec),
            after=_attention_after(attend, spec),
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        return self.net(z.view(z.shape[0], -1, 1, 1), labels)


class SAGANDiscriminator(nn.Module):
    """images (N, 3, R, R), labels (N,) | None -> logits (N,), higher = more real."""

    def __init__(
        self,
        resolution: int = 64,
        width: int = 64,
        norm: str | Norm = "spectral",
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
        self.net, features = discriminator_stack(
            channels,
            resolution,
            width,
            spec,
            slope=0.1,
            layer=_init_then(spec),
            after=_attention_after(attend, spec),
        )
        self.head = ProjectionHead(features, num_classes, spec.weight)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        return self.head(self.net(x).sum(dim=(2, 3)), labels)  # global sum pooling, as SAGAN's code
