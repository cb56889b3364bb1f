"""DCGAN (Radford et al. 2015) generator and discriminator for any power-of-two resolution >= 32.

The depth follows the resolution: a 4x4 seed is doubled log2(R/4) times. At 64x64 this is the classic DCGAN
(5 transposed convs in G, 5 convs in D, as in the SN-DCGAN study); at 128x128 the 6-layer nets of the LSUN
church study. Channels halve at each doubling, ending at `width` next to the image.

Conditional variants (num_classes > 0): G takes the label by class-conditional batch norm ("cbn") or by a
label embedding concatenated to z ("embed", the classic cGAN of Mirza & Osindero); D by a projection head
(Miyato & Koyama 2018) or by one-hot label maps concatenated to the image ("concat").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gan_lab.errors import ConfigError
from gan_lab.nets.layers import (
    LabelSequential,
    check_conditional_norm,
    check_labels,
    check_sizes,
    generator_norm,
    get_norm,
    init_dcgan_weights,
    num_doublings,
    with_spectral_norm,
)

G_CONDITIONING = ("cbn", "embed")
D_CONDITIONING = ("projection", "concat")


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
        norm: str = "batch",
        channels: int = 3,
        num_classes: int = 0,
        conditioning: str = "cbn",
    ) -> None:
        super().__init__()
        check_sizes(z_dim=z_dim, width=width)
        _check_choice("model.generator.conditioning", conditioning, G_CONDITIONING)
        spec = get_norm(norm)
        if conditioning == "cbn":
            check_conditional_norm(num_classes, spec.batch, ", or use model.generator.conditioning=embed")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = (
            nn.Embedding(num_classes, num_classes) if num_classes and conditioning == "embed" else None
        )
        n_up = num_doublings(resolution)
        widths = [width * 2 ** (n_up - 1 - i) for i in range(n_up)]  # e.g. 512, 256, 128, 64 at 64x64
        cbn_classes = num_classes if conditioning == "cbn" else 0
        layers: list[nn.Module] = []
        in_ch = z_dim + (num_classes if self.embed is not None else 0)
        for i, out_ch in enumerate(widths):
            stride, padding = (1, 0) if i == 0 else (2, 1)  # first layer: 1x1 -> 4x4, then x2 each
            conv = nn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=not spec.batch)
            layers += [conv, generator_norm(spec, out_ch, cbn_classes), nn.ReLU(inplace=True)]
            in_ch = out_ch
        layers += [nn.ConvTranspose2d(in_ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = LabelSequential(*layers)
        self.apply(init_dcgan_weights)
        # Spectral norm wraps the already-initialised weights, so init and SN compose in either setting.
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.ConvTranspose2d):
                self.net[i] = with_spectral_norm(layer, spec.spectral)

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
        norm: str = "batch",
        channels: int = 3,
        num_classes: int = 0,
        conditioning: str = "projection",
    ) -> None:
        super().__init__()
        check_sizes(width=width)
        _check_choice("model.discriminator.conditioning", conditioning, D_CONDITIONING)
        self.num_classes, self.conditioning = num_classes, conditioning
        n_down = num_doublings(resolution)
        spec = get_norm(norm)
        layers: list[nn.Module] = []
        in_ch = channels + (num_classes if num_classes and conditioning == "concat" else 0)
        for i in range(n_down):
            out_ch = width * 2**i
            # No batch norm on the first layer, as in DCGAN: it would normalise away the input statistics.
            use_bn = spec.batch and i > 0
            layers += [
                nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not use_bn),
                nn.BatchNorm2d(out_ch) if use_bn else nn.Identity(),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_ch = out_ch
        self.net = nn.Sequential(*layers)
        self.logit = nn.Conv2d(in_ch, 1, 4, 1, 0)  # 4x4 -> 1x1 logit
        use_projection = num_classes and conditioning == "projection"
        self.embed = nn.Embedding(num_classes, in_ch) if use_projection else None
        self.apply(init_dcgan_weights)
        if self.embed is not None:
            nn.init.xavier_uniform_(self.embed.weight)  # as SNGAN's projection discriminator
        for module in (self.net, self):
            for name, layer in module.named_children():
                if isinstance(layer, (nn.Conv2d, nn.Embedding)):
                    setattr(module, name, with_spectral_norm(layer, spec.spectral))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        if self.num_classes and self.conditioning == "concat":
            maps = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, *x.shape[2:])], dim=1)
        h = self.net(x)
        logits = self.logit(h).view(x.shape[0])
        if self.embed is not None:  # projection: <embed(y), sum-pooled features>
            logits = logits + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return logits
