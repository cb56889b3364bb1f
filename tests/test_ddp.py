"""DDP on CPU (gloo, 2 processes): training runs, outputs are written once, in-loop FID equals one process's."""

import csv
import json

import pytest
from conftest import TINY_CLI, run_module

pytestmark = pytest.mark.ddp


@pytest.mark.slow
@pytest.mark.shared
def test_two_process_ddp_trains_and_scores_like_one_process(inception_weights, tmp_path):
    metrics = [
        "metrics=fid",
        "metrics.num_fake=16",
        "metrics.kid_subset_size=8",
        f"metrics.inception_weights={inception_weights}",
        f"metrics.cache_dir={tmp_path / 'cache'}",
    ]
    done = run_module(
        "gan_lab.train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "dataset=fake",
        "dataset.num_samples=64",
        "dataset.batch_size=8",
        "model.width=8",
        "steps=4",
        *metrics,
        "metrics.every=4",
        "metrics.every_unit=step",
        "callbacks.samples.every_n_steps=2",
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        OMP_NUM_THREADS="1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r.get("train/g_loss")] == [1, 2, 3, 4]  # written once, by rank 0
    (ddp_fid,) = [float(r["val/fid16_train32"]) for r in rows if r.get("val/fid16_train32")]

    out = tmp_path / "eval.json"
    single = run_module(
        "gan_lab.evaluate",
        f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
        *metrics[1:],
        f"out={out}",
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    assert json.loads(out.read_text())["fid"] == pytest.approx(ddp_fid, rel=1e-4)


@pytest.mark.slow  # ~18 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_multirun_with_ddp_runs_each_job_once(tmp_path):
    # Lightning starts DDP ranks by re-running the command line; in a multirun that would be the whole sweep.
    sweep = tmp_path / "sweep"
    done = run_module(
        "gan_lab.train",
        "-m",
        "optim.lr=1e-4,2e-4",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *TINY_CLI,
        "steps=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        OMP_NUM_THREADS="1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]  # no stray runs from the DDP children
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job in jobs:
        assert json.loads((job / "status.json").read_text()) | {"wall_time_s": 0} == {
            "status": "completed",
            "wall_time_s": 0,
            "g_steps": 2,
        }
        assert (job / "checkpoints" / "last.ckpt").is_file()
