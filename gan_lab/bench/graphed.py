"""The plain loop with each whole step captured as one CUDA graph: the ceiling of a step without launch costs.

`plain_loop` (loops.py) launches every kernel of a D and a G step from Python, ~500 per generator step on the
DCGAN; here the D step (noise, G forward, D on real and fake, loss, backward, Adam) and the G step are each
recorded once with `torch.cuda.graph` and replayed, so a generator step costs two graph launches and a copy of
the batch into the graphs' input. The bench times it beside gan_lab's `speed.capture` (which compiles G and D
with CUDA graphs but leaves losses, optimizers and bookkeeping eager) to show what whole-step capture would
gain. The recipe is PyTorch's whole-network capture: warm-up on a side stream, gradients set to None before
capture so backward allocates them in the graph's memory, Adam with `capturable=True`, autocast without its
weight cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from gan_lab.bench.loops import PlainGAN, Speed, StepClock, _endless

Capture = Callable[[Callable[[], Tensor]], Callable[[], Tensor]]


def cuda_graph(step: Callable[[], Tensor], warmup: int = 3) -> Callable[[], Tensor]:
    """Record `step` (after `warmup` eager calls on a side stream) as a CUDA graph; returns its replay, which
    gives the graph's output tensor (overwritten by the next replay)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()

    def replay() -> Tensor:
        graph.replay()
        return out

    return replay


def eager(step: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """A stand-in for `cuda_graph` that runs the step every time (tests on the CPU)."""
    return step


def _capturable(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer with `capturable=True` (its step counters on the device, no host reads)."""
    return type(optimizer)(optimizer.param_groups[0]["params"], **{**optimizer.defaults, "capturable": True})


def _autocast(speed: Speed) -> contextlib.AbstractContextManager:
    if speed.precision in ("32-true", "32"):
        return contextlib.nullcontext()
    if speed.precision == "bf16-mixed":
        # No weight cache: a cached cast made during capture would be stale at replay.
        return torch.autocast(torch.device(speed.device).type, dtype=torch.bfloat16, cache_enabled=False)
    raise NotImplementedError(f"the graphed loop mirrors 32-true and bf16-mixed, not {speed.precision}")


def graphed_loop(
    gan: PlainGAN, batches: Iterable, clock: StepClock, capture: Capture = cuda_graph
) -> list[tuple[Tensor, Tensor]]:
    """`plain_loop`'s training, each D step and G step replayed from one captured graph.

    The first batch fixes the graphs' input shape (the loaders drop the last partial batch). Returns the
    (d_loss, g_loss) of every step, copied out of the graphs' outputs.
    """
    g, d, loss, speed = gan.generator, gan.discriminator, gan.loss, gan.speed
    device = torch.device(speed.device)
    memory_format = torch.channels_last if speed.channels_last else torch.contiguous_format
    cuda = device.type == "cuda"  # capturable optimizers exist on CUDA only; the CPU runs test the logic
    opt_d, opt_g = (_capturable(opt) if cuda else opt for opt in (gan.opt_d, gan.opt_g))
    g.train()
    d.train()
    stream = _endless(batches)
    batch: Any = next(stream)  # (images, labels)
    real_in = batch[0].to(device).contiguous(memory_format=memory_format).clone()
    n = real_in.shape[0]

    def d_step() -> Tensor:
        opt_d.zero_grad(set_to_none=True)
        with _autocast(speed):
            with torch.no_grad():
                fake = g(torch.randn(n, gan.z_dim, device=device))
            d_loss = loss.d_loss(d(real_in), d(fake))
        d_loss.backward()
        opt_d.step()
        return d_loss.detach()

    def g_step() -> Tensor:
        opt_g.zero_grad(set_to_none=True)
        d.requires_grad_(False)  # gradients through D, not for D's weights (fixed into the graph)
        try:
            with _autocast(speed):
                g_loss = loss.g_loss(d(g(torch.randn(n, gan.z_dim, device=device))))
            g_loss.backward()
            opt_g.step()
        finally:
            d.requires_grad_(True)
        return g_loss.detach()

    run_d, run_g = capture(d_step), capture(g_step)
    losses = []
    clock.begin()
    while True:
        real_in.copy_(batch[0].to(device, non_blocking=True))
        d_loss = run_d().clone()
        losses.append((d_loss, run_g().clone()))
        if clock.tick():
            return losses
        batch = next(stream)
