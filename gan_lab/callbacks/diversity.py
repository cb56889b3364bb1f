"""`DiversityMonitor`, a mode-collapse detector: how spread out G's samples of a fixed noise batch are, relative to real images.

`train/diversity` = mean pairwise L2 distance of G(z) for a fixed z, divided by the same statistic of a fixed
batch of real training images (both average-pooled to 16x16, so pixel noise does not count as diversity).
About 1 for a healthy generator, near 0 for a collapsed one; a warning (and optionally a stop) below threshold.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from gan_lab.callbacks.base import EveryNGeneratorSteps
from gan_lab.core.module import GANModule
from gan_lab.errors import ConfigError
from gan_lab.latents import cycled_labels, latents, seeded
from gan_lab.run.paths import BEST_CKPT, CHECKPOINTS_DIR, LAST_CKPT

log = logging.getLogger("gan_lab.diversity")

METRIC = "train/diversity"


def mean_pairwise_distance(images: Tensor, size: int = 16) -> Tensor:
    """Mean L2 distance over all pairs of images (N, C, H, W), each average-pooled to at most size x size; ()."""
    if images.shape[0] < 2:
        raise ValueError(f"mean_pairwise_distance needs at least 2 images, got {images.shape[0]}")
    pooled = F.adaptive_avg_pool2d(images.float(), (min(size, images.shape[-2]), min(size, images.shape[-1])))
    return torch.pdist(pooled.flatten(1)).mean()


def real_batch(dataset: Dataset, count: int, seed: int) -> Tensor:
    """`count` training images (count, C, H, W) at evenly spaced indices, the same every call.

    Dataset transforms may flip at random: they run on a forked, seeded RNG, so the batch is reproducible and
    the training run's random stream is left as it was.
    """
    size = len(dataset)  # type: ignore[arg-type]
    indices = torch.linspace(0, size - 1, min(count, size)).round().long()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([dataset[int(i)][0] for i in indices])


class DiversityMonitor(EveryNGeneratorSteps):
    """Logs `train/diversity` every N generator steps; warns (and with stop=True ends the run) below threshold.

    A run stopped for collapse ends like one that reached its budget (status "completed", last checkpoint
    written): the reason is the ERROR line in the log and the low `train/diversity` in metrics.csv.
    Under DDP every rank measures and rank 0's value is broadcast, so all ranks warn and stop together.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        num_samples: int = 64,
        threshold: float = 0.3,
        stop: bool = False,
        start_step: int = 1000,
        size: int = 16,
        seed: int = 4321,
    ) -> None:
        if every_n_steps < 1 or num_samples < 2 or start_step < 0 or size < 1 or not threshold >= 0:
            raise ConfigError(
                "callbacks.diversity needs every_n_steps >= 1, num_samples >= 2, threshold >= 0, start_step >= 0 "
                "and size >= 1"
            )
        super().__init__(every_n_steps)
        self.num_samples, self.threshold = num_samples, threshold
        self.stop, self.start_step, self.size, self.seed = stop, start_step, size, seed
        self.real_distance: float | None = None
        self.history: list[tuple[int, float]] = []  # (g_steps, ratio) of every measurement
        self.stopped_at: int | None = None
        self._below = False  # warned about the current drop; re-armed when the ratio recovers

    def on_fit_start(self, trainer: pl.Trainer, pl_module: GANModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "train_set", None) is None:
            raise ConfigError(
                "callbacks.diversity needs a datamodule with a train_set (real images to compare with); "
                "drop it with callbacks.diversity=null"
            )
        real = real_batch(datamodule.train_set, self.num_samples, self.seed)
        self.real_distance = mean_pairwise_distance(real, self.size).item()
        if not self.real_distance > 0:
            raise ConfigError("callbacks.diversity: the real images it compares with are all identical")

    def fixed_noise(self, module: GANModule) -> tuple[Tensor, Tensor | None]:
        """The same z (num_samples, z_dim) every call, and balanced labels (num_samples,) for conditional G."""
        z = latents(self.num_samples, module.z_dim, seeded(self.seed)).to(module.device)
        labels = cycled_labels(self.num_samples, module.num_classes)
        return z, None if labels is None else labels.to(module.device)

    def measure(self, module: GANModule) -> float:
        """Mean pairwise distance of G(fixed z) over that of the real batch: ~1 healthy, ~0 collapsed."""
        if self.real_distance is None:
            raise RuntimeError("DiversityMonitor.measure runs after fit start (it needs the real batch)")
        samples = module.generate(*self.fixed_noise(module))
        return mean_pairwise_distance(samples, self.size).item() / self.real_distance

    def on_every(self, trainer: pl.Trainer, pl_module: GANModule) -> None:
        step = pl_module.g_steps
        # Ranks' BN statistics differ slightly: rank 0's value decides everywhere, so no rank stops alone.
        ratio = float(trainer.strategy.broadcast(self.measure(pl_module), src=0))
        self.history.append((step, ratio))
        for logger in trainer.loggers:
            logger.log_metrics({METRIC: ratio}, step=step)
        pl_module.log(METRIC, ratio, logger=False)  # trainer.callback_metrics, for other callbacks
        self.check(trainer, step, ratio)

    def check(self, trainer: pl.Trainer, step: int, ratio: float) -> None:
        """Warn once per drop below the threshold (after start_step); stop the run when stop=True."""
        if not math.isfinite(ratio):
            return  # NaN samples mean divergence, which GANModule.check_finite reports, not collapse
        if ratio >= self.threshold:
            self._below = False
            return
        if step < self.start_step or self._below:
            return
        self._below = True
        if trainer.is_global_zero:
            log.warning(
                "possible mode collapse at generator step %d: train/diversity=%.3f (fixed-noise samples are "
                "%.0f%% as spread out as real images), below the threshold %.2f; try a lower optim.lr, "
                "normalization=spectral or a larger n_critic, and keep %s/%s (best FID) or an "
                "earlier checkpoint rather than %s",
                step, ratio, 100 * ratio, self.threshold, CHECKPOINTS_DIR, BEST_CKPT, LAST_CKPT,
            )  # fmt: skip
        if self.stop:
            trainer.should_stop = True
            self.stopped_at = step
            if trainer.is_global_zero:
                log.error(
                    "stopping the run at generator step %d: mode collapse (callbacks.diversity.stop=true); "
                    "set callbacks.diversity.stop=false to train on regardless",
                    step,
                )

    def state_dict(self) -> dict[str, Any]:
        # A resumed run neither measures its checkpoint's step twice nor warns again about the same drop.
        return {"history": self.history, "below": self._below, "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(h) for h in state_dict.get("history", [])]
        self._below = state_dict.get("below", False)
        self.last_step = state_dict.get("last_step", -1)
