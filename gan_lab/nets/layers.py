"""Building blocks shared by the architectures: the normalization table and weight init."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan_lab.errors import ConfigError


@dataclass(frozen=True)
class Norm:
    """How a layer is normalized: spectral norm on its weight, batch norm on its output, or both."""

    spectral: bool
    batch: bool


# The norm table: a new normalization is one entry here (and one YAML in conf/normalization/).
NORMS: dict[str, Norm] = {
    "none": Norm(spectral=False, batch=False),
    "batch": Norm(spectral=False, batch=True),
    "spectral": Norm(spectral=True, batch=False),
    "spectral_batch": Norm(spectral=True, batch=True),
}


def get_norm(name: str) -> Norm:
    """Look up a normalization by name, with an error listing the valid names."""
    if name not in NORMS:
        raise ConfigError(f"unknown normalization '{name}'; choose one of: {', '.join(NORMS)}")
    return NORMS[name]


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2015): conv weights ~ N(0, 0.02), BN scale ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:  # conditional BN keeps its own scale/shift
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def with_spectral_norm(layer: nn.Module, enabled: bool) -> nn.Module:
    """Wrap a layer's weight in torch's spectral-norm parametrization when enabled."""
    return spectral_norm(layer) if enabled else layer


def check_sizes(**sizes: int) -> None:
    """Each model size (z_dim, width) a positive integer, else a ConfigError naming the key."""
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model.{key}={value!r} must be a positive integer; e.g. model.{key}=64")


def num_doublings(resolution: int, base: int = 4, minimum: int = 32) -> int:
    """log2(resolution / base) for a power-of-two resolution >= minimum, else a ConfigError saying why."""
    if resolution < minimum or resolution & (resolution - 1):
        raise ConfigError(
            f"dataset.resolution={resolution} cannot be built: this architecture needs a power of two "
            f">= {minimum} (e.g. 32, 64, 128, 256)"
        )
    return int(math.log2(resolution // base))


# --- class conditioning -------------------------------------------------------------------------------------
class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al. 2017; SNGAN, BigGAN G).

    Takes (x (N, C, H, W), labels (N,)); scale starts at 1 and shift at 0, so it begins as plain batch norm.
    """

    takes_labels = True

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.scale = nn.Embedding(num_classes, num_features)
        self.shift = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        return self.bn(x) * self.scale(labels)[:, :, None, None] + self.shift(labels)[:, :, None, None]


class LabelSequential(nn.Sequential):
    """nn.Sequential that also hands the class labels to the layers that take them (`takes_labels = True`)."""

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        for layer in self:
            x = layer(x, labels) if getattr(layer, "takes_labels", False) else layer(x)
        return x


def generator_norm(spec: Norm, channels: int, num_classes: int) -> nn.Module:
    """The generator's normalization after a layer: class-conditional BN when conditional, else BN or nothing."""
    if not spec.batch:
        return nn.Identity()
    return ConditionalBatchNorm2d(channels, num_classes) if num_classes else nn.BatchNorm2d(channels)


class ProjectionHead(nn.Module):
    """Projection discriminator output (Miyato & Koyama 2018): linear(h) + <embed(y), h>; (N, F) -> (N,).

    With num_classes = 0 it is the plain linear logit, so unconditional models share the code.
    """

    def __init__(self, features: int, num_classes: int = 0, spectral: bool = False) -> None:
        super().__init__()
        self.linear = with_spectral_norm(nn.Linear(features, 1), spectral)
        self.embed = (
            with_spectral_norm(nn.Embedding(num_classes, features), spectral) if num_classes else None
        )

    def forward(self, h: Tensor, labels: Tensor | None = None) -> Tensor:
        logits = self.linear(h).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * h).sum(dim=1)
        return logits


def check_conditional_norm(num_classes: int, batch: bool, alternative: str = "") -> None:
    """A conditional G takes its labels through conditional batch norm: without batch norm it would ignore them."""
    if num_classes and not batch:
        raise ConfigError(
            f"a conditional generator (num_classes={num_classes}) takes the labels through batch norm: set "
            f"normalization.generator to batch or spectral_batch{alternative}"
        )


def check_labels(labels: Tensor | None, num_classes: int) -> None:
    """Fail clearly when a conditional net gets no labels, or labels outside 0..num_classes-1."""
    if num_classes and labels is None:
        raise ConfigError(f"this network is conditional ({num_classes} classes) and needs class labels")


# --- self-attention -----------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gamma * o over all H*W positions; (N, C, H, W) -> same.

    Query and key are 1x1 convs to C/8 channels, the value a 1x1 conv to C/2 followed by a 1x1 conv back to C,
    as in SAGAN's official code (without its 2x2 max-pooling of keys and values: every position attends to
    every position). gamma starts at 0, so the block is the identity at initialisation. The map is explicit
    (N, HW, HW) memory rather than a fused attention kernel because fused kernels have no double backward,
    which gradient penalties need. Convs are bias-free and initialised N(0, 0.02) before spectral norm.
    """

    def __init__(self, channels: int, spectral: bool = False) -> None:
        super().__init__()
        qk, v = max(1, channels // 8), max(1, channels // 2)  # max(1, .): still buildable at tiny widths

        def conv(cin: int, cout: int) -> nn.Module:
            layer = nn.Conv2d(cin, cout, 1, bias=False)
            init_dcgan_weights(layer)
            return with_spectral_norm(layer, spectral)

        self.query, self.key, self.value = conv(channels, qk), conv(channels, qk), conv(channels, v)
        self.out = conv(v, channels)
        self.gamma = nn.Parameter(torch.zeros(()))

    def attention(self, x: Tensor) -> Tensor:
        """Attention weights (N, HW, HW): row i is query position i's softmax over all key positions."""
        q = self.query(x).flatten(2)  # (N, C/8, HW)
        k = self.key(x).flatten(2)
        return torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # SAGAN has no 1/sqrt(d) scaling

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        v = self.value(x).flatten(2)  # (N, C/2, HW)
        o = (v @ self.attention(x).transpose(1, 2)).view(n, -1, h, w)  # o_i = sum_j attn[i, j] v_j
        return x + self.gamma * self.out(o)
