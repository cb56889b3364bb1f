"""The plain loop with each whole step one CUDA graph: the ceiling of a step without launch costs.

`plain_loop` (loops.py) launches every kernel of a D and a G step from Python, ~500 per generator step on the
DCGAN. Here the D step (noise, G forward, D on real and fake, loss, backward, Adam) and the G step run through
gan_lab's `StepGraphs` (core/graphs.py, what speed.capture=steps uses inside GANModule): recorded once after
warm-up steps and replayed, so a generator step costs two graph launches and a copy of the batch into the
graph's input. Without Lightning and gan_lab's bookkeeping around it, it is the bound speed.capture=steps can
reach; the bench times both.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from gan_lab.bench.loops import PlainGAN, StepClock, _autocast, _endless
from gan_lab.core.graphs import StepGraphs


def _capturable(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer with `capturable=True` (its step counters on the device, no host reads)."""
    return type(optimizer)(optimizer.param_groups[0]["params"], **{**optimizer.defaults, "capturable": True})


def graphed_loop(
    gan: PlainGAN, batches: Iterable, clock: StepClock, graphs: StepGraphs | None = None
) -> list[tuple[Tensor, Tensor]]:
    """`plain_loop`'s training with each D step and G step run by `graphs` (default: a StepGraphs, enabled on
    CUDA; disabled, every step runs eagerly, which the CPU tests compare with the plain loop).

    Returns the (d_loss, g_loss) of every step, copied out of the graphs' outputs. Autocast is the plain loop's:
    while StepGraphs is enabled it runs without its weight cache (torch.autocast inherits that setting).
    """
    g, d, loss, speed = gan.generator, gan.discriminator, gan.loss, gan.speed
    device = torch.device(speed.device)
    memory_format = torch.channels_last if speed.channels_last else torch.contiguous_format
    if graphs is None:
        graphs = StepGraphs()
        if device.type == "cuda":
            graphs.enable()
    # capturable optimizers exist on CUDA only; disabled graphs (the CPU tests) keep the plain loop's
    opt_d, opt_g = (_capturable(opt) if graphs.enabled else opt for opt in (gan.opt_d, gan.opt_g))
    g.train()
    d.train()

    def d_step(real: Tensor) -> Tensor:
        opt_d.zero_grad(set_to_none=True)
        with _autocast(speed):
            with torch.no_grad():
                fake = g(torch.randn(real.shape[0], gan.z_dim, device=device))
            d_loss = loss.d_loss(d(real), d(fake))
        d_loss.backward()
        opt_d.step()
        return d_loss.detach()

    def g_step(n: int) -> Tensor:
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

    losses = []
    clock.begin()
    for real, _ in _endless(batches):
        real = real.to(device).contiguous(memory_format=memory_format)
        n = real.shape[0]
        d_loss = graphs.run("discriminator", d_step, real).clone()
        losses.append((d_loss, graphs.run(f"generator{n}", lambda n=n: g_step(n)).clone()))
        if clock.tick():
            return losses
    return losses
