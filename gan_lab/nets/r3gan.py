"""R3GAN's generator and discriminator (Huang et al. 2024, "The GAN is dead; long live the GAN!").

Power-of-two resolutions >= 8. One residual block in both nets, ResNeXt-style and without normalization:
x + conv1x1(lrelu(grouped conv3x3(lrelu(conv1x1(x))))), its hidden width `expansion` times the stream's, in groups
of `channels_per_group` channels.
- G: a learned constant (C, 4, 4) scaled channel-wise by a linear map of z (of cat(z, embed(label)) when
  conditional), then stages at 4x4, 8x8, ..., RxR of `blocks_per_stage` blocks, each stage but the first opened
  by a bilinear 2x upsampling and a 1x1 conv; a last 1x1 conv to RGB. The output is linear (no tanh, as R3GAN
  and StyleGAN): images are meant to lie in [-1, 1], and gan_lab's byte conversions clamp to that range
  (to_uint8 in gan_lab/utils/images.py; save_image with value_range=(-1, 1)).
- D: a 1x1 conv from RGB, stages from RxR down to 4x4, each of `blocks_per_stage` blocks then (but the last) a
  1x1 conv and a 2x bilinear downsampling, which at scale 1/2 (align_corners=False) is exactly a 2x2 average:
  computed as avg_pool2d. (The antialiased bilinear, a [1, 3, 3, 1] tent filter, has no bfloat16 CPU kernel, so
  CPU runs under bf16 autocast would fail.) Then LeakyReLU, a depthwise 4x4 conv to (N, C) and the projection
  head (the plain linear logit when unconditional).
- Widths: `width` at every stage, as R3GAN's CIFAR-10 model; `stage_widths` sets them per stage, listed from 4x4
  up in both nets.

Init is fix-up (Zhang et al. 2019), as R3GAN's: in each branch the first two convs are He-normal (fan-in, the
gain of LeakyReLU(0.2)) scaled by L^(-1/4), i.e. L^(-1/(2m-2)) for m = 3 layers per branch and L blocks in the
net, and the last conv is zero, so every block starts as the identity. The other convs and linears are He-normal
with gain 1 (no activation follows them), the constant N(0, 1); biases start at 0; the label embedding and the
projection head keep PyTorch's default init.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gan_lab.errors import ConfigError
from gan_lab.nets.layers import NORMS, Norm, ProjectionHead, check_labels, check_sizes, get_norm

SLOPE = 0.2  # LeakyReLU's negative slope throughout
BRANCH_LAYERS = 3  # fix-up's m: the layers of a residual branch


def _check_resolution(resolution: int) -> int:
    """The number of stages (4x4 up to RxR) of a power-of-two resolution >= 8, else a one-line ConfigError."""
    valid = isinstance(resolution, int) and not isinstance(resolution, bool) and resolution >= 8
    if not valid or resolution & (resolution - 1):
        raise ConfigError(
            f"dataset.resolution={resolution} cannot be built: model=r3gan supports powers of two >= 8 "
            "(8, 16, 32, 64, 128, 256, ...)"
        )
    return int(math.log2(resolution)) - 1


def _check_no_norm(norm: str | Norm, key: str) -> None:
    """R3GAN has no normalization layers: any norm but none is refused rather than silently ignored."""
    if get_norm(norm) != NORMS["none"]:
        shown = norm if isinstance(norm, str) else "<a Norm of your own>"
        raise ConfigError(
            f"model=r3gan has no normalization layers (R3GAN's design); drop {key}={shown} "
            "(the preset sets none)"
        )


def _widths(width: int, stage_widths: Sequence[int] | None, stages: int, net: str) -> list[int]:
    """The channels of each stage, from 4x4 up: `width` each unless `stage_widths` lists them."""
    widths = [width] * stages if stage_widths is None else list(stage_widths)
    if len(widths) != stages:
        raise ConfigError(
            f"model.{net}.stage_widths has {len(widths)} entries but this resolution has {stages} stages "
            f"(4x4 up to the image); give {stages} widths, from 4x4 up"
        )
    check_sizes(**{f"{net}.stage_widths[{i}]": w for i, w in enumerate(widths)})
    return widths


def _check_groups(widths: list[int], expansion: int, channels_per_group: int) -> None:
    """Each stage's hidden width (width * expansion) must split into whole groups of channels_per_group."""
    for w in widths:
        if w * expansion % channels_per_group:
            raise ConfigError(
                f"model=r3gan: width {w} x expansion {expansion} = {w * expansion} channels cannot be split "
                f"into groups of model.channels_per_group={channels_per_group}; make width * expansion a "
                "multiple of it"
            )


def _plan(
    resolution: int,
    width: int,
    stage_widths: Sequence[int] | None,
    norm: str | Norm,
    expansion: int,
    channels_per_group: int,
    net: str,
) -> list[int]:
    """A net's settings checked (one ConfigError line each); the channels of its stages, from 4x4 up."""
    check_sizes(width=width, expansion=expansion, channels_per_group=channels_per_group)
    stages = _check_resolution(resolution)
    _check_no_norm(norm, "normalization.generator" if net == "generator" else "normalization")
    widths = _widths(width, stage_widths, stages, net)
    _check_groups(widths, expansion, channels_per_group)
    return widths


def _he(layer: nn.Conv2d | nn.Linear, activation: bool = False, scale: float = 1.0) -> nn.Module:
    """He-normal (fan-in) weights times scale, zero bias; the LeakyReLU gain only where an activation follows."""
    nn.init.kaiming_normal_(layer.weight, a=SLOPE, nonlinearity="leaky_relu" if activation else "linear")
    with torch.no_grad():
        layer.weight.mul_(scale)
    nn.init.zeros_(layer.bias)
    return layer


class ResidualBlock(nn.Module):
    """x + conv1x1(lrelu(grouped conv3x3(lrelu(conv1x1(x))))); (N, C, H, W) -> same; the identity at init."""

    def __init__(self, channels: int, expansion: int, channels_per_group: int, num_blocks: int) -> None:
        super().__init__()
        hidden = channels * expansion
        # fix-up: L^(-1/(2m-2)) keeps the variance the L branches add to the stream bounded as L grows
        scale = num_blocks ** (-1 / (2 * BRANCH_LAYERS - 2))
        self.expand = _he(nn.Conv2d(channels, hidden, 1), activation=True, scale=scale)
        groups = hidden // channels_per_group
        self.conv = _he(nn.Conv2d(hidden, hidden, 3, padding=1, groups=groups), activation=True, scale=scale)
        self.project = nn.Conv2d(hidden, channels, 1)
        nn.init.zeros_(self.project.weight)  # fix-up: the branch adds nothing until it has learnt something
        nn.init.zeros_(self.project.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv(F.leaky_relu(self.expand(x), SLOPE)), SLOPE)
        return x + self.project(h)


class Resample(nn.Module):
    """G: bilinear 2x up, 1x1 conv; D: 1x1 conv, bilinear (2x2 average) 2x down. (N, Cin, H, W) -> (N, Cout, ..)."""

    def __init__(self, cin: int, cout: int, up: bool) -> None:
        super().__init__()
        self.up = up
        self.conv = _he(nn.Conv2d(cin, cout, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        # Bilinear at scale 1/2 samples the midpoint of each 2x2 block: the 2x2 average, in every dtype.
        return F.avg_pool2d(self.conv(x), 2)


def _stage(channels: int, blocks: int, expansion: int, per_group: int, num_blocks: int) -> list[nn.Module]:
    return [ResidualBlock(channels, expansion, per_group, num_blocks) for _ in range(blocks)]


class R3GANGenerator(nn.Module):
    """z (N, z_dim), labels (N,) | None -> images (N, 3, R, R), linear: meant for [-1, 1], clamped to bytes."""

    def __init__(
        self,
        z_dim: int = 64,
        resolution: int = 32,
        width: int = 256,
        num_classes: int = 0,
        norm: str | Norm = "none",
        blocks_per_stage: int = 2,
        expansion: int = 2,
        channels_per_group: int = 16,
        stage_widths: Sequence[int] | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(z_dim=z_dim, blocks_per_stage=blocks_per_stage)
        widths = _plan(resolution, width, stage_widths, norm, expansion, channels_per_group, "generator")
        stages = len(widths)
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes else None
        self.basis = nn.Parameter(nn.init.normal_(torch.empty(widths[0], 4, 4)))  # the learned 4x4 constant
        self.project = _he(nn.Linear(2 * z_dim if num_classes else z_dim, widths[0]))
        num_blocks = stages * blocks_per_stage
        layers = _stage(widths[0], blocks_per_stage, expansion, channels_per_group, num_blocks)
        for cin, cout in pairwise(widths):  # 8x8 up to the image, each stage opened by the up transition
            layers += [Resample(cin, cout, up=True)]
            layers += _stage(cout, blocks_per_stage, expansion, channels_per_group, num_blocks)
        self.stages = nn.Sequential(*layers)
        self.aggregate = _he(nn.Conv2d(widths[-1], channels, 1))

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        x = self.basis * self.project(z)[:, :, None, None]  # (C, 4, 4) * (N, C, 1, 1) -> (N, C, 4, 4)
        return self.aggregate(self.stages(x))


class R3GANDiscriminator(nn.Module):
    """images (N, 3, R, R), labels (N,) | None -> logits (N,), higher = more real."""

    def __init__(
        self,
        resolution: int = 32,
        width: int = 256,
        num_classes: int = 0,
        norm: str | Norm = "none",
        blocks_per_stage: int = 2,
        expansion: int = 2,
        channels_per_group: int = 16,
        stage_widths: Sequence[int] | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(blocks_per_stage=blocks_per_stage)
        widths = _plan(resolution, width, stage_widths, norm, expansion, channels_per_group, "discriminator")
        stages = len(widths)
        widths = widths[::-1]  # from the image down to 4x4
        self.num_classes = num_classes
        self.extract = _he(nn.Conv2d(channels, widths[0], 1))
        num_blocks = stages * blocks_per_stage
        layers: list[nn.Module] = []
        for cin, cout in pairwise(widths):  # the image down to 8x8, each stage closed by the down transition
            layers += _stage(cin, blocks_per_stage, expansion, channels_per_group, num_blocks)
            layers += [Resample(cin, cout, up=False)]
        layers += _stage(widths[-1], blocks_per_stage, expansion, channels_per_group, num_blocks)  # 4x4
        self.stages = nn.Sequential(*layers)
        self.basis = _he(nn.Conv2d(widths[-1], widths[-1], 4, groups=widths[-1]))  # depthwise 4x4 -> 1x1
        self.head = ProjectionHead(widths[-1], num_classes)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        # LeakyReLU first: else the basis would be a second linear map right after the stream's last one
        h = self.basis(F.leaky_relu(self.stages(self.extract(x)), SLOPE)).flatten(1)  # (N, C)
        return self.head(h, labels)
