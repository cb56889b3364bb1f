"""Exact resume, preemption by signal, and resume's refusals (issue 6, items 1, 2 and 5)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLI, TINY_RUN, run_module
from omegaconf import OmegaConf

from gan_lab.errors import ConfigError, GanLabError
from gan_lab.run.checkpoint_io import load_checkpoint
from gan_lab.run.resume import resume_config, trim_metrics_csv
from gan_lab.train import train
from gan_lab.utils.config import compose_config

RESUME_CASES = {
    # data flips drawn per pass, n_critic phase, EMA, per-epoch scheduler, differentiable augmentation
    "flip_ncritic2_ema_diffaug": [
        "dataset.hflip=true", "n_critic=2", "ema.decay=0.9", "scheduler=exponential", "augment=diffaugment",
    ],
    # stop mid-epoch (4 batches per epoch, 15 D steps), lr milestones, CutMix, a conditional model
    "ncritic3_milestones_cutmix_cgan": [
        "n_critic=3", "scheduler=step", "scheduler.milestones=[1,2]", "augment=cutmix", "model=cgan",
    ],
    # today's recipe: RpGAN's paired G step, R1 + R2 every 3rd D step, ADA's p (adjusted every 2 D steps)
    "rpgan_r1r2_lazy3_ada_cgan": [
        "loss=rpgan", "regularizer=[r1,r2]", "regularizer.interval=3", "augment=ada", "augment.ada.interval=2",
        "augment.ada.ramp_images=200", "model=cgan", "n_critic=2", "ema.decay=0.9",
    ],
}  # fmt: skip


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_equals_uninterrupted_run_bit_for_bit(case: str, tmp_path: Path) -> None:
    """10 generator steps in one go == 5 steps, stop, resume to 10 (weights, EMA, optimizer moments)."""
    base = [*TINY_RUN, *RESUME_CASES[case]]
    full = train(compose_config([*base, "steps=10"], output_dir=tmp_path / "full"))
    half = train(compose_config([*base, "steps=5"], output_dir=tmp_path / "half"))
    assert half.g_steps == 5
    resume = ["steps=10", f"resume={tmp_path / 'half'}"]
    resumed = train(compose_config([*base, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    assert (resumed.g_steps, resumed.d_steps) == (full.g_steps, full.d_steps)
    _assert_identical(_weights(full), _weights(resumed))
    moments = [load_checkpoint(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("full", "half")]
    assert moments[1]["gan_lab"]["g_steps"] == 10  # the resumed run wrote into its own directory
    for opt_full, opt_resumed in zip(
        moments[0]["optimizer_states"], moments[1]["optimizer_states"], strict=True
    ):
        for state_full, state_resumed in zip(
            opt_full["state"].values(), opt_resumed["state"].values(), strict=True
        ):
            _assert_identical(state_full, state_resumed)
    assert not (tmp_path / "unused").exists()


def _train_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return [
            {k: v for k, v in r.items() if k == "step" or k.startswith("train/")} for r in csv.DictReader(f)
        ]


def test_a_resumed_run_writes_the_metrics_rows_an_unbroken_one_writes(tmp_path: Path) -> None:
    """A row holds means over the steps since the last row: the running sums live in the checkpoint (step 5
    is between the rows of steps 3 and 6)."""
    base = [*TINY_RUN, "trainer.log_every_n_steps=3", "n_critic=2"]
    train(compose_config([*base, "steps=10"], output_dir=tmp_path / "full"))
    train(compose_config([*base, "steps=5"], output_dir=tmp_path / "half"))
    resume = ["steps=10", f"resume={tmp_path / 'half'}"]
    train(compose_config([*base, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    rows = [_train_rows(tmp_path / run) for run in ("full", "half")]
    assert [r["step"] for r in rows[1]] == ["3", "5", "6", "9", "10"]  # 5: the half run's last step
    assert [r for r in rows[1] if r["step"] != "5"] == rows[0]


def test_resuming_a_run_at_the_end_of_its_budget_trains_no_further(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = train(compose_config([*TINY_RUN, "steps=4"], output_dir=run))
    before = _weights(done)
    resume = ["steps=4", f"resume={run}"]
    again = train(compose_config([*TINY_RUN, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    assert (again.g_steps, again.d_steps) == (4, 4)
    _assert_identical(before, _weights(again))


# Interrupted by a budget that leaves `steps` alone (Lightning's max_steps counts D and G steps: 10 = 5 G steps),
# so schedules sized to the run (cosine, linear) and the penalties' random draws must continue exactly.
MID_RUN_CASES = {
    "cosine": ["scheduler=cosine"],
    "linear": ["scheduler=linear"],
    "gradient_penalty": ["loss=wasserstein", "normalization=none", "regularizer=gradient_penalty"],
    "r1": ["regularizer=r1", "scheduler=cosine"],
    "folder": ["dataset=folder", "dataset.resolution=32", "dataset.num_workers=0", "dataset.batch_size=4"],
}


@pytest.mark.parametrize("case", list(MID_RUN_CASES))
def test_resume_mid_run_continues_run_sized_schedules_and_penalties(
    case, tmp_path, tiny_image_folder
) -> None:
    tiny = [o for o in TINY_RUN if not o.startswith("dataset")] if case == "folder" else TINY_RUN
    extra = [f"dataset.root={tiny_image_folder}"] if case == "folder" else []
    base = [*tiny, *MID_RUN_CASES[case], *extra, "steps=10"]
    full = train(compose_config(base, output_dir=tmp_path / "full"))
    half = train(compose_config([*base, "+trainer.max_steps=10"], output_dir=tmp_path / "half"))
    assert half.g_steps == 5
    resume = ["+trainer.max_steps=-1", f"resume={tmp_path / 'half'}"]
    resumed = train(compose_config([*base, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    assert (resumed.g_steps, resumed.d_steps) == (full.g_steps, full.d_steps) == (10, 10)
    _assert_identical(_weights(full), _weights(resumed))
    lrs = [[g["lr"] for g in m.trainer.optimizers[0].param_groups] for m in (full, resumed)]
    assert lrs[0] == lrs[1]


def test_resume_keeps_the_checkpoint_config_and_refuses_changes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_config([*TINY_RUN, "loss=hinge", "optim.lr=1e-3", "steps=2"], output_dir=run))
    ckpt = run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    checkpoint = load_checkpoint(ckpt)
    # No overrides: the run's own loss and lr come back, not the defaults.
    cfg = resume_config(compose_config([*TINY_RUN, "steps=4"]), checkpoint, ckpt, ["steps=4"])
    assert cfg.loss._target_.endswith("HingeLoss") and cfg.optim.lr == 1e-3 and cfg.steps == 4
    assert cfg.paths.output_dir == str(run)
    # A different architecture, or other settings, asked for on the command line: one clear error.
    with pytest.raises(ConfigError) as err:
        resume_config(compose_config([*TINY_RUN, "model.width=8"]), checkpoint, ckpt, ["model.width=8"])
    message = str(err.value)
    assert "different architecture" in message and "model.width (checkpoint: 4, now: 8)" in message
    assert "start a new run" in message and "\n" not in message
    with pytest.raises(ConfigError, match=r"optim\.lr \(checkpoint: 0\.001, now: 0\.0002\)"):
        resume_config(compose_config([*TINY_RUN, "optim.lr=2e-4"]), checkpoint, ckpt, ["optim.lr=2e-4"])
    with pytest.raises(ConfigError, match=r"loss\._target_"):
        resume_config(compose_config([*TINY_RUN, "loss=bce"]), checkpoint, ckpt, ["loss=bce"])
    assert ckpt.read_bytes() == before  # nothing on disk changed


def test_resume_refuses_missing_or_foreign_checkpoints(tmp_path: Path) -> None:
    cfg = compose_config([*TINY_RUN, f"resume={tmp_path / 'nope'}"], output_dir=tmp_path / "run")
    with pytest.raises(GanLabError, match="does not exist; pass a run directory or a .ckpt file"):
        train(cfg)
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    cfg = compose_config([*TINY_RUN, f"resume={tmp_path / 'empty_run'}"], output_dir=tmp_path / "run")
    with pytest.raises(GanLabError, match=r"no checkpoints/last.ckpt in that folder"):
        train(cfg)
    # A checkpoint whose config names code outside gan_lab / torch is not rebuilt.
    run = tmp_path / "victim"
    train(compose_config([*TINY_RUN, "steps=1"], output_dir=run))
    ckpt = run / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(ckpt)
    checkpoint["hyper_parameters"]["loss"] = {"_target_": "os.system", "command": "touch pwned"}
    torch.save(checkpoint, ckpt)
    cfg = compose_config([*TINY_RUN, f"resume={run}"], output_dir=tmp_path / "run")
    with pytest.raises(GanLabError, match=r"loss._target_ is 'os.system'"):
        train(cfg)


def test_resume_continues_the_wandb_run_id(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_config([*TINY_RUN, "steps=1"], output_dir=run))
    (run / "wandb_run_id.txt").write_text("abc123\n")
    ckpt = run / "checkpoints" / "last.ckpt"
    cfg = compose_config([*TINY_RUN, "logger=wandb"])
    resumed = resume_config(cfg, load_checkpoint(ckpt), ckpt, ["logger=wandb"])
    assert resumed.logger.wandb.id == "abc123" and resumed.logger.wandb.resume == "allow"


def test_trim_metrics_csv_drops_rows_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/g_loss\n0,1,0.5\n0,2,0.4\n0,3,0.3\n,3,\n")
    trim_metrics_csv(path, 2)
    assert path.read_text().splitlines() == ["epoch,step,train/g_loss", "0,1,0.5", "0,2,0.4"]


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    """The issue's done-when: a run killed with SIGTERM resumes to the same weights as an uninterrupted one."""
    args = [
        *TINY_CLI, "model.width=16", "n_critic=2", "ema.decay=0.9", "dataset.hflip=true", "steps=300",
        "callbacks.samples.every_n_steps=5", "callbacks.samples.num_samples=4", "trainer.log_every_n_steps=5",
    ]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "gan_lab.train", *args, f"hydra.run.dir={killed_dir}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(killed_dir / "samples" / "step_0000010.png", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    error_lines = [line for line in stderr.splitlines() if line.startswith("gan_lab: error:")]
    assert len(error_lines) == 1 and "stopped by SIGTERM after generator step" in error_lines[0]
    assert f"resume={killed_dir}" in error_lines[0] and "Traceback" not in stderr
    status = json.loads((killed_dir / "status.json").read_text())
    stopped_at = status["g_steps"]
    assert status["status"] == "preempted" and 10 <= stopped_at < 300
    assert load_checkpoint(killed_dir / "checkpoints" / "last.ckpt")["gan_lab"]["g_steps"] == stopped_at

    resumed = run_module("gan_lab.train", f"resume={killed_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    full = run_module("gan_lab.train", *args, f"hydra.run.dir={tmp_path / 'full'}", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    final = [load_checkpoint(d / "checkpoints" / "last.ckpt") for d in (killed_dir, tmp_path / "full")]
    assert final[0]["gan_lab"]["g_steps"] == final[1]["gan_lab"]["g_steps"] == 300
    _assert_identical(final[0]["state_dict"], final[1]["state_dict"])
    assert json.loads((killed_dir / "status.json").read_text())["status"] == "completed"
    with open(killed_dir / "metrics.csv", newline="") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row["train/g_loss"]]
    assert steps == list(
        range(5, 301, 5)
    )  # the rows before the kill are kept, none is repeated  # the resumed rows follow on, none repeated


@pytest.mark.slow
def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "gan_lab.train", *TINY_CLI, "model.width=16", "steps=400",
         "callbacks.samples.every_n_steps=5", "callbacks.samples.num_samples=4", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(run_dir / "samples" / "step_0000005.png", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "stopped by SIGINT" in stderr and "Traceback" not in stderr
    saved = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert saved["gan_lab"]["g_steps"] == json.loads((run_dir / "status.json").read_text())["g_steps"]
    assert OmegaConf.create(saved["hyper_parameters"]).steps == 400


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: run `make test` on a GPU machine")
def test_cuda_rng_state_survives_the_checkpoint_round_trip(tmp_path: Path) -> None:
    """The CUDA generator (noise and GP's weights drawn on the device) continues exactly after a resume."""
    from gan_lab.utils.rng import rng_state, set_rng_state

    torch.cuda.manual_seed_all(3)
    torch.save({"rng": rng_state()}, tmp_path / "rng.pt")
    expected = torch.randn(8, device="cuda")
    torch.randn(1000, device="cuda")  # the run goes on after the checkpoint was written
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert torch.equal(torch.randn(8, device="cuda"), expected)


@pytest.mark.parametrize("stored_flip", [True, False])
def test_resume_with_augment_hflip_compares_the_flip_it_sets(tmp_path, stored_flip) -> None:
    """augment=hflip writes dataset.hflip: resuming a flipped run with it is allowed, an unflipped one refused."""
    from gan_lab.run.resume import check_overrides

    saved = compose_config([f"dataset.hflip={str(stored_flip).lower()}"], output_dir=tmp_path)
    now = compose_config(["augment=hflip"], output_dir=tmp_path)
    if stored_flip:
        check_overrides(now, saved, ["augment=hflip"])
    else:
        with pytest.raises(ConfigError, match=r"dataset\.hflip \(checkpoint: False, now: True\)"):
            check_overrides(now, saved, ["augment=hflip"])


# --- configs stored by earlier versions name classes where they were then --------------------------------------
def _current_classes() -> dict[str, type]:
    """Every `_target_` a config stored by an earlier gan_lab names, with the class it must build now."""
    from gan_lab import legacy
    from gan_lab.callbacks.diversity import DiversityMonitor
    from gan_lab.callbacks.last_checkpoint import LastCheckpoint
    from gan_lab.callbacks.progress import GANProgressBar
    from gan_lab.callbacks.sample_grid import SampleGrid
    from gan_lab.core import augment, losses, regularizers

    moved = {
        "gan_lab.checkpointing.LastCheckpoint": LastCheckpoint,
        "gan_lab.run.checkpoint_callback.LastCheckpoint": LastCheckpoint,
        "gan_lab.diversity.DiversityMonitor": DiversityMonitor,
        "gan_lab.callbacks.SampleGrid": SampleGrid,
        "gan_lab.callbacks.GANProgressBar": GANProgressBar,
    }
    for module, names in (
        (losses, ["NonSaturatingLoss", "MinimaxLoss", "HingeLoss", "WassersteinLoss", "LeastSquaresLoss"]),
        (regularizers, ["Regularizer", "GradientPenalty", "R1Penalty", "WeightClip"]),
        (augment, ["CutMix", "DiffAugment", "Sharpen"]),
    ):
        old_module = module.__name__.replace("gan_lab.core.", "gan_lab.")
        moved |= {f"{old_module}.{name}": getattr(module, name) for name in names}
    # The removed flip op, by both of its earlier homes: built, it names its replacement
    moved |= {"gan_lab.augment.HFlip": legacy.HFlip, "gan_lab.core.augment.HFlip": legacy.HFlip}
    return moved


def test_stored_configs_naming_old_homes_build_the_current_classes() -> None:
    from hydra.utils import get_class

    from gan_lab.legacy import upgrade_stored_config

    classes = _current_classes()
    kept = ["gan_lab.nets.dcgan.DCGANGenerator", "os.system", "gan_lab.lossesque.Loss", "gan_lab.callbacks.X"]
    stored = {
        "by_key": {f"k{i}": {"_target_": old, "p": 0.5} for i, old in enumerate(classes)},
        "in_a_list": [{"_target_": old} for old in [*classes, *kept]],
        "not_a_target": "gan_lab.losses.HingeLoss",  # only `_target_`s name code
    }
    original = str(stored)
    upgraded = upgrade_stored_config(stored)
    assert str(stored) == original  # the stored config is not changed in place
    targets = [node["_target_"] for node in [*upgraded["by_key"].values(), *upgraded["in_a_list"]]]
    expected = [*classes.values(), *classes.values()]
    assert [get_class(t) for t in targets[: len(expected)]] == expected
    assert not set(targets) & set(classes)  # no old home is left for Hydra to import
    assert targets[len(expected) :] == kept  # current homes, other code and look-alikes are left alone
    assert upgraded["by_key"]["k0"]["p"] == 0.5 and upgraded["not_a_target"] == "gan_lab.losses.HingeLoss"


def test_a_checkpoint_naming_old_homes_resumes_bit_for_bit_and_exports(tmp_path: Path) -> None:
    """A checkpoint of an earlier version (its config names gan_lab.losses.HingeLoss & co) continues exactly."""
    from gan_lab.export import export_checkpoint
    from gan_lab.run.checkpoint_io import load_generator

    base = [*TINY_RUN, "loss=hinge", "regularizer=r1", "augment=cutmix"]
    full = train(compose_config([*base, "steps=4"], output_dir=tmp_path / "full"))
    train(compose_config([*base, "steps=2"], output_dir=tmp_path / "half"))
    ckpt = tmp_path / "half" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)  # as stored, not upgraded
    stored = checkpoint["hyper_parameters"]
    # before the regularizer group took several, it held the one regularizer at its top, without `interval`
    stored["regularizer"] = {"_target_": "gan_lab.core.regularizers.R1Penalty", "gamma": 10.0}
    old = {
        ("loss",): "gan_lab.losses.HingeLoss",
        ("regularizer",): "gan_lab.regularizers.R1Penalty",
        ("augment", "cutmix"): "gan_lab.augment.CutMix",
        ("callbacks", "last"): "gan_lab.checkpointing.LastCheckpoint",
        ("callbacks", "diversity"): "gan_lab.diversity.DiversityMonitor",
        ("callbacks", "samples"): "gan_lab.callbacks.SampleGrid",
    }
    for keys, target in old.items():
        node = stored
        for key in keys:
            node = node[key]
        node["_target_"] = target
    torch.save(checkpoint, ckpt)

    exported = export_checkpoint(ckpt, tmp_path / "export")
    export_config = OmegaConf.load(exported["config"])
    assert export_config.loss._target_ == "gan_lab.core.losses.HingeLoss"
    # an export of an earlier version
    export_config.regularizer = {"_target_": "gan_lab.regularizers.R1Penalty", "gamma": 10.0}
    OmegaConf.save(export_config, exported["config"])
    assert load_generator(tmp_path / "export").config.regularizer == {
        "interval": 1,
        "r1": {"_target_": "gan_lab.core.regularizers.R1Penalty", "gamma": 10.0},
    }
    assert load_generator(ckpt).config.augment.cutmix._target_ == "gan_lab.core.augment.CutMix"
    # The command line names the same choices, now under their new homes: the same settings, not a change.
    resume = ["loss=hinge", "regularizer=r1", "augment=cutmix", "steps=4", f"resume={tmp_path / 'half'}"]
    resumed = train(compose_config([*base, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    assert (resumed.g_steps, resumed.d_steps) == (full.g_steps, full.d_steps) == (4, 4)
    _assert_identical(_weights(full), _weights(resumed))
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)[
        "hyper_parameters"
    ]  # rewritten by the resume
    assert saved["callbacks"]["last"]["_target_"] == "gan_lab.callbacks.last_checkpoint.LastCheckpoint"
    assert saved["loss"]["_target_"] == "gan_lab.core.losses.HingeLoss"
