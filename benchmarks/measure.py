"""Measuring tools: statistics over repeats, FLOPs of a step, matmul FLOP/s (the machine: gan_lab.utils.machine)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

# --- statistics ---------------------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements, with the raw values."""
    if not values:
        raise ValueError("no measurements to summarize")
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """a[i] / b[i]: each repeat's contenders ran back to back, so pairing cancels the machine's drifts."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators but {len(denominators)} denominators")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def overheads(framework: Sequence[float], plain: Sequence[float]) -> list[float]:
    """Extra time per step of the framework over the plain loop, from throughputs: plain / framework - 1."""
    return [p / f - 1.0 for f, p in zip(framework, plain, strict=True)]


def steady_rate(times: Sequence[float], warmup: int, steps: int) -> float:
    """Steps per second over `steps` steps after `warmup` steps, from per-step end timestamps.

    The window runs from the end of the last warm-up step to the end of the last measured one, so it holds
    exactly `steps` whole steps (data loading included) and nothing of the set-up before the first.
    """
    if warmup < 1 or steps < 1:
        raise ValueError(f"warmup and steps must be >= 1, got {warmup} and {steps}")
    if len(times) < warmup + steps:
        raise ValueError(f"{len(times)} timestamps, fewer than warmup + steps = {warmup + steps}")
    return steps / (times[warmup + steps - 1] - times[warmup - 1])


def step_intervals(times: Sequence[float], warmup: int, steps: int) -> list[float]:
    """Duration of each of the `steps` timed steps (the window steady_rate averages over)."""
    steady_rate(times, warmup, steps)  # same checks
    return [times[i] - times[i - 1] for i in range(warmup, warmup + steps)]


def gpu_memory_in_use_gib(device: str | torch.device) -> tuple[float, float] | None:
    """(GiB of the GPU in use by every process: CUDA contexts, tensors, allocator caches; the GPU's GiB), or None
    off CUDA. Read at the end of a job alone on its GPU, the first is that job's footprint."""
    if torch.device(device).type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(torch.device(device))
    return round((total - free) / 2**30, 2), round(total / 2**30, 2)


class Deadline:
    """Seconds left of a time limit started now."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


# --- FLOPs --------------------------------------------------------------------------------------------------


def count_flops(step: Callable[[], Any]) -> int:
    """FLOPs of the matmuls and convolutions (forward and backward) that `step()` runs, by FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def matmul_flops_per_s(
    dtype: torch.dtype, n: int = 2048, min_time_s: float = 1.0, rounds: int = 3, device: str = "cpu"
) -> float:
    """Best FLOP/s of an n x n x n matmul in `dtype` over `rounds` timed rounds of at least `min_time_s`.

    The best round, not the median: this is the machine's attainable limit, which contention only lowers.
    """
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(2):  # warm-up: oneDNN picks and caches its kernel on the first calls
        torch.mm(a, b, out=out)
    best = 0.0
    for _ in range(rounds):
        sync()
        count, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=out)
            count += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time_s:
                break
        best = max(best, 2.0 * n**3 * count / elapsed)
    return best
