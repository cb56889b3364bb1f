"""SIGTERM (cluster preemption, `kill`) and Ctrl+C end a run with a resumable checkpoint and a clear message."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gan_lab.errors import GanLabError
from gan_lab.run.paths import LAST_CKPT
from gan_lab.utils import compat

log = logging.getLogger(__name__)


class Preempted(GanLabError):
    """The run was stopped by a signal after saving a resumable checkpoint; exits 128 + the signal number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def requeue_signal() -> int | None:
    """The signal a SLURM job gets before its time limit when a handler (submitit's) requeues it, else None.

    submitit asks SLURM for SIGUSR2 (SUBMITIT_PREEMPT_SIGNAL changes it) `signal_delay_s` before the limit, and
    its handler requeues the job and exits at once, which would lose the steps since the last checkpoint.
    """
    if not os.environ.get("SLURM_JOB_ID"):
        return None
    signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    return signum if signum is not None and callable(signal.getsignal(signum)) else None


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM or a first Ctrl+C: finish the current step, save `<dirpath>/<LAST_CKPT>`, stop the run.

    Lightning turns SIGTERM into a SIGTERMException between two training batches (on every DDP rank), so the
    saved state is always that of a whole step. Ctrl+C is routed the same way; a second Ctrl+C aborts at once
    without saving. A SLURM job's requeue signal (requeue_signal) too: once the checkpoint is saved, requeue()
    hands the signal to the handler that requeues the job; the job, started again, continues its run
    (gan_lab/run/store.py).
    """

    def __init__(self, dirpath: str | Path) -> None:
        self.path = Path(dirpath) / LAST_CKPT
        self.signum: int | None = None
        self.saved = False
        self._trainer: pl.Trainer | None = None
        self._previous: dict[int, Any] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        requeue = requeue_signal()
        try:
            for signum in (signal.SIGTERM, signal.SIGINT, *([requeue] if requeue else [])):
                # Lightning adds its own SIGTERM handler after this hook and keeps ours beside it.
                self._previous[signum] = signal.signal(signum, self._on_signal)
        except ValueError:  # not the main thread: signals cannot be caught here
            self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._trainer is None:  # fit is over (Lightning may re-install this handler): behave as before
            return self._pass_on(signum, frame)
        if signum == signal.SIGINT and self.signum is not None:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now, without a checkpoint
        self.signum = signum
        if signum != signal.SIGTERM and self._trainer is not None:
            # Reuse Lightning's SIGTERM path: it stops between batches, in step on every DDP rank.
            compat.mark_sigterm_received(self._trainer)
        log.warning(
            "received %s: saving a resumable checkpoint after the current step (Ctrl+C aborts without one)",
            signal.Signals(signum).name,
        )

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException) and not self.saved:
            if self.signum is None:
                self.signum = signal.SIGTERM  # Lightning saw it first (e.g. another DDP rank's signal)
            trainer.save_checkpoint(self.path, weights_only=False)
            self.saved = True

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT and previous != signal.SIG_IGN:
            raise KeyboardInterrupt
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def requeue(self) -> None:
        """After a requeue signal's checkpoint: pass the signal on to the handler that requeues the job (it exits)."""
        handler = self._previous.get(self.signum) if self.signum is not None else None
        if self.signum not in (signal.SIGTERM, signal.SIGINT) and callable(handler):
            handler(self.signum, None)

    def error(self, g_steps: int) -> Preempted:
        """The one-line error a preempted run ends with."""
        name = signal.Signals(self.signum or signal.SIGTERM).name
        run_dir = self.path.parent.parent
        return Preempted(
            f"stopped by {name} after generator step {g_steps}; resumable checkpoint saved to {self.path}; "
            f"continue with: python -m gan_lab.train resume={run_dir}",
            self.signum or signal.SIGTERM,
        )
