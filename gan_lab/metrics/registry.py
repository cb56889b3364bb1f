"""Every metric gan_lab logs, by kind: how its name is written and which direction is better.

A metric's name says what it measured (the sample count, the reference split, the resolution the images were
scored at, and for precision/recall the feature space), so two numbers with the same name were measured the
same way: `fid5k_train32`, `kid10k_test32`, `is50k_32`, `precision10k_test32_vgg16`. The clean-fid resizer adds
`_clean`. This module is the one place that knows which way is better; report, callbacks, loggers and the
training objective ask it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricKind:
    """One kind of metric: its name prefix, its direction, and what it is."""

    prefix: str
    higher_is_better: bool
    description: str
    has_reference: bool = True  # measured against real images (IS is not)
    has_features: bool = False  # the feature space is part of the name (precision/recall/density/coverage)


KINDS: dict[str, MetricKind] = {
    "fid": MetricKind("fid", False, "Fréchet Inception Distance (Heusel et al. 2017)"),
    "kid": MetricKind("kid", False, "Kernel Inception Distance (Bińkowski et al. 2018), unbiased MMD²"),
    "isc": MetricKind("is", True, "Inception Score (Salimans et al. 2016)", has_reference=False),
    "precision": MetricKind(
        "precision", True, "improved precision (Kynkäänniemi et al. 2019)", has_features=True
    ),
    "recall": MetricKind("recall", True, "improved recall (Kynkäänniemi et al. 2019)", has_features=True),
    "density": MetricKind("density", True, "density (Naeem et al. 2020)", has_features=True),
    "coverage": MetricKind("coverage", True, "coverage (Naeem et al. 2020)", has_features=True),
}


def count_name(n: int) -> str:
    """500 -> '500', 5000 -> '5k', 50000 -> '50k': the sample count in a metric name."""
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def metric_name(
    kind: str,
    count: int,
    split: str,
    resolution: int,
    resizer: str = "legacy",
    features: str | None = None,
) -> str:
    """The name of one measurement, e.g. metric_name('fid', 5000, 'train', 32) == 'fid5k_train32'."""
    k = KINDS[kind]
    name = f"{k.prefix}{count_name(count)}_"
    name += f"{split}{resolution}" if k.has_reference else str(resolution)
    if k.has_features and features:
        name += f"_{features}"
    return name + ("_clean" if resizer == "clean" else "")


_PREFIXES = sorted(((k.prefix, kind) for kind, k in KINDS.items()), key=lambda p: -len(p[0]))


def kind_of(name: str) -> str | None:
    """The kind of a logged name ('val/fid5k_train32' -> 'fid'), or None if it is not a metric.

    `*_std` columns (KID's and IS's spreads) are not metrics of their own: None.
    """
    base = name.rsplit("/", 1)[-1]
    if base.endswith("_std"):
        return None
    for prefix, kind in _PREFIXES:
        if re.fullmatch(rf"{prefix}\d+k?_.*", base):
            return kind
    return None


def higher_is_better(name: str) -> bool:
    """Whether a larger value of this metric (a kind, or a logged name such as 'val/is5k_32') is better."""
    kind = name if name in KINDS else kind_of(name)
    if kind is None:
        raise KeyError(f"{name} is not a metric gan_lab knows ({', '.join(KINDS)})")
    return KINDS[kind].higher_is_better


def better(name: str, a: float, b: float) -> bool:
    """Whether value a is strictly better than value b for metric `name`."""
    return a > b if higher_is_better(name) else a < b
