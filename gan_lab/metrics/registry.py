"""Every metric gan_lab logs, by kind: how its name is written, which direction is better, how it is computed.

A metric's name says what it measured (the sample count, the reference split, the resolution the images were
scored at, and for precision/recall the feature space), so two numbers with the same name were measured the
same way: `fid5k_train32`, `kid10k_test32`, `is50k_32`, `precision10k_test32_vgg16`. The clean-fid resizer adds
`_clean`. This module is the one place that knows which way is better; report, callbacks, loggers and the
training objective ask it.

A metric of your own is one class and one YAML entry. The class (in your own package, e.g. my_lab/metrics.py)::

    @dataclass
    class MeanFeatureDistance(MetricKind):
        prefix: str = "mfd"
        higher_is_better: bool = False
        description: str = "squared distance between the mean pool features of fake and real images"

        def compute(self, fake: Tensor, real: Tensor | None) -> float:
            return float((fake.mean(0) - real.mean(0)).square().sum())

and in conf/metrics/*.yaml (or your own config dir, added with hydra.searchpath)::

    extra:
      mfd: {_target_: my_lab.metrics.MeanFeatureDistance}

`register_extra` builds it (Hydra) and registers it for the process, so it is computed by the Evaluator
(python -m gan_lab.evaluate and the in-loop callback), logged as e.g. `val/mfd5k_train32`, and its direction
is known to everything that asks this module.
"""

from __future__ import annotations

import pydoc
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from gan_lab.errors import ConfigError
from gan_lab.metrics.features import LOGITS, POOL, VGG

FEATURE_KEYS = {POOL: "inception", LOGITS: "logits", VGG: "vgg16"}  # a kind's `features` -> its name's word


@dataclass(kw_only=True)
class MetricKind:
    """One kind of metric: its name prefix, its direction, what it is, and the features it is computed from.

    The built-ins are computed by torch-fidelity and prdc (gan_lab.metrics.scores.compute_metrics); a kind of
    your own overrides `compute`.
    """

    prefix: str  # the start of its logged name: 'fid' -> fid5k_train32
    higher_is_better: bool
    description: str
    has_reference: bool = True  # measured against real images (IS is not)
    has_features: bool = False  # the feature space is part of the name (precision/recall/density/coverage)
    features: str = POOL  # what `compute` is given: POOL (Inception 2048-d), LOGITS (Inception 1008) or VGG

    def compute(self, fake: Tensor, real: Tensor | None) -> float | Mapping[str, float]:
        """The value from fake features (N, F) and real ones (M, F) (None without a reference), or
        {'value': v, 'std': s} for a value with a spread (logged as NAME and NAME_std)."""
        raise NotImplementedError(f"{type(self).__name__} does not define compute(fake, real)")


KINDS: dict[str, MetricKind] = {
    "fid": MetricKind(
        prefix="fid", higher_is_better=False, description="Fréchet Inception Distance (Heusel et al. 2017)"
    ),
    "kid": MetricKind(
        prefix="kid",
        higher_is_better=False,
        description="Kernel Inception Distance (Bińkowski et al. 2018), unbiased MMD²",
    ),
    "isc": MetricKind(
        prefix="is",
        higher_is_better=True,
        description="Inception Score (Salimans et al. 2016)",
        has_reference=False,
        features=LOGITS,
    ),
    "precision": MetricKind(
        prefix="precision",
        higher_is_better=True,
        description="improved precision (Kynkäänniemi et al. 2019)",
        has_features=True,
    ),
    "recall": MetricKind(
        prefix="recall",
        higher_is_better=True,
        description="improved recall (Kynkäänniemi et al. 2019)",
        has_features=True,
    ),
    "density": MetricKind(
        prefix="density", higher_is_better=True, description="density (Naeem et al. 2020)", has_features=True
    ),
    "coverage": MetricKind(
        prefix="coverage",
        higher_is_better=True,
        description="coverage (Naeem et al. 2020)",
        has_features=True,
    ),
}
BUILT_IN = tuple(KINDS)  # computed by scores.compute_metrics; every other kind was registered (metrics.extra)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PREFIX = re.compile(r"[a-z]([a-z0-9_]*[a-z_])?")  # no trailing digit: the sample count follows it


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


def kind_of(name: str) -> str | None:
    """The kind of a logged name ('val/fid5k_train32' -> 'fid'), or None if it is not a metric.

    `*_std` columns (KID's and IS's spreads) are not metrics of their own: None.
    """
    base = name.rsplit("/", 1)[-1]
    if base.endswith("_std"):
        return None
    for kind, k in sorted(KINDS.items(), key=lambda item: -len(item[1].prefix)):  # 'precision' before 'p...'
        if re.fullmatch(rf"{re.escape(k.prefix)}\d+k?_.*", base):
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


def register(name: str, kind: MetricKind) -> MetricKind:
    """Make a kind of your own known to this process (its name, direction); ConfigError on a clash.

    Registering the same name again with the same prefix and direction replaces it (a sweep run in one process
    may change its arguments); anything else that reuses a built-in kind, a registered name or a prefix clashes.
    """
    where = f"metrics.extra.{name}"
    if not isinstance(kind, MetricKind):
        raise ConfigError(
            f"{where} built a {type(kind).__name__}, not a gan_lab.metrics.MetricKind; subclass MetricKind"
        )
    if type(kind).compute is MetricKind.compute:
        raise ConfigError(f"{where}: {type(kind).__name__} does not define compute(fake, real)")
    if not _NAME.fullmatch(str(name)) or name.endswith(("_std", "_mean")):
        raise ConfigError(
            f"{where}: '{name}' is not a metric kind name (lowercase letters, digits and _, not ending in _std)"
        )
    if not isinstance(kind.prefix, str) or not _PREFIX.fullmatch(kind.prefix):
        raise ConfigError(
            f"{where}: prefix '{kind.prefix}' must be lowercase letters, digits and _, not ending in a digit"
        )
    if kind.features not in FEATURE_KEYS:
        raise ConfigError(
            f"{where}: features='{kind.features}' is not a feature key; use one of {', '.join(FEATURE_KEYS)}"
        )
    if name in BUILT_IN:
        raise ConfigError(
            f"{where} clashes with the built-in metric kind '{name}'; give your kind another name"
        )
    for other, k in KINDS.items():
        if other != name and k.prefix == kind.prefix:
            built_in = "built-in " * (other in BUILT_IN)
            raise ConfigError(
                f"{where}: prefix '{kind.prefix}' is already the prefix of the {built_in}metric kind '{other}'; "
                f"set another prefix (e.g. {name}: {{_target_: ..., prefix: my{kind.prefix}}})"
            )
    known = KINDS.get(name)
    if known is not None and (known.prefix, known.higher_is_better) != (kind.prefix, kind.higher_is_better):
        raise ConfigError(
            f"{where} clashes with the metric kind '{name}' already registered in this process ({known.prefix}, "
            f"{'higher' if known.higher_is_better else 'lower'} is better); give your kind another name"
        )
    KINDS[name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget a registered kind (tests); the built-in kinds stay."""
    if name in BUILT_IN:
        raise ConfigError(f"the built-in metric kind '{name}' cannot be unregistered")
    KINDS.pop(name, None)


def register_extra(
    extra: Mapping[str, Any] | Sequence[Any] | None, reserved: Collection[str] = ()
) -> dict[str, MetricKind]:
    """metrics.extra built and registered: {name: MetricKind}.

    `extra` maps a kind name to a config with `_target_` (Hydra builds it) or to a MetricKind; a list is named
    by each kind's prefix; a null entry is left out (`metrics.extra.mfd=null` turns one off). `reserved`: names
    a caller uses for something else (the Evaluator's result fields).
    """
    if not extra:
        return {}
    if isinstance(extra, Mapping):
        items = list(extra.items())
    elif isinstance(extra, Sequence) and not isinstance(extra, str):
        items = [(None, spec) for spec in extra]
    else:
        raise ConfigError(
            f"metrics.extra must map names to metric kinds ({{mfd: {{_target_: ...}}}}), got {extra!r}"
        )
    kinds: dict[str, MetricKind] = {}
    for name, spec in items:
        if spec is None:
            continue
        kind = spec if isinstance(spec, MetricKind) else _build(name, spec)
        name = kind.prefix if name is None and isinstance(kind, MetricKind) else name
        if name in kinds:
            raise ConfigError(f"metrics.extra names the metric kind '{name}' twice")
        if name in reserved:
            raise ConfigError(
                f"metrics.extra.{name}: '{name}' is a field of the results; name your kind otherwise"
            )
        kinds[str(name)] = register(str(name), kind)
    return kinds


def _build(name: str | None, spec: Any) -> MetricKind:
    """A kind from its config, by Hydra; a target that cannot be built is one ConfigError line.

    The target must be a MetricKind class, checked before anything is called: a config read back from a run
    (resume, report) names only a class to build, never an arbitrary callable.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    where = f"metrics.extra.{name}" if name is not None else "metrics.extra"
    spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(f"{where} needs a _target_ naming a MetricKind class, e.g. my_lab.metrics.MyMetric")
    target = str(spec["_target_"])
    try:
        cls = pydoc.locate(target)
    except pydoc.ErrorDuringImport as err:
        reason = " ".join(str(err.value).split())[:300]
        raise ConfigError(
            f"{where}: importing {target} failed: {type(err.value).__name__}: {reason}"
        ) from err
    if cls is None:
        raise ConfigError(
            f"{where}: cannot import {target}; is its package importable (pip install -e, or PYTHONPATH)?"
        )
    if not (isinstance(cls, type) and issubclass(cls, MetricKind)):
        raise ConfigError(f"{where}: {target} is not a subclass of gan_lab.metrics.MetricKind")
    try:
        return instantiate(spec)
    except InstantiationException as err:
        reason = " ".join(str(err.__cause__ or err).split())[:300]
        raise ConfigError(f"{where}: cannot build {target}: {reason}") from err
