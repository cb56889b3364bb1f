"""logger=tensorboard: Lightning's TensorBoardLogger beside metrics.csv, with the same metrics against generator
steps and the sample grids as images; one TensorBoard run per job of a sweep."""

import csv
from pathlib import Path

import pytest
from conftest import TINY_CLI, run_module

from gan_lab.run.paths import RunDir

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_events(folder: Path):
    events = event_accumulator.EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_tensorboard_holds_the_csv_metrics_and_the_sample_grids(tmp_path):
    run = tmp_path / "run"
    done = run_module(
        "gan_lab.train", *TINY_CLI, "logger=tensorboard", "steps=4", "trainer.log_every_n_steps=2",
        "callbacks.samples.every_n_steps=2", f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    events = read_events(run / "tensorboard")
    with RunDir(run).metrics.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/g_loss")]
    logged = [(e.step, e.value) for e in events.Scalars("train/g_loss")]
    assert logged == [(int(r["step"]), pytest.approx(float(r["train/g_loss"]))) for r in rows]
    assert [step for step, _ in logged] == [2, 4]
    grids = events.Images("samples")
    assert [g.step for g in grids] == [2, 4] and grids[0].width > 0


def test_each_job_of_a_sweep_is_a_tensorboard_run_of_its_own(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_module(
        "gan_lab.train", "-m", *TINY_CLI, "logger=tensorboard", "steps=2", "optim.lr=1e-4,2e-4",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        assert read_events(sweep / job / "tensorboard").Scalars("train/g_loss")[-1].step == 2
