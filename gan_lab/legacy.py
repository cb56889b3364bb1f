"""Every backward-compatibility shim of gan_lab, in one place; each says which stored artefact needs it.

A checkpoint or an export (`.ckpt`, `config.yaml`) keeps the run config it was written with, and a run folder
keeps its `metrics.csv`: what earlier gan_lab versions wrote there is read here into today's form. Nothing else
in gan_lab knows an old name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gan_lab.errors import ConfigError

# --- stored run configs (checkpoints, exports): classes by earlier homes, the regularizer group's old form ----

# Where the classes that earlier gan_lab versions stored in run configs live now: a checkpoint's or export's
# config names the home a class had when it was written. A key ending in "." moves every class of a module.
MOVED_TARGETS = {
    "gan_lab.losses.": "gan_lab.core.losses.",
    "gan_lab.regularizers.": "gan_lab.core.regularizers.",
    "gan_lab.augment.HFlip": "gan_lab.legacy.HFlip",
    "gan_lab.core.augment.HFlip": "gan_lab.legacy.HFlip",
    "gan_lab.augment.": "gan_lab.core.augment.",
    "gan_lab.checkpointing.LastCheckpoint": "gan_lab.callbacks.last_checkpoint.LastCheckpoint",
    "gan_lab.run.checkpoint_callback.LastCheckpoint": "gan_lab.callbacks.last_checkpoint.LastCheckpoint",
    "gan_lab.diversity.DiversityMonitor": "gan_lab.callbacks.diversity.DiversityMonitor",
    "gan_lab.callbacks.SampleGrid": "gan_lab.callbacks.sample_grid.SampleGrid",
    "gan_lab.callbacks.GANProgressBar": "gan_lab.callbacks.progress.GANProgressBar",
}


def upgraded_target(target: str) -> str:
    """The current dotted name of a `_target_` that a stored config may name by an old home (MOVED_TARGETS: a
    class's own entry before its module's)."""
    for old, new in MOVED_TARGETS.items():
        if target == old or (old.endswith(".") and target.startswith(old)):
            return new + target[len(old) :]
    return target


def upgrade_stored_config(config: Any) -> Any:
    """A plain copy of a stored run config (checkpoint or export) with every moved `_target_` renamed and the
    regularizer group in today's keyed form; the one step between reading a stored config and using it, so old
    checkpoints resume, sample and export."""
    config = _renamed_targets(config)
    if isinstance(config, Mapping) and isinstance(config.get("regularizer"), Mapping):
        config = {**config, "regularizer": _keyed_regularizer(config["regularizer"])}
    return config


def _renamed_targets(config: Any) -> Any:
    if isinstance(config, Mapping):
        return {
            k: upgraded_target(v) if k == "_target_" and isinstance(v, str) else _renamed_targets(v)
            for k, v in config.items()
        }
    if isinstance(config, (list, tuple)):
        return type(config)(_renamed_targets(v) for v in config)
    return config


# The built-in regularizers by the conf/regularizer/ option that names them.
_REGULARIZER_OPTIONS = {
    "gan_lab.core.regularizers.Regularizer": "none",
    "gan_lab.core.regularizers.WeightClip": "weight_clip",
    "gan_lab.core.regularizers.GradientPenalty": "gradient_penalty",
    "gan_lab.core.regularizers.R1Penalty": "r1",
}


def _keyed_regularizer(node: Mapping[str, Any]) -> dict[str, Any]:
    """Runs stored before the regularizer group took several (regularizer=[r1,r2]) hold one regularizer at the
    group's top ({_target_: R1Penalty, gamma: 10}) and no `interval`: today's {interval: 1, r1: {...}}, so that a
    resume naming `regularizer=r1` compares like with like. A researcher's own flat option stays flat (it builds)."""
    node = {"interval": 1, **node}
    option = _REGULARIZER_OPTIONS.get(node.get("_target_", ""))
    if option is None:
        return node
    interval = node.pop("interval")
    return {"interval": interval} if option == "none" else {"interval": interval, option: node}


# --- stored run configs' speed.capture=true -----------------------------------------------------------------


def capture_spelling(value: Any) -> Any:
    """speed.capture with `true` (a bool or its string) read as `nets`: run configs stored before capture had
    several modes say `true` for what `nets` names now. Every other value is returned as it is."""
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return "nets"
    return value


# --- stored run configs whose augment.hflip builds the removed HFlip ------------------------------------------

HFLIP_REPLACED = (
    "augment.hflip (flips on the global RNG) was replaced by dataset.hflip=true, the sampler's resumable "
    "flips (each image mirrored with probability 0.5); use augment=hflip or dataset.hflip=true in a new run "
    "(a run stored with augment.hflip cannot be resumed)"
)


class HFlip:
    """The removed flip op, still named by stored configs: building it says what replaced it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ConfigError(HFLIP_REPLACED)


# --- stored checkpoints' callback state and runs' metrics.csv -----------------------------------------------


def stored_best_value(state: Mapping[str, Any]) -> float | None:
    """The best metric value kept by InLoopMetrics: `best_value`, or `best_fid` in checkpoints written before
    best_metric existed (FID only)."""
    return state.get("best_value", state.get("best_fid"))


# 'val/is500': Inception Score columns of runs logged before metric names carried the resolution.
OLD_IS_COLUMN = re.compile(r"(?:.*/)?is\d+k?")
