"""cfg -> the objects of a run: the DataModule, the GANModule and the Lightning Trainer.

The entry points (train, reproduce, tests) compose a config and call these; nothing here trains.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar, Timer
from omegaconf import DictConfig, OmegaConf

from gan_lab.callbacks import InLoopMetrics, LastCheckpoint
from gan_lab.core.augment import Augmentations
from gan_lab.core.module import GANModule
from gan_lab.core.regularizers import build_regularizer, lazy_interval
from gan_lab.core.speed import SpeedSettings
from gan_lab.errors import ConfigError
from gan_lab.metrics import settings_from_config
from gan_lab.run.checkpoint_io import AtomicCheckpointIO
from gan_lab.run.paths import RunDir
from gan_lab.run.preemption import PreemptionCheckpoint
from gan_lab.utils.config import redact_secrets
from gan_lab.utils.console import ModelSize


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, GANModule, pl.Trainer]:
    """The DataModule, GANModule and Trainer of a run.

    cfg is completed in place first, so that the networks are built with it and the config saved with the run
    (its config.yaml, its checkpoints) holds it: data paths made absolute, and a conditional model's class count
    (model.num_classes null) taken from the dataset. The speed settings are read once, for module and trainer."""
    absolutize_data_paths(cfg)
    datamodule = instantiate(cfg.dataset)
    resolve_num_classes(cfg, datamodule)
    module = build_module(cfg)
    return datamodule, module, build_trainer(cfg, module.speed)


def absolutize_data_paths(cfg: DictConfig) -> None:
    """Make data paths absolute in place, so the config stored in checkpoints works from any directory."""
    for node, key in ((cfg.paths, "data_dir"), (cfg.dataset, "root"), (cfg.dataset, "test_root")):
        value = node.get(key)
        if isinstance(value, str) and value:
            node[key] = str(Path(value).expanduser().absolute())


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    """The DataModule of cfg.dataset; sets model.num_classes from it for conditional models, as build() does."""
    datamodule = instantiate(cfg.dataset)
    resolve_num_classes(cfg, datamodule)
    return datamodule


def resolve_num_classes(cfg: DictConfig, datamodule: Any) -> None:
    """Set model.num_classes from the dataset for conditional models (null), checking an explicit count."""
    wanted, available = cfg.model.get("num_classes", 0), getattr(datamodule, "num_classes", 0)
    if wanted is None:
        if available < 2:
            raise ConfigError(
                f"model={cfg.model.name} is conditional but the dataset has no classes; use a dataset with labels "
                "(cifar10, or a folder with one subfolder per class) or an unconditional model"
            )
        cfg.model.num_classes = available
    elif wanted and wanted != available:
        raise ConfigError(
            f"model.num_classes={wanted} but the dataset has {available} classes; "
            "set model.num_classes=null to take the dataset's count"
        )


def regularizer_entries(group: DictConfig | None) -> list[Any]:
    """The regularizers the `regularizer` group names ({name: config}, beside `interval`), instantiated.

    A `_target_` at the group's top is one regularizer: a researcher's own single-file option, or the config of a
    run stored before the group took several."""
    entries = {k: v for k, v in (group or {}).items() if k != "interval"}
    if "_target_" in entries:
        return [instantiate(entries)]
    for name, entry in entries.items():
        if entry is not None:
            check_names_a_class(f"regularizer.{name}", entry, f"regularizer=[...,{name}]")
    return [instantiate(entry) for entry in entries.values() if entry is not None]


def check_names_a_class(key: str, node: Any, choose: str) -> None:
    """A config node that sets arguments but no `_target_` (a preset's setting for an option the command line
    replaced, e.g. model=r3gan's scheduler.eta_min after scheduler=none) stops with the fix."""
    if node and "_target_" not in node:
        raise ConfigError(
            f"{key} sets {', '.join(node)} but names no class (a preset's setting for an option the command line "
            f"dropped?); drop it with {' '.join(f'~{key}.{k}' for k in node)}, or choose one: {choose}"
        )


def speed_settings(cfg: DictConfig) -> SpeedSettings:
    """The run's speed settings: the `speed` group, trainer.precision (`auto` resolved) and trainer.accelerator."""
    trainer = cfg.get("trainer") or {}
    return SpeedSettings.from_config(
        cfg.get("speed"), trainer.get("precision", "auto"), trainer.get("accelerator", "auto")
    )


def build_module(cfg: DictConfig, speed: SpeedSettings | None = None) -> GANModule:
    """The GANModule described by cfg (model, loss, regularizer, optim, scheduler, n_critic, steps); `speed`:
    speed_settings(cfg) where not given."""
    check_names_a_class(
        "scheduler", {k: v for k, v in (cfg.scheduler or {}).items() if k != "interval"}, "scheduler=cosine"
    )
    regularizers = regularizer_entries(cfg.regularizer)
    speed = speed or speed_settings(cfg)
    interval = lazy_interval(cfg.regularizer.get("interval", 1))
    regularizer = build_regularizer(regularizers)
    augment = Augmentations(instantiate(cfg.get("augment")))
    config = redact_secrets(OmegaConf.to_container(cfg, resolve=True))
    return GANModule(
        generator=instantiate(cfg.model.generator),
        discriminator=instantiate(cfg.model.discriminator),
        loss=instantiate(cfg.loss),
        regularizer=regularizer,
        regularizer_interval=interval,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler else None,
        n_critic=cfg.n_critic,
        max_g_steps=cfg.steps,
        z_dim=cfg.model.z_dim,
        num_classes=cfg.model.num_classes,
        augment=augment,
        ema_decay=cfg.ema.decay,
        ema_start_step=cfg.ema.start_step,
        ema_rampup=cfg.ema.get("rampup"),  # absent in configs stored before it existed
        speed=speed,
        config=config,
    )


def build_metrics_callback(cfg: DictConfig) -> InLoopMetrics | None:
    """In-loop FID/KID/IS from conf/metrics, or None for metrics=none."""
    metrics = cfg.get("metrics") or {}
    if not metrics.get("enabled", False):
        return None
    settings = settings_from_config(metrics)
    if not (settings.fid or settings.kid or settings.isc or settings.extra):
        return None
    run = RunDir(cfg.paths.output_dir)
    return InLoopMetrics(
        settings,
        OmegaConf.to_container(cfg.dataset, resolve=True),
        every=metrics.every,
        unit=metrics.every_unit,
        best_ckpt_path=str(run.best_ckpt),
        plot_path=str(run.fid_curve),
        required=metrics.get("required", True),
        best_metric=metrics.get("best_metric", "fid"),
    )


def time_budget(cfg: DictConfig) -> float | None:
    """`budget`: minutes of training (a number > 0), or None; ConfigError otherwise."""
    budget = cfg.get("budget")
    if budget is None:
        return None
    number = isinstance(budget, (int, float)) and not isinstance(budget, bool)
    if not (number and math.isfinite(budget) and budget > 0):
        raise ConfigError(
            f"budget must be a number of minutes > 0 (or null: none), got {budget!r}; e.g. budget=30"
        )
    return float(budget)


def build_trainer(cfg: DictConfig, speed: SpeedSettings | None = None) -> pl.Trainer:
    """The Lightning Trainer, with `speed`'s precision (speed_settings(cfg) where not given); a `steps` or `budget`
    budget replaces trainer.max_epochs.

    GANModule stops the run at `steps` generator steps; a Timer at `budget` minutes of training, counted over the
    whole run: the Timer is always there, so every checkpoint holds the training time so far and a resumed run
    goes on counting from it (`budget` replaces trainer.max_time). Checkpoints are written atomically, and
    SIGTERM / Ctrl+C save a resumable one (PreemptionCheckpoint).
    """
    budget = time_budget(cfg)
    callbacks = _instantiate_named(cfg.get("callbacks"))
    metrics_callback = build_metrics_callback(cfg)
    logger = _instantiate_named(cfg.get("logger"))  # logger=[] leaves no key: no logger
    speed = speed or speed_settings(cfg)
    overrides: dict[str, Any] = {"max_epochs": -1} if cfg.steps or budget else {}
    max_time = timedelta(minutes=budget) if budget else cfg.trainer.get("max_time")
    # Lightning adds a Timer only for max_time; this one also records the time of runs without a budget.
    callbacks.append(Timer(duration=max_time, interval="step"))
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag alone turns gan_lab's bar off too
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if metrics_callback is not None:
        callbacks.append(metrics_callback)
    callbacks.append(PreemptionCheckpoint(RunDir(cfg.paths.output_dir).checkpoints))
    if cfg.trainer.get("enable_model_summary", True):
        callbacks.append(ModelSize())  # one line in place of Lightning's table
    # The last checkpoint after every other callback of the step: what they log at a step is on disk with it
    callbacks.sort(key=lambda c: isinstance(c, LastCheckpoint))
    return instantiate(
        cfg.trainer,
        enable_model_summary=False,
        callbacks=callbacks,
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        precision=speed.precision,
        max_time=None,  # the Timer above
        **overrides,
    )


def _instantiate_named(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a {name: config} group such as callbacks or logger."""
    return [instantiate(entry) for entry in (group or {}).values() if entry is not None]
