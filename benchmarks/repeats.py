"""Contenders of a benchmark run in turn, once per repeat, within a time budget; their runs summarized.

Running every contender once per repeat (rather than all repeats of one, then the next) spreads the machine's
drifts over all of them; a failed contender is recorded with its error and the others go on.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.measure import Deadline, steady_rate, summarize

log = logging.getLogger("benchmarks")


def why(exc: BaseException) -> str:
    """An exception as one line of at most 400 characters, for the results."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


def free(device: str) -> None:
    """Release what a finished run held: compiled code, Python garbage, the CUDA allocator's cache."""
    # Compiled code of a finished run's nets (speed.capture) goes too: Dynamo caps recompilations per function,
    # and every run builds new nets. Later runs recompile from the on-disk caches, as a new process would.
    torch._dynamo.reset()
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def repeat_all(
    contenders: dict[str, dict[str, Any]],
    runners: dict[str, Callable[[int], list[float]]],
    repeats: int,
    budget: Deadline,
    deadline: Deadline,
    device: str,
) -> None:
    """Run every contender (not unavailable, skipped or failed) once per repeat, in turn; after its first run a
    contender runs again only while its quickest run so far fits in the time left (the first may compile)."""
    for repeat in range(repeats):
        for name, run in runners.items():
            contender = contenders[name]
            if {"unavailable", "skipped", "error"} & contender.keys():
                continue
            if repeat and min(budget.left(), deadline.left()) < min(contender.get("wall_s") or [0.0]):
                contender["note"] = (
                    f"{len(contender.get('wall_s', []))} of {repeats} repeats: the time budget ran out"
                )
                continue
            began = time.perf_counter()
            try:
                contender.setdefault("runs", []).append(run(repeat))
                contender.setdefault("wall_s", []).append(round(time.perf_counter() - began, 1))
                log.info("repeat %d %s: %.0f s", repeat, name, time.perf_counter() - began)
            except Exception as exc:  # one contender's failure must not cost the others their numbers
                contender["error"] = why(exc)
                log.warning("%s failed: %s", name, contender["error"])
            finally:
                free(device)


def record_warmup(contender: dict[str, Any], clock: Any, warmup: int) -> None:
    """Seconds from the first batch to the end of the warm-up steps (compilation, graph capture, autotuning)."""
    contender.setdefault("warmup_s", []).append(round(clock.times[warmup - 1] - clock.start, 2))


def summarize_runs(contender: dict[str, Any], window: tuple[int, int], batch_size: int) -> None:
    """The contender's G steps/s and images/s over its runs' steady windows (warm-up steps, timed steps)."""
    runs = contender.pop("runs", [])
    rates = [steady_rate(times, *window) for times in runs if len(times) >= sum(window)]
    if rates:
        contender["g_steps_per_s"] = summarize(rates)
        contender["images_per_s"] = summarize([r * batch_size for r in rates])
        contender["window"] = {"warmup": window[0], "steps": window[1]}


def add_share(contender: dict[str, Any], flops: int | None, bf16_flops_per_s: float) -> None:
    """The contender's share of the bf16 limit: FLOPs of one D+G step x G steps/s / bf16 matmul FLOP/s."""
    if flops is None:
        return
    contender["flops_per_step"] = flops
    if "g_steps_per_s" in contender:
        rates = contender["g_steps_per_s"]["values"]
        contender["bf16_limit_fraction"] = summarize([flops * r / bf16_flops_per_s for r in rates])
