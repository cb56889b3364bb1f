"""The benchmark (`python -m benchmarks`): statistics with known answers, fair baselines, quick mode end to end."""

from __future__ import annotations

import copy
import io
import json
import math
import subprocess
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch import nn

from benchmarks.contenders import PlainBatches, check_overrides
from benchmarks.graphed import graphed_arms, graphed_loop
from benchmarks.jobs import (
    TIMER_FILE,
    in_one_process,
    jobs_at_once,
    projected_ratio,
    rates_together,
    read_jobs,
)
from benchmarks.loops import (
    ClassicDiscriminator,
    ClassicGenerator,
    PlainGAN,
    RunSpeed,
    StepClock,
    build_plain,
    plain_loop,
    run_speed,
)
from benchmarks.measure import (
    count_flops,
    overheads,
    paired_ratios,
    steady_rate,
    step_intervals,
    summarize,
)
from benchmarks.report import (
    _speed,
    merge_results,
    render_gpu_markdown,
    render_markdown,
)
from benchmarks.shared import INCEPTION_WEIGHTS, extract_cifar_jpeg, shared_dir
from benchmarks.tests.conftest import REPOSITORY, TINY_RUN, run_module, skip_without_shared
from gan_lab.core.graphs import StepGraphs
from gan_lab.core.speed import SpeedSettings

# --- known answers ------------------------------------------------------------------------------------------


def test_summary_median_and_spread() -> None:
    assert summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "values": [3.0, 1.0, 2.0]}
    assert summarize([4.0, 1.0, 2.0, 3.0])["median"] == 2.5
    with pytest.raises(ValueError):
        summarize([])


def test_ratios_and_overheads() -> None:
    assert paired_ratios([2.0, 9.0], [1.0, 3.0]) == [2.0, 3.0]
    # 100 img/s against a plain loop's 103: each step takes 3 % longer.
    assert overheads([100.0, 50.0], [103.0, 50.0]) == pytest.approx([0.03, 0.0])
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_steady_rate_counts_whole_steps_after_warmup() -> None:
    # Steps end at t = 1, 2, 3, 5, 9: after one warm-up step, 3 steps take 5 - 1 = 4 s.
    assert steady_rate([1.0, 2.0, 3.0, 5.0, 9.0], warmup=1, steps=3) == 0.75
    assert steady_rate([1.0, 2.0, 3.0, 5.0, 9.0], warmup=2, steps=3) == 3 / 7
    with pytest.raises(ValueError):
        steady_rate([1.0, 2.0], warmup=1, steps=2)
    with pytest.raises(ValueError):
        steady_rate([1.0, 2.0], warmup=0, steps=1)


def test_step_intervals_are_the_timed_window() -> None:
    assert step_intervals([1.0, 2.0, 3.0, 5.0, 9.0], warmup=1, steps=3) == [1.0, 1.0, 2.0]


def test_step_clock_stops_at_its_budget() -> None:
    clock = StepClock(max_steps=3)
    assert [clock.tick() for _ in range(3)] == [False, False, True]
    assert len(clock.times) == 3 and clock.elapsed_s >= 0
    assert StepClock(budget_s=0.0).tick()


def test_flop_count_of_a_linear_layer() -> None:
    layer, x = nn.Linear(8, 16), torch.randn(4, 8)
    assert count_flops(lambda: layer(x)) == 2 * 4 * 8 * 16
    # Backward adds the input and weight gradients: twice the forward.
    assert count_flops(lambda: layer(x.requires_grad_()).sum().backward()) == 3 * 2 * 4 * 8 * 16


# --- results files ------------------------------------------------------------------------------------------


def test_merge_keeps_the_other_commands_section(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"quality": {"x": 1}, "training": {"old": True}}))
    merged = merge_results(path, {"training": {"new": True}, "quick": False})
    assert merged == {"quality": {"x": 1}, "training": {"new": True}, "quick": False}


def test_speed_record_is_the_settings_and_the_runs_facts() -> None:
    """results.json's speed record: the SpeedSettings' keys, then fused and device. The report says the same of a
    record stored before it held capture and tf32 (whose `compile` meant compiled nets) as it did."""
    settings = SpeedSettings(precision="bf16-mixed", channels_last=False, capture=True, tf32=True)
    record = RunSpeed(settings, fused=True, device="cuda:0").as_dict()
    assert record == {
        "precision": "bf16-mixed", "channels_last": False, "compile": False, "capture": "nets", "tf32": True,
        "fused": True, "device": "cuda:0",
    }  # fmt: skip
    stored = {k: v for k, v in record.items() if k not in ("capture", "tf32")} | {"compile": True}
    assert _speed(stored) == "precision bf16-mixed, NCHW, compile on, fused Adam True, device cuda:0"
    assert _speed(record) == (
        "precision bf16-mixed, NCHW, compile on, speed.capture=nets, TF32 on, fused Adam True, device cuda:0"
    )
    cpu = RunSpeed(SpeedSettings(channels_last=True, tf32=True), fused=False).as_dict()  # TF32: CUDA only
    assert _speed(cpu) == "precision 32-true, channels_last, compile off, fused Adam False, device cpu"


@pytest.mark.parametrize("stored", sorted(Path(__file__).parents[1].glob("**/results.json")), ids=str)
def test_stored_results_still_render(stored: Path) -> None:
    results = json.loads(stored.read_text())
    render = render_gpu_markdown if "dcgan" in results else render_markdown
    assert render(results).strip()


def _tar(path: Path, members: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in members:
            data = b"x"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_cifar_jpeg_finds_train_and_test(tmp_path: Path) -> None:
    flat = _tar(tmp_path / "flat.tar.gz", ["train/cat/0.jpg", "test/cat/0.jpg"])
    assert extract_cifar_jpeg(flat, tmp_path / "cache" / "flat") == tmp_path / "cache" / "flat"
    # A second call reuses the extracted folder (the archive is not read again).
    flat.unlink()
    assert extract_cifar_jpeg(flat, tmp_path / "cache" / "flat") == tmp_path / "cache" / "flat"
    nested = _tar(tmp_path / "nested.tar.gz", ["cifar/train/cat/0.jpg", "cifar/test/cat/0.jpg"])
    assert (
        extract_cifar_jpeg(nested, tmp_path / "cache" / "nested") == tmp_path / "cache" / "nested" / "cifar"
    )
    empty = _tar(tmp_path / "other.tar.gz", ["images/0.jpg"])
    assert extract_cifar_jpeg(empty, tmp_path / "cache" / "other") is None
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp folders left


def test_check_overrides_drops_unknown_keys() -> None:
    kept, notes = check_overrides(["model=dcgan", "trainer.precision=32-true", "speed.warp_drive=true"])
    assert kept == ["model=dcgan", "trainer.precision=32-true"]
    assert len(notes) == 1 and "speed.warp_drive" in notes[0]


# --- the baselines are fair ---------------------------------------------------------------------------------


def _conv_specs(net: nn.Module) -> list[tuple]:
    return [
        (type(m).__name__, m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]


def test_gan_lab_dcgan_is_the_classic_architecture() -> None:
    """model=dcgan at 64² has the classic example's layers; it differs in 3 biases and the final sigmoid."""
    from gan_lab.nets.dcgan import DCGANDiscriminator, DCGANGenerator

    g, d = DCGANGenerator(resolution=64), DCGANDiscriminator(resolution=64)
    cg, cd = ClassicGenerator(), ClassicDiscriminator()
    assert _conv_specs(g) == _conv_specs(cg)
    assert _conv_specs(d) == _conv_specs(cd)
    bn = [m.num_features for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn == [m.num_features for m in cg.modules() if isinstance(m, nn.BatchNorm2d)]

    def count(net: nn.Module) -> int:
        return sum(p.numel() for p in net.parameters())

    assert count(g) - count(cg) == 3  # the bias of G's last layer (3 channels)
    assert count(d) - count(cd) == 64 + 1  # biases of D's first layer (no BN there) and of its logit
    assert cg(torch.randn(2, 100, 1, 1)).shape == (2, 3, 64, 64)
    assert cd(torch.randn(2, 3, 64, 64)).shape == (2,)


class _Capture(pl.Callback):
    """Initial weights, the RNG state before the first step, every batch and losses of a gan_lab run."""

    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.losses: list[tuple[float, float]] = []
        self.rng: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, module: Any) -> None:
        self.g_state = copy.deepcopy(module.generator.state_dict())
        self.d_state = copy.deepcopy(module.discriminator.state_dict())
        self.speed = run_speed(trainer, module)

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if self.rng is None:
            self.rng = torch.get_rng_state()
        self.batches.append((batch[0].clone(), batch[1].clone()))

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        losses = module.last_losses
        self.losses.append((float(losses["d_loss"]), float(losses["g_loss"])))


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=dcgan", "trainer.precision=32-true", "speed.channels_last=false"],
        ["model=sndcgan", "trainer.precision=32-true", "speed.channels_last=false"],
        ["model=dcgan", "trainer.precision=bf16-mixed", "speed.channels_last=true"],
    ],
    ids=["dcgan-fp32", "sndcgan-fp32", "dcgan-bf16-channels_last"],
)
def test_plain_loop_computes_what_gan_module_does(tiny_config, overrides: list[str]) -> None:
    """Same initial weights, RNG state and batches: the plain loop ends with gan_lab's losses and weights.

    This is what makes the overhead ratio fair: both contenders do the same arithmetic, so any difference
    in time is the framework's.
    """
    from gan_lab.build import build_module, build_trainer

    steps = 3
    kept, _ = check_overrides(overrides)
    cfg = tiny_config(*kept, f"steps={steps}", "dataset.resolution=32", "callbacks.diversity=null")
    pl.seed_everything(cfg.seed)
    datamodule = instantiate(cfg.dataset)
    module = build_module(cfg)
    trainer = build_trainer(cfg)
    capture = _Capture()
    trainer.callbacks.append(capture)
    trainer.fit(module, datamodule=datamodule)
    assert module.g_steps == steps

    gan = build_plain(cfg, capture.speed)
    gan.generator.load_state_dict(capture.g_state)
    gan.discriminator.load_state_dict(capture.d_state)
    torch.set_rng_state(capture.rng)
    losses = plain_loop(gan, capture.batches, StepClock(max_steps=steps))

    exact = capture.speed.settings.precision == "32-true"
    tol = {"rtol": 0, "atol": 0} if exact else {"rtol": 1e-3, "atol": 1e-3}
    plain_losses = [(float(d), float(g)) for d, g in losses]
    np.testing.assert_allclose(plain_losses, capture.losses, **tol)
    for mine, theirs in ((gan.generator, module.generator), (gan.discriminator, module.discriminator)):
        theirs_state = theirs.state_dict()
        for name, value in mine.state_dict().items():
            torch.testing.assert_close(value, theirs_state[name], **tol, msg=f"{name} differs")


def _graphed_against_plain(cfg, device: str, record: bool) -> tuple[list, list, PlainGAN, PlainGAN]:
    """The graphed loop (its steps recorded and replayed when `record`, else all eager) and the plain loop, from
    the same weights, RNG state and batches, 6 steps: with recording, 3 warm-up steps, then recorded at the 4th."""
    speed = RunSpeed(SpeedSettings(precision=cfg.trainer.precision), device=device)
    gan = build_plain(cfg, speed)
    reference = copy.deepcopy(gan)
    batches = [(torch.rand(8, 3, 32, 32, device=device) * 2 - 1, torch.zeros(8)) for _ in range(3)]
    graphs = StepGraphs()
    if record:
        graphs.enable()
    torch.manual_seed(1)
    losses = graphed_loop(gan, batches, StepClock(max_steps=6), graphs)
    assert len(graphs._graphs) == (2 if record else 0)
    torch.manual_seed(1)
    expected = plain_loop(reference, batches, StepClock(max_steps=6))
    return losses, expected, gan, reference


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_graphed_loop_steps_are_the_plain_loops(tiny_config, precision: str) -> None:
    """Run eagerly, the graphed loop's steps compute exactly the plain loop's training (CPU)."""
    cfg = tiny_config("model=dcgan", f"trainer.precision={precision}", "dataset.resolution=32")
    losses, expected, gan, reference = _graphed_against_plain(cfg, "cpu", record=False)
    got, want = ([[float(d), float(g)] for d, g in pairs] for pairs in (losses, expected))
    assert got == want
    for mine, theirs in ((gan.generator, reference.generator), (gan.discriminator, reference.discriminator)):
        for (name, value), other in zip(mine.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(value, other), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_loop_gpu_replays_train_like_eager(tiny_config, monkeypatch) -> None:
    """Real CUDA graphs through StepGraphs (noise drawn in the graph, capturable Adam, BN statistics) against the
    plain loop's eager steps, in fp32 with deterministic cuDNN and no TF32: the same training up to rounding."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cfg = tiny_config("model=dcgan", "trainer.precision=32-true", "dataset.resolution=32")
    losses, expected, gan, reference = _graphed_against_plain(cfg, "cuda", record=True)
    got = torch.tensor([[float(d), float(g)] for d, g in losses])
    want = torch.tensor([[float(d), float(g)] for d, g in expected])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for name, value in gan.generator.state_dict().items():
        torch.testing.assert_close(value, reference.generator.state_dict()[name], rtol=1e-4, atol=1e-5)


def _arms_together_and_alone(tiny_config, device: str, streams: bool) -> tuple[list, list, list, list]:
    """Two arms of an lr sweep trained in one graphed_arms call, and each alone: the same initial weights, noise
    generators seeded alike, the same 6 batches. Returns (losses, nets) of the arms together, then alone."""
    lrs = (2e-3, 2e-5)
    speed = RunSpeed(SpeedSettings(precision="32-true"), device=device)
    batches = [(torch.rand(8, 3, 32, 32, device=device) * 2 - 1, torch.zeros(8)) for _ in range(3)]

    def arm(lr: float) -> tuple[PlainGAN, torch.Generator]:
        cfg = tiny_config(
            "model=dcgan", "trainer.precision=32-true", "dataset.resolution=32", f"optim.lr={lr}"
        )
        torch.manual_seed(0)  # every arm starts from the same weights, as a sweep's jobs with one seed do
        return build_plain(cfg, speed), torch.Generator(device).manual_seed(7)

    together = [arm(lr) for lr in lrs]
    losses = graphed_arms(
        [gan for gan, _ in together], batches, StepClock(max_steps=6 * len(lrs)),
        generators=[gen for _, gen in together], streams=streams,
    )  # fmt: skip
    alone_losses, alone_gans = [], []
    for lr in lrs:
        gan, gen = arm(lr)
        alone_losses.append(graphed_arms([gan], batches, StepClock(max_steps=6), generators=[gen])[0])
        alone_gans.append(gan)
    return losses, [gan for gan, _ in together], alone_losses, alone_gans


def _states(gan: PlainGAN) -> dict[str, torch.Tensor]:
    return {**gan.generator.state_dict(), **{f"d.{k}": v for k, v in gan.discriminator.state_dict().items()}}


def test_graphed_arms_train_each_arm_as_if_it_were_alone(tiny_config) -> None:
    """Arms of a sweep in one process share batches and nothing else: each arm's losses and weights are exactly
    those of the arm trained alone (CPU, eager), and the two learning rates train apart."""
    losses, gans, alone_losses, alone_gans = _arms_together_and_alone(tiny_config, "cpu", streams=False)
    assert [len(arm) for arm in losses] == [6, 6]
    for arm, alone in zip(losses, alone_losses, strict=True):
        assert [[float(d), float(g)] for d, g in arm] == [[float(d), float(g)] for d, g in alone]
    for gan, alone in zip(gans, alone_gans, strict=True):
        theirs = _states(alone)
        assert all(torch.equal(value, theirs[name]) for name, value in _states(gan).items())
    first, second = (_states(gan) for gan in gans)
    assert not torch.equal(first["net.0.weight"], second["net.0.weight"])  # the lrs differ, so do the weights


def test_arm_graphs_record_each_step_with_the_arms_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """ArmGraphs is StepGraphs (warm-up, record once, replay with the inputs copied in) whose recordings get the
    arm's generator (CPU, with a stand-in for the CUDA graph: what _ArmGraph is handed)."""
    import benchmarks.graphed as graphed
    from gan_lab.core import graphs as core_graphs

    recorded: list[tuple[str, torch.Generator | None]] = []

    class FakeArmGraph:
        def __init__(self, step, inputs, generator) -> None:
            recorded.append((step.__name__, generator))
            self.step, self.inputs = step, [t.clone() for t in inputs]

        fits = core_graphs._Graph.fits

        def replay(self, inputs):
            for buffer, value in zip(self.inputs, inputs, strict=True):
                buffer.copy_(value)
            return self.step(*self.inputs)

    monkeypatch.setattr(graphed, "_ArmGraph", FakeArmGraph)
    monkeypatch.setattr(core_graphs, "_on_side_stream", lambda step, inputs: step(*inputs))
    generator = torch.Generator().manual_seed(0)
    arm = graphed.ArmGraphs(generator, warmup=1)
    arm.enable()

    def d_step(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    outputs = [arm.run("discriminator", d_step, torch.full((2,), float(v))) for v in (1, 2, 3)]
    assert [out.tolist() for out in outputs] == [[2.0, 2.0], [4.0, 4.0], [6.0, 6.0]]
    assert recorded == [("d_step", generator)] and arm.replayed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_arms_gpu_on_streams_train_each_arm_as_if_it_were_alone(tiny_config, monkeypatch) -> None:
    """Recorded steps replayed on one CUDA stream per arm, noise from each arm's own generator (registered with
    its graphs): each arm trains as it does alone, in fp32 with deterministic cuDNN, up to rounding."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    losses, gans, alone_losses, alone_gans = _arms_together_and_alone(tiny_config, "cuda", streams=True)
    for arm, alone in zip(losses, alone_losses, strict=True):
        got, want = (torch.tensor([[float(d), float(g)] for d, g in pairs]) for pairs in (arm, alone))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for gan, alone in zip(gans, alone_gans, strict=True):
        theirs = _states(alone)
        for name, value in _states(gan).items():
            torch.testing.assert_close(value, theirs[name], rtol=1e-5, atol=1e-6, msg=f"{name} differs")


def test_plain_loop_gets_gan_labs_batches(tmp_path: Path, small_folder: Path) -> None:
    """The plain loop reads the same data module (in memory where gan_lab is) and sees the same tensors."""
    from gan_lab.build import build_module, build_trainer
    from gan_lab.utils.config import compose_config

    tiny = [o for o in TINY_RUN if not o.startswith("dataset")]
    folder = [
        "dataset=folder",
        f"dataset.root={small_folder}",
        "dataset.resolution=32",
        "dataset.batch_size=8",
    ]
    cfg = compose_config([*tiny, *folder, "model=dcgan", "steps=2"], output_dir=tmp_path / "run")
    pl.seed_everything(cfg.seed)
    module, trainer, capture = build_module(cfg), build_trainer(cfg), _Capture()
    trainer.callbacks.append(capture)
    trainer.fit(module, datamodule=instantiate(cfg.dataset))
    plain = iter(PlainBatches(instantiate(cfg.dataset)))
    for real, labels in capture.batches:
        mine, my_labels = next(plain)
        assert mine.dtype == torch.float32 and torch.equal(mine, real) and torch.equal(my_labels, labels)


# --- the command, end to end --------------------------------------------------------------------------------


def _weights() -> Path | None:
    path = shared_dir() / INCEPTION_WEIGHTS
    return path if path.is_file() else None


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """An ImageFolder of 24 small JPEGs in 2 classes (enough for quick mode's batch of 8)."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / cls / f"{i:03d}.jpg", quality=90)
    return root


def _check_summary(summary: dict[str, Any], repeats: int) -> None:
    assert len(summary["values"]) == repeats
    assert summary["min"] <= summary["median"] <= summary["max"]
    assert all(math.isfinite(v) for v in summary["values"])


@pytest.mark.slow  # ~20 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_quick_throughput_writes_results(tmp_path: Path, small_folder: Path) -> None:
    out = tmp_path / "out"
    weights = _weights()
    args = ["--quick", f"--data-root={small_folder}", f"--out={out}"]
    args += [f"--inception-weights={weights}"] if weights else []
    proc = run_module("benchmarks", *args, cwd=tmp_path, timeout=300, PYTHONPATH=str(REPOSITORY))
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True
    training = results["training"]
    repeats = training["settings"]["repeats"]
    assert repeats >= 3
    for name in ("gan_lab", "plain", "classic"):
        contender = training["contenders"][name]
        _check_summary(contender["images_per_s"], repeats)
        _check_summary(contender["g_steps_per_s"], repeats)
        _check_summary(contender["bf16_limit_fraction"], repeats)
        assert contender["flops_per_step"] > 0
    # images/s = batch x generator steps/s (one real batch per G step at n_critic 1)
    gan = training["contenders"]["gan_lab"]
    assert [len(steps) for steps in gan["step_s"]] == [training["settings"]["steps"]] * repeats
    batch = training["settings"]["batch_size"]
    assert gan["images_per_s"]["median"] == pytest.approx(batch * gan["g_steps_per_s"]["median"])
    _check_summary(training["ratios"]["framework_overhead"], repeats)
    _check_summary(training["ratios"]["end_to_end_speedup"], repeats)
    assert training["matmul"]["bf16_flops_per_s"] > 0 and training["matmul"]["fp32_flops_per_s"] > 0
    assert training["settings"]["gan_lab_speed"]["precision"] in ("32-true", "bf16-mixed")
    for key in ("cpu", "logical_cores", "torch", "date", "load_average_1min"):
        assert key in training["machine"]

    fid = results["fid_features"]
    if weights is None:
        assert "skipped" in fid
    else:
        _check_summary(fid["gan_lab"], 3)
        _check_summary(fid["torch_fidelity"], 3)
        _check_summary(fid["speedup"], 3)
        assert fid["max_abs_feature_difference"] < 1e-3  # the same network on the same images

    table = (out / "results.md").read_text()
    assert "Framework overhead" in table and "End to end" in table and "Quick mode" in table


@pytest.mark.shared
@pytest.mark.slow  # ~22 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_quick_quality_reports_both_fids(tmp_path: Path, small_folder: Path) -> None:
    weights = _weights()
    if weights is None:
        skip_without_shared("weights/inception-2015-12-05-fid.pth")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "results.json").write_text(json.dumps({"training": {"kept": True}}))
    args = ["quality", "--quick", f"--data-root={small_folder}", f"--out={out}"]
    args += [f"--inception-weights={weights}", f"--cache-dir={tmp_path / 'cache'}"]
    proc = run_module("benchmarks", *args, cwd=tmp_path, timeout=300, PYTHONPATH=str(REPOSITORY))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["training"] == {"kept": True}  # the throughput section survives a quality run
    quality = results["quality"]
    for name in ("gan_lab", "classic"):
        assert math.isfinite(quality[name]["fid"]) and quality[name]["fid"] > 0
        assert quality[name]["g_steps"] >= 1 and quality[name]["train_s"] > 0
    assert quality["metric"] == "FID-8 against 8 train images at 32² (`fid8_train32`)"
    assert "FID-8 against 8 train images at 32²" in render_markdown({"quality": quality})


# --- the GPU command (`gpu`), its jobs sharing a machine and the GPU machine's script --------------------------


_EXAMPLES_STAND_IN = """
import sys, time
args = sys.argv[1:]
assert args[args.index("--dataset") + 1] == "folder" and "--accel" in args, args
total = int(args[args.index("--batchSize") + 1])  # the stand-in's epoch length: one iteration per image of a batch
for i in range(total):
    time.sleep(0.3 if i < 3 else 0.05)  # three slow first iterations, then 20 a second
    print(f"[0/1][{i}/{total}] Loss_D: 1.0000 Loss_G: 1.0000 D(x): 0.5 D(G(z)): 0.5 / 0.5")
sys.exit(int(args[args.index("--workers") + 1]))  # the exit status the test asks for
"""


def _clock(start: float, rate: float, steps: int, exact_every: int = 1) -> StepClock:
    clock = StepClock()
    clock.start = start
    clock.times = [start + (i + 1) / rate for i in range(steps)]
    clock.exact = [(i + 1) % exact_every == 0 for i in range(steps)]
    return clock


def test_rates_together_are_the_jobs_rates_while_all_train() -> None:
    # 10 and 20 steps/s; the second starts 1 s later and both train past 2 warm-up steps.
    a, b = _clock(0.0, 10.0, 100, exact_every=5), _clock(1.0, 20.0, 100, exact_every=5)
    rates, window = rates_together([a, b], warmup=5)
    assert rates == pytest.approx([10.0, 20.0])
    assert window == pytest.approx(min(a.times[-1], b.times[-1]) - max(a.times[4], b.times[4]))
    # One job done before the other is past its warm-up: no window in which both train.
    assert rates_together([_clock(0.0, 10.0, 10), _clock(5.0, 10.0, 10)], warmup=2) is None
    # A warm-up edge without an exact timestamp cannot be timed.
    assert rates_together([_clock(0.0, 10.0, 20, exact_every=5)], warmup=3) is None


def test_sweep_ratio_projected_to_longer_arms() -> None:
    # One after another: 30 s for three arms of 10 steps/s each; at once: 20 s, the slowest arm 4 steps/s.
    one = {"command_s": 30.0, "jobs": [{"steady_steps_per_s": 10.0}] * 3}
    many = {"command_s": 20.0, "steady_steps_per_s_together": [4.0, 5.0, 5.0]}
    assert projected_ratio(one, many, 100) == pytest.approx((20 + 100 / 4) / (30 + 3 * 100 / 10))
    # Long arms: start-up vanishes and the ratio tends to the ratio of the training rates, (1/4) / (3/10).
    assert projected_ratio(one, many, 10**9) == pytest.approx((1 / 4) / (3 / 10), rel=1e-6)
    assert projected_ratio(one, {"command_s": 20.0}, 100) is None  # no rate measured while all trained


def test_arms_in_one_process_as_a_sweep_time_ratio() -> None:
    # One arm alone: 1,000 images/s. Three arms together: 2,500 images/s of all arms, so the 3 arms take
    # 3 N / 2,500 s instead of 3 N / 1,000 s one after another: 0.4x; on one stream 2,900 images/s: 0.345x.
    contenders = {
        "plain_graphed": {"images_per_s": {"median": 1000.0}},
        "arms": {"images_per_s": {"median": 2500.0}},
        "arms_one_stream": {"images_per_s": {"median": 2900.0}},
        "arms_failed": {"error": "RuntimeError: ..."},
    }
    ratios = in_one_process(contenders, "arms", "arms_one_stream", "arms_failed")
    assert ratios == pytest.approx({"arms": 0.4, "arms_one_stream": 1000 / 2900})
    assert (
        in_one_process({**contenders, "plain_graphed": {"skipped": "CUDA graphs need a CUDA GPU"}}, "arms")
        == {}
    )


def test_jobs_that_fit_in_gpu_memory_from_the_job_alone() -> None:
    """A job alone on an 80 GiB GPU with 3.5 GiB in use at its end: 22 such jobs fit; rendered with the table."""
    runs = {
        1: {"jobs": [{"gpu_memory_gib": [3.5, 80.0]}]},
        2: {"jobs": [{"gpu_memory_gib": [7.1, 80.0]}] * 2},
    }
    result = jobs_at_once(lambda overrides, name, n: runs[n], [], (1, 2), ["budget=0.1"], ["budget=0.1"])
    assert result["memory"] == {"per_job_gib": 3.5, "gpu_gib": 80.0, "jobs_that_fit": 22}
    assert "memory" not in jobs_at_once(lambda o, name, n: {}, [], (1,), ["x=1"], ["x=1"])


def test_read_jobs_keeps_each_jobs_rate_past_its_warmup(tmp_path: Path) -> None:
    """A job's own steady rate (the sweep's projection adds steps at it) leaves its slow first steps out."""
    for job, (start, rate) in enumerate([(0.0, 10.0), (0.5, 20.0)]):
        times = [start + 2.0 * (i + 1) for i in range(5)]  # five slow warm-up steps, then `rate` steps/s
        times += [start + 10.0 + (i + 1) / rate for i in range(35)]
        (tmp_path / str(job)).mkdir()
        record = {"start": start, "times": times, "exact": [(i + 1) % 5 == 0 for i in range(40)]}
        record["gpu_memory_gib"] = [3.5, 80.0] if job == 0 else None  # None: a job on the CPU
        (tmp_path / str(job) / TIMER_FILE).write_text(json.dumps(record))
    jobs = [SimpleNamespace(name=str(i), status="completed", g_steps=40) for i in range(2)]
    with patch("benchmarks.jobs.load_jobs", return_value=jobs):
        summary = read_jobs(tmp_path, batch_size=8, warmup=5)
    assert [job["steady_steps_per_s"] for job in summary["jobs"]] == pytest.approx([10.0, 20.0])
    assert summary["jobs"][0]["gpu_memory_gib"] == [3.5, 80.0] and "gpu_memory_gib" not in summary["jobs"][1]
    assert summary["steady_steps_per_s_together"] == pytest.approx([10.0, 20.0])
    assert summary["steady_images_per_s"] == pytest.approx(30.0 * 8)


def test_step_clock_on_the_cpu_marks_every_timestamp_exact() -> None:
    clock = StepClock(max_steps=4, sync_at=(2,))
    assert [clock.tick() for _ in range(4)] == [False, False, False, True]
    assert clock.exact == [True] * 4  # a CPU step's work is done when it returns


@pytest.mark.slow  # ~1 minute on 2 cores: four multirun commands start Python, torch and Lightning each
def test_quick_device_bench_writes_every_section(tmp_path: Path, small_folder: Path) -> None:
    """`python -m benchmarks gpu --quick` runs every part on the CPU (the CUDA-only branches are the device,
    the classic design's worker count and where timestamps wait for the GPU) and writes all of it."""
    out, examples = tmp_path / "out", tmp_path / "examples_main.py"
    examples.write_text(_EXAMPLES_STAND_IN)  # pytorch/examples' script is not in the repository
    proc = run_module(
        "benchmarks", "gpu", "--quick", f"--data-root={small_folder}", f"--out={out}",
        f"--examples-script={examples}", cwd=tmp_path, timeout=600, PYTHONPATH=str(REPOSITORY),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["settings"]["device"] == "cpu"
    assert {"machine", "matmul", "dcgan", "best_settings", "preset", "jobs", "sweep"} <= results.keys()
    assert {"gpu", "torch", "lightning", "gan_lab_commit", "date"} <= results["machine"].keys()
    repeats, batch = results["settings"]["repeats"], results["settings"]["batch_size"]

    contenders = results["dcgan"]["contenders"]
    variants = ["gan_lab", "gan_lab_on_device", "gan_lab_capture_on_device", "gan_lab_steps_on_device"]
    arms = ["plain_graphed_arms", "plain_graphed_arms_one_stream"]
    assert list(contenders) == [*variants, "plain", "plain_graphed", "classic", *arms]
    assert contenders["plain_graphed"]["skipped"] == "CUDA graphs need a CUDA GPU"
    for (
        name
    ) in arms:  # the sweep's 2 arms in one process (eager on the CPU): the clock counts both arms' steps
        c = contenders[name]
        assert "error" not in c, c["error"]
        assert c["window"] == {
            "warmup": 2 * results["settings"]["warmup"],
            "steps": 2 * results["settings"]["steps"],
        }
        assert c["images_per_s"]["median"] == pytest.approx(batch * c["g_steps_per_s"]["median"])
    for name in ("gan_lab", "plain", "classic"):
        c = contenders[name]
        assert "error" not in c, c["error"]
        _check_summary(c["images_per_s"], repeats)
        _check_summary(c["bf16_limit_fraction"], repeats)
        assert c["images_per_s"]["median"] == pytest.approx(batch * c["g_steps_per_s"]["median"])
        assert c["flops_per_step"] > 0
    for name in variants[1:]:  # measured, or why not: a setting this gan_lab lacks, or skipped in quick mode
        c = contenders[name]
        assert "images_per_s" in c or "unavailable" in c or "skipped" in c, c
    assert results["best_settings"]["contender"] in variants

    profiled = results["profile"]["gan_lab"]  # torch.profiler's per-step summary of gan_lab eager
    assert profiled["g_steps"] == 5 and profiled["wall_ms_per_step"] > 0
    assert profiled["top_by_host_time"] and all(t["calls_per_step"] > 0 for t in profiled["top_by_host_time"])
    assert "torch.profiler, per generator step" in (out / "results.md").read_text()

    preset = results["preset"]
    _check_summary(preset["contender"]["images_per_s"], repeats)
    assert preset["contender"]["flops_per_step"] > 0 and preset["speedup_vs_classic"] > 0
    assert preset["examples"]["iterations"] == batch - 1 and preset["speedup_vs_examples"] > 0

    runs = results["jobs"]["runs"]
    assert list(runs) == ["1", "2"] and results["jobs"]["per_job"] == ["steps=4"]
    for n, run in runs.items():
        assert run["returncode"] == 0, run.get("log_tail")
        assert run["completed"] == int(n) == len(run["jobs"])
        assert [job["g_steps"] for job in run["jobs"]] == [4] * int(n)
        assert run["images"] == 4 * batch * int(n) and run["images_per_s"] > 0
    sweep = results["sweep"]
    assert sweep["arms"] == ["1e-4", "1e-5"] and list(sweep["runs"]) == ["1", "2"]
    assert all(run["completed"] == 2 for run in sweep["runs"].values())
    assert sweep["time_ratio"] > 0
    # Projected to 100-epoch arms where the tiny jobs overlapped past their warm-up (not always, on 2 cores).
    assert "projected" in sweep or "steady_steps_per_s_together" not in sweep["runs"]["2"]

    table = (out / "results.md").read_text()
    for text in ("Quick mode", "DCGAN 64²", "SN-DCGAN study preset", "× pytorch/examples", "Jobs sharing the GPU",
                 "Lr sweep"):  # fmt: skip
        assert text in table


@pytest.mark.parametrize("exit_status", [0, 3])
def test_examples_script_rate_from_its_iteration_lines(tmp_path: Path, exit_status: int) -> None:
    """pytorch/examples' dcgan/main.py is timed by its printed iteration lines: a stand-in that prints them at a
    known pace (3 slow, then 20 a second) measures ~20 iterations/s past a 3-iteration warm-up."""
    from benchmarks.examples import examples_dcgan

    script = tmp_path / "main.py"
    script.write_text(_EXAMPLES_STAND_IN)
    script.with_suffix(".commit").write_text("abc123\n")
    result = examples_dcgan(script, tmp_path, tmp_path / "run", 40, 64, exit_status, warmup=3, timeout_s=60)
    assert result["commit"] == "abc123" and result["returncode"] == exit_status
    assert (
        result["iterations"] == 39
    )  # the epoch's last iteration (a short batch in the real script) left out
    assert result["iterations_per_s"] == pytest.approx(20.0, rel=0.25)  # a sleep may overrun by a few ms
    assert result["images_per_s"]["median"] == pytest.approx(40 * result["iterations_per_s"])
    too_short = examples_dcgan(script, tmp_path, tmp_path / "run", 4, 64, 0, warmup=3, timeout_s=60)
    assert "images_per_s" not in too_short and "fewer than warm-up" in too_short["error"]


def test_gpu_check_script_parses() -> None:
    scripts = Path(__file__).resolve().parents[1]
    for name in ("gpu_check.sh", "gpu_prepare.sh"):
        done = subprocess.run(["bash", "-n", str(scripts / name)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_step_profiler_counts_what_the_steps_run(tmp_path: Path) -> None:
    """The profile of 3 generator steps (one D step each) of the tiny DCGAN: D's and G's convolutions are called
    a known number of times per step, and the step's time is positive."""
    from benchmarks.profile import profile_run

    summary = profile_run([*TINY_RUN, "trainer.precision=32-true"], tmp_path / "run", warmup=2, steps=3)
    assert summary["g_steps"] == 3 and summary["wall_ms_per_step"] > 0
    calls = summary["calls_per_step"]
    # Per G step at 32² (4 layers in G, 4 in D): D on real and on fake in the D step, on fake in the G step
    # (12 convolutions) and G in both steps (8); backward: D twice in the D step, D and G in the G step (16).
    assert calls["aten::_convolution"] == 20 and calls["aten::convolution_backward"] == 16
    assert calls["Optimizer.step#Adam.step"] == 2  # one D and one G optimizer step
    assert summary["aten_ops_per_step"] > 36
    assert summary["kernel_launches_per_step"] == 0  # the CPU launches no CUDA kernels
