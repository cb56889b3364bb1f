"""What a run writes about itself: its config as run, and its status file (running / completed / failed /
preempted), so a sweep report can tell jobs apart; and what it puts back when it fails before its first step
(the run it replaced, or an earlier run's config and status).

`run_status` keeps the status file for train() while the run trains.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from gan_lab.errors import one_line, user_error
from gan_lab.run.paths import RunDir
from gan_lab.run.preemption import PreemptionCheckpoint
from gan_lab.run.resume import check_resumed
from gan_lab.utils.config import redact_secrets
from gan_lab.utils.io import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from gan_lab.core.module import GANModule
    from gan_lab.run.store import Job

log = logging.getLogger(__name__)


class RunStatus:
    """The training run as its status file sees it: the generator step of its module, and its trainer's
    preemption checkpoint."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.module: GANModule | None = None
        self.trainer: pl.Trainer | None = None

    def built(self, module: GANModule, trainer: pl.Trainer) -> None:
        """The run is built from job.cfg: save that config as run (a conditional model's class count is in it
        now), check that a resumed run's checkpoint fits the networks, and keep the generator step in the lock
        record."""
        self.module, self.trainer = module, trainer
        save_config(self.job.cfg, self.job.run.config_file)
        if self.job.resumed is not None:
            check_resumed(self.job.resumed, module.state_dict(), self.job.run)
        if self.job.lock is not None:
            self.job.lock.g_steps = lambda: module.g_steps

    @property
    def g_steps(self) -> int:
        return self.module.g_steps if self.module is not None else 0

    @property
    def before_a_step(self) -> bool:
        return self.module is None or self.module.d_steps == 0

    def preemption(self) -> PreemptionCheckpoint | None:
        callbacks = self.trainer.callbacks if self.trainer is not None else []
        return next((c for c in callbacks if isinstance(c, PreemptionCheckpoint)), None)


@contextmanager
def run_status(job: Job) -> Iterator[RunStatus]:
    """The status file around the training of `job`: running, then completed, failed or preempted (a resumable
    checkpoint saved: raises Preempted). A run that fails before its first step (bad input) puts back the run it
    replaced, or the config and status an earlier run left. A fresh run first gets Hydra's record of its job
    (save_hydra_files); rank 0's lock on the run is released at the end."""
    status, output_dir = RunStatus(job), job.run.root
    try:
        if job.resumed is None:  # Hydra's own copy is off (hydra.output_subdir): it writes before the lock
            save_hydra_files(job.run, job.cfg)
        earlier = saved_files(output_dir)
        started = time.time()
        write_status(output_dir, "running", started)
        try:
            yield status
        except BaseException as exc:
            preemption = status.preemption()
            if isinstance(exc, SIGTERMException) and preemption is not None and preemption.saved:
                drop_replaced(job.run)
                write_status(
                    output_dir, "preempted", started, g_steps=status.g_steps, checkpoint=str(preemption.path)
                )
                preemption.requeue()  # a SLURM job's requeue signal: requeued, it continues this run
                raise preemption.error(status.g_steps) from exc
            err = user_error(exc)
            reason = one_line(err) if err else f"{type(exc).__name__}: {exc}"
            if status.before_a_step and restore_replaced(job.run):
                pass  # overwrite=true that failed before training: the replaced run is back as it was
            elif status.before_a_step and earlier:
                restore_files(output_dir, earlier)
            else:
                drop_replaced(job.run)
                write_status(output_dir, "failed", started, error=reason, g_steps=status.g_steps)
            raise
        finally:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()  # the next multirun job starts its own DDP ranks
        drop_replaced(job.run)
        write_status(output_dir, "completed", started, g_steps=status.g_steps)
        log.info("finished after %d generator steps; outputs in %s", status.g_steps, output_dir)
    finally:
        if job.lock is not None:
            job.lock.release()


@rank_zero_only  # DDP ranks share the run directory
def save_config(cfg: DictConfig, path: Path) -> None:
    """The resolved config, as run (values of secret-looking keys redacted)."""
    config = OmegaConf.create(redact_secrets(OmegaConf.to_container(cfg, resolve=True)))
    atomic_write_text(path, OmegaConf.to_yaml(config))


# Command-line overrides that tell this process what to do with the run, not what the run is: left out of the
# job's overrides.yaml, which the sweep report reads as the job's settings.
INSTRUCTIONS = ("resume", "overwrite", "retry_failed")


@rank_zero_only  # DDP ranks share the run directory
def save_hydra_files(run: RunDir, cfg: DictConfig) -> None:
    """Hydra's record of the job (.hydra/config.yaml, hydra.yaml, overrides.yaml) for the composed `cfg`.

    gan_lab writes it once the run directory is known to be this run's (hydra.output_subdir is null): Hydra
    itself would write it before the job starts, over the files of a run that directory already holds.
    Nothing is written outside a Hydra job (train() called from Python).
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    task = [o for o in hydra_cfg.overrides.task if o.lstrip("+~").split("=", 1)[0] not in INSTRUCTIONS]
    files = {
        "config.yaml": OmegaConf.to_yaml(cfg),  # as composed: interpolations unresolved
        "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
        run.overrides.name: OmegaConf.to_yaml(task),
    }
    for name, text in files.items():
        atomic_write_text(run.hydra / name, text)


@rank_zero_only  # DDP ranks share the run directory
def write_status(output_dir: Path, status: str, started: float, **extra: Any) -> None:
    """The status, wall time since `started` (time.time()), and what went wrong; written whole (atomic)."""
    record = {"status": status, "wall_time_s": round(time.time() - started, 1), **extra}
    atomic_write_text(RunDir(output_dir).status, json.dumps(record, indent=2) + "\n")


def read_status(run: RunDir) -> dict[str, Any]:
    """The run's status record; {} when it has none, or it is being rewritten or unreadable."""
    try:
        return json.loads(run.status.read_text())
    except (OSError, ValueError):
        return {}


def saved_files(output_dir: Path) -> dict[str, bytes]:
    """The config and status files an earlier run left in output_dir, to put back if this one fails early."""
    run = RunDir(output_dir)
    return {p.name: p.read_bytes() for p in (run.config_file, run.status) if p.is_file()}


@rank_zero_only
def restore_files(output_dir: Path, contents: dict[str, bytes]) -> None:
    for name, content in contents.items():
        atomic_write_bytes(Path(output_dir) / name, content)


REPLACED_DIR = ".replaced"  # a replaced run's files (store.set_aside), until the new run has trained a step


def restore_replaced(run: RunDir) -> bool:
    """Put back the replaced run's files (the new run failed before training a step); False if there are none."""
    aside = run.root / REPLACED_DIR
    if rank_zero_only.rank != 0 or not aside.is_dir():
        return False
    for entry in aside.iterdir():
        target = run.root / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        entry.rename(target)
    aside.rmdir()
    return True


@rank_zero_only
def drop_replaced(run: RunDir) -> None:
    """Remove the replaced run's files for good (the new run has trained)."""
    shutil.rmtree(run.root / REPLACED_DIR, ignore_errors=True)
