"""`python -m gan_lab.train [group=option ...] [key=value ...]`: compose the config, build, and fit."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig

from gan_lab import build, objective
from gan_lab.callbacks import last_checkpoint_path
from gan_lab.cli import config_errors_as_one_line, user_errors_as_one_line
from gan_lab.core.guards import Diverged
from gan_lab.core.module import GANModule
from gan_lab.errors import GanLabError, one_line, user_error
from gan_lab.metrics.registry import register_extra
from gan_lab.run import ddp, store
from gan_lab.run.continue_sweep import expand_command_line
from gan_lab.run.preemption import Preempted
from gan_lab.run.status import run_status
from gan_lab.utils.console import quiet_third_party

log = logging.getLogger("gan_lab.train")
quiet_third_party()


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> GANModule | None:
    """Resolve the run (its directory, locked, and its config: resumed from a checkpoint with cfg.resume,
    `overrides` checked against it), build it, and fit it inside its status file; returns the trained module
    (None for a job this process skips: a continued sweep's done job).

    gan_lab/run/store.py decides what the run is; gan_lab/run/status.py keeps its status file (running, completed,
    failed, preempted), which lets a sweep report tell jobs apart, and releases its lock (gan_lab/run/lock.py).
    """
    job = store.resolve(cfg, overrides)
    if job is None:
        return None
    with run_status(job) as status:
        pl.seed_everything(job.cfg.seed, workers=True)
        datamodule, module, trainer = build.build(job.cfg)
        status.built(module, trainer)  # the config as built is saved; a resumed run's checkpoint is checked
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=job.checkpoint, weights_only=True)
        except Diverged as err:
            raise _with_kept_checkpoint(err, trainer) from err
    return module


def _with_kept_checkpoint(err: Diverged, trainer: pl.Trainer) -> Diverged:
    """The divergence error, saying what the run kept: the checkpoint a resume would read, if any."""
    last = last_checkpoint_path(trainer)
    return Diverged(
        err.what, f"the last good checkpoint is kept: {last}" if last else "no checkpoint was saved before it"
    )


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
