"""Checkpoint writes that a kill, a crash or a full disk cannot turn into a lost or half-written checkpoint.

And `last.ckpt`, the checkpoint `resume=` continues from, kept current during the run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from gan_lab.errors import ConfigError, GanLabError


class CheckpointWriteError(GanLabError):
    """A checkpoint could not be written (disk full, permissions); the previous one is untouched."""


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """torch.save into a temporary file beside `path`, fsync, then rename over `path`.

    A rename within one directory is atomic, so `path` always holds either the old or the new complete file:
    a kill -9 mid-write leaves only a stray temporary file, and a write error (ENOSPC) removes it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            kept = "the previous checkpoint is kept" if path.exists() else "no earlier checkpoint exists"
            raise CheckpointWriteError(
                f"could not write checkpoint {path} ({err.strerror or err}); {kept}; free disk space or "
                "fix the folder's permissions, then continue with resume=<run dir>"
            ) from err
        raise
    _fsync_dir(path.parent)  # makes the rename itself durable across a power cut


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes (remote URLs keep Lightning's own writer)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


class LastCheckpoint(pl.Callback):
    """Keeps `<dirpath>/last.ckpt` current: every N generator steps, at every epoch end and when training ends.

    Lightning's ModelCheckpoint(save_last=True) only refreshes last.ckpt when it also saves a periodic
    checkpoint, so a run's final state could be missing from it; this is the checkpoint `resume=` reads.
    """

    def __init__(self, dirpath: str | os.PathLike[str], every_n_steps: int = 500) -> None:
        if every_n_steps < 1:
            raise ConfigError(
                f"callbacks.last.every_n_steps must be >= 1 generator steps, got {every_n_steps}"
            )
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self._saved_at: int | None = None

    def save(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        g_steps = getattr(module, "g_steps", trainer.global_step)
        if g_steps != self._saved_at:
            trainer.save_checkpoint(self.path, weights_only=False)
            self._saved_at = g_steps

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        g_steps = getattr(module, "g_steps", 0)
        if g_steps > 0 and g_steps % self.every_n_steps == 0:
            self.save(trainer, module)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.save(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.save(trainer, module)
