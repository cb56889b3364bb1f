"""`InLoopMetrics`: FID / KID / IS (and metrics.extra) during training, a best checkpoint at the best value of one
metric (FID by default), and a plot of it."""

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
from gan_lab.core.module import GANModule
from gan_lab.errors import ConfigError, WeightsUnavailable, one_line
from gan_lab.legacy import stored_best_value
from gan_lab.metrics import KINDS, RNG_SEED, Evaluator, MetricSettings, better, higher_is_better

# The logger name its lines had when gan_lab.callbacks was one module.
log = logging.getLogger("gan_lab.callbacks")


class InLoopMetrics(EveryNGeneratorSteps):
    """FID / KID / IS every N epochs or generator steps, a best checkpoint at the best value of `best_metric`
    (a kind: FID by default, or any kind the run measures, metrics.extra included, in the registry's direction),
    and a plot of it.

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
        best_metric: str = "fid",
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
        self.best_metric = best_metric
        self.history: list[dict[str, float]] = []
        self.best_value: float | None = None  # of best_metric, None until measured
        self.evaluator: Evaluator | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        try:
            self.evaluator = Evaluator(self.settings, trainer.datamodule, self.dataset_cfg, pl_module.device)
            if self.best_metric not in KINDS:  # checked once the run's metrics.extra are registered
                raise ConfigError(
                    f"metrics.best_metric={self.best_metric} is not a metric kind; choose one of {', '.join(KINDS)}"
                )
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
    def best_fid(self) -> float:
        """The best FID so far (inf before any), when the best checkpoint follows FID."""
        return self.best_value if self.best_metric == "fid" and self.best_value is not None else math.inf

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
        value = results.get(self.best_metric, results.get(f"{self.best_metric}_mean"))
        if value is not None and math.isfinite(value):
            if self.best_value is None or better(self.best_metric, value, self.best_value):
                self.best_value = float(value)
                if self.best_ckpt_path is not None:
                    trainer.save_checkpoint(self.best_ckpt_path)
        if trainer.is_global_zero:
            self.plot()
        return results

    def _plotted(self) -> str | None:
        """The logged name of the best-checkpoint metric, else of FID, KID or IS."""
        names = self.evaluator.names if self.evaluator is not None else {}
        for kind in dict.fromkeys((self.best_metric, "fid", "kid", "isc")):
            if kind in names and f"val/{names[kind]}" in self.history[-1]:
                return f"val/{names[kind]}"
        return next((k for k in self.history[-1] if k.startswith(("val/fid", "val/kid", "val/is"))), None)

    def plot(self) -> Path | None:
        """The best-checkpoint metric (FID by default; else KID or IS) against generator steps as a PNG."""
        if self.plot_path is None or not self.history:
            return None
        name = self._plotted()
        if name is None:
            return None
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        ax.plot(
            [h["g_step"] for h in self.history], [h.get(name, math.nan) for h in self.history], marker="o"
        )
        ax.set_xlabel("generator steps")
        ax.set_ylabel(name.removeprefix("val/"))
        values = [h[name] for h in self.history if name in h and math.isfinite(h[name])]
        best = (max if higher_is_better(name) else min)(values, default=math.nan)
        ax.set_title(f"{name.removeprefix('val/')} (best {best:.4g})")
        ax.grid(alpha=0.3)
        self.plot_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.plot_path, dpi=100, bbox_inches="tight")
        return self.plot_path

    def state_dict(self) -> dict[str, Any]:
        # best_fid as well: the key checkpoints had before best_metric existed (read by legacy.stored_best_value)
        return {
            "history": self.history,
            "best_metric": self.best_metric,
            "best_value": self.best_value,
            "best_fid": self.best_fid,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        metric = state_dict.get("best_metric", "fid")
        value = stored_best_value(state_dict)
        # a resumed run that now keeps the best of another metric starts that search afresh
        self.best_value = (
            value if metric == self.best_metric and value is not None and math.isfinite(value) else None
        )
