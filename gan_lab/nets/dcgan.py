"""DCGAN (Radford et al. 2015) generator and discriminator for any power-of-two resolution >= 32.

The depth follows the resolution: a 4x4 seed is doubled log2(R/4) times. At 64x64 this is the classic DCGAN
(5 transposed convs in G, 5 convs in D, as in the SN-DCGAN study); at 128x128 the 6-layer nets of the LSUN
church study. Channels halve at each doubling, ending at `width` next to the image.

Conditional variants (num_classes > 0): G takes the label by class-conditional batch norm ("cbn") or by a
label embedding concatenated to z ("embed", the classic cGAN of Mirza & Osindero); D by a projection head
(Miyato & Koyama 2018) or by one-hot label maps concatenated to the image ("concat").

The conv stacks themselves (`generator_stack`, `discriminator_stack`) are shared with SAGAN, which adds
self-attention after some layers and initialises each layer as it is built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from gan_lab.errors import ConfigError
from gan_lab.nets.layers import (
    LabelSequential,
    LayerFn,
    Norm,
    check_conditional_norm,
    check_labels,
    check_sizes,
    generator_norm,
    get_norm,
    init_dcgan_weights,
    no_weight_norm,
    num_doublings,
    one_hot,
)

G_CONDITIONING = ("cbn", "embed")
D_CONDITIONING = ("projection", "concat")


After = Callable[[int, int], list[nn.Module]]  # (map size, channels) of a layer's output -> modules to append


def _nothing_after(size: int, channels: int) -> list[nn.Module]:
    return []


def generator_stack(
    in_ch: int,
    resolution: int,
    width: int,
    channels: int,
    spec: Norm,
    num_classes: int = 0,
    *,
    inplace: bool = False,
    layer: LayerFn = no_weight_norm,
    after: After = _nothing_after,
) -> LabelSequential:
    """DCGAN's G stack, (N, in_ch, 1, 1) [+ labels (N,)] -> (N, channels, R, R) in [-1, 1].

    A 4x4 transposed conv from 1x1, then stride-2 transposed convs doubling to R, each but the last followed by
    the norm's features (class-conditional when num_classes) and ReLU; channels width * 2**(n-1-i), then tanh.
    `layer` is applied to each transposed conv as it is built; `after(size, ch)` gives the modules that follow
    the ReLU of the layer whose output map is size x size (SAGAN's self-attention).
    """
    n_up = num_doublings(resolution)
    layers: list[nn.Module] = []
    for i in range(n_up):
        out_ch = width * 2 ** (n_up - 1 - i)  # e.g. 512, 256, 128, 64 at 64x64
        stride, padding = (1, 0) if i == 0 else (2, 1)  # first layer: 1x1 -> 4x4, then x2 each
        conv = layer(nn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=spec.features is None))
        layers += [conv, generator_norm(spec, out_ch, num_classes), nn.ReLU(inplace=inplace)]
        layers += after(4 * 2**i, out_ch)
        in_ch = out_ch
    layers += [layer(nn.ConvTranspose2d(in_ch, channels, 4, 2, 1)), nn.Tanh()]
    return LabelSequential(*layers)


def discriminator_stack(
    in_ch: int,
    resolution: int,
    width: int,
    spec: Norm,
    *,
    slope: float = 0.2,
    inplace: bool = False,
    layer: LayerFn = no_weight_norm,
    after: After = _nothing_after,
) -> tuple[nn.Sequential, int]:
    """DCGAN's D stack, (N, in_ch, R, R) -> (N, C, 4, 4), and C.

    Stride-2 4x4 convs halving R down to 4x4, channels width * 2**i, each followed by the norm's features
    (not on the first layer: it would normalise away the input statistics, as DCGAN) and LeakyReLU(slope).
    `layer` and `after` as in generator_stack.
    """
    n_down = num_doublings(resolution)
    layers: list[nn.Module] = []
    for i in range(n_down):
        out_ch = width * 2**i
        normed = spec.features is not None and i > 0
        layers += [
            layer(nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not normed)),
            spec.features(out_ch) if normed else nn.Identity(),
            nn.LeakyReLU(slope, inplace=inplace),
        ]
        layers += after(resolution // 2 ** (i + 1), out_ch)
        in_ch = out_ch
    return nn.Sequential(*layers), in_ch


def _wrap_children(module: nn.Module, kinds: tuple[type, ...], layer: LayerFn) -> None:
    """Replace each direct child of one of these kinds by layer(child), in order."""
    for name, child in module.named_children():
        if isinstance(child, kinds):
            setattr(module, name, layer(child))


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}='{value}' is not one of: {', '.join(choices)}")


class DCGANGenerator(nn.Module):
    """z (N, z_dim) [+ labels (N,)] -> images (N, channels, R, R) in [-1, 1]."""

    def __init__(
        self,
        z_dim: int = 100,
        resolution: int = 64,
        width: int = 64,
        norm: str | Norm = "batch",
        channels: int = 3,
        num_classes: int = 0,
        conditioning: str = "cbn",
    ) -> None:
        super().__init__()
        check_sizes(z_dim=z_dim, width=width)
        _check_choice("model.generator.conditioning", conditioning, G_CONDITIONING)
        spec = get_norm(norm)
        if conditioning == "cbn":
            check_conditional_norm(num_classes, spec, ", or use model.generator.conditioning=embed")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = (
            nn.Embedding(num_classes, num_classes) if num_classes and conditioning == "embed" else None
        )
        cbn_classes = num_classes if conditioning == "cbn" else 0
        in_ch = z_dim + (num_classes if self.embed is not None else 0)
        self.net = generator_stack(in_ch, resolution, width, channels, spec, cbn_classes, inplace=True)
        self.apply(init_dcgan_weights)
        # The norm's weight (e.g. spectral norm) wraps the already-initialised weights: init holds either way.
        _wrap_children(self.net, (nn.ConvTranspose2d,), spec.weight)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z.view(z.shape[0], -1, 1, 1), labels if self.num_classes else None)


class DCGANDiscriminator(nn.Module):
    """images (N, channels, R, R) [+ labels (N,)] -> logits (N,), higher = more real."""

    def __init__(
        self,
        resolution: int = 64,
        width: int = 64,
        norm: str | Norm = "batch",
        channels: int = 3,
        num_classes: int = 0,
        conditioning: str = "projection",
    ) -> None:
        super().__init__()
        check_sizes(width=width)
        _check_choice("model.discriminator.conditioning", conditioning, D_CONDITIONING)
        self.num_classes, self.conditioning = num_classes, conditioning
        spec = get_norm(norm)
        in_ch = channels + (num_classes if num_classes and conditioning == "concat" else 0)
        self.net, in_ch = discriminator_stack(in_ch, resolution, width, spec, slope=0.2, inplace=True)
        self.logit = nn.Conv2d(in_ch, 1, 4, 1, 0)  # 4x4 -> 1x1 logit
        use_projection = num_classes and conditioning == "projection"
        self.embed = nn.Embedding(num_classes, in_ch) if use_projection else None
        self.apply(init_dcgan_weights)
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)  # as SNGAN's projection discriminator
        for module in (self.net, self):
            _wrap_children(module, (nn.Conv2d, nn.Embedding), spec.weight)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        if self.num_classes and self.conditioning == "concat":
            maps = one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], dim=1)
        h = self.net(x)
        logits = self.logit(h).view(x.shape[0])
        if self.embed is not None:  # projection: <embed(y), sum-pooled features>
            logits = logits + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return logits
