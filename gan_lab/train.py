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
from gan_lab.cli import config_errors_as_one_line, in_multirun, user_errors_as_one_line
from gan_lab.core.module import GANModule
from gan_lab.errors import ConfigError, GanLabError, one_line, user_error
from gan_lab.metrics.registry import register_extra
from gan_lab.run import ddp, store
from gan_lab.run.checkpoint_io import load_checkpoint
from gan_lab.run.continue_sweep import expand_command_line
from gan_lab.run.lock import RunLock, describe_holder
from gan_lab.run.paths import RunDir
from gan_lab.run.preemption import Preempted, PreemptionCheckpoint
from gan_lab.run.resume import check_same_architecture, resume_config, trim_metrics_csv
from gan_lab.run.status import (
    check_writable,
    restore_files,
    save_config,
    save_hydra_files,
    saved_files,
    write_status,
)
from gan_lab.utils.console import quiet_third_party

log = logging.getLogger("gan_lab.train")
quiet_third_party()


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> GANModule | None:
    """Build data, module and trainer from cfg and fit; returns the trained module (None for a skipped job).

    The run's directory has one writer: this process holds its lock for the whole run (gan_lab/run/lock.py),
    and gan_lab/run/store.py decides, holding it, whether it starts, continues (cfg.resume: the checkpoint's
    config, `overrides` checked against it, see gan_lab.run.resume) or skips the run. The status file lets a
    sweep report tell finished, failed, preempted and running jobs apart.
    """
    run = store.target(cfg)
    if cfg.get("resume") and store.is_sweep_dir(cfg.resume) and not in_multirun():
        raise ConfigError(
            f"resume={cfg.resume} is a sweep (multirun) directory; continue it with -m: "
            f"python -m gan_lab.train -m resume={cfg.resume}"
        )
    handed = store.handed_down(cfg, run)
    if handed is not None:  # a DDP rank > 0: rank 0 holds the lock and has decided
        return _fit(cfg, overrides, handed)
    check_writable(run.root)  # one line for a directory that cannot take files (creates it)
    lock = RunLock(run.lock)
    lock.acquire()  # a live writer: RunInUse, before any file is touched
    try:
        decided = store.plan(cfg, run, lock)
    except BaseException:
        lock.abandon()
        raise
    if decided.skip:
        lock.abandon()
        log.info("%s: %s; skipped", run.root, decided.skip)
        return None
    if lock.taken_over:
        log.warning(
            "%s: taking over its lock from %s, which ended without releasing it",
            run.root,
            describe_holder(lock.previous),
        )
    store.hand_down(decided, lock)
    try:
        lock.hold()
        return _fit(cfg, overrides, decided, lock)
    finally:
        lock.release()


def _fit(
    cfg: DictConfig, overrides: Sequence[str], decided: store.Plan, lock: RunLock | None = None
) -> GANModule:
    ckpt_path, checkpoint = decided.checkpoint, None
    if ckpt_path is not None:
        checkpoint = load_checkpoint(ckpt_path)  # weights_only: a shared checkpoint cannot run code
        cfg = resume_config(cfg, checkpoint, ckpt_path, overrides)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set, e.g. {missing[0]}=... on the command line")
    output_dir = Path(cfg.paths.output_dir)
    run = RunDir(output_dir)
    check_writable(output_dir)
    if ckpt_path is None:
        save_hydra_files(
            run, cfg
        )  # Hydra's own copy is off (hydra.output_subdir): it would write before the lock
    build.absolutize_data_paths(cfg)
    # A run that fails before its first step (bad input) puts back an earlier run's files it replaced.
    earlier = saved_files(output_dir)
    started, module, trainer = time.time(), None, None
    write_status(output_dir, "running", started)
    try:
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = build.build_datamodule(cfg)
        save_config(cfg, run.config_file)
        module = build.build_module(cfg)
        if lock is not None:
            lock.g_steps = lambda: module.g_steps
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
            store.drop_replaced(run)
            write_status(output_dir, "preempted", started, g_steps=g_steps, checkpoint=str(preemption.path))
            preemption.requeue()  # a SLURM job's requeue signal: requeued, it continues this run
            raise preemption.error(g_steps) from exc
        err = user_error(exc)
        reason = one_line(err) if err else f"{type(exc).__name__}: {exc}"
        before_a_step = module is None or module.d_steps == 0
        if before_a_step and store.restore_replaced(run):
            pass  # overwrite=true that failed before training: the replaced run is back as it was
        elif before_a_step and earlier:
            restore_files(output_dir, earlier)
        else:
            store.drop_replaced(run)
            write_status(output_dir, "failed", started, error=reason, g_steps=g_steps)
        raise
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # the next multirun job starts its own DDP ranks
    store.drop_replaced(run)
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
def main(cfg: DictConfig) -> float | None:
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
        return (
            run_objective(cfg, module) if module is not None else None
        )  # None: a continued sweep's done job
    finally:
        ddp.restore_environment(environment)  # the next job in this process starts its own DDP ranks


if __name__ == "__main__":
    try:
        sys.argv = expand_command_line(sys.argv)  # -m resume=<multirun dir>: that sweep's own command line
    except GanLabError as err:
        sys.exit(f"gan_lab: error: {one_line(err)}")
    main()
