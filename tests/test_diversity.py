"""Mode-collapse detector: the statistic, a collapsed G (warning, early stop), a healthy G, metrics.csv, DDP."""

import csv
import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_CLI, run_module
from hydra.utils import instantiate
from torch import nn

import gan_lab.build
import gan_lab.train
from gan_lab.callbacks.diversity import DiversityMonitor, mean_pairwise_distance, real_batch
from gan_lab.core.module import GANModule
from gan_lab.data import FakeDataModule

WARNING = "possible mode collapse"


class Collapsed(nn.Module):
    """Ignores z: one learnable image (N, 3, R, R) for every sample, the extreme of mode collapse."""

    def __init__(self, resolution: int = 32) -> None:
        super().__init__()
        self.image = nn.Parameter(
            torch.randn(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.image).expand(z.shape[0], -1, -1, -1)


class Memorizer(nn.Module):
    """A perfectly diverse G: z[:, 0] picks one of the training images (N, 3, R, R), uniformly over them."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images)
        self.offset = nn.Parameter(
            torch.zeros(())
        )  # something to train; a shift leaves distances as they are

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        index = (torch.special.ndtr(z[:, 0]) * len(self.images)).long().clamp(max=len(self.images) - 1)
        return self.images[index] + self.offset


def train_with(monkeypatch, cfg, generator: nn.Module) -> tuple[GANModule, DiversityMonitor]:
    """gan_lab.train.train(cfg) with cfg's generator swapped for `generator`; the module and its monitor."""
    build = gan_lab.build.build_module

    def build_module(cfg):
        module = build(cfg)
        module.generator = generator  # no EMA in these configs: this is also the sampling generator
        return module

    monkeypatch.setattr(gan_lab.build, "build_module", build_module)
    module = gan_lab.train.train(cfg)
    (monitor,) = [c for c in module.trainer.callbacks if isinstance(c, DiversityMonitor)]
    return module, monitor


def warnings_in(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "gan_lab.diversity" and WARNING in r.getMessage()
    ]


def test_statistic_is_the_mean_pairwise_distance_of_pooled_images():
    constant = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2)  # images of 0s, 1s, 2s, 4 pixels each
    # pairs (0,1), (0,2), (1,2): L2 distances 2, 4, 2
    assert mean_pairwise_distance(constant).item() == pytest.approx(8 / 3)
    # A +-1 checkerboard is far from a flat image pixel by pixel, but pooled to 16x16 it is flat: noise is not
    # diversity.
    checker = (torch.arange(32)[:, None] + torch.arange(32)) % 2 * 2.0 - 1
    pair = torch.stack([checker.expand(3, 32, 32), torch.zeros(3, 32, 32)])
    assert mean_pairwise_distance(pair, size=32).item() == pytest.approx(math.sqrt(3 * 32 * 32))
    assert mean_pairwise_distance(pair).item() == pytest.approx(0.0, abs=1e-6)


def test_real_batch_is_fixed_and_leaves_the_training_rng_alone():
    data = FakeDataModule(num_samples=40, batch_size=8, hflip=True)  # random flips in the transform
    data.setup("fit")
    state = torch.get_rng_state()
    first, second = real_batch(data.train_set, 16, seed=1), real_batch(data.train_set, 16, seed=1)
    assert first.shape == (16, 3, 32, 32) and torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), state)
    assert len(real_batch(data.train_set, 64, seed=1)) == 40  # at most the whole set, no repeated image


def test_fixed_noise_repeats_and_balances_classes():
    module = SimpleNamespace(z_dim=5, num_classes=3, device=torch.device("cpu"))
    monitor = DiversityMonitor(num_samples=7)
    (z1, labels), (z2, _) = monitor.fixed_noise(module), monitor.fixed_noise(module)
    assert z1.shape == (7, 5) and torch.equal(z1, z2)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_warns_once_per_drop_and_not_before_start_step(caplog):
    monitor = DiversityMonitor(threshold=0.3, start_step=200)
    trainer = SimpleNamespace(is_global_zero=True, should_stop=False)
    caplog.set_level(logging.WARNING, logger="gan_lab.diversity")
    steps = [(100, 0.01), (200, 0.1), (300, 0.1), (400, 0.9), (500, 0.2), (600, 0.9), (700, math.nan)]
    for step, ratio in steps:  # NaN is divergence, GANModule's to report, not a collapse
        monitor.check(trainer, step, ratio)
    warned = warnings_in(caplog)
    assert len(warned) == 2 and "step 200" in warned[0] and "step 500" in warned[1]
    assert "train/diversity=0.100" in warned[0] and "threshold 0.30" in warned[0] and "optim.lr" in warned[0]
    assert not trainer.should_stop  # stop=False: warnings only


def test_state_survives_a_checkpoint(tmp_path, caplog):
    collapsed = SimpleNamespace(
        g_steps=100, z_dim=4, num_classes=0, device=torch.device("cpu"), log=lambda *args, **kwargs: None,
        generate=lambda z, labels: torch.zeros(len(z), 3, 8, 8),
    )  # fmt: skip
    trainer = SimpleNamespace(
        is_global_zero=True,
        should_stop=False,
        loggers=[],
        strategy=SimpleNamespace(broadcast=lambda x, src: x),
    )
    caplog.set_level(logging.WARNING, logger="gan_lab.diversity")
    first = DiversityMonitor(start_step=0)
    first.real_distance = 1.0
    first.on_train_batch_end(trainer, collapsed)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = DiversityMonitor(start_step=0)
    resumed.real_distance = 1.0
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    resumed.on_train_batch_end(trainer, collapsed)  # a D-only batch (n_critic > 1): g_steps has not moved
    collapsed.g_steps = 200
    resumed.on_train_batch_end(trainer, collapsed)
    assert resumed.history == [(100, 0.0), (200, 0.0)]
    assert len(warnings_in(caplog)) == 1  # still the drop warned about before the checkpoint


def test_collapsed_generator_warns_and_stops_the_run(tiny_config, monkeypatch, caplog):
    cfg = tiny_config(
        "steps=20",
        "callbacks.diversity.every_n_steps=2",
        "callbacks.diversity.start_step=4",
        "callbacks.diversity.stop=true",
    )
    caplog.set_level(logging.WARNING, logger="gan_lab.diversity")
    module, monitor = train_with(monkeypatch, cfg, Collapsed())
    assert module.g_steps == 4 < cfg.steps and monitor.stopped_at == 4  # first measurement past start_step
    assert [step for step, _ in monitor.history] == [2, 4]
    assert all(ratio < 0.01 for _, ratio in monitor.history)
    (warned,) = warnings_in(caplog)
    assert "step 4" in warned and "threshold 0.30" in warned
    assert "stopping the run at generator step 4" in caplog.text
    run = Path(cfg.paths.output_dir)  # a clean stop: reported as completed, with a last checkpoint
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]["DiversityMonitor"]
    assert saved["last_step"] == 4 and saved["below"]  # a resumed run does not warn again about this drop


def test_collapsed_generator_without_stop_trains_on_and_warns_once(tiny_config, monkeypatch, caplog):
    cfg = tiny_config("steps=8", "callbacks.diversity.every_n_steps=2", "callbacks.diversity.start_step=2")
    caplog.set_level(logging.WARNING, logger="gan_lab.diversity")
    module, monitor = train_with(monkeypatch, cfg, Collapsed())
    assert module.g_steps == 8 and monitor.stopped_at is None and len(monitor.history) == 4
    assert len(warnings_in(caplog)) == 1  # one drop, one warning


def test_healthy_generator_scores_near_one_without_warning(tiny_config, monkeypatch, caplog):
    cfg = tiny_config(
        "steps=6",
        "dataset.num_samples=64",
        "callbacks.diversity.every_n_steps=2",
        "callbacks.diversity.start_step=0",
        "callbacks.diversity.stop=true",
    )
    images, _ = instantiate(cfg.dataset).generate()
    caplog.set_level(logging.WARNING, logger="gan_lab.diversity")
    module, monitor = train_with(monkeypatch, cfg, Memorizer(images))
    assert module.g_steps == 6 and monitor.stopped_at is None
    ratios = [ratio for _, ratio in monitor.history]
    assert len(ratios) == 3 and all(0.85 < r < 1.15 for r in ratios), ratios
    assert warnings_in(caplog) == []


def test_real_run_writes_diversity_to_metrics_csv(tiny_config, caplog):
    cfg = tiny_config("steps=4", "callbacks.diversity.every_n_steps=2")
    caplog.set_level(logging.WARNING, logger="gan_lab.diversity")
    gan_lab.train.train(cfg)
    with open(Path(cfg.paths.output_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/diversity")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(0 <= float(r["train/diversity"]) < math.inf for r in rows)
    assert (
        warnings_in(caplog) == []
    )  # a young G is not diverse yet, but the default start_step keeps it quiet


@pytest.mark.ddp
@pytest.mark.slow  # ~12 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_two_ddp_ranks_stop_together(tmp_path):
    # threshold 10: every measurement "collapses", so both ranks must agree to stop at step 2 (or hang)
    done = run_module(
        "gan_lab.train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *TINY_CLI,
        "steps=6",
        "trainer.log_every_n_steps=1",
        "callbacks.diversity.every_n_steps=2",
        "callbacks.diversity.start_step=0",
        "callbacks.diversity.threshold=10",
        "callbacks.diversity.stop=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=300,
        OMP_NUM_THREADS="1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "status.json").read_text()) | {"wall_time_s": 0} == {
        "status": "completed",
        "wall_time_s": 0,
        "g_steps": 2,
    }
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/diversity")]
    assert [int(r["step"]) for r in rows] == [2]  # logged once, by rank 0
    assert (done.stdout + done.stderr).count(WARNING) == 1
