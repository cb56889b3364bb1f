"""A run killed with SIGKILL at many random moments, resumed each time, ends where an uninterrupted run ends: the
same weights bit for bit, and metrics.csv with every logged generator step exactly once (and the same values).
The same for a 4-job sweep killed twice and continued with `python -m gan_lab.train -m resume=<sweep>`.

The kills land anywhere: during a checkpoint write (a stray temporary file shows it), a metrics row, a status
write, a sample grid, start-up, between steps. The figures are printed and quoted in docs/reliability.md.
"""

import csv
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLI

from gan_lab.run.paths import RunDir

pytestmark = pytest.mark.slow

RUN = [
    *TINY_CLI,
    "steps=1500",  # long enough that 20 kills, each a random moment after a start, do not reach the end
    "callbacks.last.every_n_steps=2",  # a checkpoint write every other step: many kills land inside one
    "callbacks.samples.every_n_steps=7",
    "trainer.log_every_n_steps=3",
]
KILLS = 20


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gan_lab.train", *args]


def run_to_the_end(args: list[str], cwd: Path) -> None:
    done = subprocess.run(command(*args), cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def killed_at_random(args: list[str], cwd: Path, started, rng: random.Random, window: float) -> bool:
    """Start the command, SIGKILL it a random moment after started() holds; False if it ended first."""
    process = subprocess.Popen(command(*args), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not started() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, window))
    if process.poll() is not None:
        return False
    process.kill()
    process.wait()
    return True


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(RunDir(run).last_ckpt, map_location="cpu", weights_only=False)["state_dict"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def train_rows(run: Path) -> list[tuple[int, str]]:
    """(generator step, the row's train/ values) of every training-metrics row of metrics.csv."""
    with RunDir(run).metrics.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/g_loss")]
    return [(int(r["step"]), ",".join(r[k] for k in sorted(r) if k.startswith("train/"))) for r in rows]


def running_since(run: Path, after: float):
    """started(): the run's status file was (re)written after `after`: this start has begun to train."""
    status = RunDir(run).status
    return lambda: status.is_file() and status.stat().st_mtime > after


def test_a_run_killed_20_times_ends_as_an_uninterrupted_one(tmp_path, capsys):
    reference = tmp_path / "reference"
    run_to_the_end([*RUN, f"hydra.run.dir={reference}"], tmp_path)
    run, rng = tmp_path / "run", random.Random(0)
    kills = checkpoint_writes_cut = starts = 0
    while True:
        resumable = RunDir(run).last_ckpt.is_file()
        args = [*RUN, f"resume={run}"] if resumable else [*RUN, f"hydra.run.dir={run}", "overwrite=true"]
        starts += 1
        if kills >= KILLS or not killed_at_random(args, tmp_path, running_since(run, time.time()), rng, 1.5):
            break
        kills += 1
        checkpoint_writes_cut += any(RunDir(run).checkpoints.glob(".*.tmp-*"))  # removed by the next start
    if kills >= KILLS:
        run_to_the_end([*RUN, f"resume={run}"], tmp_path)
    ours, theirs = train_rows(run), train_rows(reference)
    steps = [s for s, _ in ours]
    with capsys.disabled():
        print(
            f"\nfault battery (one run): {kills} SIGKILLs, {starts} starts, weights equal: "
            f"{same_weights(run, reference)}; rows {len(ours)} (uninterrupted {len(theirs)}), duplicated "
            f"{len(steps) - len(set(steps))}, lost {len({s for s, _ in theirs} - set(steps))}, values equal: "
            f"{ours == theirs}; kills inside a checkpoint write: {checkpoint_writes_cut}"
        )
    assert kills >= KILLS
    assert same_weights(run, reference)
    assert steps == sorted(set(steps)), "a generator step logged twice or out of order"
    assert ours == theirs
    assert not list(RunDir(run).checkpoints.glob(".*.tmp-*")), "half-written checkpoints left behind"


def test_a_sweep_killed_twice_is_finished_by_one_command_as_an_uninterrupted_one(tmp_path, capsys):
    sweep_args = [*RUN[:-4], "steps=60", *RUN[-3:], "optim.lr=1e-4,2e-4,3e-4,4e-4"]
    reference = tmp_path / "reference"
    run_to_the_end(["-m", *sweep_args, f"hydra.sweep.dir={reference}"], tmp_path)
    sweep, rng = tmp_path / "sweep", random.Random(1)
    first = ["-m", *sweep_args, f"hydra.sweep.dir={sweep}"]
    kills = 0  # the first kill inside job 1, the second (of the continuing command) inside job 2
    for args, job in ((first, "1"), (["-m", f"resume={sweep}"], "2")):
        kills += killed_at_random(args, tmp_path, RunDir(sweep / job).status.is_file, rng, 1.0)
    run_to_the_end(["-m", f"resume={sweep}"], tmp_path)
    equal = [same_weights(sweep / job, reference / job) for job in "0123"]
    exact_rows = [train_rows(sweep / job) == train_rows(reference / job) for job in "0123"]
    with capsys.disabled():
        print(f"\nfault battery (4-job sweep): {kills} SIGKILLs, jobs with equal weights {sum(equal)}/4, "
              f"with the uninterrupted rows {sum(exact_rows)}/4")  # fmt: skip
    assert kills == 2
    assert all(equal) and all(exact_rows)
