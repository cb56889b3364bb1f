"""One writer per run directory: a lock on `<run dir>/run.lock` held for the run's whole life.

The lock is an flock(2) on the file, which the kernel drops when its process ends, however it ends (kill -9
included); on file systems that cannot lock, a soft lock: the holder's host, pid and a heartbeat written into the
file, judged alive by pid on the same host and by a heartbeat younger than STALE_AFTER_S elsewhere (a lost node).
The file also tells a refused process who holds it: host, pid, and the generator step (updated by a heartbeat
thread, so a long evaluation still shows a live holder); and the holder's own DDP ranks > 0 what it decided
(hand_down / handed_down).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gan_lab.errors import GanLabError

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0  # how often the holder rewrites its record
# A DDP rank > 0 starts after rank 0 has decided (and written its status), or beside it: rank 0 hands its decision
# down through the environment (Lightning's launcher passes it to the ranks it starts) and its lock record.
PLAN_ENV = "GAN_LAB_RUN_PLAN"
RANK_WAIT_S = 600.0  # how long a rank > 0 started by srun waits for rank 0's record
STALE_AFTER_S = 300.0  # a soft lock whose holder on another host wrote nothing for this long is taken over
RECORD_BYTES = 1024  # the record is padded to this size and written in one pwrite, so readers never see half
_CANNOT_LOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunInUse(GanLabError):
    """Another live process holds the run directory."""


def read_record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_bytes().decode().strip() or "{}")
    except (OSError, ValueError):
        return {}  # no lock file, or one written by something else


def describe_holder(record: dict[str, Any]) -> str:
    """'pid 123 on host h, at generator step 40' from a lock record."""
    where = f"pid {record.get('pid', '?')} on host {record.get('host', '?')}"
    steps = record.get("g_steps")
    return where + (f", at generator step {steps}" if steps is not None else ", before its first step")


def _holder_alive(record: dict[str, Any]) -> bool:
    """Whether the process a soft lock names still runs (released locks and unreadable records: no)."""
    if not record or record.get("released", True):
        return False
    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError):
            return True  # a process of another user, or a record we cannot read: assume it lives
        return True
    return time.time() - float(record.get("heartbeat", 0)) < STALE_AFTER_S


class RunLock:
    """The lock of one run directory: acquire() takes it (or refuses a live holder with RunInUse) and changes no
    file; hold() then writes this process's record and keeps it current; release() frees it, abandon() gives it
    back unused (a run that stops before writing anything)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)  # RunDir(...).lock
        self.root = self.path.parent
        self.g_steps: Callable[[], int | None] = lambda: None  # the holder's generator step, for its record
        self.plan = ""  # the checkpoint the holder continues from ("" = a fresh start), for its DDP ranks
        self._fd: int | None = None
        self._created = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.previous: dict[str, Any] = {}  # the record acquire found: who wrote this directory last

    @property
    def taken_over(self) -> bool:
        """Whether acquire took the lock of a holder that ended without releasing it (kill -9, a lost node)."""
        return bool(self.previous) and not self.previous.get("released", True)

    # --- taking and giving back -----------------------------------------------------------------------
    def acquire(self) -> RunLock:
        """Hold the lock (creating the directory and the file if needed), or raise RunInUse naming the holder."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = read_record(self.path)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                self._refuse(previous)
            if err.errno not in _CANNOT_LOCK:
                raise
            # This file system cannot lock: a soft lock, judged by the record itself.
            if _holder_alive(previous):
                self._refuse(previous)
        self.previous = previous
        return self

    def hold(self) -> None:
        """Write this process's record into the lock file, and rewrite it every HEARTBEAT_S seconds."""
        self._write(released=False)

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    self._write(released=False)
                except (OSError, AssertionError):
                    return

        self._heartbeat = threading.Thread(target=beat, name="gan_lab-run-lock", daemon=True)
        self._heartbeat.start()

    def _refuse(self, holder: dict[str, Any]) -> None:
        self._close(unlink=False)
        raise RunInUse(
            f"{self.root} is being written by a live run ({describe_holder(holder)}); wait for it to end or stop "
            "it, or start this one elsewhere (hydra.run.dir=<another directory>)"
        )

    def abandon(self) -> None:
        """Give the lock back without a trace: remove the file if acquire created it (a refused start)."""
        self._close(unlink=self._created)

    def release(self) -> None:
        """Mark the record released and free the lock."""
        if self._fd is None:
            return
        self._stop_heartbeat()
        try:
            self._write(released=True)
        except OSError:
            pass  # the record is only advice; the kernel frees the flock when the file is closed
        self._close(unlink=False)

    def _close(self, unlink: bool) -> None:
        if self._fd is None:
            return
        if unlink:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        self.hold()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- the record -----------------------------------------------------------------------------------
    def _write(self, released: bool) -> None:
        record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "g_steps": self.g_steps(),
            "heartbeat": round(time.time(), 1),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
            "plan": self.plan,
            "released": released,
        }
        data = json.dumps(record).encode().ljust(RECORD_BYTES)
        assert self._fd is not None
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, RECORD_BYTES)

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None


def hand_down(lock: RunLock, checkpoint: Path | None) -> None:
    """Tell this job's DDP ranks > 0 what rank 0, holding `lock`, decided (the checkpoint it continues from, or
    None): through the environment to the ranks Lightning starts, through the lock record to the ranks SLURM
    starts beside it."""
    lock.plan = str(checkpoint or "")
    os.environ[PLAN_ENV] = json.dumps({"checkpoint": lock.plan})


def handed_down(path: Path, rank: int) -> str | None:
    """On DDP rank `rank` > 0, the checkpoint rank 0 decided to continue from ("" for a fresh start), read from the
    environment or from rank 0's record in the lock file `path`; None where no rank 0 hands it down (torchrun)."""
    raw = os.environ.get(PLAN_ENV)
    if raw is not None:  # started by rank 0 (Lightning's launcher)
        return json.loads(raw).get("checkpoint") or ""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    restart = os.environ.get("SLURM_RESTART_COUNT", "0")  # started by srun beside rank 0: wait for its record
    deadline = time.time() + RANK_WAIT_S
    while time.time() < deadline:
        record = read_record(path)
        mine = record.get("slurm_job_id") == job and record.get("slurm_restart") == restart
        if mine and not record.get("released", True):
            return record.get("plan") or ""
        time.sleep(1.0)
    raise GanLabError(
        f"DDP rank {rank}: rank 0 did not start the run in {path.parent} within {RANK_WAIT_S:.0f} s; "
        "see rank 0's log for why (refused or failed) and start the job again"
    )


def holder_of(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record of the live process holding the lock file `path`, or None when nobody does (read-only)."""
    path = Path(path)
    if not path.is_file():
        return None
    record = read_record(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return record
        return record if _holder_alive(record) else None
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return None
