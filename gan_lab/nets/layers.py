"""Building blocks shared by the architectures: the normalization table and weight init."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from gan_lab.errors import ConfigError

LayerFn = Callable[[nn.Module], nn.Module]  # a layer -> the layer to use (e.g. wrapped in spectral norm)


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN init (Radford et al. 2015): conv weights ~ N(0, 0.02), BN scale ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:  # conditional BN keeps its own scale/shift
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


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


# --- normalization ------------------------------------------------------------------------------------------
def no_weight_norm(layer: nn.Module) -> nn.Module:
    """The identity on a layer: its weight is used as is."""
    return layer


@dataclass(frozen=True)
class Norm:
    """What a normalization does to a network's layers; the nets ask it, never a name.

    - weight: applied to each conv, linear and embedding layer once initialised (identity, spectral_norm,
      weight_norm, ...); returns the layer to use.
    - features: channels -> the module after a layer (e.g. nn.BatchNorm2d), or None for no feature norm. When
      set, the layer before it has no bias, and D's first layer gets none (it would normalise the image away).
    - conditional: (channels, num_classes) -> the class-conditional version a conditional generator uses
      (ConditionalBatchNorm2d, called as module(x, labels)), or None: this norm cannot take labels.
    """

    weight: LayerFn = no_weight_norm
    features: Callable[[int], nn.Module] | None = None
    conditional: Callable[[int, int], nn.Module] | None = None


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


# The norm table: a new normalization is one entry here (and one YAML in conf/normalization/). A normalization
# of one's own needs neither: a YAML `_target_` returning a Norm is handed to the nets as is.
NORMS: dict[str, Norm] = {
    "none": Norm(),
    "batch": Norm(features=nn.BatchNorm2d, conditional=ConditionalBatchNorm2d),
    "spectral": Norm(weight=spectral_norm),
    "spectral_batch": Norm(weight=spectral_norm, features=nn.BatchNorm2d, conditional=ConditionalBatchNorm2d),
}


def get_norm(norm: str | Norm) -> Norm:
    """A Norm as is, or the table's Norm of that name; else a one-line ConfigError saying what is valid."""
    if isinstance(norm, Norm):
        return norm
    if not isinstance(norm, str):
        shown = " ".join(repr(norm).split())  # one line whatever the object prints
        raise ConfigError(
            f"normalization {shown[:100]} is neither a name ({', '.join(NORMS)}) nor a gan_lab.nets.layers.Norm; "
            "a normalization of your own is a `_target_` that returns a Norm"
        )
    if norm not in NORMS:
        raise ConfigError(f"unknown normalization '{norm}'; choose one of: {', '.join(NORMS)}")
    return NORMS[norm]


def generator_norm(spec: Norm, channels: int, num_classes: int) -> nn.Module:
    """The generator's norm after a layer: its class-conditional version when conditional, else its features."""
    if spec.features is None:
        return nn.Identity()
    if num_classes:
        check_conditional_norm(num_classes, spec)
        return spec.conditional(channels, num_classes)
    return spec.features(channels)


def check_conditional_norm(num_classes: int, spec: Norm, alternative: str = "") -> None:
    """A conditional G takes its labels through conditional batch norm: without one it would ignore them."""
    if num_classes and spec.conditional is None:
        can = " or ".join(name for name, norm in NORMS.items() if norm.conditional is not None)
        raise ConfigError(
            f"a conditional generator (num_classes={num_classes}) takes the labels through batch norm: set "
            f"normalization.generator to {can}{alternative}"
        )


# --- class conditioning -------------------------------------------------------------------------------------
class LabelSequential(nn.Sequential):
    """nn.Sequential that also hands the class labels to the layers that take them (`takes_labels = True`)."""

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        for layer in self:
            x = layer(x, labels) if getattr(layer, "takes_labels", False) else layer(x)
        return x


def check_labels(labels: Tensor | None, num_classes: int) -> None:
    """Fail clearly when a conditional net gets no labels, or labels outside 0..num_classes-1."""
    if num_classes and labels is None:
        raise ConfigError(f"this network is conditional ({num_classes} classes) and needs class labels")


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """F.one_hot (int64, (N, num_classes)) without its host sync.

    F.one_hot reads the labels' range back from the GPU at every call, which stalls the host and cannot run in a
    CUDA graph (speed.capture). The range is checked on the device instead: out-of-range labels still raise.
    """
    in_range = ((labels >= 0) & (labels < num_classes)).all()
    torch._assert_async(in_range, f"class labels must be in 0..{num_classes - 1}")
    return (labels[:, None] == torch.arange(num_classes, device=labels.device)).long()


class ProjectionHead(nn.Module):
    """Projection discriminator output (Miyato & Koyama 2018): linear(h) + <embed(y), h>; (N, F) -> (N,).

    With num_classes = 0 it is the plain linear logit, so unconditional models share the code.
    """

    def __init__(self, features: int, num_classes: int = 0, weight: LayerFn = no_weight_norm) -> None:
        super().__init__()
        self.linear = weight(nn.Linear(features, 1))
        self.embed = weight(nn.Embedding(num_classes, features)) if num_classes else None

    def forward(self, h: Tensor, labels: Tensor | None = None) -> Tensor:
        logits = self.linear(h).squeeze(1)
        if self.embed is not None:
            logits = logits + (self.embed(labels) * h).sum(dim=1)
        return logits


# --- self-attention -----------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """SAGAN self-attention (Zhang et al. 2019): x + gamma * o over all H*W positions; (N, C, H, W) -> same.

    Query and key are 1x1 convs to C/8 channels, the value a 1x1 conv to C/2 followed by a 1x1 conv back to C,
    as in SAGAN's official code (without its 2x2 max-pooling of keys and values: every position attends to
    every position). gamma starts at 0, so the block is the identity at initialisation. The map is explicit
    (N, HW, HW) memory rather than a fused attention kernel because fused kernels have no double backward,
    which gradient penalties need. Convs are bias-free and initialised N(0, 0.02) before `weight` (a Norm's
    weight: spectral norm in SAGAN) wraps them.
    """

    def __init__(self, channels: int, weight: LayerFn = no_weight_norm) -> None:
        super().__init__()
        qk, v = max(1, channels // 8), max(1, channels // 2)  # max(1, .): still buildable at tiny widths

        def conv(cin: int, cout: int) -> nn.Module:
            layer = nn.Conv2d(cin, cout, 1, bias=False)
            init_dcgan_weights(layer)
            return weight(layer)

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
