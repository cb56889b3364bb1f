"""What a hyperparameter search optimizes: a run's best in-loop metric (`objective` in conf/train.yaml).

`python -m gan_lab.train` returns it, so Hydra's Optuna sweeper (`hydra/sweeper=optuna`) searches by FID. The
value is the raw metric (an FID, never a negated IS); the metric registry says which way is better, and
SearchObjective sets the study's direction from it before the first trial, so the two cannot disagree. A trial
that fails or diverges, or logs no such metric, reports the worst value in that direction (inf for FID, -inf
for IS) with a one-line reason: the search goes on and never picks it, and its status file still says failed.
(Optuna 2.x would also take NaN as a failed trial, but a search whose trials all failed then ends in an error
instead of a report, and the sampler learns nothing about the region: the worst value steers it away.)
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from gan_lab.errors import ConfigError, GanLabError, one_line
from gan_lab.metrics.registry import KINDS, higher_is_better, kind_of, register_extra

log = logging.getLogger(__name__)

DEFAULT_KIND = "fid"  # objective: null
# conf/metrics switches fid, kid and isc by their kind's name; these kinds share one switch.
_SWITCHES = {"precision": "prc", "recall": "prc", "density": "prc", "coverage": "prc"}


def resolve(objective: str | None) -> str:
    """The objective as a metric kind ('fid') or a logged name ('val/fid5k_train32'); ConfigError if neither."""
    if objective is None:
        return DEFAULT_KIND
    text = str(objective).strip()
    if text in KINDS:
        return text
    name = text if text.startswith("val/") else f"val/{text}"
    if kind_of(name) is None:
        raise ConfigError(
            f"objective={objective} is not a metric gan_lab logs; use null (the run's in-loop FID), a kind "
            f"({', '.join(KINDS)}) or a logged name such as fid5k_train32"
        )
    return name


def kind(objective: str | None) -> str:
    """The metric kind of an objective: 'fid' for null, 'kid' for 'val/kid500_train32'."""
    target = resolve(objective)
    return target if target in KINDS else kind_of(target)


def direction(objective: str | None) -> str:
    """'maximize' or 'minimize', from the metric registry."""
    return "maximize" if higher_is_better(resolve(objective)) else "minimize"


def worst(objective: str | None) -> float:
    """The value a failed trial reports: never better than any real measurement."""
    return -math.inf if higher_is_better(resolve(objective)) else math.inf


def worst_reported(objective: str | None) -> str:
    """How a failed trial's log line names its value: 'fid=inf (the worst value) to the search'."""
    return f"{resolve(objective).removeprefix('val/')}={worst(objective)} (the worst value) to the search"


def best_logged(history: Sequence[Mapping[str, Any]], objective: str | None) -> tuple[str, float] | None:
    """(logged name, best finite value) of the objective in an InLoopMetrics history, or None.

    A kind picks the first name of that kind the run logged (the run's protocol: `val/fid500_train32` on CPU
    defaults); a full name must match exactly.
    """
    name = _logged_name(history, objective)
    if name is None:
        return None
    values = [float(e[name]) for e in history if name in e and math.isfinite(float(e[name]))]
    if not values:
        return None
    return name, (max if higher_is_better(name) else min)(values)


def _logged_name(history: Sequence[Mapping[str, Any]], objective: str | None) -> str | None:
    target = resolve(objective)
    names = list(dict.fromkeys(k for entry in history for k in entry))
    if target in KINDS:
        return next((n for n in names if kind_of(n) == target), None)
    return target if target in names else None


def run_value(objective: str | None, callbacks: Iterable[Any]) -> tuple[float, str | None]:
    """(value, None) for a run's best logged objective, or (worst value, why there is none)."""
    from gan_lab.callbacks import InLoopMetrics

    label = "the in-loop FID" if objective is None else f"objective={objective}"
    metrics = next((c for c in callbacks if isinstance(c, InLoopMetrics)), None)
    if metrics is None:
        why = f"{label} was not measured: this run has no in-loop metrics (metrics=none, or every metric off)"
    elif metrics.evaluator is None:
        why = f"{label} was not measured: in-loop metrics were off (the Inception weights could not be had)"
    elif not metrics.history:
        why = (
            f"{label} was not measured: no in-loop evaluation ran (metrics.every={metrics.every} "
            f"{metrics.unit}s is longer than the run)"
        )
    else:
        found = best_logged(metrics.history, objective)
        if found is not None:
            return found[1], None
        logged = sorted({k for e in metrics.history for k in e if kind_of(k)})
        name = _logged_name(metrics.history, objective)
        why = (
            f"every {name} value this run logged is NaN or infinite"
            if name
            else f"{label} was not logged (this run logged {', '.join(logged) or 'no metric'})"
        )
    return worst(objective), why


def check_measurable(cfg: DictConfig) -> None:
    """ConfigError if the run's metrics config can never log the objective (a search would learn nothing)."""
    metrics = cfg.get("metrics") or {}
    register_extra(metrics.get("extra"))  # an objective may be a kind of the run's own metrics.extra
    objective = cfg.get("objective")
    what = f"objective={objective}" if objective is not None else "the in-loop FID (objective=null)"
    if not metrics.get("enabled", False):
        raise ConfigError(
            f"a search optimizes {what}, but metrics=none turns in-loop metrics off; use metrics=fid "
            "(in-loop FID/KID, Inception weights required)"
        )
    flag = _SWITCHES.get(kind(objective), kind(objective))  # conf/metrics' switch for this kind
    if metrics.get(flag) is False:
        raise ConfigError(
            f"a search optimizes {what}, but metrics.{flag}=false: the runs would never log it; "
            f"set metrics.{flag}=true or choose another objective"
        )


def in_search() -> bool:
    """Whether this job is a trial of an Optuna search (its return value is the trial's value)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return False
    hydra_cfg = HydraConfig.get()
    return hydra_cfg.mode == RunMode.MULTIRUN and _is_optuna(hydra_cfg.sweeper)


def _is_optuna(sweeper: Any) -> bool:
    return "optuna" in str((sweeper or {}).get("_target_", "")).lower()


def _direction_name(value: Any) -> str:
    return value.name if isinstance(value, Enum) else str(value)


def set_search_direction(cfg: DictConfig) -> None:
    """Set hydra.sweeper.direction from the objective; ConfigError if one was given that contradicts it.

    gan_lab returns the raw metric, so the direction is a fact about the metric (the registry's), not a choice:
    hydra.sweeper.direction may be left out, or set to the same value.
    """
    objective = cfg.get("objective")
    wanted = direction(objective)
    check_measurable(cfg)
    configured = cfg.hydra.sweeper.get("direction")
    if isinstance(configured, Sequence) and not isinstance(configured, str):
        if len(configured) != 1:
            raise ConfigError(
                "gan_lab trials return one value (the objective); give hydra.sweeper.direction one direction "
                "or leave it out"
            )
        configured = configured[0]
    name = _direction_name(configured)
    if name == wanted:
        return
    given = any(
        o.lstrip("+~").split("=", 1)[0] == "hydra.sweeper.direction" for o in cfg.hydra.overrides.hydra
    )
    if given or name != "minimize":  # the sweeper's default is minimize: anything else was asked for
        better = "higher" if wanted == "maximize" else "lower"
        raise ConfigError(
            f"hydra.sweeper.direction={name} but {kind(objective)} is better {better} and trials return it as "
            f"measured; leave hydra.sweeper.direction out (gan_lab sets it) or set hydra.sweeper.direction={wanted}"
        )
    with read_write(cfg.hydra), open_dict(cfg.hydra.sweeper):
        cfg.hydra.sweeper.direction = wanted
    log.info("searching with direction=%s: %s is better higher", wanted, kind(objective))


class SearchObjective(Callback):
    """Hydra callback (conf/train.yaml): before an Optuna search starts, check the objective can be measured
    and set the study's direction from the metric registry; a problem is one `gan_lab: error:` line, exit 1.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_optuna(config.hydra.get("sweeper")):
            return
        logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's import: "setup plugin ..." lines
        try:
            set_search_direction(config)
        except GanLabError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"gan_lab: error: {one_line(err)}", file=sys.stderr)
            sys.exit(1)
