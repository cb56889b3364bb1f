"""GANModule: which parameters each step touches, the n_critic schedule, budgets, optimizers, schedulers."""

import csv

import pytest
import torch

from gan_lab.build import build_module
from gan_lab.core.module import GANModule
from gan_lab.errors import ConfigError
from gan_lab.train import train


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


class StepRecorder(GANModule):
    """Records, for every D and G step, whether G's and D's parameters changed and the step counters."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.events: list[tuple[str, bool, bool, int, int]] = []

    def _record(self, name, step, *args):
        g, d = snapshot(self.generator), snapshot(self.discriminator)
        step(*args)
        self.events.append(
            (name, changed(g, self.generator), changed(d, self.discriminator), self.d_steps, self.g_steps)
        )

    def _discriminator_step(self, *args):
        self._record("D", super()._discriminator_step, *args)

    def _generator_step(self, *args):
        self._record("G", super()._generator_step, *args)


def run_recorded(cfg) -> StepRecorder:
    module = build_module(cfg)
    recorder = StepRecorder(
        generator=module.generator,
        discriminator=module.discriminator,
        loss=module.loss,
        regularizer=module.regularizer,
        optim=module.optim,
        scheduler=module.scheduler,
        n_critic=module.n_critic,
        max_g_steps=module.max_g_steps,
        z_dim=module.z_dim,
    )
    from hydra.utils import instantiate

    from gan_lab.build import build_trainer

    build_trainer(cfg).fit(recorder, datamodule=instantiate(cfg.dataset))
    return recorder


def test_d_step_changes_only_d_and_g_step_only_g(tiny_config):
    events = run_recorded(tiny_config("steps=3")).events
    assert [e[0] for e in events] == ["D", "G"] * 3
    for name, g_changed, d_changed, *_ in events:
        assert (g_changed, d_changed) == ((False, True) if name == "D" else (True, False))


def test_n_critic_schedule_crosses_epochs(tiny_config):
    # 32 images / batch 8 = 4 batches per epoch, n_critic 3: G steps after D steps 3, 6, 9, 12, 15 (epochs 1-4)
    module = run_recorded(tiny_config("n_critic=3", "steps=5"))
    g_events = [e for e in module.events if e[0] == "G"]
    assert [e[3] for e in g_events] == [3, 6, 9, 12, 15]
    assert (module.d_steps, module.g_steps) == (15, 5)
    assert [e[0] for e in module.events[:4]] == ["D", "D", "D", "G"]


def test_steps_budget_counts_generator_steps(tiny_config):
    module = train(tiny_config("steps=7", "n_critic=2", "trainer.max_epochs=1"))  # steps wins over max_epochs
    assert (module.g_steps, module.d_steps) == (7, 14)
    assert module.trainer.global_step == 21  # Lightning counts both optimizers: why it is not the budget


def test_epoch_budget(tiny_config):
    module = train(tiny_config("trainer.max_epochs=2"))
    assert (module.d_steps, module.g_steps) == (8, 8)


def test_checkpoint_keeps_step_counters_and_config(tiny_config, tmp_path):
    train(tiny_config("steps=5", "n_critic=2"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["gan_lab"]["g_steps"] == 5 and ckpt["gan_lab"]["d_steps"] == 10
    assert (
        ckpt["hyper_parameters"]["n_critic"] == 2 and ckpt["hyper_parameters"]["model"]["name"] == "sndcgan"
    )
    fresh = build_module(tiny_config())
    fresh.on_load_checkpoint(ckpt)
    assert (fresh.g_steps, fresh.d_steps) == (5, 10)


def test_two_time_scale_learning_rates_and_betas(tiny_config):
    module = train(tiny_config("steps=1", "optim.lr_d=4e-4", "optim.lr_g=1e-4", "optim.betas=[0.0,0.9]"))
    opt_g, opt_d = module.optimizers()
    assert opt_g.param_groups[0]["lr"] == 1e-4 and opt_d.param_groups[0]["lr"] == 4e-4
    assert tuple(opt_g.param_groups[0]["betas"]) == (0.0, 0.9)
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {id(p) for p in module.generator.parameters()}


def test_rmsprop(tiny_config):
    module = train(tiny_config("steps=1", "optim=rmsprop"))
    opt_g, opt_d = module.optimizers()
    assert isinstance(opt_g.optimizer, torch.optim.RMSprop) and opt_d.param_groups[0]["lr"] == 5e-5


@pytest.mark.parametrize(
    ("overrides", "expected_factor"),
    [
        (["scheduler=linear", "steps=10"], 0.0),  # linear decay to 0 over the run
        (["scheduler=cosine", "steps=10"], 0.0),  # cosine to eta_min=0 over the run
        (["scheduler=linear", "steps=10", "scheduler.end_factor=0.5"], 0.5),
        (["scheduler=step", "trainer.max_epochs=3", "scheduler.milestones=[1,2]"], 0.01),  # x0.1 twice
        (["scheduler=exponential", "trainer.max_epochs=3", "scheduler.gamma=0.5"], 0.125),
        (["scheduler=none", "steps=10"], 1.0),
    ],
)
def test_schedulers_step(tiny_config, overrides, expected_factor):
    module = train(tiny_config(*overrides, "optim.lr_d=4e-4", "optim.lr_g=1e-4"))
    opt_g, opt_d = module.optimizers()
    assert opt_g.param_groups[0]["lr"] == pytest.approx(1e-4 * expected_factor, abs=1e-12)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(4e-4 * expected_factor, abs=1e-12)


def test_cosine_is_halfway_at_half_the_run(tiny_config):
    module = train(tiny_config("scheduler=cosine", "steps=5", "scheduler.T_max=10"))
    assert module.optimizers()[0].param_groups[0]["lr"] == pytest.approx(
        2e-4 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 2)).item())
    )


def read_metrics(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_logged_metrics_one_row_per_generator_step(tiny_config, tmp_path):
    train(tiny_config("steps=4", "n_critic=2", "trainer.log_every_n_steps=2"))
    rows = read_metrics(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [2, 4]  # indexed by generator step, every log_every_n_steps
    assert [int(r["train/d_step"]) for r in rows] == [4, 8]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "d_accuracy", "d_penalty", "lr_g", "lr_d"):
        assert all(r[f"train/{key}"] for r in rows), key
    assert all(0.0 <= float(r["train/d_accuracy"]) <= 1.0 for r in rows)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=0", "optim.lr"),
        ("optim.lr_d=-1e-4", "optim.lr_d"),
        ("n_critic=0", "n_critic"),
        ("steps=0", "steps"),
    ],
)
def test_bad_settings_are_clear_errors(tiny_config, override, message):
    with pytest.raises(ConfigError, match=message):
        build_module(tiny_config(override))


def test_optimizer_argument_it_does_not_take_is_a_clear_error(tiny_config):
    # the SAGAN preset's Adam betas make no sense for RMSprop
    with pytest.raises(ConfigError, match=r"RMSprop takes no betas; drop it with ~optim.betas"):
        train(tiny_config("model=sagan", "optim=rmsprop", "steps=1"))
    train(tiny_config("model=sagan", "optim=rmsprop", "~optim.betas", "steps=1"))


def test_weight_clip_with_non_wasserstein_loss_warns(tiny_config, caplog):
    build_module(tiny_config("regularizer=weight_clip", "loss=bce"))
    assert "weight clipping" in caplog.text
    caplog.clear()
    build_module(tiny_config("regularizer=weight_clip", "loss=wasserstein"))
    assert "weight clipping" not in caplog.text


class RecordingOp:
    """An augmentation op that records the batches it sees (and whether gradients flow through them)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.seen: list[bool] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.requires_grad)
        return x + 0.0


def test_augmentations_reach_d_in_both_steps(tiny_config):
    from gan_lab.core.augment import Augmentations

    cfg = tiny_config("steps=1")
    module = build_module(cfg)
    real_only, every_input = RecordingOp("real"), RecordingOp("all")
    module.augment = Augmentations({"real_only": real_only, "every_input": every_input})
    from hydra.utils import instantiate

    from gan_lab.build import build_trainer

    build_trainer(cfg).fit(module, datamodule=instantiate(cfg.dataset))
    assert real_only.seen == [False]  # the real batch of the D step
    # D step: real and fake (no graph to G); G step: the fake batch, through which G's gradient flows
    assert every_input.seen == [False, False, True]
