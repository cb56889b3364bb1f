"""The contenders gan_lab is timed against, and the clocks that time every contender the same way.

- `plain_loop`: the GANModule's step written as a plain PyTorch loop, the way a researcher would, on the same
  networks, loss, optimizers, batches, precision and memory format (the framework-overhead baseline).
- `classic_loop`: the classic DCGAN example (pytorch/examples, dcgan/main.py) reproduced: its own G and D,
  fp32, BCELoss on a sigmoid, Adam(2e-4, (0.5, 0.999)), ImageFolder decoding every step (the end-to-end
  baseline).
- `StepClock` timestamps generator steps; `StepTimer` is the same clock as a Lightning callback inside
  gan_lab's training, so Lightning set-up and start-up are outside every measured window.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.measure import gpu_memory_in_use_gib
from gan_lab.core.speed import SpeedSettings

# --- clocks -------------------------------------------------------------------------------------------------


class StepClock:
    """Timestamps (perf_counter) after each generator step; `tick` says when the step/time budget is spent.

    On a GPU a timestamp waits for the queued work at every step, or only at the steps (1-based) in `sync_at`,
    every `sync_every` steps and the last: between them the host queues work ahead as real training does, and
    only those timestamps (`exact`) are completion times, as steady_rate needs at its window's edges.
    """

    def __init__(
        self,
        max_steps: int | None = None,
        budget_s: float | None = None,
        device: str = "cpu",
        sync_at: Collection[int] | None = None,
        sync_every: int | None = None,
    ) -> None:
        self.max_steps, self.budget_s, self.device = max_steps, budget_s, torch.device(device)
        self.sync_at = None if sync_at is None else frozenset(sync_at)
        self.sync_every = sync_every
        self.start: float | None = None  # when the first training batch began (time budgets count from here)
        self.times: list[float] = []
        self.exact: list[bool] = []  # whether each timestamp waited for the device's work

    def begin(self) -> None:
        """Mark the start of training (idempotent): the first batch, after every set-up."""
        if self.start is None:
            self.start = time.perf_counter()

    def _sync(self, count: int) -> bool:
        """Wait for the device's work after step `count` where the policy says so; whether it waited."""
        every_step = self.sync_at is None and self.sync_every is None
        chosen = count in (self.sync_at or ()) or bool(self.sync_every and count % self.sync_every == 0)
        if self.device.type == "cuda" and (every_step or chosen or count == self.max_steps):
            torch.cuda.synchronize(self.device)  # GPU work is queued: time its completion, not its launch
        return self.device.type != "cuda" or every_step or chosen or count == self.max_steps

    def tick(self) -> bool:
        """Record one generator step; True once the run should stop."""
        exact = self._sync(len(self.times) + 1)
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        if not exact and self.budget_s is not None and now - self.start >= self.budget_s:
            torch.cuda.synchronize(self.device)  # the last step: time its completion
            now, exact = time.perf_counter(), True
        self.times.append(now)
        self.exact.append(exact)
        over_budget = self.budget_s is not None and now - self.start >= self.budget_s
        return over_budget or (self.max_steps is not None and len(self.times) >= self.max_steps)

    @property
    def elapsed_s(self) -> float:
        """Seconds from the first batch to the last generator step."""
        return self.times[-1] - self.start if self.times and self.start is not None else 0.0


@dataclass(frozen=True)
class RunSpeed:
    """How a gan_lab run trained: the SpeedSettings its GANModule was built with, and facts of the run that are
    not settings (whether its optimizers were fused, the device it trained on). The plain loop runs with the same.
    """

    settings: SpeedSettings = field(default_factory=SpeedSettings)
    fused: bool | None = None
    device: str = "cpu"

    def as_dict(self) -> dict[str, Any]:
        """The flat record results.json keeps: precision, channels_last, compile, capture, tf32, fused, device."""
        return {**self.settings.as_dict(), "fused": self.fused, "device": self.device}


def run_speed(trainer: pl.Trainer, module: Any) -> RunSpeed:
    """The speed of a gan_lab run that has started training: its module's SpeedSettings (with the precision as
    Lightning spells it, e.g. 32 -> 32-true), its optimizers' `fused` and its device."""
    optimizers = trainer.optimizers
    return RunSpeed(
        settings=replace(module.speed, precision=str(trainer.precision)),
        fused=optimizers[0].defaults.get("fused") if optimizers else None,
        device=str(module.device),
    )


_TIMERS: dict[str, StepTimer] = {}  # instances built by Hydra from the config, found again by key


class StepTimer(pl.Callback):
    """A StepClock inside gan_lab's training: timestamps each generator step, stops at a time budget.

    Built by Hydra (`callbacks.bench_timer._target_`), so `StepTimer.find(key)` hands the instance back; a job
    in another process writes its clock to `path` at the end instead (jobs.read_timer_file).
    """

    def __init__(
        self,
        key: str,
        budget_s: float | None = None,
        sync_at: Collection[int] | None = None,
        sync_every: int | None = None,
        path: str | None = None,
    ) -> None:
        self.key, self.budget_s, self.path = key, budget_s, path
        self.sync_at, self.sync_every = sync_at, sync_every
        self.clock: StepClock | None = None
        self.speed: RunSpeed | None = None
        self._g_steps = 0
        _TIMERS[key] = self

    @staticmethod
    def new_key() -> str:
        return uuid.uuid4().hex

    @staticmethod
    def find(key: str) -> StepTimer | None:
        """The timer built for `key` (forgotten here, so repeated runs do not pile up), or None."""
        return _TIMERS.pop(key, None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.speed = run_speed(trainer, pl_module)
        self.clock = StepClock(
            budget_s=self.budget_s, device=self.speed.device, sync_at=self.sync_at, sync_every=self.sync_every
        )
        # Time budgets count from here, before the first batch is fetched, as the plain loops' do.
        self.clock.begin()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.clock.begin()  # type: ignore[union-attr]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        g_steps = int(getattr(pl_module, "g_steps", 0))
        if g_steps != self._g_steps:  # only batches that ended with a generator step (n_critic > 1)
            self._g_steps = g_steps
            if self.clock.tick():  # type: ignore[union-attr]
                trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.path is None or self.clock is None or not trainer.is_global_zero:
            return
        from gan_lab.utils.io import atomic_write_text

        # perf_counter has no fixed origin: add this process's offset, so files of several processes compare.
        offset = time.time() - time.perf_counter()
        start, times = self.clock.start, [t + offset for t in self.clock.times]
        record = {"start": None if start is None else start + offset, "times": times, "exact": self.clock.exact,
                  "gpu_memory_gib": gpu_memory_in_use_gib(self.speed.device)}  # type: ignore[union-attr]  # fmt: skip
        atomic_write_text(Path(self.path), json.dumps(record) + "\n")


def timer_config(
    key: str, budget_s: float | None = None, sync_at: Collection[int] | None = None
) -> dict[str, Any]:
    """The `callbacks.bench_timer` entry that makes gan_lab build a StepTimer."""
    sync = None if sync_at is None else sorted(sync_at)
    return dict(_target_=f"{StepTimer.__module__}.StepTimer", key=key, budget_s=budget_s, sync_at=sync)


# --- the plain loop: GANModule's computation without the framework ---------------------------------------


@dataclass
class PlainGAN:
    """Networks, loss and optimizers of a gan_lab config, built directly (no GANModule, no Lightning)."""

    generator: nn.Module
    discriminator: nn.Module
    loss: Any
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    z_dim: int
    speed: RunSpeed


def build_plain(cfg: DictConfig, speed: RunSpeed) -> PlainGAN:
    """The same networks, loss and optimizers as `train(cfg)` builds, set up with `speed` (its SpeedSettings'
    memory format, precision and compilation; its fused flag and device).

    Covers what the comparison needs: unconditional, n_critic 1, no regularizer, augmentation or EMA.
    """
    unsupported = {
        "n_critic": cfg.n_critic != 1,
        "regularizer": any(k != "interval" and v is not None for k, v in cfg.regularizer.items()),
        "augment": bool(cfg.get("augment")),
        "ema.decay": cfg.ema.decay is not None,
        "model.num_classes": bool(cfg.model.num_classes),
    }
    if any(unsupported.values()):
        raise ValueError(f"the plain loop has no {', '.join(k for k, v in unsupported.items() if v)}")
    device = torch.device(speed.device)
    memory_format = speed.settings.memory_format
    g = instantiate(cfg.model.generator).to(device, memory_format=memory_format)
    d = instantiate(cfg.model.discriminator).to(device, memory_format=memory_format)
    if speed.settings.compiles_nets:  # compiled as speed.compile does (capture=nets' CUDA graphs aside)
        g.compile()
        d.compile()
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    optimizer = get_class(optim.pop("_target_"))
    lr = optim.pop("lr")
    lr_g, lr_d = optim.pop("lr_g", None) or lr, optim.pop("lr_d", None) or lr
    optim.pop("fused", None)
    if speed.fused is not None:
        optim["fused"] = speed.fused
    return PlainGAN(
        generator=g,
        discriminator=d,
        loss=instantiate(cfg.loss),
        opt_g=optimizer(g.parameters(), lr=lr_g, **optim),
        opt_d=optimizer(d.parameters(), lr=lr_d, **optim),
        z_dim=cfg.model.z_dim,
        speed=speed,
    )


def _autocast(speed: RunSpeed) -> contextlib.AbstractContextManager:
    """Lightning's `bf16-mixed` is torch.autocast to bf16; `32-true` is plain fp32."""
    precision = str(speed.settings.precision)
    if precision in ("32-true", "32"):
        return contextlib.nullcontext()
    if precision == "bf16-mixed":
        return torch.autocast(torch.device(speed.device).type, dtype=torch.bfloat16)
    raise NotImplementedError(f"the plain loop mirrors 32-true and bf16-mixed, not {precision}")


def _endless(loader: Iterable) -> Iterator:
    while True:
        yield from loader


def plain_loop(gan: PlainGAN, batches: Iterable, clock: StepClock) -> list[tuple[Tensor, Tensor]]:
    """Train until `clock` says stop: per batch one D step (real vs fresh fakes), then one G step.

    Returns the (d_loss, g_loss) of every step, detached (no host sync while training).
    """
    g, d, loss, speed = gan.generator, gan.discriminator, gan.loss, gan.speed
    device = torch.device(speed.device)
    memory_format = speed.settings.memory_format
    g.train()
    d.train()
    losses = []
    clock.begin()
    for real, _ in _endless(batches):
        real = real.to(device).contiguous(memory_format=memory_format)
        n = real.shape[0]
        with _autocast(speed):
            with torch.no_grad():
                fake = g(torch.randn(n, gan.z_dim, device=device))
            d_loss = loss.d_loss(d(real), d(fake))
        gan.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        gan.opt_d.step()

        d.requires_grad_(False)  # the G step needs gradients through D, not for D's weights
        with _autocast(speed):
            g_loss = loss.g_loss(d(g(torch.randn(n, gan.z_dim, device=device))))
        gan.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        gan.opt_g.step()
        d.requires_grad_(True)
        losses.append((d_loss.detach(), g_loss.detach()))
        if clock.tick():
            return losses
    return losses


# --- the classic DCGAN example (pytorch/examples, dcgan/main.py) ------------------------------------------


class ClassicGenerator(nn.Module):
    """The example's netG: z (N, nz, 1, 1) -> (N, nc, 64, 64), no biases, BN + ReLU, Tanh."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, input: Tensor) -> Tensor:
        return self.main(input)


class ClassicDiscriminator(nn.Module):
    """The example's netD: (N, nc, 64, 64) -> probabilities (N,), no biases, BN from layer 2, Sigmoid."""

    def __init__(self, ndf: int = 64, nc: int = 3) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, input: Tensor) -> Tensor:
        return self.main(input).view(-1, 1).squeeze(1)


def classic_weights_init(m: nn.Module) -> None:
    """The example's init: conv weights N(0, 0.02), BN scale N(1, 0.02), BN shift 0."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def classic_nets(nz: int = 100, width: int = 64) -> tuple[nn.Module, nn.Module]:
    """(netG, netD) of the example, initialised as it does."""
    net_g, net_d = ClassicGenerator(nz, width), ClassicDiscriminator(width)
    net_g.apply(classic_weights_init)
    net_d.apply(classic_weights_init)
    return net_g, net_d


def classic_dataset(root: str | Path, image_size: int = 64) -> datasets.ImageFolder:
    """The example's `--dataset folder`: ImageFolder, Resize, CenterCrop, ToTensor, Normalize to [-1, 1]."""
    return datasets.ImageFolder(
        root=str(root),
        transform=transforms.Compose(
            [
                transforms.Resize(image_size),
                transforms.CenterCrop(image_size),
                transforms.ToTensor(),
                transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
            ]
        ),
    )


def classic_loader(dataset: datasets.ImageFolder, batch_size: int = 128, workers: int = 1) -> DataLoader:
    """The example's DataLoader: shuffled, `--workers` processes decoding JPEGs every step."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)


def classic_loop(
    net_g: nn.Module, net_d: nn.Module, loader: DataLoader, clock: StepClock, nz: int = 100, lr: float = 2e-4
) -> list[tuple[float, float]]:
    """The example's training loop, statement for statement, until `clock` says stop; returns (errD, errG).

    Left out: its sample PNGs every 100 iterations and checkpoints every epoch (well under 1% of its time).
    """
    device = torch.device(clock.device)
    criterion = nn.BCELoss()
    real_label, fake_label = 1, 0
    optimizer_d = torch.optim.Adam(net_d.parameters(), lr=lr, betas=(0.5, 0.999))
    optimizer_g = torch.optim.Adam(net_g.parameters(), lr=lr, betas=(0.5, 0.999))
    net_g.train()
    net_d.train()
    losses = []
    clock.begin()
    for data in _endless(loader):
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        net_d.zero_grad()
        real_cpu = data[0].to(device)
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
        output = net_d(real_cpu)
        err_d_real = criterion(output, label)
        err_d_real.backward()
        d_x = output.mean().item()

        noise = torch.randn(batch_size, nz, 1, 1, device=device)
        fake = net_g(noise)
        label.fill_(fake_label)
        output = net_d(fake.detach())
        err_d_fake = criterion(output, label)
        err_d_fake.backward()
        d_g_z1 = output.mean().item()
        err_d = err_d_real + err_d_fake
        optimizer_d.step()

        # (2) Update G network: maximize log(D(G(z)))
        net_g.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = net_d(fake)
        err_g = criterion(output, label)
        err_g.backward()
        d_g_z2 = output.mean().item()
        optimizer_g.step()
        # The example prints these every iteration; computing them keeps its per-step host syncs.
        losses.append((err_d.item(), err_g.item()))
        del d_x, d_g_z1, d_g_z2
        if clock.tick():
            return losses
    return losses
