"""`GANProgressBar`: Lightning's rich progress bar, fitted to a generator-step budget."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class GANProgressBar(RichProgressBar):
    """Rich progress bar that does not print "Epoch 3/-2" when a `steps` budget leaves max_epochs unset."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        return f"Epoch {current_epoch}" + (f"/{max_epochs - 1}" if max_epochs and max_epochs > 0 else "")
