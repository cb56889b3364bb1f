"""Building blocks shared by the architectures: the normalization table and weight init."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn
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
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def with_spectral_norm(layer: nn.Module, enabled: bool) -> nn.Module:
    """Wrap a layer's weight in torch's spectral-norm parametrization when enabled."""
    return spectral_norm(layer) if enabled else layer


def num_doublings(resolution: int, base: int = 4, minimum: int = 32) -> int:
    """log2(resolution / base) for a power-of-two resolution >= minimum, else a ConfigError saying why."""
    if resolution < minimum or resolution & (resolution - 1):
        raise ConfigError(
            f"dataset.resolution={resolution} cannot be built: this architecture needs a power of two "
            f">= {minimum} (e.g. 32, 64, 128, 256)"
        )
    return int(math.log2(resolution // base))
