"""Hydra's launchers run gan_lab jobs: submitit (the cluster path; submitit_local stands in for SLURM here) and
joblib (several jobs at once on one machine, e.g. sharing one GPU)."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import TINY_CLI, run_module
from omegaconf import OmegaConf

from gan_lab.run.paths import RunDir


@pytest.mark.slow  # ~14 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_submitit_local_runs_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_module(
        "gan_lab.train", "-m", "hydra/launcher=submitit_local", "optim.lr=1e-4,2e-4", *TINY_CLI, "steps=2",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "status.json").read_text())["status"] == "completed"
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    lrs = sorted(OmegaConf.load(sweep / job / "config.yaml").optim.lr for job in ("0", "1"))
    assert lrs == [1e-4, 2e-4]


def _train_interval(job: Path) -> tuple[float, float]:
    """(start, end) of a job's train() in seconds since the epoch: its status file is written last, at the end,
    with the wall time since the start (rounded to 0.1 s)."""
    status = RunDir(job).status
    end = status.stat().st_mtime
    return end - json.loads(status.read_text())["wall_time_s"], end


@pytest.mark.parametrize("n_jobs", [2, 1])
@pytest.mark.slow  # ~45 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_joblib_runs_jobs_at_once_or_one_after_another(tmp_path: Path, n_jobs: int) -> None:
    """hydra/launcher=joblib: every job completes in its numbered directory with its status file and report row;
    with n_jobs=2 the two trainings overlap in time, with n_jobs=1 the second starts after the first ends."""
    sweep = tmp_path / "sweep"
    done = run_module(
        "gan_lab.train", "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}", "optim.lr=1e-4,2e-4",
        *TINY_CLI, "steps=200", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
        OMP_NUM_THREADS="1",  # one thread a job: tiny nets on shared cores stall at every thread barrier
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [sweep / "0", sweep / "1"]
    for job in jobs:
        assert json.loads(RunDir(job).status.read_text())["status"] == "completed"
        assert RunDir(job).last_ckpt.is_file()
    assert sorted(OmegaConf.load(RunDir(job).config_file).optim.lr for job in jobs) == [1e-4, 2e-4]

    (start0, end0), (start1, end1) = (_train_interval(job) for job in jobs)
    if n_jobs == 2:
        overlap = min(end0, end1) - max(start0, start1)
        assert overlap > 0.5, (
            f"the jobs did not train at once: {start0:.2f}-{end0:.2f} and {start1:.2f}-{end1:.2f}"
        )
    else:
        assert start1 >= end0 - 0.1, f"job 1 started at {start1:.2f}, before job 0 ended at {end0:.2f}"

    report = run_module("gan_lab.report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    with (sweep / "report.csv").open(newline="") as f:
        rows = {row["job"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["0", "1"] and {row["status"] for row in rows.values()} == {"completed"}


@pytest.mark.slow  # ~13 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_joblib_job_failure_leaves_the_others_running(tmp_path: Path) -> None:
    """A job that fails in a joblib worker prints its one-line error and is marked failed; the other completes and
    the sweep exits non-zero, as with the default launcher."""
    sweep = tmp_path / "sweep"
    done = run_module(
        "gan_lab.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "dataset.batch_size=8,0",
        *[o for o in TINY_CLI if not o.startswith("dataset.batch_size")], "steps=2", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert done.returncode != 0
    assert "gan_lab: error: dataset.batch_size=0" in done.stderr
    statuses = [json.loads(RunDir(sweep / job).status.read_text())["status"] for job in ("0", "1")]
    assert statuses == ["completed", "failed"]


@pytest.mark.slow  # ~13 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_joblib_jobs_can_decode_in_loader_workers(tmp_path: Path, tiny_image_folder: Path) -> None:
    """A joblib worker makes "loky" the default start method; gan_lab resets it, so DataLoader workers start."""
    sweep = tmp_path / "sweep"
    done = run_module(
        "gan_lab.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optim.lr=1e-4,2e-4",
        *[o for o in TINY_CLI if not o.startswith("dataset")], "dataset=folder", f"dataset.root={tiny_image_folder}",
        "dataset.resolution=32", "dataset.batch_size=2", "dataset.in_memory=false", "dataset.num_workers=1",
        "steps=2", f"hydra.sweep.dir={sweep}", cwd=tmp_path, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads(RunDir(sweep / job).status.read_text())["status"] == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_stopped_sweep_continues_through_its_own_launcher(tmp_path: Path, launcher: str) -> None:
    """`-m resume=<sweep>` relaunches the stored sweep with its launcher: a job that never started (its directory
    gone) is started, one preempted is continued from its checkpoint, a completed one is skipped."""
    sweep = tmp_path / "sweep"
    args = [*TINY_CLI, "steps=6", "callbacks.last.every_n_steps=2", "optim.lr=1e-4,2e-4,3e-4"]
    first = run_module(
        "gan_lab.train", "-m", f"hydra/launcher={launcher}", *args, f"hydra.sweep.dir={sweep}", cwd=tmp_path,
        OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    completed = RunDir(sweep / "0").last_ckpt.read_bytes()
    shutil.rmtree(sweep / "2")  # never started
    status = RunDir(sweep / "1").status  # preempted: its status says so, its checkpoint is the last one
    status.write_text(json.dumps({"status": "preempted", "g_steps": 6}))
    continued = run_module("gan_lab.train", "-m", f"resume={sweep}", cwd=tmp_path, OMP_NUM_THREADS="1")
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert RunDir(sweep / "0").last_ckpt.read_bytes() == completed
    for job in ("0", "1", "2"):
        assert json.loads(RunDir(sweep / job).status.read_text())["status"] == "completed"
    assert OmegaConf.load(RunDir(sweep / "2").config_file).optim.lr == 3e-4
    if launcher == "submitit_local":
        assert (sweep / ".submitit").is_dir()
