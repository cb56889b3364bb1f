"""`python -m gan_lab.train [group=option ...] [key=value ...]`: compose the config, build, and fit."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from gan_lab import build, objective
from gan_lab.cli import config_errors_as_one_line, user_errors_as_one_line
from gan_lab.core.module import GANModule
from gan_lab.errors import ConfigError, one_line, user_error
from gan_lab.metrics.registry import register_extra
from gan_lab.run import ddp
from gan_lab.run.checkpoint_io import load_checkpoint
from gan_lab.run.paths import RunDir
from gan_lab.run.preemption import Preempted, PreemptionCheckpoint
from gan_lab.run.resume import check_same_architecture, find_checkpoint, resume_config, trim_metrics_csv
from gan_lab.run.status import check_writable, restore_files, save_config, saved_files, write_status
from gan_lab.utils.console import quiet_third_party

log = logging.getLogger("gan_lab.train")
quiet_third_party()


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
    build.absolutize_data_paths(cfg)
    output_dir = Path(cfg.paths.output_dir)
    run = RunDir(output_dir)
    check_writable(output_dir)
    # A run that fails before its first step (bad input) puts back an earlier run's files it replaced.
    earlier = saved_files(output_dir)
    started, module, trainer = time.time(), None, None
    write_status(output_dir, "running", started)
    try:
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = build.build_datamodule(cfg)
        save_config(cfg, run.config_file)
        module = build.build_module(cfg)
        if checkpoint is not None:
            check_same_architecture(module.state_dict(), checkpoint, ckpt_path)
            g_steps = int(checkpoint.get("gan_lab", {}).get("g_steps", 0))
            trim_metrics_csv(run.metrics, g_steps)
            log.info("resuming %s from %s at generator step %d", output_dir, ckpt_path, g_steps)
            checkpoint = None  # Lightning reads the file itself; free the memory
        trainer = build.build_trainer(cfg)
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

    environment = ddp.install()  # DDP ranks re-run this job, not the whole command line (multirun)
    try:
        register_extra((cfg.get("metrics") or {}).get("extra"))  # before the objective, which may name one
        objective.resolve(cfg.get("objective"))  # a misspelt objective stops before training
        try:
            module = train(cfg, overrides=list(HydraConfig.get().overrides.task))
        except Exception as exc:
            if not objective.in_search() or isinstance(user_error(exc), Preempted):
                raise  # outside a search, and when the whole search is being stopped (SIGTERM, Ctrl+C)
            return failed_trial(cfg, exc)
        return run_objective(cfg, module)
    finally:
        ddp.restore_environment(environment)  # the next job in this process starts its own DDP ranks


if __name__ == "__main__":
    main()
