"""Lightning callbacks of gan_lab: sample grids of a fixed noise batch, a progress bar for step budgets."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar
from torchvision.utils import save_image

from gan_lab.module import GANModule


class SampleGrid(pl.Callback):
    """Saves `<dirpath>/step_<g_steps>.png`, a grid of G(z) for one fixed z, every N generator steps and at the end.

    The noise comes from its own seeded generator, so grids of different steps (and of resumed runs) compare
    the same latent points.
    """

    def __init__(
        self, dirpath: str, every_n_steps: int = 500, num_samples: int = 64, seed: int = 1234
    ) -> None:
        if every_n_steps < 1 or num_samples < 1:
            raise ValueError("SampleGrid needs every_n_steps >= 1 and num_samples >= 1")
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.seed = seed
        self._last_saved_step = -1

    def fixed_noise(self, module: GANModule) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The same (z, labels) every call: (num_samples, z_dim) and, if conditional, cycling class labels."""
        gen = torch.Generator().manual_seed(self.seed)
        z = torch.randn(self.num_samples, module.z_dim, generator=gen).to(module.device)
        labels = None
        if module.num_classes:
            labels = (torch.arange(self.num_samples) % module.num_classes).to(module.device)
        return z, labels

    def save(self, trainer: pl.Trainer, module: GANModule) -> Path | None:
        """Write the grid for the current generator step (rank 0 only); returns its path."""
        if module.g_steps == self._last_saved_step or not trainer.is_global_zero:
            return None
        self._last_saved_step = module.g_steps
        z, labels = self.fixed_noise(module)
        images = module.generate(z, labels).float()
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"step_{module.g_steps:07d}.png"
        nrow = module.num_classes or int(self.num_samples**0.5)
        save_image(images, path, nrow=nrow, normalize=True, value_range=(-1, 1))
        return path

    def on_train_batch_end(self, trainer: pl.Trainer, module: GANModule, *args: object) -> None:
        if module.g_steps > 0 and module.g_steps % self.every_n_steps == 0:
            self.save(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: GANModule) -> None:
        self.save(trainer, module)


class GANProgressBar(RichProgressBar):
    """Rich progress bar that does not print "Epoch 3/-2" when a `steps` budget leaves max_epochs unset."""

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        return f"Epoch {current_epoch}" + (f"/{max_epochs - 1}" if max_epochs and max_epochs > 0 else "")
