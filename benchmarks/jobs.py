"""Training jobs that share one machine: a gan_lab multirun through Hydra's joblib launcher, timed by the jobs.

`run_multirun` starts `python -m gan_lab.train -m hydra/launcher=joblib hydra.launcher.n_jobs=N ...` as a user
does, with the bench's StepTimer added to every job (`+callbacks.bench_timer`), which writes the job's generator
step times to `bench_steps.json` in its run directory; the jobs' status files say how each ended.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gan_lab
from benchmarks.loops import StepClock, StepTimer
from gan_lab.errors import GanLabError
from gan_lab.run.sweep import load_jobs

log = logging.getLogger("benchmarks")

TIMER_FILE = "bench_steps.json"
# Inside a joblib (loky) worker a DataLoader cannot start worker processes: Python made "loky" that process's
# default start method, and loky's Popen starts only loky's Process ("'Process' object has no attribute 'env'").
# The bench's jobs read images held in memory (decoded and cached by the runs before them): no workers needed.
NO_WORKERS = "dataset.num_workers=0"
Launch = Callable[[list[str], str, int], dict[str, Any]]  # (overrides, name, n_jobs) -> run_multirun's result
SYNC_EVERY = 5  # a job's step times wait for its GPU every this many steps (and at its last step)


def timer_overrides(sync_every: int = SYNC_EVERY) -> list[str]:
    """Overrides that add the StepTimer to a job, writing its clock into the job's run directory."""
    entry = "+callbacks.bench_timer"
    return [
        f"{entry}._target_={StepTimer.__module__}.StepTimer",
        f"{entry}.key=job",
        f"{entry}.sync_every={sync_every}",
        f"{entry}.path=${{paths.output_dir}}/{TIMER_FILE}",
    ]


def read_timer_file(path: Path) -> tuple[StepClock, dict[str, Any]]:
    """The clock a job's StepTimer wrote to `path` (seconds since the epoch, comparable across processes), and
    the whole record (its `gpu_memory_gib`: measure.gpu_memory_in_use_gib at the job's end)."""
    record = json.loads(Path(path).read_text())
    clock = StepClock()
    clock.start, clock.times, clock.exact = record["start"], record["times"], record["exact"]
    return clock, record


def run_multirun(
    overrides: Sequence[str],
    sweep_dir: Path,
    n_jobs: int,
    batch_size: int,
    timeout_s: float,
    warmup: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run one multirun (its sweep in `overrides`) with n_jobs jobs at once; what each job and all did.

    `command_s`: the whole command's wall time (start-up included: what a user waits for). `images_per_s`: the
    jobs' images over the time from the first job's first batch to the last job's last step. `steady_images_per_s`:
    the sum of the jobs' rates while all of them train past their first `warmup` steps (compilation, graph
    capture and cuDNN autotuning left out). `threads`: OMP_NUM_THREADS of the command (default: joblib's, one
    share of the cores per job).
    """
    command = [sys.executable, "-m", "gan_lab.train", "-m", "hydra/launcher=joblib",
               f"hydra.launcher.n_jobs={n_jobs}", *overrides, NO_WORKERS, *timer_overrides(),
               f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = sweep_dir.parent / f"{sweep_dir.name}.log"
    # The jobs import the StepTimer from this checkout, and gan_lab from wherever this process has it.
    roots = {str(Path(__file__).resolve().parents[1]), str(Path(gan_lab.__file__).resolve().parents[1])}
    path = os.pathsep.join(p for p in (*sorted(roots), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    env |= {"OMP_NUM_THREADS": str(threads)} if threads else {}
    log.info("multirun, %d at once: %s", n_jobs, " ".join(command[3:]))
    started = time.perf_counter()
    with log_path.open("w") as out:
        # Its own session, so a timeout ends the joblib workers with it.
        proc = subprocess.Popen(command, cwd=sweep_dir.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            returncode: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = None
    result: dict[str, Any] = {"n_jobs": n_jobs, "returncode": returncode,
                              "command_s": round(time.perf_counter() - started, 2)}  # fmt: skip
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.is_file() else ""
        result["error"] = f"timed out after {timeout_s:.0f} s" if returncode is None else f"exit {returncode}"
        result["log_tail"] = tail
        log.warning("multirun %s: %s\n%s", sweep_dir.name, result["error"], tail[-600:])
    result.update(read_jobs(sweep_dir, batch_size, warmup))
    log.info(
        "multirun %s: %.0f s, %s images/s", sweep_dir.name, result["command_s"], result.get("images_per_s")
    )
    return result


def launcher(
    workdir: Path,
    batch_size: int,
    warmup: int,
    time_left: Callable[[], float],
    timeout_s: float,
    threads: int | None,
) -> Launch:
    """run_multirun in workdir/<name> within the time `time_left()` says is left (each command at most timeout_s);
    a command that would start with under 20 s left is skipped."""

    def launch(overrides: list[str], name: str, n_jobs: int) -> dict[str, Any]:
        left = time_left() - 5
        if left < 20:
            return {"n_jobs": n_jobs, "skipped": "time limit reached"}
        return run_multirun(
            overrides, workdir / name, n_jobs, batch_size, min(timeout_s, left), warmup, threads
        )

    return launch


def read_jobs(sweep_dir: Path, batch_size: int, warmup: int = 1) -> dict[str, Any]:
    """Per job: status, generator steps and images/s; together: images/s whole and in steady state."""
    jobs, clocks = [], []
    try:
        found = load_jobs(sweep_dir) if sweep_dir.is_dir() else []
    except GanLabError:  # a multirun that failed before its first job: its error is already in the result
        found = []
    for job in found:
        entry: dict[str, Any] = {"job": job.name, "status": job.status, "g_steps": job.g_steps}
        timer = sweep_dir / job.name / TIMER_FILE
        if timer.is_file():
            clock, record = read_timer_file(timer)
            if record.get("gpu_memory_gib"):
                entry["gpu_memory_gib"] = record[
                    "gpu_memory_gib"
                ]  # (in use at its end, the GPU's), all processes
            # Steps up to the last timestamp that waited for the device: their work is done.
            n = max((i + 1 for i, exact in enumerate(clock.exact) if exact), default=0)
            if n and clock.start is not None:
                clock.times, clock.exact = clock.times[:n], clock.exact[:n]
                clocks.append(clock)
                entry.update(start=clock.start, end=clock.times[-1], timed_steps=n,
                             images_per_s=n * batch_size / max(clock.elapsed_s, 1e-9))  # fmt: skip
                window = _window([clock], warmup)
                rate = _rate_between(clock, *window) if window else None
                if rate:
                    entry["steady_steps_per_s"] = rate  # its own, past its warm-up
        jobs.append(entry)
    summary: dict[str, Any] = {"jobs": jobs, "completed": sum(j["status"] == "completed" for j in jobs)}
    if clocks:
        first, last = min(c.start for c in clocks), max(c.times[-1] for c in clocks)
        images = sum(len(c.times) for c in clocks) * batch_size
        summary.update(
            images=images, train_s=round(last - first, 3), images_per_s=images / max(last - first, 1e-9)
        )
        together = rates_together(clocks, warmup)
        if together is not None:
            rates, span = together
            summary.update(steady_images_per_s=sum(rates) * batch_size, steady_s=round(span, 3),
                           steady_steps_per_s_together=rates)  # fmt: skip
    return summary


def rates_together(clocks: Sequence[Any], warmup: int) -> tuple[list[float], float] | None:
    """(each clock's steps/s, window s) over the window where every clock is past `warmup` steps and not yet
    done; each rate is taken between its exact timestamps inside the window. None without such a window."""
    window = _window(clocks, warmup)
    rates = [_rate_between(c, *window) for c in clocks] if window else []
    if not window or not all(rates):
        return None
    return rates, window[1] - window[0]  # type: ignore[return-value]


def _window(clocks: Sequence[Any], warmup: int) -> tuple[float, float] | None:
    """(t0, t1): from the last clock's end of warm-up (an exact timestamp) to the first clock's last step."""
    if any(len(c.times) <= warmup or not c.exact[warmup - 1] for c in clocks):
        return None
    return max(c.times[warmup - 1] for c in clocks), min(c.times[-1] for c in clocks)


def _rate_between(clock: Any, t0: float, t1: float) -> float | None:
    """Steps/s between the clock's first and last exact timestamps inside [t0, t1] (None: fewer than two)."""
    inside = [
        i
        for i, (t, exact) in enumerate(zip(clock.times, clock.exact, strict=True))
        if exact and t0 <= t <= t1
    ]
    if len(inside) < 2 or clock.times[inside[-1]] <= clock.times[inside[0]]:
        return None
    return (inside[-1] - inside[0]) / (clock.times[inside[-1]] - clock.times[inside[0]])


def jobs_at_once(
    launch: Launch, overrides: list[str], levels: Sequence[int], amount: list[str], fallback: list[str]
) -> dict[str, Any]:
    """For each n in `levels`, n jobs training `amount` each (e.g. ["budget=0.3"]) at once; `fallback` (e.g.
    ["steps=900"]) replaces `amount` once a command with it completes no job. Ratios to the first level."""
    result: dict[str, Any] = {"per_job": amount, "runs": {}}
    for n in levels:
        seeds = f"seed={','.join(str(i) for i in range(n))}"
        run = launch([*overrides, *amount, seeds], f"jobs{n}", n)
        if amount != fallback and not run.get("completed") and "skipped" not in run:
            result["failed_with"], result["failed_run"], amount = amount, run, fallback
            result["per_job"] = amount
            run = launch([*overrides, *amount, seeds], f"jobs{n}_fallback", n)
        result["runs"][str(n)] = run
    alone = result["runs"].get("1", {}).get("jobs") or [{}]
    if alone[0].get(
        "gpu_memory_gib"
    ):  # a job alone on the GPU: what it had in use at its end is its footprint
        used, total = alone[0]["gpu_memory_gib"]
        result["memory"] = {"per_job_gib": used, "gpu_gib": total, "jobs_that_fit": int(total // used)}
    for key in ("images_per_s", "steady_images_per_s"):
        first = result["runs"].get(str(levels[0]), {}).get(key)
        for run in result["runs"].values():
            if first and run.get(key):
                run[f"{key}_vs_one_job"] = run[key] / first
    return result


def sweep_times(
    launch: Launch, overrides: list[str], lrs: Sequence[str], steps: int, projected_steps: int | None = None
) -> dict[str, Any]:
    """A sweep over optim.lr run one job at a time, then all arms at once: each whole command's wall time, and
    their ratio projected to arms of `projected_steps` G steps (see `projected_ratio`)."""
    result: dict[str, Any] = {"arms": list(lrs), "steps_per_arm": steps, "runs": {}, "target_max": 0.5}
    for n in (1, len(lrs)):
        sweep = [*overrides, f"steps={steps}", f"optim.lr={','.join(lrs)}"]
        result["runs"][str(n)] = launch(sweep, f"sweep{n}", n)
    one, many = (result["runs"][str(n)] for n in (1, len(lrs)))
    if one.get("returncode") == 0 and many.get("returncode") == 0:
        result["time_ratio"] = many["command_s"] / one["command_s"]
        if projected_steps:
            ratio = projected_ratio(one, many, projected_steps - steps)
            if ratio is not None:
                result["projected"] = {"steps_per_arm": projected_steps, "time_ratio": ratio}
    return result


def projected_ratio(one: dict[str, Any], many: dict[str, Any], more_steps: int) -> float | None:
    """The time ratio of a sweep's two commands (`one`: arms one after another, `many`: all at once) had each arm
    trained `more_steps` more G steps: each command's measured time plus those steps at its steady rates. One
    after another the arms' own rates add up; at once the slowest arm's rate while all trained sets the pace.
    Start-up costs stay as measured, so for long arms the ratio tends to the ratio of the training rates.
    None where a rate is missing."""
    alone = [job.get("steady_steps_per_s") for job in one.get("jobs", [])]
    together = many.get("steady_steps_per_s_together") or []
    if not alone or not all(alone) or len(together) != len(alone) or not all(together):
        return None
    one_s = one["command_s"] + sum(more_steps / rate for rate in alone)
    many_s = many["command_s"] + more_steps / min(together)
    return many_s / one_s


def in_one_process(contenders: dict[str, dict[str, Any]], *arms: str) -> dict[str, float]:
    """For each contender in `arms` (a sweep's arms trained together in one process, images/s of all arms), the
    time ratio of the arms trained together to the same arms one after another, training only: one arm's
    images/s (`plain_graphed`, the same loop alone) / all arms' images/s together."""
    one = contenders.get("plain_graphed", {}).get("images_per_s")
    ratios = {}
    for name in arms:
        together = contenders.get(name, {}).get("images_per_s")
        if one and together:
            ratios[name] = one["median"] / together["median"]
    return ratios
