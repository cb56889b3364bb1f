"""`python -m benchmarks gpu [--quick] [--out DIR]`: gan_lab's speed on one CUDA GPU, in under 5.5 minutes.

At 64², batch 128, on CIFAR-10's training JPEGs as a folder (`--data-root`; on the GPU machine /tmp/cifar/train):

a. DCGAN images/s in steady state (G steps x batch / time; contenders in turn, once per repeat): gan_lab with its
   speed defaults of before issue 14 (`dataset.on_device=false`), with `dataset.on_device=true`, with it and
   `speed.capture=nets`, with it and `speed.capture=steps`; the plain PyTorch loop on gan_lab's batches, and the
   same loop with each whole step one CUDA graph (graphed.py: the ceiling without launch costs; CUDA only); the
   classic DCGAN design with one loader worker per core (1 on a CPU); last, the lr sweep's 3 arms of the graphed
   loop trained together in one process, each arm on a CUDA stream of its own, and all on one stream
   (graphed_arms: what a sweep could gain where its arms' kernels overlap; their images/s count all arms). A
   setting this gan_lab lacks makes its contender "unavailable"; a failed run is recorded with its error and
   the others go on.
b. The SN-DCGAN study preset (`experiment=sndcgan_lr_sweep`, its first arm, callbacks on, metrics=none) with the
   fastest of a's gan_lab settings, against pytorch/examples' dcgan/main.py run unmodified (`--examples-script`,
   one epoch, examples.py; the issue's yardstick, target >= 3x) and against the classic design (a's runs).
c. Each contender's share of the bf16 limit: FLOPs of one D+G step (FlopCounterMode) x G steps/s / the best bf16
   matmul FLOP/s measured on this GPU.
d. The wall time of the preset's 3-arm lr sweep (30 warm-up steps + 3 s of steps each) with
   hydra.launcher.n_jobs=3 against n_jobs=1, whole commands (target <= 0.5x), and that ratio projected to arms
   of 100 CIFAR-10 epochs (jobs.projected_ratio), beside the ratio of a's arms in one process to one arm
   (jobs.in_one_process). Then aggregate images/s of 1, 2 and 4 DCGAN jobs at once (one
   joblib multirun each, b's settings, each job a `budget`: its warm-up as long as a's took, at most 30 s, + 6 s),
   whole and in steady state (the sum of the jobs' rates while all train past their warm-up).

Timestamps wait for the GPU only where a rate is read (StepClock `sync_at` / `sync_every`), so the host queues
work ahead as in real training. Time plan on an H100 or H200 (under 5.5 min; `--time-limit`, default 330 s,
skips what would not fit and says so; results.json and results.md are rewritten after every part):
    start-up, matmul FLOP/s (n = 4096, 8192) ~15 s; c. FLOP counts (on the CPU) ~10 s
    a. 9 contenders x 2-3 repeats                  budget 100 s: no run starts that would pass it (30 warm-up
       + 150 timed G steps, classic 10 + 60; set-up ~3-5 s a run; capture=nets compiles in its first run,
       ~30-60 s; the images are first decoded into gan_lab's cache, ~10 s)
    b. the preset, 1-3 repeats                     budget 30 s (under capture=nets its first run compiles)
       pytorch/examples' script, one epoch         ~15-20 s (390 iterations at ~40/s on an H100, and start-up)
    d. lr sweep, n_jobs=1 and n_jobs=3             ~35 s and ~25 s without compilation (n_jobs=1 trains the arms
                                                   in its own process; n_jobs=3 starts loky workers, ~5-8 s)
       1, 2 and 4 jobs at once                     ~20-35 s each (capture=nets: 30-57 s); a multirun stops at 90 s
    torch.profiler: 5 steps of gan_lab eager and of the fastest settings, after a's warm-up   ~20-40 s
The parts run in that order, the targets first: what the time limit cuts is the diagnosis at the end. `--quick`
runs it all on the CPU with tiny sizes (1 and 2 jobs, a 2-arm sweep, no capture=nets) in a minute, for the tests.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from benchmarks.contenders import CLASSIC_NZ, PlainBatches, check_overrides, gan_lab_overrides, run_gan_lab
from benchmarks.examples import examples_dcgan
from benchmarks.graphed import graphed_arms, graphed_loop
from benchmarks.jobs import in_one_process, jobs_at_once, launcher, sweep_times
from benchmarks.loops import (
    RunSpeed,
    StepClock,
    build_plain,
    classic_dataset,
    classic_loader,
    classic_loop,
    classic_nets,
    plain_loop,
)
from benchmarks.measure import Deadline, matmul_flops_per_s
from benchmarks.profile import profile_contenders
from benchmarks.repeats import add_share, record_warmup, repeat_all, summarize_runs, why
from benchmarks.report import write_gpu_results
from benchmarks.suite import classic_step_flops, step_flops
from gan_lab.utils.config import compose_config
from gan_lab.utils.machine import machine

log = logging.getLogger("benchmarks")

PRESET = "experiment=sndcgan_lr_sweep"
# gan_lab's contenders: (overrides the contender is about, overrides applied where this gan_lab has the key).
HOST_BATCHES, ON_DEVICE = "dataset.on_device=false", "dataset.on_device=true"
CAPTURE, CAPTURE_STEPS = "speed.capture=nets", "speed.capture=steps"
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gan_lab": ((), (HOST_BATCHES,)),
    "gan_lab_on_device": ((ON_DEVICE,), ()),
    "gan_lab_capture_on_device": ((CAPTURE, ON_DEVICE), ()),
    "gan_lab_steps_on_device": ((CAPTURE_STEPS, ON_DEVICE), ()),
}
# The sweep's arms trained in one process (graphed.graphed_arms), on a stream each or all on one
ARMS, ARMS_ONE_STREAM = "plain_graphed_arms", "plain_graphed_arms_one_stream"
HUNDRED_CIFAR_EPOCHS = 100 * (50_000 // 128)  # G steps: the 100-epoch sweep arm at batch 128


@dataclass
class GPUOptions:
    data_root: Path
    quick: bool = False
    repeats: int = 3
    warmup: int = 30  # G steps before the timed window: cuDNN autotuning, graph capture, allocator warm-up
    steps: int = 150  # timed G steps of gan_lab, the plain loop and the preset
    classic_warmup: int = 10
    classic_steps: int = 60
    batch_size: int = 128
    resolution: int = 64
    width: int | None = None
    overrides: list[str] = field(default_factory=list)  # --set: every gan_lab run and job
    classic_workers: int | None = None  # None: one per usable core on a GPU, 1 on a CPU
    examples_script: Path | None = None  # pytorch/examples' dcgan/main.py (part b), where given
    skip: tuple[str, ...] = ()  # part a's contenders left out (--skip)
    concurrency: tuple[int, ...] = (1, 2, 4)
    job_s: float = 6.0  # each concurrent job's training after its warm-up (`budget`, or steps at a's rate)
    job_steps: int | None = None  # a fixed step count instead (quick)
    sweep_lrs: tuple[str, ...] = ("1e-4", "1e-5", "1e-6")  # the preset's arms
    sweep_s: float = 3.0  # training time of each sweep arm alone after its warm-up (steps at b's rate)
    sweep_steps: int | None = None
    sweep_projected_steps: int = HUNDRED_CIFAR_EPOCHS
    matmul_sizes: tuple[int, ...] = (4096, 8192)
    matmul_time_s: float = 0.25
    time_limit_s: float = 330.0
    contenders_budget_s: float = 100.0
    preset_budget_s: float = 30.0
    multirun_timeout_s: float = 90.0
    seed: int = 0
    device: str | None = None  # default: "cuda", "cpu" with --quick


QUICK = dict(
    quick=True, repeats=2, warmup=1, steps=2, classic_warmup=1, classic_steps=2, batch_size=8, width=8,
    concurrency=(1, 2), job_steps=4, sweep_lrs=("1e-4", "1e-5"), sweep_steps=2, matmul_sizes=(128, 256),
    matmul_time_s=0.05, multirun_timeout_s=240.0, time_limit_s=900.0,
)  # fmt: skip


def gpu_bench(opts: GPUOptions, workdir: Path, out: Path) -> dict[str, Any]:
    """Every part (see the module docstring); results written to `out` after each."""
    skippable = [*list(VARIANTS)[1:], "plain", "plain_graphed", ARMS, ARMS_ONE_STREAM]  # not gan_lab, classic
    for name in set(opts.skip) - set(skippable):
        raise SystemExit(f"benchmarks gpu: error: --skip {name}: not one of {', '.join(skippable)}")
    device = opts.device or ("cpu" if opts.quick else "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks gpu: error: no CUDA GPU here; --quick runs tiny settings on the CPU")
    deadline = Deadline(opts.time_limit_s)
    workers = opts.classic_workers or (len(os.sched_getaffinity(0)) if device == "cuda" else 1)
    shape = (opts.data_root, opts.resolution, opts.batch_size, opts.width)
    common = ["trainer.accelerator=cpu"] if opts.quick else []
    extra, notes = check_overrides(
        opts.overrides, [*gan_lab_overrides(shape[0], "dcgan", *shape[1:], ()), *common]
    )
    common += extra  # every gan_lab run and job: the device in quick mode, then --set
    base = gan_lab_overrides(shape[0], "dcgan", *shape[1:], common)
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": opts.quick,
        "settings": {
            **asdict(opts),
            "data_root": str(opts.data_root),
            "classic_workers": workers,
            "device": device,
            "gan_lab_overrides": base,
        },
        "notes": notes,
    }
    write_gpu_results(results, out)

    log.info("matmul FLOP/s on %s (n = %s)", device, ", ".join(map(str, opts.matmul_sizes)))
    by_size = {str(n): {name: matmul_flops_per_s(dtype, n, opts.matmul_time_s, device=device)
                        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
               for n in opts.matmul_sizes}  # fmt: skip
    results["matmul"] = {
        "sizes": by_size,
        "bf16_flops_per_s": max(v["bf16"] for v in by_size.values()),
        "fp32_flops_per_s": max(v["fp32"] for v in by_size.values()),
    }
    bf16 = results["matmul"]["bf16_flops_per_s"]
    write_gpu_results(results, out)

    dcgan = _dcgan(opts, base, device, workers, workdir, deadline)
    results["dcgan"] = dcgan
    write_gpu_results(results, out)
    best = _best_variant(dcgan["contenders"])
    best_extra = list(dcgan["contenders"][best]["overrides"][len(base) :]) if best else []
    results["best_settings"] = {"contender": best, "overrides": best_extra}

    # c. FLOPs of one D+G step (fp32 on the CPU: the count is the same in bf16), for every contender
    fused = (dcgan.get("speed") or {}).get("fused")

    def count(overrides: list[str] | None) -> int | None:
        try:
            if overrides is None:
                return classic_step_flops(opts.batch_size, opts.resolution, opts.width or 64)
            return step_flops(overrides, opts.batch_size, opts.resolution, workdir, fused)
        except Exception as exc:
            results["notes"].append(f"FLOPs not counted: {why(exc)}")
            return None

    flops = {"dcgan": count(base), "classic": count(None)}
    for name, contender in dcgan["contenders"].items():
        add_share(contender, flops["classic" if name == "classic" else "dcgan"], bf16)
    write_gpu_results(results, out)

    preset_overrides = gan_lab_overrides(shape[0], "sndcgan", *shape[1:], [PRESET, *common, *best_extra])
    baselines = {"classic": dcgan["contenders"]["classic"]}
    if opts.examples_script and deadline.left() > 60:
        baselines["examples"] = examples_dcgan(
            opts.examples_script, opts.data_root, workdir / "examples", opts.batch_size, opts.resolution, workers,
            warmup=opts.classic_warmup, timeout_s=60.0,
        )  # fmt: skip
    results["preset"] = _preset(opts, preset_overrides, device, workdir, deadline, baselines)
    add_share(results["preset"]["contender"], count(preset_overrides), bf16)
    write_gpu_results(results, out)

    # d. the lr sweep (a target), then jobs sharing the GPU, with b's settings; each sweep arm its warm-up + sweep_s
    # quick: one thread a process, as the bench's own (tiny nets on busy cores stall at every thread barrier)
    threads = 1 if opts.quick else None
    launch = launcher(workdir, opts.batch_size, opts.warmup, deadline.left, opts.multirun_timeout_s, threads)
    preset_rate = results["preset"]["contender"].get("g_steps_per_s", {}).get("median", 20.0)
    steps = opts.sweep_steps or opts.warmup + max(20, round(preset_rate * opts.sweep_s))
    results["sweep"] = sweep_times(
        launch, preset_overrides, opts.sweep_lrs, steps, opts.sweep_projected_steps
    )
    results["sweep"]["in_one_process"] = in_one_process(dcgan["contenders"], ARMS, ARMS_ONE_STREAM)
    write_gpu_results(results, out)
    results["jobs"] = _jobs(opts, [*base, *best_extra], dcgan["contenders"].get(best or "", {}), launch)
    write_gpu_results(results, out)

    # Last (a diagnosis, not a target): launches and host/device time per step, eager and with the best settings.
    traced = {"gan_lab": [*base, HOST_BATCHES], **({best: [*base, *best_extra]} if best != "gan_lab" else {})}
    warm, need = (1, 0.0) if opts.quick else (opts.warmup, 60.0)
    results["profile"] = profile_contenders(traced, workdir, warm, 5, deadline.left, need)
    results["duration_s"] = round(opts.time_limit_s - deadline.left(), 1)
    write_gpu_results(results, out)
    return results


# --- a: DCGAN contenders ------------------------------------------------------------------------------------


def _dcgan(
    opts: GPUOptions, base: list[str], device: str, workers: int, workdir: Path, deadline: Deadline
) -> dict[str, Any]:
    """Each repeat runs every available contender once, in turn; later repeats stop at the part's budget."""
    window = (opts.warmup, opts.steps)
    contenders: dict[str, dict[str, Any]] = {}
    for name, (about, optional) in VARIANTS.items():
        kept, missing = check_overrides(list(about), base)
        kept_optional, _ = check_overrides(list(optional), base)
        description = " ".join(about) or f"speed defaults{', ' + HOST_BATCHES if kept_optional else ''}"
        contenders[name] = {"description": description, "overrides": base + kept + kept_optional}
        if missing:
            contenders[name]["unavailable"] = "; ".join(missing)
        elif opts.quick and CAPTURE in about:
            contenders[name]["skipped"] = "--quick: speed.capture compiles G and D, minutes on a CPU"
    contenders["plain"] = {
        "description": "plain PyTorch loop: gan_lab's nets, loss, optimizers, batches, precision"
    }
    contenders["plain_graphed"] = {
        "description": "the plain loop, each whole D and G step one CUDA graph (benchmarks/graphed.py)"
    }
    if device != "cuda":
        contenders["plain_graphed"]["skipped"] = "CUDA graphs need a CUDA GPU"
    plural = "s" * (workers != 1)
    contenders["classic"] = {
        "description": f"classic DCGAN design: fp32, ImageFolder, {workers} loader worker{plural}"
    }
    arms = len(opts.sweep_lrs)
    contenders[ARMS] = {
        "description": f"{arms} arms (lr {', '.join(opts.sweep_lrs)}) of plain_graphed in one "
        "process, each on a CUDA stream of its own: images/s of all arms"
    }
    contenders[ARMS_ONE_STREAM] = {
        "description": "the same arms, all on one stream (the same work, no overlap)"
    }
    if device != "cuda" and not opts.quick:  # quick mode runs them eagerly, in turn, for the tests
        for name in (ARMS, ARMS_ONE_STREAM):
            contenders[name]["skipped"] = "CUDA graphs need a CUDA GPU"
    for name in opts.skip:
        contenders[name]["skipped"] = "--skip"
    speeds: dict[str, RunSpeed] = {}
    state: dict[str, Any] = {}
    try:  # gan_lab's batches for the plain loop; decodes the images into gan_lab's cache before any timing
        state["cfg"] = compose_config([*contenders["gan_lab"]["overrides"], "steps=1"], workdir / "plain")
        state["batches"] = PlainBatches(instantiate(state["cfg"].dataset), device)
    except Exception as exc:
        contenders["plain"]["error"] = why(exc)

    def gan_lab(name: str) -> Callable[[int], list[float]]:
        def run(repeat: int) -> list[float]:
            run_dir = workdir / f"{name}_{repeat}"
            sync = (opts.warmup, opts.warmup + opts.steps)
            module, timer = run_gan_lab(contenders[name]["overrides"], run_dir, sum(window) + 1, sync_at=sync)
            speeds[name] = timer.speed or RunSpeed()
            record_warmup(contenders[name], timer.clock, opts.warmup)
            del module
            shutil.rmtree(run_dir, ignore_errors=True)
            return timer.clock.times  # type: ignore[union-attr]

        return run

    def plain_speed() -> RunSpeed:
        if "gan_lab" not in speeds:
            raise RuntimeError("needs the settings gan_lab resolved, and its run failed")
        return speeds["gan_lab"]

    def plain(loop: Callable) -> Callable[[int], list[float]]:
        """A runner of the plain loop `loop` (eager or graphed) with the settings gan_lab resolved."""

        def run(repeat: int) -> list[float]:
            speed = plain_speed()
            torch.manual_seed(opts.seed + repeat)
            clock = StepClock(sum(window) + 1, device=speed.device, sync_at=(opts.warmup, sum(window)))
            loop(build_plain(state["cfg"], speed), state["batches"], clock)
            return clock.times

        return run

    def sweep_arms(streams: bool) -> Callable[[int], list[float]]:
        """A runner of the sweep's arms in one process (graphed_arms): the same first weights and noise seed,
        each arm its lr; the clock counts the G steps of all arms."""

        def run(repeat: int) -> list[float]:
            speed = plain_speed()
            gans, generators = [], []
            for lr in opts.sweep_lrs:
                cfg = state["cfg"].copy()
                cfg.optim.lr = float(lr)
                torch.manual_seed(opts.seed + repeat)
                gans.append(build_plain(cfg, speed))
                generators.append(torch.Generator(speed.device).manual_seed(opts.seed + repeat))
            clock = StepClock(arms * (sum(window) + 1), device=speed.device,
                              sync_at=(arms * opts.warmup, arms * sum(window)))  # fmt: skip
            graphed_arms(gans, state["batches"], clock, generators=generators, streams=streams)
            return clock.times

        return run

    def classic(repeat: int) -> list[float]:
        if "classic_data" not in state:
            state["classic_data"] = classic_dataset(opts.data_root, opts.resolution)
        torch.manual_seed(opts.seed + repeat)
        net_g, net_d = (net.to(device) for net in classic_nets(CLASSIC_NZ, opts.width or 64))
        loader = classic_loader(state["classic_data"], opts.batch_size, workers)
        w, s = opts.classic_warmup, opts.classic_steps
        clock = StepClock(w + s + 1, device=device, sync_at=(w, w + s))
        classic_loop(net_g, net_d, loader, clock, CLASSIC_NZ)
        return clock.times

    runners = {name: gan_lab(name) for name in VARIANTS}
    runners |= {"plain": plain(plain_loop), "plain_graphed": plain(graphed_loop), "classic": classic}
    runners |= {ARMS: sweep_arms(streams=True), ARMS_ONE_STREAM: sweep_arms(streams=False)}
    windows = {name: window for name in runners} | {"classic": (opts.classic_warmup, opts.classic_steps)}
    windows |= {name: (arms * opts.warmup, arms * opts.steps) for name in (ARMS, ARMS_ONE_STREAM)}
    budget = Deadline(opts.contenders_budget_s)
    repeat_all(contenders, runners, opts.repeats, budget, deadline, device)
    for name, contender in contenders.items():
        summarize_runs(contender, windows[name], opts.batch_size)
    base_speed = speeds.get("gan_lab")
    for name, speed in speeds.items():
        contenders[name]["speed"] = speed.as_dict()
    return {"contenders": contenders, "speed": base_speed.as_dict() if base_speed else None}


def _best_variant(contenders: dict[str, dict[str, Any]]) -> str | None:
    measured = [n for n in VARIANTS if "images_per_s" in contenders[n]]
    return max(measured, key=lambda n: contenders[n]["images_per_s"]["median"], default=None)


# --- b: the study preset ------------------------------------------------------------------------------------


def _preset(
    opts: GPUOptions, overrides: list[str], device: str, workdir: Path, deadline: Deadline, baselines: dict
) -> dict[str, Any]:
    """The study preset's steady-state images/s, against the baselines' (`classic`: a's runs; `examples`, where
    run: pytorch/examples' script)."""
    description = "experiment=sndcgan_lr_sweep (lr 1e-4 arm), callbacks on, metrics=none"
    contender: dict[str, Any] = {"description": description, "overrides": overrides}
    window = (opts.warmup, opts.steps)

    def run(repeat: int) -> list[float]:
        run_dir = workdir / f"preset_{repeat}"
        sync = (opts.warmup, sum(window))
        module, timer = run_gan_lab(overrides, run_dir, sum(window) + 1, sync_at=sync)
        record_warmup(contender, timer.clock, opts.warmup)
        del module
        shutil.rmtree(run_dir, ignore_errors=True)
        return timer.clock.times  # type: ignore[union-attr]

    repeat_all(
        {"preset": contender}, {"preset": run}, opts.repeats, Deadline(opts.preset_budget_s), deadline, device
    )
    summarize_runs(contender, window, opts.batch_size)
    result: dict[str, Any] = {"contender": contender, "target_vs_examples": 3.0}
    result |= {"examples": baselines["examples"]} if "examples" in baselines else {}
    for name, baseline in baselines.items():
        if "images_per_s" in contender and "images_per_s" in baseline:
            result[f"speedup_vs_{name}"] = (
                contender["images_per_s"]["median"] / baseline["images_per_s"]["median"]
            )
    return result


# --- d: jobs sharing the GPU --------------------------------------------------------------------------------


def _jobs(opts: GPUOptions, overrides: list[str], best: dict[str, Any], launch: Callable) -> dict[str, Any]:
    """1, 2, 4 jobs at once, each trains its warm-up as long as `best` (a's fastest gan_lab) took in a, capped
    at 30 s, then job_s seconds: a `budget` where gan_lab has one, else the steps best's rate gives."""
    rate = best.get("g_steps_per_s", {}).get("median", 20.0)
    warm_s = min(30.0, statistics.median(best.get("warmup_s") or [5.0]))
    steps = [f"steps={opts.job_steps or opts.warmup + max(20, round(rate * opts.job_s))}"]
    budget, _ = check_overrides([f"budget={(warm_s + opts.job_s) / 60:.4f}"], overrides)
    amount = budget if budget and not opts.quick else steps  # quick: steps, a time budget would vary
    return jobs_at_once(launch, overrides, opts.concurrency, amount, steps)
