"""The Lightning callback that keeps a run's last checkpoint (what resume= reads) current, and where it is."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from gan_lab.callbacks.base import EveryNGeneratorSteps
from gan_lab.errors import ConfigError
from gan_lab.run.paths import LAST_CKPT


class LastCheckpoint(EveryNGeneratorSteps):
    """Keeps `<dirpath>/<LAST_CKPT>` current: every N generator steps, at every epoch end and when training ends.

    Lightning's ModelCheckpoint(save_last=True) only refreshes its last checkpoint when it also saves a periodic
    checkpoint, so a run's final state could be missing from it; this is the checkpoint `resume=` reads.
    """

    def __init__(self, dirpath: str | os.PathLike[str], every_n_steps: int = 500) -> None:
        if every_n_steps < 1:
            raise ConfigError(
                f"callbacks.last.every_n_steps must be >= 1 generator steps, got {every_n_steps}"
            )
        super().__init__(every_n_steps)
        self.path = Path(dirpath) / LAST_CKPT

    def save(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Write the checkpoint unless it already holds this generator step."""
        self.run_once(trainer, module)

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict) -> None:
        # Every metrics row up to this step goes to disk with the checkpoint: a resume trims the rows after
        # it and logs them again, and would never log again a row that was still only in memory.
        for logger in trainer.loggers:
            logger.save()

    def on_every(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.save(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.save(trainer, module)


def last_checkpoint_path(trainer: pl.Trainer | None) -> Path | None:
    """The checkpoint a LastCheckpoint of `trainer` has written (what a resume would read), or None if none has."""
    callbacks: Iterable[Any] = trainer.callbacks if trainer is not None else []
    saved = [c.path for c in callbacks if isinstance(c, LastCheckpoint)]
    return next((p for p in saved if p.is_file()), None)
