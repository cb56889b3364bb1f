"""One writer per run directory, no silent reuse, and sweeps continued with one command (gan_lab/run/store.py,
lock.py, continue_sweep.py). Each refusal is one `gan_lab: error:` line and changes no file."""

import errno
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLI, run_module
from omegaconf import OmegaConf

from gan_lab.run import lock as run_lock
from gan_lab.run.continue_sweep import expand_command_line
from gan_lab.run.lock import RunInUse, RunLock
from gan_lab.run.paths import RunDir

STEPS = ["steps=4", "callbacks.last.every_n_steps=2"]


def files_of(folder: Path) -> dict[str, tuple[bytes, int]]:
    """{relative path: (content, mtime)} of every file under folder (the holder's own lock file aside)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("gan_lab: error:")]


def finished_run(tmp_path: Path, name: str = "run", *overrides: str) -> Path:
    run = tmp_path / name
    done = run_module("gan_lab.train", *TINY_CLI, *STEPS, f"hydra.run.dir={run}", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(RunDir(run).last_ckpt, map_location="cpu", weights_only=False)["state_dict"]


# --- unique directories ------------------------------------------------------------------------------------
@pytest.mark.slow  # ~9 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_two_runs_started_at_once_keep_their_own_directories_configs_and_checkpoints(tmp_path):
    command = [sys.executable, "-m", "gan_lab.train", *TINY_CLI, *STEPS]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    runs = [
        subprocess.Popen(
            [*command, f"optim.lr={lr}"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
        )
        for lr in ("1e-4", "2e-4")
    ]
    assert [r.wait(timeout=600) for r in runs] == [0, 0], [r.stderr.read()[-2000:] for r in runs]
    dirs = sorted(tmp_path.glob("outputs/*/*"))
    assert len(dirs) == 2
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d-[0-9a-f]{4}", d.name) for d in dirs), (
        dirs
    )  # time + unique suffix
    assert sorted(OmegaConf.load(RunDir(d).config_file).optim.lr for d in dirs) == [1e-4, 2e-4]
    for d in dirs:
        assert RunDir(d).last_ckpt.is_file()
        assert json.loads(RunDir(d).status.read_text())["status"] == "completed"
        assert OmegaConf.load(RunDir(d).overrides)[-1].startswith("optim.lr=")


# --- no silent reuse ---------------------------------------------------------------------------------------
def test_a_run_aimed_at_a_finished_run_stops_with_one_line_and_changes_no_file(tmp_path):
    run = finished_run(tmp_path)
    before = files_of(run)
    again = run_module(
        "gan_lab.train", *TINY_CLI, *STEPS, f"hydra.run.dir={run}", "optim.lr=3e-4", cwd=tmp_path
    )
    assert again.returncode == 1
    assert error_lines(again) == [
        f"gan_lab: error: {run} already holds a run (completed at generator step 4); continue it with "
        f"resume={run}, start this one elsewhere (hydra.run.dir=<new directory>), or replace it with overwrite=true"
    ]
    assert files_of(run) == before


def test_overwrite_true_replaces_the_run(tmp_path):
    run = finished_run(tmp_path)
    (run / "samples" / "stray.png").write_bytes(b"from the earlier run")
    again = run_module(
        "gan_lab.train", *TINY_CLI, "steps=2", f"hydra.run.dir={run}", "optim.lr=3e-4", "overwrite=true", cwd=tmp_path
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "replacing the run in" in again.stdout
    assert OmegaConf.load(RunDir(run).config_file).optim.lr == 3e-4
    assert json.loads(RunDir(run).status.read_text())["g_steps"] == 2
    assert not (run / "samples" / "stray.png").exists()
    assert (
        "overwrite=true" not in RunDir(run).overrides.read_text()
    )  # an instruction, not a setting of the run


# --- one writer --------------------------------------------------------------------------------------------
@pytest.mark.slow  # ~25 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_a_live_run_refuses_a_resume_and_a_new_run_with_one_line_and_no_file_changed(tmp_path):
    run = finished_run(tmp_path)
    holder = RunLock(RunDir(run).lock)
    holder.acquire()
    holder.g_steps = lambda: 7
    holder.hold()  # this test process is now the live run
    try:
        before = files_of(run)
        live = f"{run} is being written by a live run (pid {os.getpid()} on host {socket.gethostname()}, at generator step 7)"
        for args in ([f"resume={run}", "steps=6"], [f"hydra.run.dir={run}", "overwrite=true"]):
            refused = run_module("gan_lab.train", *TINY_CLI, *args, cwd=tmp_path)
            assert refused.returncode == 1
            assert error_lines(refused) == [
                f"gan_lab: error: {live}; wait for it to end or stop it, or start this one elsewhere "
                "(hydra.run.dir=<another directory>)"
            ]
            assert files_of(run) == before
    finally:
        holder.release()
    assert run_module("gan_lab.train", *TINY_CLI, f"resume={run}", "steps=6", cwd=tmp_path).returncode == 0


@pytest.mark.slow  # ~13 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_a_lock_left_by_a_killed_process_is_taken_over_and_said(tmp_path):
    run = finished_run(tmp_path)
    take_and_die = (
        "import os, sys; from gan_lab.run.lock import RunLock; lock = RunLock(sys.argv[1]); lock.acquire(); "
        "lock.hold(); os.kill(os.getpid(), 9)"
    )
    killed = subprocess.run([sys.executable, "-c", take_and_die, str(RunDir(run).lock)], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    dead_pid = json.loads(RunDir(run).lock.read_text())["pid"]
    resumed = run_module("gan_lab.train", *TINY_CLI, f"resume={run}", "steps=6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"taking over its lock from pid {dead_pid} on host {socket.gethostname()}" in resumed.stdout
    assert json.loads(RunDir(run).status.read_text())["g_steps"] == 6
    assert json.loads(RunDir(run).lock.read_text())["released"] is True


@pytest.fixture
def no_flock(monkeypatch):
    """A file system that cannot lock: the soft lock (the holder's record) decides."""

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)


def _record(path: Path, **fields) -> None:
    record = {"host": socket.gethostname(), "pid": os.getpid(), "g_steps": 3, "heartbeat": time.time()}
    path.write_text(json.dumps({**record, "released": False, **fields}))


def test_soft_lock_judges_the_holder_by_pid_here_and_by_heartbeat_elsewhere(tmp_path, no_flock):
    path = tmp_path / "run.lock"
    _record(path)  # this very process: alive
    with pytest.raises(RunInUse, match=f"pid {os.getpid()} on host"):
        RunLock(path).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _record(path, pid=dead.pid)
    assert RunLock(path).acquire().taken_over
    _record(path, host="another-node", pid=1, heartbeat=time.time() - 10)
    with pytest.raises(RunInUse, match="on host another-node, at generator step 3"):
        RunLock(path).acquire()
    _record(
        path, host="another-node", pid=1, heartbeat=time.time() - run_lock.STALE_AFTER_S - 1
    )  # a lost node
    assert RunLock(path).acquire().taken_over
    _record(path, released=True)
    assert not RunLock(path).acquire().taken_over


def test_the_holder_record_keeps_its_step_current(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    holder = RunLock(tmp_path / "run.lock")
    holder.acquire()
    steps = iter(range(1000))
    holder.g_steps = lambda: next(steps)
    holder.hold()
    time.sleep(0.5)
    seen = json.loads((tmp_path / "run.lock").read_text())["g_steps"]
    holder.release()
    assert seen >= 3  # rewritten by the heartbeat, not only when taken


# --- continuing a sweep ------------------------------------------------------------------------------------
SWEEP = [*TINY_CLI, "steps=24", "callbacks.last.every_n_steps=4", "optim.lr=1e-4,2e-4,3e-4,4e-4"]


def run_sweep(cwd: Path, sweep: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_module("gan_lab.train", "-m", *SWEEP, f"hydra.sweep.dir={sweep}", *extra, cwd=cwd)


def kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the process as soon as ready() holds."""
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None and time.time() < deadline, "the sweep ended before the kill"
        time.sleep(0.02)
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def uninterrupted_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("whole")
    done = run_sweep(cwd, cwd / "sweep")
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd / "sweep"


@pytest.mark.slow  # ~32 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_a_sweep_killed_midway_is_completed_by_one_command(tmp_path, uninterrupted_sweep):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "-m", "gan_lab.train", "-m", *SWEEP, f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # killed in job 1, after its first checkpoint: job 0 completed, 1 dead while running, 2 and 3 never started
    kill_when(process, lambda: RunDir(sweep / "1").last_ckpt.is_file())
    assert json.loads((sweep / "1" / "status.json").read_text())["status"] == "running"
    assert not (sweep / "2").exists()
    job0 = {k: v for k, v in files_of(sweep / "0").items() if k != "train.log"}  # its log says it was skipped

    continued = run_module("gan_lab.train", "-m", f"resume={sweep}", cwd=tmp_path)
    assert continued.returncode == 0, continued.stderr[-3000:]
    assert f"{sweep / '0'}: completed at generator step 24; skipped" in continued.stdout
    assert "taking over its lock" in continued.stdout and "resuming" in continued.stdout
    assert {k: v for k, v in files_of(sweep / "0").items() if k != "train.log"} == job0  # not touched
    for job in "0123":
        assert json.loads((sweep / job / "status.json").read_text())["status"] == "completed"
        theirs, ours = weights(uninterrupted_sweep / job), weights(sweep / job)
        assert theirs.keys() == ours.keys()
        assert all(torch.equal(theirs[k], ours[k]) for k in theirs), f"job {job}'s weights differ"
        assert OmegaConf.load(RunDir(sweep / job).overrides) == OmegaConf.load(
            RunDir(uninterrupted_sweep / job).overrides
        )  # the report sees the same jobs
    report = run_module("gan_lab.report", str(sweep), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert report.stdout.count("completed") >= 4


@pytest.mark.slow
def test_a_continued_sweep_skips_failed_jobs_unless_retry_failed(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_sweep(tmp_path, sweep)
    assert done.returncode == 0, done.stderr[-3000:]
    status = RunDir(sweep / "2").status
    status.write_text(json.dumps({"status": "failed", "error": "diverged", "g_steps": 8}))
    skipped = run_module("gan_lab.train", "-m", f"resume={sweep}", cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert f"{sweep / '2'}: failed (diverged); retry_failed=true runs it again; skipped" in skipped.stdout
    assert json.loads(status.read_text())["status"] == "failed"
    retried = run_module("gan_lab.train", "-m", f"resume={sweep}", "retry_failed=true", cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert json.loads(status.read_text())["status"] == "completed"


def test_the_continuing_command_line_is_the_stored_sweeps_with_the_new_keys(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    stored = {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"},
        "overrides": {
            "hydra": ["hydra/launcher=joblib", "hydra.sweep.dir=multirun/old"],
            "task": ["optim.lr=1e-4,2e-4", "steps=40", "resume=an/earlier/continuation"],
        },
    }
    OmegaConf.save({"hydra": stored}, sweep / "multirun.yaml")
    argv = ["train.py", "-m", "--config-name", "train", f"resume={sweep}", "steps=80"]
    assert expand_command_line(argv) == [
        "train.py", "-m", "--config-name", "train", "hydra/launcher=joblib", "optim.lr=1e-4,2e-4", "steps=80",
        f"hydra.sweep.dir={sweep}", f"resume={sweep}",
    ]  # fmt: skip
    assert expand_command_line(["train.py", f"resume={sweep}"]) == ["train.py", f"resume={sweep}"]  # no -m
    stored["sweeper"]["_target_"] = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    OmegaConf.save({"hydra": stored}, sweep / "multirun.yaml")
    refused = run_module("gan_lab.train", "-m", f"resume={sweep}", cwd=tmp_path)
    assert refused.returncode == 1
    assert error_lines(refused) == [
        f"gan_lab: error: resume={sweep}: that sweep ran with OptunaSweeper, whose jobs cannot be listed again; "
        "continue its jobs one by one with resume=<job directory>"
    ]


def test_resume_of_a_sweep_without_multirun_says_to_add_it(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    refused = run_module("gan_lab.train", *TINY_CLI, f"resume={sweep}", cwd=tmp_path)
    assert refused.returncode == 1
    assert error_lines(refused) == [
        f"gan_lab: error: resume={sweep} is a sweep (multirun) directory; continue it with -m: "
        f"python -m gan_lab.train -m resume={sweep}"
    ]


# --- SLURM: checkpoint, then requeue, then continue --------------------------------------------------------
FAKE_SUBMITIT = """
import json, os, signal, sys, threading, time
from pathlib import Path

run = Path(os.environ["RUN_DIR"])


def requeue(signum, frame):  # what submitit's handler does: requeue the job, then exit
    status = json.loads((run / "status.json").read_text())
    Path(os.environ["MARKER"]).write_text(json.dumps(status))
    sys.exit(-1)


def time_limit_near():  # SLURM's signal before the time limit, once the run has a checkpoint
    while not (run / "checkpoints" / "last.ckpt").is_file():
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGUSR2)


if os.environ.get("SEND_SIGNAL"):
    signal.signal(signal.SIGUSR2, requeue)
    threading.Thread(target=time_limit_near, daemon=True).start()
import runpy

sys.argv = ["gan_lab.train", *sys.argv[1:]]
runpy.run_module("gan_lab.train", run_name="__main__")  # python -m gan_lab.train, with the fake submitit
"""


@pytest.mark.slow
def test_a_slurm_job_checkpoints_at_its_time_limit_is_requeued_and_continues_exactly(tmp_path):
    args = [*TINY_CLI, "steps=40", "callbacks.last.every_n_steps=4", "trainer.log_every_n_steps=2"]
    reference = tmp_path / "reference"
    assert run_module("gan_lab.train", *args, f"hydra.run.dir={reference}", cwd=tmp_path).returncode == 0
    driver, run, marker = tmp_path / "job.py", tmp_path / "run", tmp_path / "requeued.json"
    driver.write_text(FAKE_SUBMITIT)
    env = {
        **os.environ,
        "HYDRA_FULL_ERROR": "0",
        "SLURM_JOB_ID": "4242",
        "RUN_DIR": str(run),
        "MARKER": str(marker),
    }
    command = [sys.executable, str(driver), *args, f"hydra.run.dir={run}"]
    first = subprocess.run(
        command, cwd=tmp_path, env={**env, "SEND_SIGNAL": "1"}, capture_output=True, text=True
    )
    assert marker.is_file(), first.stderr[-3000:]  # the requeue handler ran...
    at_requeue = json.loads(marker.read_text())
    assert at_requeue["status"] == "preempted"  # ...after the checkpoint and the status were written
    assert 0 < at_requeue["g_steps"] < 40
    requeued = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True
    )  # the same job id
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert "SLURM job 4242 was requeued: continuing its run" in requeued.stdout
    assert json.loads(RunDir(run).status.read_text())["g_steps"] == 40
    theirs, ours = weights(reference), weights(run)
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    other_job = subprocess.run(
        command, cwd=tmp_path, env={**env, "SLURM_JOB_ID": "7"}, capture_output=True, text=True
    )
    assert (
        other_job.returncode == 1 and "already holds a run" in other_job.stderr
    )  # another job does not continue it
