"""Lightning callbacks of gan_lab: sample grids, in-loop FID/KID/IS with a best checkpoint, a progress bar."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import RichProgressBar
from matplotlib.figure import Figure
from torchvision.utils import save_image

from gan_lab.errors import ConfigError, WeightsUnavailable, one_line
from gan_lab.metrics import RNG_SEED, Evaluator, MetricSettings
from gan_lab.module import GANModule
from gan_lab.sample import interpolate

log = logging.getLogger(__name__)


class SampleGrid(pl.Callback):
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
        self.interpolation_rows, self.interpolation_steps = interpolation_rows, interpolation_steps
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.seed = seed
        self._last_saved_step = -1

    def fixed_noise(self, module: GANModule) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """The same (z, labels, images per row) every call.

        Conditional models get one row per class, each column sharing one z, so only the class changes down
        a column.
        """
        gen = torch.Generator().manual_seed(self.seed)
        if not module.num_classes:
            z = torch.randn(self.num_samples, module.z_dim, generator=gen)
            return z.to(module.device), None, max(1, round(self.num_samples**0.5))
        per_class = max(1, self.num_samples // module.num_classes)
        z = torch.randn(per_class, module.z_dim, generator=gen).repeat(module.num_classes, 1)
        labels = torch.arange(module.num_classes).repeat_interleave(per_class)
        return z.to(module.device), labels.to(module.device), per_class

    def save(self, trainer: pl.Trainer, module: GANModule) -> Path | None:
        """Write the grid for the current generator step (rank 0 only); returns its path."""
        if module.g_steps == self._last_saved_step or not trainer.is_global_zero:
            return None
        self._last_saved_step = module.g_steps
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
        gen = torch.Generator().manual_seed(self.seed + 1)
        rows, steps = self.interpolation_rows, self.interpolation_steps
        ends = torch.randn(2 * rows, module.z_dim, generator=gen)
        z = torch.cat([interpolate(ends[2 * r], ends[2 * r + 1], steps, "slerp") for r in range(rows)])
        labels = (
            (torch.arange(rows) % module.num_classes).repeat_interleave(steps) if module.num_classes else None
        )
        images = module.generate(z.to(module.device), None if labels is None else labels.to(module.device))
        path = self.dirpath / f"interp_step_{module.g_steps:07d}.png"
        save_image(images.float(), path, nrow=steps, normalize=True, value_range=(-1, 1))
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


class InLoopMetrics(pl.Callback):
    """FID / KID / IS every N epochs or generator steps, a best checkpoint at the best FID, and an FID plot.

    Logged under the registry's names (e.g. `val/fid5k_train32`, `val/kid...`, `val/is5k_32`). Under DDP each
    rank generates its share of the samples from its own seed and the features are gathered, so every rank
    scores the same full set. The same seeds are used at every evaluation, so the curve tracks G, not noise.
    """

    def __init__(
        self,
        settings: MetricSettings,
        dataset_cfg: Mapping[str, Any],
        every: int = 1,
        unit: str = "epoch",
        best_ckpt_path: str | None = None,
        plot_path: str | None = None,
        required: bool = True,
    ) -> None:
        if unit not in ("epoch", "step"):
            raise ConfigError(f"metrics.every_unit must be 'epoch' or 'step' (generator steps), got '{unit}'")
        if every < 1:
            raise ConfigError(f"metrics.every must be >= 1, got {every}")
        self.settings, self.dataset_cfg = settings, dataset_cfg
        self.every, self.unit = every, unit
        self.best_ckpt_path = Path(best_ckpt_path) if best_ckpt_path else None
        self.plot_path = Path(plot_path) if plot_path else None
        self.required = required
        self.history: list[dict[str, float]] = []
        self.best_fid = math.inf
        self.evaluator: Evaluator | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        try:
            self.evaluator = Evaluator(self.settings, trainer.datamodule, self.dataset_cfg, pl_module.device)
        except WeightsUnavailable as err:
            if self.required:
                raise
            # The default metrics config: training matters more than in-loop FID, so say so loudly and go on.
            log.warning("in-loop metrics are OFF for this run: %s", one_line(err))
            return
        log.info("in-loop metrics: %s", self.evaluator.describe())
        # Rank 0 computes (or finds) the reference features first, so the other ranks read them from the cache.
        if trainer.is_global_zero:
            self.evaluator.reference()
        trainer.strategy.barrier()
        self.evaluator.reference()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: GANModule, *args: object) -> None:
        if self.evaluator is None:
            return
        steps = pl_module.g_steps
        evaluated = self.history and self.history[-1]["g_step"] == steps
        if self.unit == "step" and steps > 0 and steps % self.every == 0 and not evaluated:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: GANModule) -> None:
        if self.evaluator is None:
            return
        last_epoch = trainer.should_stop or trainer.current_epoch + 1 == trainer.max_epochs
        if self.unit == "epoch" and ((trainer.current_epoch + 1) % self.every == 0 or last_epoch):
            self.evaluate(trainer, pl_module)

    def _gathered_features(self, trainer: pl.Trainer, pl_module: GANModule) -> dict[str, torch.Tensor]:
        s, world, rank = self.evaluator.settings, trainer.world_size, trainer.global_rank
        per_rank = math.ceil(s.num_fake / world)  # the last rank pads with samples past num_fake, cut below
        batches = self.evaluator.generated(
            pl_module.generate, pl_module.z_dim, pl_module.num_classes, seed=RNG_SEED,
            start=rank * per_rank, stop=(rank + 1) * per_rank,
        )  # fmt: skip
        if world > 1:
            # Each rank's BN running statistics follow its own batches (DDP re-broadcasts buffers only at the
            # next training forward): score rank 0's generator everywhere, the one its checkpoints hold.
            for buffer in pl_module.sampling_generator.buffers():
                torch.distributed.broadcast(buffer, src=0)
        features = self.evaluator.fake_features(batches)
        if world == 1:
            return features
        gathered = {k: pl_module.all_gather(v.to(pl_module.device)) for k, v in features.items()}
        # (world, per_rank, F) in rank order is the single-process order of the stream
        return {k: v.reshape(-1, v.shape[-1])[: s.num_fake].cpu() for k, v in gathered.items()}

    def evaluate(self, trainer: pl.Trainer, pl_module: GANModule) -> dict[str, float]:
        """Score the current generator, log it, keep the best checkpoint, redraw the curve; returns the results."""
        results = self.evaluator.score(self._gathered_features(trainer, pl_module))
        logged = {f"val/{name}": value for name, value in self.evaluator.named(results).items()}
        for logger in trainer.loggers:  # indexed by generator step, like the training metrics
            logger.log_metrics(logged, step=pl_module.g_steps)
        for name, value in logged.items():  # progress bar, and trainer.callback_metrics for other callbacks
            pl_module.log(name, value, prog_bar=name.startswith("val/fid"), logger=False)
        self.history.append({"g_step": pl_module.g_steps, "epoch": trainer.current_epoch, **logged})
        if "fid" in results and results["fid"] < self.best_fid:
            self.best_fid = results["fid"]
            if self.best_ckpt_path is not None:
                trainer.save_checkpoint(self.best_ckpt_path)
        if trainer.is_global_zero:
            self.plot()
        return results

    def plot(self) -> Path | None:
        """FID (or KID) against generator steps as a PNG."""
        if self.plot_path is None or not self.history:
            return None
        name = next((k for k in self.history[-1] if k.startswith(("val/fid", "val/kid", "val/is"))), None)
        if name is None:
            return None
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(
            [h["g_step"] for h in self.history], [h.get(name, math.nan) for h in self.history], marker="o"
        )
        ax.set_xlabel("generator steps")
        ax.set_ylabel(name.removeprefix("val/"))
        ax.set_title(
            f"{name.removeprefix('val/')} (best {min(h.get(name, math.inf) for h in self.history):.2f})"
        )
        ax.grid(alpha=0.3)
        self.plot_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.plot_path, dpi=100, bbox_inches="tight")
        return self.plot_path

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best_fid": self.best_fid}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.best_fid = state_dict.get("best_fid", math.inf)
