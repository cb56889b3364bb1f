"""`python -m gan_lab.train [group=option ...] [key=value ...]`: compose the config, build, and fit."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from gan_lab import ddp, objective
from gan_lab.augment import Augmentations
from gan_lab.callbacks import InLoopMetrics
from gan_lab.cli import config_errors_as_one_line, user_errors_as_one_line
from gan_lab.errors import ConfigError, one_line, user_error
from gan_lab.metrics import settings_from_config
from gan_lab.module import GANModule
from gan_lab.precision import resolve_precision
from gan_lab.run.checkpoint_io import AtomicCheckpointIO, load_checkpoint
from gan_lab.run.paths import RunDir
from gan_lab.run.preemption import Preempted, PreemptionCheckpoint
from gan_lab.run.resume import check_same_architecture, find_checkpoint, resume_config, trim_metrics_csv
from gan_lab.utils.config import redact_secrets
from gan_lab.utils.console import ModelSize, quiet_third_party
from gan_lab.utils.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger("gan_lab.train")
quiet_third_party()


def build_module(cfg: DictConfig) -> GANModule:
    """The GANModule described by cfg (model, loss, regularizer, optim, scheduler, n_critic, steps)."""
    return GANModule(
        generator=instantiate(cfg.model.generator),
        discriminator=instantiate(cfg.model.discriminator),
        loss=instantiate(cfg.loss),
        regularizer=instantiate(cfg.regularizer),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler else None,
        n_critic=cfg.n_critic,
        max_g_steps=cfg.steps,
        z_dim=cfg.model.z_dim,
        num_classes=cfg.model.num_classes,
        augment=Augmentations(instantiate(cfg.get("augment"))),
        ema_decay=cfg.ema.decay,
        ema_start_step=cfg.ema.start_step,
        channels_last=bool((cfg.get("speed") or {}).get("channels_last", False)),
        compile=bool((cfg.get("speed") or {}).get("compile", False)),
        config=redact_secrets(OmegaConf.to_container(cfg, resolve=True)),
    )


def _instantiate_named(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a {name: config} group such as callbacks or logger."""
    return [instantiate(entry) for entry in (group or {}).values() if entry is not None]


def build_metrics_callback(cfg: DictConfig) -> InLoopMetrics | None:
    """In-loop FID/KID/IS from conf/metrics, or None for metrics=none."""
    metrics = cfg.get("metrics") or {}
    if not metrics.get("enabled", False):
        return None
    settings = settings_from_config(metrics)
    if not (settings.fid or settings.kid or settings.isc):
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
    )


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """The Lightning Trainer; a `steps` budget replaces trainer.max_epochs (GANModule stops the run).

    Checkpoints are written atomically, and SIGTERM / Ctrl+C save a resumable one (PreemptionCheckpoint).
    """
    overrides = {"max_epochs": -1} if cfg.steps else {}
    callbacks = _instantiate_named(cfg.callbacks)
    if not cfg.trainer.get("enable_progress_bar", True):  # the flag alone turns gan_lab's bar off too
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    metrics_callback = build_metrics_callback(cfg)
    if metrics_callback is not None:
        callbacks.append(metrics_callback)
    callbacks.append(PreemptionCheckpoint(RunDir(cfg.paths.output_dir).checkpoints))
    if cfg.trainer.get("enable_model_summary", True):
        callbacks.append(ModelSize())  # one line in place of Lightning's table
    return instantiate(
        cfg.trainer,
        enable_model_summary=False,
        callbacks=callbacks,
        logger=_instantiate_named(cfg.logger),
        plugins=[AtomicCheckpointIO()],
        precision=resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator),
        **overrides,
    )


def check_writable(directory: Path) -> None:
    """Create the run directory and prove it takes files, before anything is trained."""
    probe = directory / f".write_test_{time.time_ns()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write to the output directory {directory} ({err.strerror or err}); choose a writable "
            "one with hydra.run.dir=PATH (or paths.output_dir=PATH), or fix its permissions"
        ) from err


def absolutize_data_paths(cfg: DictConfig) -> None:
    """Make data paths absolute in place, so the config stored in checkpoints works from any directory."""
    for node, key in ((cfg.paths, "data_dir"), (cfg.dataset, "root"), (cfg.dataset, "test_root")):
        value = node.get(key)
        if isinstance(value, str) and value:
            node[key] = str(Path(value).expanduser().absolute())


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


@rank_zero_only  # DDP ranks share the run directory
def save_config(cfg: DictConfig, path: Path) -> None:
    """The resolved config, as run (values of secret-looking keys redacted)."""
    config = OmegaConf.create(redact_secrets(OmegaConf.to_container(cfg, resolve=True)))
    atomic_write_text(path, OmegaConf.to_yaml(config))


@rank_zero_only
def write_status(output_dir: Path, status: str, started: float, **extra: Any) -> None:
    """The run's status file: running / completed / failed / preempted, wall time, and what went wrong."""
    record = {"status": status, "wall_time_s": round(time.time() - started, 1), **extra}
    atomic_write_text(
        RunDir(output_dir).status, json.dumps(record, indent=2) + "\n"
    )  # a report never reads half


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> GANModule:
    """Build data, module and trainer from cfg and fit; returns the trained module.

    With cfg.resume set, the run continues from that checkpoint with the checkpoint's config (see
    gan_lab.run.resume); `overrides` are the command-line overrides, checked against it. The run directory
    gets a status file, so a sweep report can tell finished, failed, preempted and running jobs apart.
    """
    ckpt_path, checkpoint = None, None
    if cfg.get("resume"):
        ckpt_path = find_checkpoint(cfg.resume)
        checkpoint = load_checkpoint(ckpt_path)  # weights_only: a shared checkpoint cannot run code
        cfg = resume_config(cfg, checkpoint, ckpt_path, overrides)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set, e.g. {missing[0]}=... on the command line")
    absolutize_data_paths(cfg)
    output_dir = Path(cfg.paths.output_dir)
    run = RunDir(output_dir)
    check_writable(output_dir)
    # A run that fails before its first step (bad input) puts back an earlier run's files it replaced.
    earlier = {p.name: p.read_bytes() for p in (run.config_file, run.status) if p.is_file()}
    started, module, trainer = time.time(), None, None
    write_status(output_dir, "running", started)
    try:
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = instantiate(cfg.dataset)
        resolve_num_classes(cfg, datamodule)
        save_config(cfg, run.config_file)
        module = build_module(cfg)
        if checkpoint is not None:
            check_same_architecture(module.state_dict(), checkpoint, ckpt_path)
            g_steps = int(checkpoint.get("gan_lab", {}).get("g_steps", 0))
            trim_metrics_csv(run.metrics, g_steps)
            log.info("resuming %s from %s at generator step %d", output_dir, ckpt_path, g_steps)
            checkpoint = None  # Lightning reads the file itself; free the memory
        trainer = build_trainer(cfg)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except BaseException as exc:
        g_steps = module.g_steps if module else 0
        preemption = _preemption_callback(trainer)
        if isinstance(exc, SIGTERMException) and preemption is not None and preemption.saved:
            write_status(output_dir, "preempted", started, g_steps=g_steps, checkpoint=str(preemption.path))
            raise preemption.error(g_steps) from exc
        err = user_error(exc)
        reason = one_line(err) if err else f"{type(exc).__name__}: {exc}"
        if earlier and (module is None or module.d_steps == 0):
            restore_files(output_dir, earlier)
        else:
            write_status(output_dir, "failed", started, error=reason, g_steps=g_steps)
        raise
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # the next multirun job starts its own DDP ranks
    write_status(output_dir, "completed", started, g_steps=module.g_steps)
    log.info("finished after %d generator steps; outputs in %s", module.g_steps, output_dir)
    return module


@rank_zero_only
def restore_files(directory: Path, contents: dict[str, bytes]) -> None:
    for name, content in contents.items():
        atomic_write_bytes(directory / name, content)


def _preemption_callback(trainer: pl.Trainer | None) -> PreemptionCheckpoint | None:
    callbacks = trainer.callbacks if trainer is not None else []
    return next((c for c in callbacks if isinstance(c, PreemptionCheckpoint)), None)


def run_objective(cfg: DictConfig, module: GANModule) -> float:
    """The trained run's objective (cfg.objective, default its best in-loop FID), as measured.

    A run that logged none gets the worst value (inf for FID, -inf for IS), with a warning line saying why in a
    search, where the value is a trial's result.
    """
    value, why = objective.run_value(cfg.get("objective"), module.trainer.callbacks)
    if why and objective.in_search():
        log.warning("%s; this trial reports %s", why, objective.worst_reported(cfg.get("objective")))
    return value


def failed_trial(cfg: DictConfig, exc: Exception) -> float:
    """A search trial that failed or diverged: print why in one line and report the worst value, so the search
    goes on (a raising trial would stop an Optuna sweep) and never picks it. Its status file says failed."""
    err = user_error(exc)
    if err is not None:
        reason = one_line(err)
    else:
        log.error("trial failed with an unexpected error", exc_info=exc)
        root = exc  # e.g. the ValueError behind Hydra's InstantiationException
        while root.__cause__ is not None:
            root = root.__cause__
        reason = " ".join(f"{type(root).__name__}: {root}".split())
    print(
        f"gan_lab: error: {reason}; this trial reports {objective.worst_reported(cfg.get('objective'))}",
        file=sys.stderr,
    )
    return objective.worst(cfg.get("objective"))


@config_errors_as_one_line
@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@user_errors_as_one_line
def main(cfg: DictConfig) -> float:
    """Train one run; returns its objective (see run_objective), which Hydra's Optuna sweeper optimizes."""
    from hydra.core.hydra_config import HydraConfig

    ddp.install()  # DDP ranks re-run this job, not the whole command line (multirun)
    objective.resolve(cfg.get("objective"))  # a misspelt objective stops before training
    try:
        module = train(cfg, overrides=list(HydraConfig.get().overrides.task))
    except Exception as exc:
        if not objective.in_search() or isinstance(user_error(exc), Preempted):
            raise  # outside a search, and when the whole search is being stopped (SIGTERM, Ctrl+C)
        return failed_trial(cfg, exc)
    return run_objective(cfg, module)


if __name__ == "__main__":
    main()
