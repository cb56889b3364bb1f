"""Which run directory a process writes, and how: a fresh one, a run to continue, or a sweep job to continue or
skip. Nothing here writes before the directory's lock is held and the directory is known to be this run's.

- `resume=<run dir or .ckpt>` continues that run in its own directory.
- `resume=<multirun dir>` (with -m) re-launches the sweep stored there (gan_lab/run/continue_sweep.py); each job
  then decides here from its own directory: completed -> skipped; preempted, or killed while running -> resumed
  from the last checkpoint; failed -> skipped unless retry_failed=true; never started -> started.
- A requeued SLURM job (the same SLURM_JOB_ID as the run's lock record) continues its preempted run by itself.
- Any other run refuses a directory that already holds a run, unless overwrite=true.

`resolve` does all of this for train(), and hands it the Job: the run, locked, and the config it trains with.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gan_lab.errors import ConfigError, GanLabError
from gan_lab.run.lock import RunLock, describe_holder, hand_down, handed_down
from gan_lab.run.paths import LAST_CKPT, MULTIRUN_FILE, RunDir
from gan_lab.run.resume import Resumed, continue_from
from gan_lab.run.status import REPLACED_DIR, read_status
from gan_lab.utils.config import in_multirun
from gan_lab.utils.io import remove_temporaries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What this process does: train in `run` (from `checkpoint` when continuing), or skip (`skip` says why)."""

    run: RunDir
    checkpoint: Path | None = None
    skip: str | None = None


@dataclass(frozen=True)
class Job:
    """A run this process trains: the config it trains with, its directory, and what it continues from (None: a
    fresh start). Rank 0 holds the run's `lock` until run_status (gan_lab/run/status.py) ends."""

    cfg: DictConfig
    run: RunDir
    resumed: Resumed | None = None
    lock: RunLock | None = None

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint the run continues from (Lightning restores it in fit), or None."""
        return self.resumed.path if self.resumed is not None else None


def resolve(cfg: DictConfig, overrides: Sequence[str] = ()) -> Job | None:
    """The run this process trains and the config it trains with, holding the run's lock (rank 0); None for a
    job this process skips (a continued sweep's done job).

    Rank 0 decides, holding the lock, whether the run starts, continues (the checkpoint's config, with
    `overrides` checked against it: gan_lab.run.resume) or is skipped; DDP ranks > 0 take rank 0's decision.
    """
    found = target(cfg)
    if cfg.get("resume") and is_sweep_dir(cfg.resume) and not in_multirun():
        raise ConfigError(
            f"resume={cfg.resume} is a sweep (multirun) directory; continue it with -m: "
            f"python -m gan_lab.train -m resume={cfg.resume}"
        )
    check_writable(found.run.root)  # one line for a directory that cannot take files (creates it)
    lock = None
    if rank_zero_only.rank == 0:
        decided, lock = _claim(cfg, found)
        if lock is None:
            return None
    else:  # a DDP rank > 0: rank 0 holds the lock and has decided
        handed = handed_down(found.run.lock, rank_zero_only.rank)
        decided = found if handed is None else Plan(found.run, Path(handed) if handed else None)
    try:
        resumed = None
        if decided.checkpoint is not None:
            cfg, resumed = continue_from(cfg, decided.checkpoint, overrides)
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"{', '.join(missing)} must be set, e.g. {missing[0]}=... on the command line")
        return Job(cfg, RunDir(cfg.paths.output_dir), resumed, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _claim(cfg: DictConfig, found: Plan) -> tuple[Plan, RunLock | None]:
    """Take the run's lock and decide (plan) what to do with the run; the lock is held from here, with this
    process's record, unless the run is refused (an error) or skipped (None: the lock is given back)."""
    lock = RunLock(found.run.lock)
    lock.acquire()  # a live writer: RunInUse, before any file is touched
    status = read_status(found.run)
    try:
        decided = plan(cfg, found, lock, status)
    except BaseException:
        lock.abandon()
        raise
    if decided.skip:
        lock.abandon()
        log.info("%s: %s; skipped", found.run.root, decided.skip)
        return decided, None
    if lock.taken_over:
        log.warning(
            "%s: taking over its lock from %s, which ended without releasing it",
            found.run.root,
            describe_holder(lock.previous),
        )
    hand_down(lock, decided.checkpoint)
    try:
        lock.hold()  # this process's record in the lock file, kept current until run_status ends
    except BaseException:
        lock.release()
        raise
    return decided, lock


def is_sweep_dir(path: str | os.PathLike[str]) -> bool:
    """Whether path is a multirun directory (Hydra wrote its record of the sweep there)."""
    return (Path(path).expanduser() / MULTIRUN_FILE).is_file()


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


def holds_a_run(run: RunDir) -> bool:
    """Whether a run has written this directory (its config, status, metrics or checkpoints)."""
    return any(p.exists() for p in (run.config_file, run.status, run.metrics, run.checkpoints))


def find_checkpoint(resume: str | os.PathLike[str]) -> Path:
    """The checkpoint to resume from: the file itself, or the last checkpoint of a run or checkpoints folder."""
    path = Path(resume).expanduser().absolute()
    if path.is_dir():
        run = RunDir(path)
        candidate = run.last_ckpt if run.checkpoints.is_dir() else path / LAST_CKPT
        if not candidate.is_file():
            raise GanLabError(
                f"resume={resume}: no {candidate.relative_to(path)} in that folder (the run saved no checkpoint "
                "yet); pass resume=<path to a .ckpt file> or start a new run"
            )
        return candidate
    if not path.is_file():
        raise GanLabError(f"resume={resume} does not exist; pass a run directory or a .ckpt file")
    return path


def target(cfg: DictConfig) -> Plan:
    """The directory this run writes, and the checkpoint that resume= names: the run it resumes, else
    paths.output_dir (a sweep job's own folder), fresh."""
    resume = cfg.get("resume")
    if resume and not is_sweep_dir(resume):
        checkpoint = find_checkpoint(resume)
        return Plan(RunDir.of(checkpoint), checkpoint)
    return Plan(RunDir(Path(cfg.paths.output_dir).expanduser().absolute()))


def plan(cfg: DictConfig, found: Plan, lock: RunLock, status: dict[str, Any]) -> Plan:
    """Decide, holding the run's lock, what this process does with the run `target` found, whose status record
    is `status` (see the module docstring).

    Raises a one-line ConfigError for a directory that holds another run; sets that run aside to replace it
    (overwrite=true, or a sweep job started again); removes what a killed writer left half-written.
    """
    run, resume = found.run, cfg.get("resume")
    if found.checkpoint is not None:
        decided = found
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
        decided = found
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


def set_aside(run: RunDir) -> Path:
    """Move what a run wrote in its directory into REPLACED_DIR (keeping the lock and Hydra's job log, open in
    this process): put back by status.restore_replaced if the new run fails before its first step, else removed."""
    aside = run.root / REPLACED_DIR
    shutil.rmtree(aside, ignore_errors=True)  # left by a replacing run that was killed
    aside.mkdir()
    for entry in run.root.iterdir():
        if entry not in (run.lock, aside) and entry.suffix != ".log":
            entry.rename(aside / entry.name)
    return aside
