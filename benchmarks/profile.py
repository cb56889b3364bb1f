"""A torch.profiler trace of a few steady training steps, summarized: where a step's time goes.

Issue 14 asks to profile before optimizing: on a GPU a small GAN step is suspected to be launch-bound (hundreds
of small kernels launched from Python). The summary says per generator step: kernel launches (and CUDA graph
launches), the host's time, the device's busy time, and the operators that take the most of each.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import open_dict
from torch.profiler import ProfilerActivity, profile

from gan_lab.utils.config import compose_config

# Runtime calls that launch work on the GPU, as the profiler names them.
KERNEL_LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
GRAPH_LAUNCHES = ("cudaGraphLaunch",)
TOP = 10


class StepProfiler(pl.Callback):
    """torch.profiler over the generator steps from `start` to `stop` (after warm-up), summarized in `result`."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop
        self.result: dict[str, Any] | None = None
        self._profile: profile | None = None
        self._first, self._t0 = 0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._profile is None and self.result is None and pl_module.g_steps >= self.start:
            cuda = pl_module.device.type == "cuda"
            activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
            if cuda:
                torch.cuda.synchronize()
            self._profile = profile(activities=activities)
            self._profile.__enter__()
            self._first, self._t0 = pl_module.g_steps, time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        if self._profile is not None and pl_module.g_steps >= self.stop:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - self._t0
            self._profile.__exit__(None, None, None)
            self.result = summarize(self._profile, pl_module.g_steps - self._first, wall)
            self._profile = None


def summarize(trace: profile, g_steps: int, wall_s: float) -> dict[str, Any]:
    """Per generator step: launches, host and device time (ms), and the top operators by each."""
    events = list(trace.key_averages())
    steps = max(g_steps, 1)

    def per_step(total_us: float) -> float:
        return round(total_us / steps / 1000, 3)

    def top(key: str) -> list[dict[str, Any]]:
        ranked = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:TOP]
        return [
            {
                "name": e.key,
                "calls_per_step": round(e.count / steps, 2),
                "self_host_ms_per_step": per_step(e.self_cpu_time_total),
                "self_device_ms_per_step": per_step(e.self_device_time_total),
            }
            for e in ranked
            if getattr(e, key) > 0
        ]

    return {
        "g_steps": g_steps,
        "wall_ms_per_step": round(wall_s / steps * 1000, 3),
        "kernel_launches_per_step": round(
            sum(e.count for e in events if e.key in KERNEL_LAUNCHES) / steps, 1
        ),
        "graph_launches_per_step": round(sum(e.count for e in events if e.key in GRAPH_LAUNCHES) / steps, 1),
        "device_busy_ms_per_step": per_step(sum(e.self_device_time_total for e in events)),
        "aten_ops_per_step": round(sum(e.count for e in events if e.key.startswith("aten::")) / steps, 1),
        "calls_per_step": {e.key: round(e.count / steps, 2) for e in events},
        "top_by_host_time": top("self_cpu_time_total"),
        "top_by_device_time": top("self_device_time_total"),
    }


def profile_run(overrides: list[str], output_dir: Path, warmup: int = 10, steps: int = 5) -> dict[str, Any]:
    """Train `warmup + steps` generator steps of the composed config; the summary of the last `steps`."""
    from gan_lab.train import train

    cfg = compose_config([*overrides, f"steps={warmup + steps}"], output_dir=output_dir)
    with open_dict(cfg):
        cfg.callbacks.bench_profiler = {
            "_target_": f"{__name__}.StepProfiler", "start": warmup, "stop": warmup + steps,
        }  # fmt: skip
    module = train(cfg)
    profiler = next(c for c in module.trainer.callbacks if isinstance(c, StepProfiler))
    if profiler.result is None:
        raise RuntimeError(f"the run ended before generator step {warmup + steps}: nothing was profiled")
    return profiler.result


def profile_contenders(
    contenders: dict[str, list[str]], workdir: Path, warmup: int, steps: int, seconds_left: Any, need_s: float
) -> dict[str, Any]:
    """{name: summary} of each contender's profiled steps, while `seconds_left()` exceeds `need_s` a run."""
    results: dict[str, Any] = {}
    for name, overrides in contenders.items():
        if seconds_left() < need_s:
            results[name] = {"skipped": f"under {need_s:.0f} s left of the time limit"}
            continue
        try:
            results[name] = profile_run(overrides, workdir / f"profile_{name}", warmup, steps)
        except Exception as exc:  # one contender failing leaves the others' traces
            results[name] = {"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:300]}
    return results
