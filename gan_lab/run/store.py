"""Which run directory a process writes, and how: a fresh one, a run to continue, or a sweep job to continue or
skip. Nothing here writes before the directory's lock is held and the directory is known to be this run's.

- `resume=<run dir or .ckpt>` continues that run in its own directory.
- `resume=<multirun dir>` (with -m) re-launches the sweep stored there (gan_lab/run/continue_sweep.py); each job
  then decides here from its own directory: completed -> skipped; preempted, or killed while running -> resumed
  from the last checkpoint; failed -> skipped unless retry_failed=true; never started -> started.
- A requeued SLURM job (the same SLURM_JOB_ID as the run's lock record) continues its preempted run by itself.
- Any other run refuses a directory that already holds a run, unless overwrite=true.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from gan_lab.errors import ConfigError, GanLabError
from gan_lab.run.lock import RunLock, read_record
from gan_lab.run.paths import MULTIRUN_FILE, RunDir
from gan_lab.run.resume import find_checkpoint
from gan_lab.run.status import read_status
from gan_lab.utils.io import remove_temporaries

log = logging.getLogger(__name__)

# A DDP rank > 0 starts after rank 0 has decided (and written its status), or beside it: rank 0 hands its decision
# down through the environment (Lightning's launcher passes it to the ranks it starts) and its lock record.
PLAN_ENV = "GAN_LAB_RUN_PLAN"
RANK_WAIT_S = 600.0  # how long a rank > 0 started by srun waits for rank 0's record


@dataclass(frozen=True)
class Plan:
    """What this process does: train in `run` (from `checkpoint` when continuing), or skip (`skip` says why)."""

    run: RunDir
    checkpoint: Path | None = None
    skip: str | None = None


def is_sweep_dir(path: str | os.PathLike[str]) -> bool:
    """Whether path is a multirun directory (Hydra wrote its record of the sweep there)."""
    return (Path(path).expanduser() / MULTIRUN_FILE).is_file()


def holds_a_run(run: RunDir) -> bool:
    """Whether a run has written this directory (its config, status, metrics or checkpoints)."""
    return any(p.exists() for p in (run.config_file, run.status, run.metrics, run.checkpoints))


def target(cfg: DictConfig) -> RunDir:
    """The directory this run writes: the run it resumes, else paths.output_dir (a sweep job's own folder)."""
    resume = cfg.get("resume")
    if resume and not is_sweep_dir(resume):
        return RunDir.of(find_checkpoint(resume))
    return RunDir(Path(cfg.paths.output_dir).expanduser().absolute())


def plan(cfg: DictConfig, run: RunDir, lock: RunLock) -> Plan:
    """Decide, holding the run's lock, what this process does with `run` (see the module docstring).

    Raises a one-line ConfigError for a directory that holds another run; sets that run aside to replace it
    (overwrite=true, or a sweep job started again); removes what a killed writer left half-written.
    """
    resume = cfg.get("resume")
    status = read_status(run)
    if resume and not is_sweep_dir(resume):
        decided = Plan(run, find_checkpoint(resume))
    elif resume:  # a job of a continued sweep
        decided = _continue_job(run, status, bool(cfg.get("retry_failed")))
    elif _requeued_here(lock, status) and run.last_ckpt.is_file():
        log.info("SLURM job %s was requeued: continuing its run %s", os.environ["SLURM_JOB_ID"], run.root)
        decided = Plan(run, run.last_ckpt)
    elif holds_a_run(run) and not cfg.get("overwrite"):
        raise ConfigError(
            f"{run.root} already holds a run ({_summary(status)}); continue it with resume={run.root}, start this "
            "one elsewhere (hydra.run.dir=<new directory>), or replace it with overwrite=true"
        )
    else:
        decided = Plan(run)
    if decided.skip is None and decided.checkpoint is None and holds_a_run(run):
        log.warning("replacing the run in %s (%s)", run.root, _summary(status))
        set_aside(run)
    if decided.skip is None:
        for folder in (run.root, run.checkpoints):  # what a killed writer of this run left half-written
            remove_temporaries(folder)
    return decided


def _summary(status: dict[str, Any]) -> str:
    state = status.get("status", "status unknown")
    steps = status.get("g_steps")
    return state + (f" at generator step {steps}" if steps is not None else "")


def _requeued_here(lock: RunLock, status: dict[str, Any]) -> bool:
    """Whether this process is the requeued SLURM job whose earlier start wrote this (unfinished) run."""
    job = os.environ.get("SLURM_JOB_ID")
    return bool(job) and lock.previous.get("slurm_job_id") == job and status.get("status") != "completed"


def _continue_job(run: RunDir, status: dict[str, Any], retry_failed: bool) -> Plan:
    state = status.get("status")
    if state == "completed":
        return Plan(run, skip=f"completed at generator step {status.get('g_steps')}")
    if state == "failed" and not retry_failed:
        return Plan(
            run, skip=f"failed ({status.get('error', 'no reason recorded')}); retry_failed=true runs it again"
        )
    return Plan(run, run.last_ckpt if run.last_ckpt.is_file() else None)


REPLACED_DIR = ".replaced"  # a replaced run's files, until the new run has trained a step


def set_aside(run: RunDir) -> Path:
    """Move what a run wrote in its directory into REPLACED_DIR (keeping the lock and Hydra's job log, open in
    this process): put back by restore_replaced if the new run fails before its first step, else removed."""
    aside = run.root / REPLACED_DIR
    shutil.rmtree(aside, ignore_errors=True)  # left by a replacing run that was killed
    aside.mkdir()
    for entry in run.root.iterdir():
        if entry not in (run.lock, aside) and entry.suffix != ".log":
            entry.rename(aside / entry.name)
    return aside


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


def hand_down(decided: Plan, lock: RunLock) -> None:
    """Tell this job's DDP ranks > 0 what rank 0 decided: through the environment to the ranks Lightning starts,
    through the lock record to the ranks SLURM starts beside it."""
    lock.plan = str(decided.checkpoint or "")
    os.environ[PLAN_ENV] = json.dumps({"checkpoint": lock.plan})


def handed_down(cfg: DictConfig, run: RunDir) -> Plan | None:
    """On a DDP rank > 0, rank 0's decision (None on rank 0): rank 0 alone holds the lock and decides."""
    if rank_zero_only.rank == 0:
        return None
    raw = os.environ.get(PLAN_ENV)
    if raw is not None:  # started by rank 0 (Lightning's launcher)
        return _plan_of(run, json.loads(raw).get("checkpoint"))
    job = os.environ.get("SLURM_JOB_ID")
    if job:  # started by srun beside rank 0: wait for rank 0's record in the lock file
        restart = os.environ.get("SLURM_RESTART_COUNT", "0")
        deadline = time.time() + RANK_WAIT_S
        while time.time() < deadline:
            record = read_record(run.lock)
            mine = record.get("slurm_job_id") == job and record.get("slurm_restart") == restart
            if mine and not record.get("released", True):
                return _plan_of(run, record.get("plan"))
            time.sleep(1.0)
        raise GanLabError(
            f"DDP rank {rank_zero_only.rank}: rank 0 did not start the run in {run.root} within {RANK_WAIT_S:.0f} s; "
            "see rank 0's log for why (refused or failed) and start the job again"
        )
    resume = cfg.get("resume")  # another launcher (torchrun): an explicit resume= only
    return Plan(run, find_checkpoint(resume) if resume and not is_sweep_dir(resume) else None)


def _plan_of(run: RunDir, checkpoint: str | None) -> Plan:
    return Plan(run, Path(checkpoint) if checkpoint else None)
