"""speed.capture=steps: whole D and G steps as CUDA graphs (gan_lab/core/graphs.py).

On the CPU: when a run falls back to eager steps (and says why), the capture-and-replay bookkeeping of
StepGraphs (with a stand-in for the CUDA graph), capturable optimizers, and that the step functions compute the
eager training exactly (speed.capture's values: tests/test_speed.py). On a GPU: the same training as eager steps to rounding, no host
sync in the replayed steps, and an exact resume.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from conftest import TINY_RUN, HostRoundTrips
from torch import Tensor

from gan_lab.core import graphs
from gan_lab.core.graphs import StepGraphs, hooks_inside_a_step, steps_run_eagerly
from gan_lab.core.optim import build_optimizer
from gan_lab.core.speed import capture_mode
from gan_lab.errors import ConfigError, one_line
from gan_lab.train import train
from gan_lab.utils.config import compose_config

CPU_FP32 = [*TINY_RUN, "trainer.precision=32-true", "model.width=8", "trainer.accelerator=cpu"]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# The training set-ups the record-and-replay tests run (BN, spectral norm, a gradient penalty's double backward).
GPU_CASES = {
    "dcgan": ["model=dcgan"],
    "sndcgan": ["model=sndcgan"],
    "wgan_gp": ["model=dcgan", "loss=wasserstein", "normalization=none", "regularizer=gradient_penalty"],
    # the G step's real batch as a graph input, a D step with and one without the lazy penalty, ADA's p read by
    # the graphs from its buffer and adjusted between replays
    "rpgan_lazy_ada": [
        "model=dcgan", "loss=rpgan", "regularizer=r3gan", "regularizer.interval=2", "augment=ada",
        "augment.ada.interval=1", "augment.ada.ramp_images=100",
    ],
    "r3gan_ada": ["model=r3gan", "model.channels_per_group=8", "augment=ada", "augment.ada.interval=1"],
}  # fmt: skip


def test_steps_on_the_cpu_train_eagerly_and_say_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The step functions are the eager step: a capture=steps run on the CPU trains bit for bit as eager."""
    run = [*CPU_FP32, "steps=3"]
    eager = train(compose_config(run, output_dir=tmp_path / "eager"))
    with caplog.at_level(logging.INFO, logger="gan_lab.module"):
        steps = train(compose_config([*run, "speed.capture=steps"], output_dir=tmp_path / "steps"))
    torch.testing.assert_close(steps.state_dict(), eager.state_dict(), atol=0, rtol=0)
    said = [r.getMessage() for r in caplog.records if "speed.capture=steps" in r.getMessage()]
    assert said == [
        "speed.capture=steps: CUDA graphs need a CUDA GPU and this run trains on cpu, so the steps run eagerly"
    ]
    assert not steps.step_runner.graphs.enabled
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gan_lab.module"):
        auto = train(compose_config([*run, "speed.capture=auto"], output_dir=tmp_path / "auto"))
    torch.testing.assert_close(auto.state_dict(), eager.state_dict(), atol=0, rtol=0)
    assert not auto.step_runner.graphs.enabled and not any(
        "speed.capture" in r.getMessage() for r in caplog.records
    )
    assert all(not opt.defaults.get("capturable") for opt in auto.optimizers())  # as eager: not capturable


def test_why_steps_run_eagerly() -> None:
    cuda = torch.device("cuda")
    adam = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], capturable=True)
    bf16 = SimpleNamespace(scaler=None)
    assert steps_run_eagerly(cuda, bf16, [adam, adam]) is None
    assert "CUDA GPU" in steps_run_eagerly(torch.device("cpu"), bf16, [adam])
    assert "16-mixed" in steps_run_eagerly(cuda, SimpleNamespace(scaler=object()), [adam])
    assert "DDP" in steps_run_eagerly(cuda, bf16, [adam], world_size=2)
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    assert steps_run_eagerly(cuda, bf16, [adam, sgd]) == "SGD has no capturable mode"
    lightning_wrapped = SimpleNamespace(optimizer=sgd, defaults=sgd.defaults)
    assert steps_run_eagerly(cuda, bf16, [lightning_wrapped]) == "SGD has no capturable mode"
    hooked = steps_run_eagerly(cuda, bf16, [adam], step_hooks=["Logger.on_after_backward"])
    assert hooked == "Logger.on_after_backward would run only when a step is recorded, never at its replays"


class BackwardCounter(pl.Callback):
    """A callback with a hook Lightning calls from inside a training step (in manual_backward)."""

    calls = 0

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        BackwardCounter.calls += 1


def test_hooks_inside_a_step_are_found() -> None:
    """Callbacks and LightningModules that implement a hook Lightning calls inside a step, as a class method or
    (Lightning's LambdaCallback) as an instance's own function; none in gan_lab's own module and callbacks."""

    class ClipsBeforeStepping(pl.LightningModule):
        def on_before_optimizer_step(self, optimizer: Any) -> None:
            pass

    from lightning.pytorch.callbacks import LambdaCallback, ModelCheckpoint

    from gan_lab.core.module import GANModule

    lambda_callback = LambdaCallback(on_before_backward=lambda *args: None)
    found = hooks_inside_a_step(
        [ModelCheckpoint(), BackwardCounter(), lambda_callback], ClipsBeforeStepping()
    )
    assert found == [
        "BackwardCounter.on_after_backward",
        "LambdaCallback.on_before_backward",
        "ClipsBeforeStepping.on_before_optimizer_step",
    ]
    assert hooks_inside_a_step([ModelCheckpoint()], GANModule.__new__(GANModule)) == []


@pytest.mark.usefixtures("replays_without_python")
def test_a_hook_inside_a_step_keeps_the_steps_eager(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A replay runs none of a step's Python, so a hook inside the step would run once: with one, the steps run
    eagerly (one line says why) and the hook runs at every D and G step."""
    BackwardCounter.calls = 0
    counter = "+callbacks.count_backward._target_=test_step_graphs.BackwardCounter"
    run = [*CPU_FP32, "steps=5", "dataset.num_samples=128", "speed.capture=steps", counter]
    with caplog.at_level(logging.INFO, logger="gan_lab.module"):
        module = train(compose_config(run, output_dir=tmp_path))
    assert not module.step_runner.graphs.enabled and _FakeGraph.made == []
    assert BackwardCounter.calls == 10
    said = [r.getMessage() for r in caplog.records if "speed.capture" in r.getMessage()]
    assert said == [
        "speed.capture=steps: BackwardCounter.on_after_backward would run only when a step is recorded, never "
        "at its replays, so the steps run eagerly"
    ]
    assert all(not opt.defaults.get("capturable") for opt in module.optimizers())


def test_capturable_optimizers_only_where_asked_and_taken() -> None:
    weights = [torch.nn.Parameter(torch.zeros(3))]
    adam = {"_target_": "torch.optim.Adam", "lr": 1e-3}
    assert build_optimizer(adam, weights, 1e-3, capturable=True).defaults["capturable"] is True
    assert build_optimizer(adam, weights, 1e-3).defaults["capturable"] is False
    sgd = build_optimizer({"_target_": "torch.optim.SGD", "lr": 0.1}, weights, 0.1, capturable=True)
    assert "capturable" not in sgd.defaults  # SGD takes no such argument: left as it is


class _FakeGraph:
    """Stands in for graphs._Graph on the CPU: records the step with its own input buffers, and a replay copies
    the inputs in and runs the step again on those buffers (what a CUDA graph replay computes)."""

    made: list[_FakeGraph] = []

    def __init__(self, step, inputs) -> None:
        self.step, self.inputs = step, [None if t is None else t.clone() for t in inputs]
        self.outputs = None
        _FakeGraph.made.append(self)

    fits = graphs._Graph.fits

    def replay(self, inputs):
        for buffer, value in zip(self.inputs, inputs, strict=True):
            if buffer is not None:
                buffer.copy_(value)
        self.outputs = self.step(*self.inputs)
        return self.outputs


def test_step_graphs_warm_up_record_replay_and_fall_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    side: list[int] = []
    monkeypatch.setattr(graphs, "_Graph", _FakeGraph)
    monkeypatch.setattr(graphs, "_on_side_stream", lambda step, inputs: (side.append(1), step(*inputs))[1])
    _FakeGraph.made = []
    seen: list[Any] = []

    def step(x, labels):
        seen.append(x)
        return x * 2

    graphed = StepGraphs(warmup=2)
    assert torch.equal(graphed.run("d", step, torch.ones(2), None), torch.full((2,), 2.0))  # disabled: a call
    assert side == [] and _FakeGraph.made == []
    graphed.enable()
    for value in (1.0, 2.0):  # warm-up calls, on the side stream
        assert torch.equal(graphed.run("d", step, torch.full((2,), value), None), torch.full((2,), 2 * value))
    assert len(side) == 2 and _FakeGraph.made == []
    for value in (3.0, 4.0, 5.0):  # recorded at the third call, then replayed with the new inputs copied in
        assert torch.equal(graphed.run("d", step, torch.full((2,), value), None), torch.full((2,), 2 * value))
    assert len(_FakeGraph.made) == 1 and len(side) == 2
    buffer = _FakeGraph.made[0].inputs[0]
    assert all(x is buffer for x in seen[-3:])  # every replay reads the graph's own input buffer
    with caplog.at_level(logging.INFO, logger="gan_lab.core.graphs"):
        for _ in range(2):  # another shape: eager, said once
            assert torch.equal(graphed.run("d", step, torch.ones(3), None), torch.full((3,), 2.0))
    assert [r.getMessage() for r in caplog.records] == [
        "speed.capture=steps: a d step with inputs of another shape runs eagerly"
    ]
    assert seen[-1] is not buffer and len(_FakeGraph.made) == 1
    graphed.reset()
    graphed.run("d", step, torch.ones(2), None)
    assert len(side) == 3  # warming up again


def test_a_step_that_cannot_be_recorded_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def uncapturable(step, inputs):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore lines")

    monkeypatch.setattr(graphs, "_Graph", uncapturable)
    monkeypatch.setattr(graphs, "_on_side_stream", lambda step, inputs: step(*inputs))
    graphed = StepGraphs(warmup=1)
    graphed.enable()
    graphed.run("discriminator", lambda x: x, torch.ones(2))  # the warm-up call runs
    with pytest.raises(ConfigError) as err:
        graphed.run("discriminator", lambda x: x, torch.ones(2))
    assert one_line(err.value) == (
        "speed.capture (steps, or auto on a GPU) could not record the discriminator step as a CUDA graph "
        "(RuntimeError: CUDA error: "
        "operation not permitted when stream is capturing more lines); train with speed.capture=nets or "
        "speed.capture=false"
    )


# A step that reads a value back to the host, which CUDA refuses while a stream is capturing.
UNRECORDABLE_STEP = """
import torch
from gan_lab.core.graphs import StepGraphs
from gan_lab.errors import one_line

graphed = StepGraphs(warmup=1)
graphed.enable()
x = torch.ones(2, device="cuda")
graphed.run("discriminator", lambda x: x * float(x.sum()), x)  # the warm-up call runs
try:
    graphed.run("discriminator", lambda x: x * float(x.sum()), x)
except Exception as exc:
    print(type(exc).__name__, one_line(exc), flush=True)  # before any teardown of the broken capture
"""


@needs_gpu
def test_a_step_that_cannot_be_recorded_on_a_gpu_stops_with_one_line() -> None:
    """The test above on CUDA itself, in a process of its own: a failed capture may leave CUDA state behind."""
    done = subprocess.run(
        [sys.executable, "-c", UNRECORDABLE_STEP], capture_output=True, text=True, timeout=120
    )
    said = done.stdout.strip().splitlines()
    last = said[-1] if said else done.stderr[-2000:]
    assert last.startswith(
        "ConfigError speed.capture (steps, or auto on a GPU) could not record the discriminator step as a CUDA "
        "graph ("
    ), last
    assert last.endswith("; train with speed.capture=nets or speed.capture=false"), last


@pytest.fixture
def replays_without_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """StepGraphs enabled on the CPU, with a stand-in graph that behaves as a CUDA graph does where GANModule
    can tell: recording runs the step's Python once (Lightning counts that optimizer step) and no arithmetic; a
    replay runs the arithmetic but none of Lightning's step counting, with the learning rates the param groups
    held while it was recorded (a number for good, or gan_lab's live device tensors)."""
    from lightning.pytorch.loops.optimization.manual import _ManualOptimization

    import gan_lab.core.speed as speed_file

    replaying = [False]
    for hook in ("_on_before_step", "_on_after_step"):
        original = getattr(_ManualOptimization, hook)

        def counting_unless_replaying(self, _original=original) -> None:
            if not replaying[0]:
                _original(self)

        monkeypatch.setattr(_ManualOptimization, hook, counting_unless_replaying)

    class ReplayWithoutPython(_FakeGraph):
        def __init__(self, step, inputs) -> None:
            super().__init__(step, inputs)
            self.optimizer = step.args[0]
            self.recorded_lrs = [group["lr"] for group in self.optimizer.param_groups]
            graphs.count_lightning_step(self.optimizer)

        def replay(self, inputs):
            groups = self.optimizer.param_groups
            current = [group["lr"] for group in groups]
            replaying[0] = True
            try:
                for group, lr in zip(groups, self.recorded_lrs, strict=True):
                    group["lr"] = lr  # a graph's optimizer kernel reads what it was recorded with
                return super().replay(inputs)
            finally:
                replaying[0] = False
                for group, lr in zip(groups, current, strict=True):
                    group["lr"] = lr

    monkeypatch.setattr(graphs, "_Graph", ReplayWithoutPython)
    monkeypatch.setattr(graphs, "_on_side_stream", lambda step, inputs: step(*inputs))
    real_reasons = graphs.steps_run_eagerly  # judged as on a GPU: the run's other reasons still count
    monkeypatch.setattr(
        speed_file, "steps_run_eagerly", lambda _, *rest: real_reasons(torch.device("cuda"), *rest)
    )
    _FakeGraph.made = []


@pytest.mark.usefixtures("replays_without_python")
@pytest.mark.parametrize("case", ["dcgan", "sndcgan", "wgan_gp", "dcgan_auto", "rpgan_lazy_ada"])
def test_replayed_steps_train_and_count_like_eager_steps(case: str, tmp_path: Path) -> None:
    """GANModule's wiring of StepGraphs, on the CPU (see replays_without_python): a run trains bit for bit as
    eager steps, and Lightning's global_step and the checkpoints count every step. `auto` records where steps
    can be recorded (here: the stand-in says they can)."""
    from gan_lab.run.checkpoint_io import load_checkpoint

    mode = "auto" if case.endswith("_auto") else "steps"
    run = [*CPU_FP32, *GPU_CASES[case.removesuffix("_auto")], "steps=8", "dataset.num_samples=128"]
    eager = train(compose_config(run, output_dir=tmp_path / "eager"))
    graphed = train(compose_config([*run, f"speed.capture={mode}"], output_dir=tmp_path / "steps"))
    # one D and one G graph, replayed (lazy regularization: D steps with and without the penalty, two graphs)
    assert graphed.step_runner.graphs.enabled and len(_FakeGraph.made) == 2 + ("lazy" in case)
    torch.testing.assert_close(graphed.state_dict(), eager.state_dict(), atol=0, rtol=0)
    assert graphed.trainer.global_step == eager.trainer.global_step == 16  # 8 D + 8 G optimizer steps
    saved = load_checkpoint(tmp_path / "steps" / "checkpoints" / "last.ckpt")
    assert saved["global_step"] == 16 and saved["gan_lab"]["g_steps"] == 8


@pytest.mark.usefixtures("replays_without_python")
@pytest.mark.parametrize("scheduler", ["cosine", "exponential"])  # per step, per epoch
def test_replayed_steps_follow_the_lr_scheduler(scheduler: str, tmp_path: Path) -> None:
    """With a scheduler the recorded steps read the learning rates from device tensors refreshed before every
    replay: the run trains as eager steps to float32 rounding of the lr, with one D and one G graph. (The
    stand-in replays with whatever the groups held when it was recorded: a float there would be the first lr
    for good, and this comparison fails, by ~1e-4, without the refresh.)"""
    run = [*CPU_FP32, f"scheduler={scheduler}", "steps=12", "dataset.num_samples=32"]
    run += ["scheduler.gamma=0.5"] if scheduler == "exponential" else []  # 4 batches an epoch: 3 lr changes
    eager = train(compose_config(run, output_dir=tmp_path / "eager"))
    graphed = train(compose_config([*run, "speed.capture=steps"], output_dir=tmp_path / "steps"))
    assert len(_FakeGraph.made) == 2
    torch.testing.assert_close(graphed.state_dict(), eager.state_dict(), atol=1e-6, rtol=1e-5)
    lrs = [group["lr"] for opt in graphed.optimizers() for group in opt.param_groups]
    assert lrs == [group["lr"] for opt in eager.optimizers() for group in opt.param_groups]
    assert all(isinstance(lr, float) for lr in lrs)  # what schedulers and checkpoints see stays a float


def test_live_learning_rates_swap_in_tensors_and_refresh_them() -> None:
    weight = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([weight], lr=0.1)
    live = graphs._LiveLearningRates(opt)
    with live.swapped_in():
        read = opt.param_groups[0]["lr"]  # what a step recorded here reads at its replays
    assert isinstance(read, Tensor) and read.dtype == torch.float32 and read.dim() == 0
    assert opt.param_groups[0]["lr"] == 0.1 and read.item() == pytest.approx(0.1)
    torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5).step()
    assert read.item() == pytest.approx(0.1)  # not before a replay
    live.refresh()
    assert read.item() == pytest.approx(0.05) and live.values == [0.05]


def test_autocast_runs_without_its_cache_only_while_enabled() -> None:
    graphed = StepGraphs()
    with graphed.autocast_without_cache():
        assert torch.is_autocast_cache_enabled()
    graphed.enable()
    with graphed.autocast_without_cache():
        assert not torch.is_autocast_cache_enabled()
        # a step's own autocast (as in the bench's graphed loop) inherits it
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not torch.is_autocast_cache_enabled()
    assert torch.is_autocast_cache_enabled()


# --- host round trips, checked on the CPU ----------------------------------------------------------------------
# Every family, with augmentations, penalties and EMA.
FAMILIES = {
    "dcgan": ["model=dcgan"],
    "sndcgan": ["model=sndcgan"],
    "cgan_cutmix": ["model=cgan", "augment=cutmix"],
    "cgan_projection": ["model=cgan_projection"],
    "sagan_ema": ["model=sagan", "ema.decay=0.999"],
    "resnet_hinge_diffaugment": ["model=resnet", "loss=hinge", "augment=diffaugment"],
    "wgan_gp": GPU_CASES["wgan_gp"],
    "wgan_clip": ["model=dcgan", "loss=wasserstein", "regularizer=weight_clip"],
    # ADA adjusting p every D step, the relativistic G step's real batch, R1 + R2 every other D step
    "rpgan_r1r2_lazy_ada": [
        "loss=rpgan", "regularizer=[r1,r2]", "regularizer.interval=2", "augment=ada", "augment.ada.interval=1",
    ],
}  # fmt: skip


@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_steps_make_no_host_round_trips(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every family's D and G steps (augmentations, penalties, EMA and bookkeeping included) between metric writes
    ask nothing of the host: on a GPU they run without a sync, and speed.capture can record them. (F.one_hot in
    the conditional D did: found by this test.)"""
    import gan_lab.build as build

    seen: list[str] = []
    plain_build = build.build_module

    def build_recording(cfg: Any) -> Any:
        module = plain_build(cfg)
        step = module.training_step

        def training_step(batch: Any, batch_idx: int) -> None:  # Lightning passes batch_idx by name
            with HostRoundTrips() if 2 <= batch_idx < 8 else contextlib.nullcontext() as found:
                step(batch, batch_idx)
            seen.extend(found or [])

        module.training_step = training_step
        return module

    monkeypatch.setattr(build, "build_module", build_recording)
    run = [
        *CPU_FP32,
        *FAMILIES[family],
        "steps=10",
        "dataset.num_samples=128",
        "trainer.log_every_n_steps=1000",
    ]
    train(compose_config(run, output_dir=tmp_path / "run"))
    assert seen == []


# --- on a GPU -----------------------------------------------------------------------------------------------------
# 32x32, batch 64, fp32 without TF32 and deterministic cuDNN: replayed and eager steps run the same kernels.
GPU_RUN = [
    *TINY_RUN,
    "trainer.accelerator=gpu",
    "dataset.resolution=32",
    "dataset.batch_size=64",
    "dataset.num_samples=2048",
    "model.width=32",
    "trainer.precision=32-true",
    "speed.tf32=false",
    "trainer.log_every_n_steps=1000",
    "callbacks.samples=null",
    "callbacks.diversity=null",
]


@pytest.fixture
def deterministic_cudnn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


class _NoSyncAfterWarmUp:
    """Wraps training_step: in batches [first, last), after the graphs are recorded and before the last step
    writes the training metrics (a host sync by design), a host sync inside a step raises."""

    def __init__(self, module: Any, first: int = 6, last: int = 11) -> None:
        self.step, self.first, self.last = module.training_step, first, last
        module.training_step = self.training_step

    def training_step(self, batch: Any, batch_idx: int) -> None:
        if self.first <= batch_idx < self.last:
            torch.cuda.set_sync_debug_mode("error")
        try:
            self.step(batch, batch_idx)
        finally:
            torch.cuda.set_sync_debug_mode("default")


@needs_gpu
@pytest.mark.usefixtures("deterministic_cudnn")
@pytest.mark.parametrize("case", [*GPU_CASES, "dcgan_cosine"])
def test_steps_gpu_graphs_train_like_eager_without_host_sync(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gan_lab.build as build

    plain_build = build.build_module

    def build_watched(cfg: Any) -> Any:
        module = plain_build(cfg)
        if capture_mode(cfg.speed.capture) == "steps":
            _NoSyncAfterWarmUp(module)
        return module

    monkeypatch.setattr(build, "build_module", build_watched)
    setup = GPU_CASES.get(case) or ["model=dcgan", "scheduler=cosine"]  # the lr read from device tensors
    run = [*GPU_RUN, *setup, "steps=12", "callbacks.checkpoint=null"]
    eager = train(compose_config(run, output_dir=tmp_path / "eager"))
    graphed = train(compose_config([*run, "speed.capture=steps"], output_dir=tmp_path / "steps"))
    assert graphed.step_runner.graphs.enabled
    assert graphed.g_steps == eager.g_steps == 12
    theirs = eager.state_dict()
    for name, value in graphed.state_dict().items():
        torch.testing.assert_close(value, theirs[name], rtol=1e-4, atol=1e-5, msg=name)


@needs_gpu
@pytest.mark.usefixtures("deterministic_cudnn")
def test_steps_gpu_resume_exactly(tmp_path: Path) -> None:
    """8 steps in one go (graphs from the 4th) == 5 steps, stop, resume to 8 (warm-up steps again, then graphs)."""
    base = [*GPU_RUN, "model=sndcgan", "speed.capture=steps"]
    full = train(compose_config([*base, "steps=8"], output_dir=tmp_path / "full"))
    train(compose_config([*base, "steps=5"], output_dir=tmp_path / "half"))
    resume = ["steps=8", f"resume={tmp_path / 'half'}"]
    resumed = train(compose_config([*base, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    assert resumed.g_steps == full.g_steps == 8
    torch.testing.assert_close(resumed.state_dict(), full.state_dict(), atol=0, rtol=0)


@needs_gpu
def test_auto_gpu_records_the_steps(tmp_path: Path) -> None:
    """speed.capture=auto on one CUDA GPU with Adam: the whole-step graphs (the 5th step replays), capturable."""
    module = train(compose_config([*GPU_RUN, "speed.capture=auto", "steps=5"], output_dir=tmp_path / "auto"))
    assert module.step_runner.graphs.enabled and module.step_runner.graphs.replayed
    assert all(opt.defaults.get("capturable") for opt in module.optimizers())


@pytest.mark.parametrize("optim", ["optim.fused=false", "optim=rmsprop"])
def test_a_checkpoint_of_recorded_steps_resumes_where_steps_run_eagerly(optim: str, tmp_path: Path) -> None:
    """A capture=steps run on a GPU saves capturable optimizer groups; resumed on the CPU (trainer.accelerator may
    change on resume) they are set back to how this run built its optimizers, which the CPU accepts, and the run
    goes on exactly as from the same checkpoint without the flag (torch refuses capturable groups on the CPU)."""
    base = [*CPU_FP32, optim, "speed.capture=steps"]  # eager on the CPU
    train(compose_config([*base, "steps=3"], output_dir=tmp_path / "half"))
    saved = torch.load(tmp_path / "half" / "checkpoints" / "last.ckpt", weights_only=False)
    for state in saved["optimizer_states"]:
        for group in state["param_groups"]:
            group["capturable"] = True  # as a GPU run with recorded steps saves them
    torch.save(saved, tmp_path / "from_gpu.ckpt")

    def resume(ckpt: Path, out: str) -> Any:
        overrides = ["steps=6", f"resume={ckpt}"]
        return train(compose_config([*base, *overrides], output_dir=tmp_path / out), overrides=overrides)

    reference = resume(tmp_path / "half" / "checkpoints" / "last.ckpt", "reference")
    resumed = resume(tmp_path / "from_gpu.ckpt", "resumed")
    assert all(not group.get("capturable") for opt in resumed.optimizers() for group in opt.param_groups)
    torch.testing.assert_close(resumed.state_dict(), reference.state_dict(), atol=0, rtol=0)
