"""GANModule: one Lightning module with the alternating D/G step shared by every GAN family.

Schedule (manual optimization), per training batch of real images:
  1. one discriminator step on that batch: D sees the real batch and a fresh fake batch G(z) (G not in the
     graph), minimises loss.d_loss + regularizer.penalty, then regularizer.after_d_step (e.g. weight clipping).
     Lazy regularization (`regularizer_interval` k > 1): the penalty only on every k-th D step, weighted by k;
  2. after every `n_critic`-th discriminator step (counted over the whole run, across epoch boundaries), one
     generator step on a fresh noise batch of the same size, minimising loss.g_loss(D(G(z))). A relativistic
     loss (loss.uses_real_logits) also scores the real batch of the D step just taken (same images, and the
     fakes take its labels, as in the D step), for loss.g_loss(D(G(z)), D(x_real)).
ADA (augment=ada) sees the signs of D's real logits at every D step and adjusts p every `interval` D steps.
So each D step uses a fresh real batch, and an epoch (one pass over the data) has len(data) D steps and about
len(data) / n_critic G steps. Per-step schedulers advance with each G step, per-epoch ones each epoch.
The run's budget is `max_g_steps` generator steps, trainer.max_epochs, or minutes (`budget`, Lightning's Timer, see
build.build_trainer): Lightning's `global_step` counts D and G optimizer steps together, so gan_lab keeps its own
counters (`g_steps`, `d_steps`, saved in checkpoints).

The speed settings (core/speed.SpeedSettings) lay out the nets and batches; under speed.compile and
speed.capture a StepRunner (core/speed.py) compiles G and D in place (checkpoints keep the plain nets' names) or
records each whole `_discriminator_update` and `_generator_update` as one CUDA graph; the bookkeeping around them
stays eager. A penalty differentiates D's input gradient again, which a compiled D cannot do: it calls D
uncompiled, on the same weights.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from gan_lab.core.augment import Augmentations
from gan_lab.core.ema import build_ema, update_ema
from gan_lab.core.graphs import uncompiled
from gan_lab.core.guards import FiniteWatch, check_finite
from gan_lab.core.losses import GANLoss, WassersteinLoss, discriminator_accuracy, real_margin
from gan_lab.core.optim import (
    build_optimizer,
    build_scheduler,
    lazy_regularization,
    learning_rates,
    restore_built_flags,
)
from gan_lab.core.regularizers import Regularizer, WeightClip, has_penalty, members
from gan_lab.core.running_means import RunningMeans
from gan_lab.core.speed import SpeedSettings, StepRunner
from gan_lab.errors import ConfigError
from gan_lab.utils.rng import rng_state, set_rng_state

log = logging.getLogger("gan_lab.module")  # one logger for the step's lines, GANModule's and StepRunner's


class GANModule(pl.LightningModule):
    """Trains `generator` against `discriminator` with a swappable loss and regularizer."""

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss,
        regularizer: Regularizer | None = None,
        regularizer_interval: int = 1,
        optim: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        n_critic: int = 1,
        max_g_steps: int | None = None,
        z_dim: int = 100,
        num_classes: int = 0,
        augment: Augmentations | None = None,
        ema_decay: float | None = None,
        ema_start_step: int = 0,
        ema_rampup: float | None = None,
        speed: SpeedSettings | None = None,
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
        self.speed = speed or SpeedSettings()
        self.memory_format = self.speed.memory_format
        self.generator = generator.to(memory_format=self.memory_format)
        self.discriminator = discriminator.to(memory_format=self.memory_format)
        self.loss = loss
        self.regularizer = regularizer or Regularizer()
        self.regularizer_interval = regularizer_interval  # checked by build (regularizers.lazy_interval)
        self.optim = dict(optim or {"_target_": "torch.optim.Adam", "lr": 2e-4, "betas": (0.5, 0.999)})
        self.lr_g, self.lr_d = learning_rates(self.optim)
        self.scheduler = dict(scheduler) if scheduler else None
        self.n_critic = n_critic
        self.max_g_steps = max_g_steps
        self.z_dim = z_dim
        self.num_classes = num_classes
        self.augment = augment or Augmentations(None)
        # Registered as a submodule: its probability and counts follow the device and live in checkpoints.
        self.adaptive_augment = self.augment.adaptive
        self.generator_ema = build_ema(self.generator, ema_decay, ema_rampup)
        self.ema_start_step = ema_start_step
        self.step_runner = StepRunner(self.speed)
        self.step_runner.compile_in_place([self.generator, self.discriminator])  # after the EMA copied G
        if config:
            # The resolved run config: loggers record it (hparams.yaml) and checkpoints keep it.
            self.save_hyperparameters(dict(config))
        self.g_steps = 0
        self.d_steps = 0
        self._running = RunningMeans()  # of the training metrics, until the next row
        # The last D and G losses, on the device: the progress bar reads them when it redraws. Not self.log:
        # Lightning reads every prog_bar value back from the GPU after every batch, a host sync per value.
        self.last_losses: dict[str, Tensor] = {}
        self._finite = FiniteWatch()  # the first NaN / infinite loss, checked by check_finite
        self._rng_to_restore: Mapping[str, Any] | None = None  # set on resume, applied at the next batch
        clips = any(isinstance(part, WeightClip) for part in members(self.regularizer))
        if clips and not isinstance(self.loss, WassersteinLoss):
            log.warning(
                "weight clipping is meant for the Wasserstein critic (loss=wasserstein); with %s it limits D "
                "without the theory behind it",
                type(self.loss).__name__,
            )

    def _update_ema(self) -> None:
        """Average G into generator_ema after a G step (a copy of G until ema_start_step); no-op without EMA."""
        if self.generator_ema is not None:
            update_ema(self.generator_ema, self.generator, self.g_steps, self.ema_start_step)

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
            return self.step_runner.sampler(generator)(z, labels)
        finally:
            generator.train(was_training)

    # --- optimizers ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        fused, capturable = self.step_runner.optimizer_flags(self)
        optim_d, lr_d, said = lazy_regularization(self.optim, self.lr_d, self.regularizer_interval)
        if said and has_penalty(self.regularizer):
            log.info("lazy regularization: %s", said)
        opt_g, opt_d = (
            build_optimizer(optim, net.parameters(), lr, prefer_fused=fused, capturable=capturable)
            for net, optim, lr in (
                (self.generator, self.optim, self.lr_g),
                (self.discriminator, optim_d, lr_d),
            )
        )
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
            raise ConfigError(
                "this scheduler needs a finite run: set steps=N or trainer.max_epochs=N (a time budget alone "
                "cannot size it)"
            )
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
            self._generator_step(opt_g, real, labels)
        # Per-epoch schedulers step after each full pass over the data, counted in D steps rather than at
        # Lightning's epoch end, which also comes early when a `steps` budget stops a run mid-epoch.
        if self._scheduler_interval() == "epoch" and self.d_steps % self._batches_per_epoch() == 0:
            for scheduler in self._schedulers():
                scheduler.step()

    def _scheduler_interval(self) -> str | None:
        return self.scheduler.get("interval", "step") if self.scheduler else None

    def on_fit_start(self) -> None:
        penalty = type(self.regularizer).__name__ if has_penalty(self.regularizer) else None
        self.step_runner.start(self, [self.generator, self.discriminator], penalty)

    def on_train_start(self) -> None:
        for optimizer in self.optimizers():  # restored by now: a checkpoint's flags may not suit this device
            restore_built_flags(optimizer)

    def on_fit_end(self) -> None:
        self.step_runner.end()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        if self.max_g_steps and self.g_steps >= self.max_g_steps:  # resumed at the budget's end
            self.trainer.should_stop = True
            return -1  # Lightning's "end this epoch now": nothing is left to train
        if self._rng_to_restore is not None:
            # Restored here, not when the checkpoint is read: Lightning draws random numbers while setting up.
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None

    def _discriminator_step(self, opt_d: Any, real: Tensor, labels: Tensor | None) -> None:
        self.toggle_optimizer(opt_d)
        # Lazy regularization: the penalty on every k-th D step (the first included), weighted by k. Steps with
        # and without it are different graphs under speed.capture=steps.
        penalized = has_penalty(self.regularizer) and self.d_steps % self.regularizer_interval == 0
        name = (
            "discriminator" if penalized or not has_penalty(self.regularizer) else "discriminator_unpenalized"
        )
        update = partial(self._discriminator_update, opt_d, self.regularizer_interval if penalized else 0)
        d_loss, penalty, real_logits, fake_logits = self.step_runner.run(
            name, update, opt_d, real, labels, scheduled=bool(self.scheduler)
        )
        self.untoggle_optimizer(opt_d)
        self.regularizer.after_d_step(self.discriminator)
        self.d_steps += 1
        if self.adaptive_augment is not None:
            self.adaptive_augment.observe(real_margin(self.loss, real_logits, fake_logits).sign())
            if self.d_steps % self.adaptive_augment.interval == 0:
                self.adaptive_augment.adjust(real.shape[0])
        self._finite.watch(d_loss + penalty, is_generator=False, g_step=self.g_steps, d_step=self.d_steps)
        self._running.add(
            d_loss=d_loss,
            d_penalty=penalty,
            d_real=real_logits.mean(),
            d_fake=fake_logits.mean(),
            d_accuracy=discriminator_accuracy(self.loss, real_logits, fake_logits),
        )
        self.last_losses["d_loss"] = d_loss

    def _discriminator_update(
        self, opt_d: Any, penalty_weight: int, real: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, ...]:
        """D's update on a real batch and fresh fakes (one CUDA graph under speed.capture=steps); returns the
        detached d_loss, penalty (times penalty_weight; 0: not computed) and real and fake logits."""
        fake_labels = labels  # conditional D compares real and fake of the same classes
        with torch.no_grad():
            fake = self.generator(self.sample_noise(real.shape[0]), fake_labels)
        real, fake = self.augment.real(real), self.augment.fake(fake)  # penalties see what D scored
        real_logits = self.discriminator(real, labels)
        fake_logits = self.discriminator(fake, fake_labels)
        d_loss = self.loss.d_loss(real_logits, fake_logits)
        penalty = d_loss.new_zeros(())
        if penalty_weight:  # D uncompiled for the double backward (on_fit_start); weight 1: bit-exact
            penalty = self.regularizer.penalty(uncompiled(self.discriminator), real, fake, labels)
            penalty = penalty * penalty_weight if penalty_weight != 1 else penalty
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss + penalty)
        opt_d.step()
        return d_loss.detach(), penalty.detach(), real_logits.detach(), fake_logits.detach()

    def _generator_step(self, opt_g: Any, real: Tensor, labels: Tensor | None) -> None:
        self.toggle_optimizer(opt_g)  # D's parameters stop requiring grad: no D gradients are computed
        # One graph per batch size (n is not an input tensor the graph could take). Only a relativistic loss
        # reads the real batch, which is then an input of the graph.
        n = real.shape[0]
        paired = (real, labels) if self.loss.uses_real_logits else ()
        update = partial(self._generator_update, opt_g, n)
        g_loss = self.step_runner.run(f"generator{n}", update, opt_g, *paired, scheduled=bool(self.scheduler))
        self.untoggle_optimizer(opt_g)
        self.g_steps += 1
        self._finite.watch(g_loss, is_generator=True, g_step=self.g_steps, d_step=self.d_steps)
        self._update_ema()
        if self._scheduler_interval() == "step":
            for scheduler in self._schedulers():
                scheduler.step()
        self._running.add(g_loss=g_loss)
        self.last_losses["g_loss"] = g_loss
        on_interval = self.g_steps % self.trainer.log_every_n_steps == 0
        if on_interval or self.g_steps == self.max_g_steps:  # the budget's last row keeps its sums (resume)
            self._write_training_metrics(restart_sums=on_interval)
        if self.max_g_steps and self.g_steps >= self.max_g_steps:
            self.trainer.should_stop = True

    def _generator_update(
        self, opt_g: Any, n: int, real: Tensor | None = None, labels: Tensor | None = None
    ) -> Tensor:
        """G's update on n fresh fakes (one CUDA graph under speed.capture=steps); returns the detached g_loss.

        `real` (with its `labels`): the batch a relativistic loss pairs the fakes with; the fakes then take
        those labels, as in the D step. Without it the fakes draw uniform labels."""
        fake_labels = self.sample_labels(n) if real is None else labels
        fake = self.augment.fake(self.generator(self.sample_noise(n), fake_labels))
        fake_logits = self.discriminator(fake, fake_labels)
        if real is None:
            g_loss = self.loss.g_loss(fake_logits)
        else:
            real_logits = self.discriminator(self.augment.real(real), labels)  # a constant for G
            g_loss = self.loss.g_loss(fake_logits, real_logits)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        return g_loss.detach()

    # --- logging ------------------------------------------------------------------------------------------
    # Training metrics go straight to the loggers, at generator steps: Lightning's self.log would repeat a
    # G-step value on the D-only batches of n_critic > 1 and index rows by batch, not by generator step.
    def _write_training_metrics(self, restart_sums: bool = True) -> None:
        """Log the means since the last write (D values over all D steps), learning rates and counters."""
        self.check_finite()
        values = self._running.means()
        if self.adaptive_augment is not None:  # ADA's probability now, read back with the means (one sync)
            values["ada_p"] = self.adaptive_augment.p
        means = torch.stack(list(values.values())).tolist() if values else []
        metrics = {f"train/{name}": value for name, value in zip(values, means, strict=True)}
        opt_g, opt_d = self.optimizers()
        lrs = {"train/lr_g": opt_g.param_groups[0]["lr"], "train/lr_d": opt_d.param_groups[0]["lr"]}
        metrics |= lrs | {"train/d_step": self.d_steps, "epoch": self.current_epoch}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.g_steps)
        if restart_sums:
            self._running.clear()

    # --- divergence guard ---------------------------------------------------------------------------------
    def check_finite(self) -> None:
        """Raise Diverged, naming the step and values, if a loss or a weight has become NaN or infinite."""
        nets = {"generator": self.generator, "discriminator": self.discriminator}
        check_finite(self._finite, nets)

    # --- checkpoints --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()  # a diverged run never overwrites its last good checkpoint
        checkpoint["gan_lab"] = {
            "g_steps": self.g_steps,
            "d_steps": self.d_steps,
            "rng": rng_state(),
            "log_sums": self._running.state(),  # the next metrics row's: resumed, it is the unbroken row
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gan_lab", {})
        self.g_steps = state.get("g_steps", 0)
        self.d_steps = state.get("d_steps", 0)
        self._rng_to_restore = state.get("rng")
        self._running.load(state.get("log_sums", {}), self.device)  # absent in older checkpoints: a fresh row
