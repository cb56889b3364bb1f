"""ResNet generator and discriminator of SNGAN (Miyato et al. 2018) at 32, 48, 64 and 128 pixels.

Channels are multiples of `width` (the SNGAN code's `ch`, default 64), following the paper's models:
- 32 (CIFAR): G 4x4 -> 3 up-blocks of 4*width (256); D 4 blocks of 2*width (128), the last two not downsampling.
- 48 (STL-10): G 6x6 of 8*width -> up-blocks 4, 2, 1 * width; D 1, 2, 4, 8 * width downsampling, then 16 * width.
- 64 / 128 (ImageNet): G 4x4 of 16*width halving to width at the image; D doubling from width to 16*width, all
  downsampling (at 128 a last 16*width block keeps 4x4).

Init as the SNGAN code: Xavier uniform with gain sqrt(2) on the residual 3x3 convs, gain 1 on the shortcuts, G's
first linear and last conv; the projection head keeps PyTorch's default init.
"""

from __future__ import annotations

import math
from itertools import pairwise

from torch import Tensor, nn
from torch.nn import functional as F

from gan_lab.errors import ConfigError
from gan_lab.nets.layers import (
    LabelSequential,
    LayerFn,
    Norm,
    ProjectionHead,
    check_conditional_norm,
    check_labels,
    check_sizes,
    generator_norm,
    get_norm,
)

# G: resolution -> (size of the first map, [channels of the linear's map, then of each up-block]), in widths.
G_PLAN: dict[int, tuple[int, list[int]]] = {
    32: (4, [4, 4, 4, 4]),
    48: (6, [8, 4, 2, 1]),
    64: (4, [16, 8, 4, 2, 1]),
    128: (4, [16, 16, 8, 4, 2, 1]),
}
# D: resolution -> [(channels in widths, downsamples?)] per block, the first being the optimized block.
D_PLAN: dict[int, list[tuple[int, bool]]] = {
    32: [(2, True), (2, True), (2, False), (2, False)],
    48: [(1, True), (2, True), (4, True), (8, True), (16, False)],
    64: [(1, True), (2, True), (4, True), (8, True), (16, True)],
    128: [(1, True), (2, True), (4, True), (8, True), (16, True), (16, False)],
}


def _check_resolution(resolution: int) -> None:
    if resolution not in G_PLAN:
        raise ConfigError(
            f"dataset.resolution={resolution} cannot be built: model=resnet supports {', '.join(map(str, G_PLAN))}"
        )


def _layer(layer: nn.Module, gain: float, weight: LayerFn) -> nn.Module:
    """Xavier-uniform init, then the norm's weight (spectral norm) wraps it (wrapping after init keeps the init)."""
    nn.init.xavier_uniform_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return weight(layer)


class UpBlock(nn.Module):
    """G block: BN-ReLU-up-conv3-BN-ReLU-conv3 + conv1(up(x)); (N, Cin, H, W), labels -> (N, Cout, 2H, 2W)."""

    takes_labels = True

    def __init__(self, cin: int, cout: int, spec: Norm, num_classes: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = generator_norm(spec, cin, num_classes), generator_norm(spec, cout, num_classes)
        self.conv1 = _layer(nn.Conv2d(cin, cout, 3, padding=1), math.sqrt(2), spec.weight)
        self.conv2 = _layer(nn.Conv2d(cout, cout, 3, padding=1), math.sqrt(2), spec.weight)
        self.shortcut = _layer(nn.Conv2d(cin, cout, 1), 1.0, spec.weight)

    def _norm(self, bn: nn.Module, x: Tensor, labels: Tensor | None) -> Tensor:
        return bn(x, labels) if getattr(bn, "takes_labels", False) else bn(x)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = F.interpolate(F.relu(self._norm(self.bn1, x, labels)), scale_factor=2.0)  # nearest, as SNGAN
        h = self.conv2(F.relu(self._norm(self.bn2, self.conv1(h), labels)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2.0))


class DownBlock(nn.Module):
    """D block: [BN]-ReLU-conv3-[BN]-ReLU-conv3-[avgpool] + shortcut; (N, Cin, H, W) -> (N, Cout, H/2 or H, ..).

    `first` is SNGAN's optimized block on the image: no activation before the first conv, shortcut pooled then
    1x1-convolved. Later blocks convolve then pool their shortcut, which is learnt only if it must change shape.
    The norm's features (batch norm with norm=batch) go before each activation, never on the raw image.
    """

    def __init__(self, cin: int, cout: int, spec: Norm, downsample: bool, first: bool = False) -> None:
        super().__init__()
        self.first, self.downsample = first, downsample
        bn = spec.features or (lambda _: nn.Identity())
        self.bn1, self.bn2 = (nn.Identity() if first else bn(cin)), bn(cout)
        self.conv1 = _layer(nn.Conv2d(cin, cout, 3, padding=1), math.sqrt(2), spec.weight)
        self.conv2 = _layer(nn.Conv2d(cout, cout, 3, padding=1), math.sqrt(2), spec.weight)
        learnt = first or downsample or cin != cout
        self.shortcut = _layer(nn.Conv2d(cin, cout, 1), 1.0, spec.weight) if learnt else nn.Identity()

    def _pool(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(self.bn1(x))
        h = self._pool(self.conv2(F.relu(self.bn2(self.conv1(h)))))
        skip = self.shortcut(self._pool(x)) if self.first else self._pool(self.shortcut(x))
        return h + skip


class ResNetGenerator(nn.Module):
    """z (N, z_dim), labels (N,) | None -> images (N, 3, R, R) in [-1, 1]."""

    def __init__(
        self,
        z_dim: int = 128,
        resolution: int = 32,
        width: int = 64,
        norm: str | Norm = "batch",
        num_classes: int = 0,
        channels: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(z_dim=z_dim, width=width)
        _check_resolution(resolution)
        spec = get_norm(norm)
        check_conditional_norm(num_classes, spec)
        self.z_dim, self.num_classes = z_dim, num_classes
        self.bottom, mults = G_PLAN[resolution]
        widths = [m * width for m in mults]
        self.linear = _layer(nn.Linear(z_dim, self.bottom**2 * widths[0]), 1.0, spec.weight)
        blocks = [UpBlock(a, b, spec, num_classes) for a, b in pairwise(widths)]
        self.blocks = LabelSequential(
            *blocks,
            generator_norm(spec, widths[-1], num_classes),
            nn.ReLU(),
            _layer(nn.Conv2d(widths[-1], channels, 3, padding=1), 1.0, spec.weight),
            nn.Tanh(),
        )

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        return self.blocks(self.linear(z).view(z.shape[0], -1, self.bottom, self.bottom), labels)


class ResNetDiscriminator(nn.Module):
    """images (N, 3, R, R), labels (N,) | None -> logits (N,), higher = more real."""

    def __init__(
        self,
        resolution: int = 32,
        width: int = 64,
        norm: str | Norm = "spectral",
        num_classes: int = 0,
        channels: int = 3,
    ) -> None:
        super().__init__()
        check_sizes(width=width)
        _check_resolution(resolution)
        spec = get_norm(norm)
        self.num_classes = num_classes
        blocks, cin = [], channels
        for i, (mult, down) in enumerate(D_PLAN[resolution]):
            blocks.append(DownBlock(cin, mult * width, spec, down, first=i == 0))
            cin = mult * width
        self.blocks = nn.Sequential(*blocks, nn.ReLU())
        self.head = ProjectionHead(cin, num_classes, spec.weight)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(labels, self.num_classes)
        return self.head(self.blocks(x).sum(dim=(2, 3)), labels)  # global sum pooling
