"""GANModule: one Lightning module with the alternating D/G step shared by every GAN family.

Schedule (manual optimization), per training batch of real images:
  1. one discriminator step on that batch: D sees the real batch and a fresh fake batch G(z) (G not in the
     graph), minimises loss.d_loss + regularizer.penalty, then regularizer.after_d_step (e.g. weight clipping);
  2. after every `n_critic`-th discriminator step (counted over the whole run, across epoch boundaries), one
     generator step on a fresh noise batch of the same size, minimising loss.g_loss(D(G(z))).
So each D step uses a fresh real batch, and an epoch (one pass over the data) has len(data) D steps and about
len(data) / n_critic G steps. Per-step schedulers advance with each G step, per-epoch ones each epoch.
The run's budget is `max_g_steps` generator steps or trainer.max_epochs: Lightning's `global_step` counts D
and G optimizer steps together, so gan_lab keeps its own counters (`g_steps`, `d_steps`, saved in checkpoints).
"""

from __future__ import annotations

import inspect
import logging
import math
import random
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import get_class, instantiate
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gan_lab.augment import Augmentations
from gan_lab.errors import ConfigError, GanLabError
from gan_lab.losses import GANLoss, WassersteinLoss, discriminator_accuracy
from gan_lab.regularizers import Regularizer, WeightClip
from gan_lab.run.checkpoint_callback import LastCheckpoint

log = logging.getLogger(__name__)

_LR_KEYS = ("lr", "lr_g", "lr_d")
# Scheduler arguments that mean "the whole run" when left null in conf/scheduler/.
_RUN_LENGTH_KEYS = ("T_max", "total_iters")


def learning_rates(optim: Mapping[str, Any]) -> tuple[float, float]:
    """(lr_g, lr_d): `lr` for both networks unless `lr_g` / `lr_d` override it (two time-scale update rule)."""
    rates = []
    for key in ("lr_g", "lr_d"):
        name, value = (
            (f"optim.{key}", optim[key]) if optim.get(key) is not None else ("optim.lr", optim.get("lr"))
        )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be a number > 0, got {value!r}; e.g. {name}=2e-4")
        rates.append(float(value))
    return rates[0], rates[1]


class Diverged(GanLabError):
    """A loss or a weight became NaN or infinite."""


def rng_state() -> dict[str, Any]:
    """Every global RNG state (torch CPU and CUDA, numpy, python), as types `torch.load(weights_only=True)` reads."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached_gaussian": cached},
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what rng_state() returned."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_optimizer(optim: Mapping[str, Any], params: Any, lr: float) -> torch.optim.Optimizer:
    """Instantiate conf/optim's `_target_` for one network with its own learning rate.

    `fused: null` picks the fused (single-kernel) implementation when every parameter is a float tensor on
    a device that has one (CPU and CUDA in current torch): it is the fastest, and equal to the per-parameter
    loop up to rounding.
    """
    kwargs = {k: v for k, v in optim.items() if k not in _LR_KEYS}
    params = list(params)
    if "fused" in kwargs and kwargs["fused"] is None:
        kwargs["fused"] = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    accepted = inspect.signature(get_class(kwargs["_target_"])).parameters
    unknown = sorted(k for k in kwargs if k != "_target_" and k not in accepted)
    if unknown:  # e.g. a preset's Adam betas after optim=rmsprop
        raise ConfigError(
            f"{kwargs['_target_']} takes no {', '.join(unknown)}; drop it with "
            + " ".join(f"~optim.{k}" for k in unknown)
        )
    return instantiate(kwargs, params=params, lr=lr, _convert_="all")


def build_scheduler(scheduler: Mapping[str, Any], optimizer: torch.optim.Optimizer, run_length: int) -> Any:
    """Instantiate conf/scheduler's `_target_`; null T_max / total_iters become the run length in intervals."""
    kwargs = {k: v for k, v in scheduler.items() if k != "interval"}
    for key in _RUN_LENGTH_KEYS:
        if key in kwargs and kwargs[key] is None:
            kwargs[key] = run_length
    return instantiate(kwargs, optimizer=optimizer, _convert_="all")


class GANModule(pl.LightningModule):
    """Trains `generator` against `discriminator` with a swappable loss and regularizer."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss,
        regularizer: Regularizer | None = None,
        optim: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        n_critic: int = 1,
        max_g_steps: int | None = None,
        z_dim: int = 100,
        num_classes: int = 0,
        augment: Augmentations | None = None,
        ema_decay: float | None = None,
        ema_start_step: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
            raise ConfigError(
                f"n_critic must be an integer >= 1 (D steps per G step), got {n_critic!r}; e.g. n_critic=5 for WGAN"
            )
        if max_g_steps is not None and max_g_steps < 1:
            raise ConfigError(
                f"steps must be >= 1 generator steps (or null to use trainer.max_epochs), got {max_g_steps}"
            )
        # channels_last (NHWC) convolutions are faster on CPUs (oneDNN) and on GPU tensor cores.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = generator.to(memory_format=self.memory_format)
        self.discriminator = discriminator.to(memory_format=self.memory_format)
        self.loss = loss
        self.regularizer = regularizer or Regularizer()
        self.optim = dict(optim or {"_target_": "torch.optim.Adam", "lr": 2e-4, "betas": (0.5, 0.999)})
        self.lr_g, self.lr_d = learning_rates(self.optim)
        self.scheduler = dict(scheduler) if scheduler else None
        self.n_critic = n_critic
        self.max_g_steps = max_g_steps
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.augment = augment or Augmentations(None)
        self.generator_ema = self._build_ema(ema_decay)
        self.ema_start_step = ema_start_step
        if compile:
            # In place (nn.Module.compile): parameter names, and so checkpoints, stay those of the plain nets.
            # G and D separately, not the LightningModule, whose step has Python control flow.
            self.generator.compile()
            self.discriminator.compile()
        if config:
            # The resolved run config: loggers record it (hparams.yaml) and checkpoints keep it.
            self.save_hyperparameters(dict(config))
        self.g_steps = 0
        self.d_steps = 0
        self._log_sums: dict[str, tuple[Tensor | float, int]] = {}
        # The first non-finite loss as (seen, is_generator, g_step, d_step, value), kept on the device so
        # watching costs no host sync; checked when metrics are written and before every checkpoint.
        self._first_nonfinite: Tensor | None = None
        self._rng_to_restore: Mapping[str, Any] | None = None  # set on resume, applied at the next batch
        if isinstance(self.regularizer, WeightClip) and not isinstance(self.loss, WassersteinLoss):
            log.warning(
                "weight clipping is meant for the Wasserstein critic (loss=wasserstein); with %s it limits D "
                "without the theory behind it",
                type(self.loss).__name__,
            )

    def _build_ema(self, decay: float | None) -> AveragedModel | None:
        """An exponential moving average of G's parameters (buffers are copied, see _update_ema), or None."""
        if decay is None:
            return None
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"ema.decay must be in (0, 1) (e.g. 0.999) or null for no EMA, got {decay}")
        ema = AveragedModel(self.generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
        return ema.requires_grad_(False)

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        if self.g_steps <= self.ema_start_step:
            self.generator_ema.n_averaged.zero_()  # until averaging starts, the average is a copy of G
        self.generator_ema.update_parameters(self.generator)
        # Buffers are copied, never averaged: BN statistics belong to the current weights, and averaged
        # spectral-norm power-iteration vectors would no longer be singular vectors.
        for ema_buffer, buffer in zip(
            self.generator_ema.module.buffers(), self.generator.buffers(), strict=True
        ):
            ema_buffer.copy_(buffer)

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator used for samples and metrics: the EMA one when enabled."""
        return self.generator if self.generator_ema is None else self.generator_ema.module

    # --- sampling -----------------------------------------------------------------------------------------
    def sample_noise(self, n: int) -> Tensor:
        """z ~ N(0, I), shape (n, z_dim), drawn directly on the module's device."""
        return torch.randn(n, self.z_dim, device=self.device)

    def sample_labels(self, n: int) -> Tensor | None:
        """Uniform class labels (n,) for conditional models; None when unconditional."""
        if self.num_classes == 0:
            return None
        return torch.randint(0, self.num_classes, (n,), device=self.device)

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (N, C, H, W) in [-1, 1] from the sampling generator in eval mode; restores the mode."""
        generator = self.sampling_generator
        was_training = generator.training
        generator.eval()
        try:
            return generator(z, labels)
        finally:
            generator.train(was_training)

    # --- optimizers ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        opt_g = build_optimizer(self.optim, self.generator.parameters(), self.lr_g)
        opt_d = build_optimizer(self.optim, self.discriminator.parameters(), self.lr_d)
        if not self.scheduler:
            return [opt_g, opt_d]
        length = self._run_length(self.scheduler.get("interval", "step"))
        return [opt_g, opt_d], [build_scheduler(self.scheduler, opt, length) for opt in (opt_g, opt_d)]

    def _run_length(self, interval: str) -> int:
        """Length of the run in scheduler intervals: generator steps ("step") or epochs ("epoch")."""
        if interval not in ("step", "epoch"):
            raise ConfigError(f"scheduler.interval must be 'step' or 'epoch', got '{interval}'")
        batches = self._batches_per_epoch()
        if self.max_g_steps:
            epochs = math.ceil(self.max_g_steps * self.n_critic / batches)
            return self.max_g_steps if interval == "step" else epochs
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ConfigError("this scheduler needs a finite run: set steps=N or trainer.max_epochs=N")
        return max_epochs * batches // self.n_critic if interval == "step" else max_epochs

    def _batches_per_epoch(self) -> int:
        batches = self.trainer.num_training_batches
        if not math.isfinite(batches):
            batches = len(self.trainer.datamodule.train_dataloader())
        return int(batches)

    def _schedulers(self) -> list[Any]:
        if not self.scheduler:
            return []
        schedulers = self.lr_schedulers()
        return list(schedulers) if isinstance(schedulers, list) else [schedulers]

    # --- the training step --------------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, labels = batch
        real = real.contiguous(memory_format=self.memory_format)
        labels = labels if self.num_classes else None
        opt_g, opt_d = self.optimizers()
        self._discriminator_step(opt_d, real, labels)
        if self.d_steps % self.n_critic == 0:
            self._generator_step(opt_g, real.shape[0])
        # Per-epoch schedulers step after each full pass over the data, counted in D steps rather than at
        # Lightning's epoch end, which also comes early when a `steps` budget stops a run mid-epoch.
        if self._scheduler_interval() == "epoch" and self.d_steps % self._batches_per_epoch() == 0:
            for scheduler in self._schedulers():
                scheduler.step()

    def _scheduler_interval(self) -> str | None:
        return self.scheduler.get("interval", "step") if self.scheduler else None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._rng_to_restore is not None:
            # Restored here, not when the checkpoint is read: Lightning draws random numbers while setting up.
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    def _discriminator_step(self, opt_d: Any, real: Tensor, labels: Tensor | None) -> None:
        n = real.shape[0]
        fake_labels = labels  # conditional D compares real and fake of the same classes
        with torch.no_grad():
            fake = self.generator(self.sample_noise(n), fake_labels)
        real, fake = self.augment.real(real), self.augment.fake(fake)  # penalties see what D scored
        self.toggle_optimizer(opt_d)
        real_logits = self.discriminator(real, labels)
        fake_logits = self.discriminator(fake, fake_labels)
        d_loss = self.loss.d_loss(real_logits, fake_logits)
        penalty = self.regularizer.penalty(self.discriminator, real, fake, labels)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss + penalty)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.regularizer.after_d_step(self.discriminator)
        self.d_steps += 1
        self._watch_finite(d_loss + penalty, is_generator=False)
        real_logits, fake_logits = real_logits.detach(), fake_logits.detach()
        self._accumulate(
            d_loss=d_loss,
            d_penalty=penalty,
            d_real=real_logits.mean(),
            d_fake=fake_logits.mean(),
            d_accuracy=discriminator_accuracy(self.loss, real_logits, fake_logits),
        )
        self.log("train/d_loss", d_loss.detach(), prog_bar=True, logger=False)

    def _generator_step(self, opt_g: Any, n: int) -> None:
        self.toggle_optimizer(opt_g)  # D's parameters stop requiring grad: no D gradients are computed
        fake_labels = self.sample_labels(n)
        fake = self.augment.fake(self.generator(self.sample_noise(n), fake_labels))
        g_loss = self.loss.g_loss(self.discriminator(fake, fake_labels))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.g_steps += 1
        self._watch_finite(g_loss, is_generator=True)
        self._update_ema()
        if self._scheduler_interval() == "step":
            for scheduler in self._schedulers():
                scheduler.step()
        self._accumulate(g_loss=g_loss)
        self.log("train/g_loss", g_loss.detach(), prog_bar=True, logger=False)
        self.log("train/g_step", float(self.g_steps), prog_bar=True, logger=False)
        if self.g_steps % self.trainer.log_every_n_steps == 0 or self.g_steps == self.max_g_steps:
            self._write_training_metrics()
        if self.max_g_steps and self.g_steps >= self.max_g_steps:
            self.trainer.should_stop = True

    # --- logging ------------------------------------------------------------------------------------------
    # Training metrics go straight to the loggers, at generator steps: Lightning's self.log would repeat a
    # G-step value on the D-only batches of n_critic > 1 and index rows by batch, not by generator step.
    def _accumulate(self, **values: Tensor) -> None:
        """Add per-step values to running sums on the device (no host sync until they are written)."""
        for name, value in values.items():
            total, count = self._log_sums.get(name, (0.0, 0))
            self._log_sums[name] = (total + value.detach().float(), count + 1)

    def _write_training_metrics(self) -> None:
        """Log the means since the last write (D values over all D steps), learning rates and counters."""
        self.check_finite()
        names = list(self._log_sums)
        means = (
            torch.stack([total / count for total, count in self._log_sums.values()]).tolist() if names else []
        )
        metrics = {f"train/{name}": value for name, value in zip(names, means, strict=True)}
        opt_g, opt_d = self.optimizers()
        metrics |= {
            "train/lr_g": opt_g.param_groups[0]["lr"],
            "train/lr_d": opt_d.param_groups[0]["lr"],
            "train/d_step": self.d_steps,
            "epoch": self.current_epoch,
        }
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.g_steps)
        self._log_sums.clear()

    # --- divergence guard ---------------------------------------------------------------------------------
    def _watch_finite(self, loss: Tensor, is_generator: bool) -> None:
        """Remember the first step whose loss is NaN or infinite, without a host sync."""
        loss = loss.detach().double()
        record = torch.stack(
            [torch.ones_like(loss), torch.full_like(loss, float(is_generator)),
             torch.full_like(loss, self.g_steps), torch.full_like(loss, self.d_steps), loss]
        )  # fmt: skip
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.zeros_like(record)
        keep = (self._first_nonfinite[0] > 0) | torch.isfinite(loss)
        self._first_nonfinite = torch.where(keep, self._first_nonfinite, record)

    def check_finite(self) -> None:
        """Raise Diverged, naming the step and values, if a loss or a weight has become NaN or infinite."""
        problems = []
        if self._first_nonfinite is not None and self._first_nonfinite[0] > 0:
            _, is_generator, g_step, d_step, value = self._first_nonfinite.tolist()
            which = "g_loss" if is_generator else "d_loss (with penalty)"
            problems.append(
                f"{which}={value} at generator step {int(g_step)} (discriminator step {int(d_step)})"
            )
        for name, net in (("generator", self.generator), ("discriminator", self.discriminator)):
            bad = [n for n, p in net.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                problems.append(
                    f"non-finite {name} weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
                )
        if not problems:
            return
        saved = [c.path for c in getattr(self._trainer, "callbacks", []) if isinstance(c, LastCheckpoint)]
        last = next((str(p) for p in saved if p.is_file()), None)
        kept = f"the last good checkpoint is kept: {last}" if last else "no checkpoint was saved before it"
        raise Diverged(
            f"training diverged: {'; '.join(problems)}; {kept}; lower optim.lr or stabilise D "
            "(normalization=spectral, regularizer=gradient_penalty), then resume=<checkpoint> or start again"
        )

    # --- checkpoints --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()  # a diverged run never overwrites its last good checkpoint
        checkpoint["gan_lab"] = {"g_steps": self.g_steps, "d_steps": self.d_steps, "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gan_lab", {})
        self.g_steps = state.get("g_steps", 0)
        self.d_steps = state.get("d_steps", 0)
        self._rng_to_restore = state.get("rng")
