"""Named evaluation protocols and the resolution images are scored at.

A protocol pins everything that changes an FID: generated and real sample counts, the reference split, the
resolution and the resizer into Inception. `metrics.protocol=fid10k_test` gives a number comparable with a
published table measured the same way; without a protocol, the metrics.* keys say what is measured, and the
metric's name says it (`fid500_train32`).

Resolution (`metrics.resolution`): `native` scores at the dataset's own resolution (CIFAR-10: 32²) when the
generator's is at least that, so a 64² generator trained on upsampled CIFAR is compared with CIFAR's real
pixels, as every published CIFAR-10 number is; `model` scores at the generator's resolution (real images are
resized to it, upsampled if the dataset is smaller: not comparable with papers); an integer picks one.
Generated images are reduced with a box filter in float (e.g. a 2x2 mean from 64² to 32²) and quantized once;
real images are never upsampled except under `model`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gan_lab.errors import ConfigError

log = logging.getLogger(__name__)

RESIZERS = {
    "legacy": "torch-fidelity's TF1-compatible bilinear resize to 299² inside the Inception network (TF-FID, "
    "StudioGAN, Mimicry, StyleGAN2-ADA)",
    "clean": "clean-fid's resize: PIL bicubic per channel in float to 299², fed unquantized (Parmar et al. 2022)",
}
ALL = "all"  # num_real: the whole reference split


@dataclass(frozen=True)
class Protocol:
    """A published way of measuring FID, by name."""

    name: str
    num_fake: int
    num_real: int | str  # a count, or "all": the whole reference split
    reference_split: str
    source: str
    resolution: str | int = "native"
    resizer: str = "legacy"


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "fid10k_test", 10_000, 10_000, "test",
            "PyTorch-StudioGAN's CIFAR-10 tables of 2020-2022 (README at commit 8ac1fa1): 10k generated vs the "
            "10k test images at 32², TF Inception weights (StudioGAN resized with torch's bilinear, pytorch-fid; "
            "the legacy resizer here is TF1's bilinear, as TF-FID: a small difference)",
        ),
        Protocol(
            "fid50k_train", 50_000, ALL, "train",
            "Mimicry (50k generated vs the 50k training images, TF Inception) and StyleGAN2-ADA's fid50k_full "
            "(50k generated vs the whole training set, TorchScript TF Inception with its own bilinear resize); "
            "also the sample counts of StudioGAN's current CIFAR-10 table, which resizes with PIL bilinear",
        ),
        Protocol(
            "fid50k_train_clean", 50_000, ALL, "train",
            "clean-fid's `clean` mode (Parmar et al. 2022): 50k generated vs the whole training set, PIL bicubic "
            "resize in float into Inception",
            resizer="clean",
        ),
        Protocol(
            "fid5k_train", 5_000, 10_000, "train",
            "a cheap progress check, not a published table: 5k generated vs 10k training images",
        ),
    )
}  # fmt: skip

# The fields a protocol pins, with the MetricSettings defaults that mean "not set by the user".
PINNED = {
    "num_fake": None,
    "num_real": None,
    "reference_split": "train",
    "resolution": "native",
    "resizer": "legacy",
}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`, or a one-line error listing them."""
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown metrics.protocol={name}; choose one of {', '.join(PROTOCOLS)} (or null)")
    return PROTOCOLS[name]


def pinned_values(name: str, chosen: dict[str, object]) -> dict[str, object]:
    """The protocol's values for the pinned keys; an explicit, different user value is an error."""
    protocol = get_protocol(name)
    pinned = {key: getattr(protocol, key) for key in PINNED}
    for key, default in PINNED.items():
        value = chosen.get(key, default)
        if value != default and value != pinned[key]:
            raise ConfigError(
                f"metrics.protocol={name} pins metrics.{key}={pinned[key]}, but metrics.{key}={value} was set; "
                f"drop metrics.{key}, or drop metrics.protocol to measure your own way"
            )
    return pinned


def check_resolution_setting(value: object) -> str | int:
    """metrics.resolution checked: 'native', 'model' or a positive integer."""
    if value in ("native", "model"):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"metrics.resolution={value!r} is not valid; choose native (the dataset's own, e.g. 32 for "
            "CIFAR-10), model (the generator's) or a positive integer such as 32"
        )
    return value


def check_resizer(value: str) -> str:
    if value not in RESIZERS:
        raise ConfigError(f"unknown metrics.resizer={value}; choose one of {', '.join(RESIZERS)}")
    return value


def metric_resolution(setting: str | int, model: int, native: int | None) -> int:
    """The resolution images are scored at, from metrics.resolution and the generator's and dataset's own."""
    setting = check_resolution_setting(setting)
    if setting == "model":
        if native is not None and model > native:
            log.warning(
                "metrics.resolution=model scores at %d² against real images upsampled from their native %d²: "
                "such numbers are not comparable with published ones (metrics.resolution=native is)",
                model,
                native,
            )
        return model
    if setting == "native":
        return min(model, native) if native is not None else model
    if setting > model:
        raise ConfigError(
            f"metrics.resolution={setting} is above the generator's {model}², so generated images would be "
            f"upsampled; use metrics.resolution={model} or lower (or native)"
        )
    if native is not None and setting > native:
        raise ConfigError(
            f"metrics.resolution={setting} is above the dataset's native {native}², so real images would be "
            f"upsampled; use metrics.resolution=native ({native}) or metrics.resolution=model"
        )
    return setting
