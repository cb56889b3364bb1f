"""`InLoopMetrics`: FID / KID / IS during training, a best checkpoint at the best FID, and an FID plot."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from matplotlib.figure import Figure

from gan_lab.callbacks.base import EveryNGeneratorSteps
from gan_lab.errors import ConfigError, WeightsUnavailable, one_line
from gan_lab.metrics import RNG_SEED, Evaluator, MetricSettings
from gan_lab.module import GANModule

# The logger name its lines had when gan_lab.callbacks was one module.
log = logging.getLogger("gan_lab.callbacks")


class InLoopMetrics(EveryNGeneratorSteps):
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
        super().__init__(every)  # unit="step": every N generator steps; unit="epoch": see on_train_epoch_end
        self.settings, self.dataset_cfg = settings, dataset_cfg
        self.unit = unit
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

    @property
    def every(self) -> int:
        """Epochs or generator steps (unit) between evaluations."""
        return self.every_n_steps

    def enabled(self) -> bool:
        return self.evaluator is not None and self.unit == "step"

    def last_run_step(self) -> int:
        # The history (saved in checkpoints) records it: a resumed run does not score its checkpoint's step again.
        return self.history[-1]["g_step"] if self.history else -1

    def on_every(self, trainer: pl.Trainer, pl_module: GANModule) -> dict[str, float]:
        return self.evaluate(trainer, pl_module)

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
