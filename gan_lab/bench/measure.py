"""Measuring tools: statistics over repeats, FLOPs of a step, matmul FLOP/s, the machine's description."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
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


# --- the machine --------------------------------------------------------------------------------------------


def _cpu_info() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = value.split()
    return model, flags


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine() -> dict[str, Any]:
    """CPU model and features, cores, threads, memory, library versions, commit, date and the current load."""
    model, flags = _cpu_info()
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": model,
        "cpu_features": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": memory_gb,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "lightning": _version("lightning"),
        "torch_fidelity": _version("torch-fidelity"),
        "gan_lab_commit": None if commit is None else commit + ("+dirty" if dirty else ""),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def machine_line(m: dict[str, Any]) -> str:
    """One line for the results table: CPU, cores, features, torch, load."""
    features = ", ".join(m.get("cpu_features") or []) or "none"
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return (
        f"{m['cpu']}, {m['usable_cores']} cores ({m['torch_threads']} torch threads), {m['memory_gb']} GB, "
        f"features {features}{gpu}; torch {m['torch']}, lightning {m['lightning']}, "
        f"torch-fidelity {m['torch_fidelity']}; gan_lab {m['gan_lab_commit']}; {m['date']}; "
        f"load average at start {m['load_average_1min']}"
    )
