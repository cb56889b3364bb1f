"""`GANProgressBar`: Lightning's rich progress bar, fitted to a generator-step budget and to GPU training."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichProgressBar


class GANProgressBar(RichProgressBar):
    """Rich progress bar that does not print "Epoch 3/-2" when a `steps` budget leaves max_epochs unset, and
    reads the losses only when it redraws (every `refresh_rate` batches).

    Lightning reads every `self.log(..., prog_bar=True)` value back after every batch, and reading a loss that
    lives on the GPU waits for the GPU (a host sync), which stops the host from queuing the next step while the
    GPU works: the GANModule keeps its last losses on the device (`last_losses`) and this bar reads them here.
    """

    _read_metrics = True

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        return f"Epoch {current_epoch}" + (f"/{max_epochs - 1}" if max_epochs and max_epochs > 0 else "")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._read_metrics = (batch_idx + 1) % max(self.refresh_rate, 1) == 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._read_metrics = True

    def _update_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._read_metrics:
            super()._update_metrics(trainer, pl_module)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        """Lightning's bar metrics plus the GANModule's last losses and generator step (read here, at a redraw)."""
        metrics = super().get_metrics(trainer, pl_module)
        losses = getattr(pl_module, "last_losses", {})
        metrics |= {f"train/{name}": loss.item() for name, loss in losses.items()}
        if hasattr(pl_module, "g_steps"):
            metrics["train/g_step"] = pl_module.g_steps
        return metrics
