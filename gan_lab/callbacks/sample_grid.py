"""`SampleGrid`: a grid of G(fixed z) every N generator steps and at the end of training."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torchvision.utils import save_image

from gan_lab.callbacks.base import EveryNGeneratorSteps
from gan_lab.core.module import GANModule
from gan_lab.errors import ConfigError
from gan_lab.latents import class_grid_latents, grid_columns, interpolation_latents, latents, seeded


class SampleGrid(EveryNGeneratorSteps):
    """Saves `<dirpath>/step_<g_steps>.png`, a grid of G(z) for one fixed z, every N generator steps and at the end.

    The noise comes from its own seeded generator, so grids of different steps (and of resumed runs) compare
    the same latent points.
    """

    def __init__(
        self,
        dirpath: str,
        every_n_steps: int = 500,
        num_samples: int = 64,
        seed: int = 1234,
        interpolation_rows: int = 0,
        interpolation_steps: int = 10,
    ) -> None:
        if every_n_steps < 1 or num_samples < 1 or interpolation_rows < 0 or interpolation_steps < 2:
            raise ConfigError(
                "callbacks.samples needs every_n_steps >= 1, num_samples >= 1, interpolation_rows >= 0 "
                "and interpolation_steps >= 2"
            )
        super().__init__(every_n_steps)
        self.interpolation_rows, self.interpolation_steps = interpolation_rows, interpolation_steps
        self.dirpath = Path(dirpath)
        self.num_samples = num_samples
        self.seed = seed

    def fixed_noise(self, module: GANModule) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The same (z, labels, images per row) every call.

        Conditional models get one row per class, each column sharing one z, so only the class changes down
        a column.
        """
        gen = seeded(self.seed)
        if not module.num_classes:
            z = latents(self.num_samples, module.z_dim, gen)
            return z.to(module.device), None, grid_columns(self.num_samples)
        per_class = max(1, self.num_samples // module.num_classes)
        z, labels = class_grid_latents(per_class, module.num_classes, module.z_dim, gen)
        return z.to(module.device), labels.to(module.device), per_class

    def save(self, trainer: pl.Trainer, module: GANModule) -> Path | None:
        """Write the grid for the current generator step, unless written already; returns its path."""
        return self.run_once(trainer, module)

    def on_every(self, trainer: pl.Trainer, module: GANModule) -> Path | None:
        if not trainer.is_global_zero:  # rank 0 writes
            return None
        z, labels, nrow = self.fixed_noise(module)
        images = module.generate(z, labels).float()
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"step_{module.g_steps:07d}.png"
        save_image(images, path, nrow=nrow, normalize=True, value_range=(-1, 1))
        from gan_lab.loggers import log_image  # W&B: the grid as `samples` at this generator step

        log_image(trainer.loggers, "samples", path, step=module.g_steps)
        if self.interpolation_rows:
            self.save_interpolation(module)
        return path

    def save_interpolation(self, module: GANModule) -> Path:
        """`interp_step_<g_steps>.png`: rows of spherical walks between fixed random z pairs (one class per row)."""
        rows, steps = self.interpolation_rows, self.interpolation_steps
        z, labels = interpolation_latents(
            rows, steps, module.z_dim, module.num_classes, seeded(self.seed + 1)
        )
        images = module.generate(z.to(module.device), None if labels is None else labels.to(module.device))
        path = self.dirpath / f"interp_step_{module.g_steps:07d}.png"
        save_image(images.float(), path, nrow=steps, normalize=True, value_range=(-1, 1))
        return path

    def on_train_end(self, trainer: pl.Trainer, module: GANModule) -> None:
        self.save(trainer, module)
