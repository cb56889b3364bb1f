"""The plain loop with each whole step one CUDA graph: the ceiling of a step without launch costs.

`plain_loop` (loops.py) launches every kernel of a D and a G step from Python, ~500 per generator step on the
DCGAN. Here the D step (noise, G forward, D on real and fake, loss, backward, Adam) and the G step run through
gan_lab's `StepGraphs` (core/graphs.py, what speed.capture=steps uses inside GANModule): recorded once after
warm-up steps and replayed, so a generator step costs two graph launches and a copy of the batch into the
graph's input. Without Lightning and gan_lab's bookkeeping around it, it is the bound speed.capture=steps can
reach; the bench times both.

`graphed_arms` trains several arms of a sweep (the same nets, other learning rates) in one process on the same
batches, each arm's graphs replayed on a CUDA stream of its own: a measurement of what a sweep could gain where
its arms' small kernels run at once (jobs in separate processes take turns on the GPU instead). The arms record
through `ArmGraphs`, StepGraphs with what only arms side by side need: each arm's noise generator advanced by its
graphs, and each graph recorded on a capture stream of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from benchmarks.loops import PlainGAN, StepClock, _autocast, _endless
from gan_lab.core import graphs as core_graphs
from gan_lab.core.graphs import StepGraphs


class _ArmGraph(core_graphs._Graph):
    """One recorded step of an arm: gan_lab's recording (graphs._Graph), with the arm's own noise generator
    registered with the graph (the default generator registers itself), so its draws advance at every replay, and
    a capture stream of the graph's own (from torch's pool): torch keys cuBLAS workspaces by stream, and graphs
    recorded on one stream share one, a race where arms replay them at once on different streams. Replays as a
    _Graph does; records itself (in place of _Graph's recording)."""

    def __init__(
        self, step: Callable[..., Any], inputs: Sequence[Tensor | None], generator: torch.Generator | None
    ) -> None:
        self.inputs = [None if t is None else t.clone() for t in inputs]
        self.graph = torch.cuda.CUDAGraph()
        if generator is not None:
            self.graph.register_generator_state(generator)
        capture = torch.cuda.Stream()
        with torch.cuda.graph(self.graph, stream=capture, capture_error_mode="thread_local"):
            self.outputs = step(*self.inputs)


class ArmGraphs(StepGraphs):
    """StepGraphs of one arm of `graphed_arms`: its steps draw noise from `generator` (None: the default one),
    and each is recorded as an `_ArmGraph`. No scheduler changes an arm's lr, so the recorded lr is the lr."""

    def __init__(self, generator: torch.Generator | None = None, warmup: int = 3) -> None:
        super().__init__(warmup)
        self.generator = generator

    def _record(
        self, name: str, step: Callable[..., Any], inputs: Sequence[Tensor | None], live_lr: Any
    ) -> _ArmGraph:
        return _ArmGraph(step, inputs, self.generator)


def _capturable(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer with `capturable=True` (its step counters on the device, no host reads)."""
    return type(optimizer)(optimizer.param_groups[0]["params"], **{**optimizer.defaults, "capturable": True})


class _Arm:
    """One GAN's D and G steps as `graphs` runs them, its noise from `generator` (None: the default one)."""

    def __init__(
        self,
        gan: PlainGAN,
        graphs: StepGraphs,
        generator: torch.Generator | None,
        stream: torch.cuda.Stream | None = None,
    ) -> None:
        self.gan, self.graphs, self.generator, self.stream = gan, graphs, generator, stream
        self.device = torch.device(gan.speed.device)
        # capturable optimizers exist on CUDA only; disabled graphs (the CPU tests) keep the plain loop's
        self.opt_d, self.opt_g = (_capturable(o) if graphs.enabled else o for o in (gan.opt_d, gan.opt_g))
        gan.generator.train()
        gan.discriminator.train()

    def _noise(self, n: int) -> Tensor:
        return torch.randn(n, self.gan.z_dim, device=self.device, generator=self.generator)

    def d_step(self, real: Tensor) -> Tensor:
        gan = self.gan
        self.opt_d.zero_grad(set_to_none=True)
        with _autocast(gan.speed):
            with torch.no_grad():
                fake = gan.generator(self._noise(real.shape[0]))
            d_loss = gan.loss.d_loss(gan.discriminator(real), gan.discriminator(fake))
        d_loss.backward()
        self.opt_d.step()
        return d_loss.detach()

    def g_step(self, n: int) -> Tensor:
        gan, d = self.gan, self.gan.discriminator
        self.opt_g.zero_grad(set_to_none=True)
        d.requires_grad_(False)  # gradients through D, not for D's weights (fixed into the graph)
        try:
            with _autocast(gan.speed):
                g_loss = gan.loss.g_loss(d(gan.generator(self._noise(n))))
            g_loss.backward()
            self.opt_g.step()
        finally:
            d.requires_grad_(True)
        return g_loss.detach()

    def train_on(self, real: Tensor) -> tuple[Tensor, Tensor]:
        """One D and one G step on `real`, on the arm's stream; their losses, copied out of the graphs."""
        n = real.shape[0]
        with self._on_own_stream(real):
            d_loss = self.graphs.run("discriminator", self.d_step, real).clone()
            return d_loss, self.graphs.run(f"generator{n}", lambda: self.g_step(n)).clone()

    @contextlib.contextmanager
    def _on_own_stream(self, real: Tensor) -> Iterator[None]:
        if self.stream is None:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))  # the batch is made there
        real.record_stream(self.stream)  # its memory is not reused before this stream has read it
        with torch.cuda.stream(self.stream):
            yield


def graphed_arms(
    gans: Sequence[PlainGAN],
    batches: Iterable,
    clock: StepClock,
    graphs: Sequence[StepGraphs] | None = None,
    generators: Sequence[torch.Generator | None] | None = None,
    streams: bool = False,
) -> list[list[tuple[Tensor, Tensor]]]:
    """`plain_loop`'s training of every GAN in `gans` on the same batches: per batch each arm's D step and G
    step, run by its StepGraphs (default: an ArmGraphs per arm, of its generator, enabled on CUDA; disabled,
    every step runs eagerly, which the CPU tests compare with the plain loop). `generators`: each arm's noise
    (default: the default generator); given `graphs` must be ArmGraphs of those generators.
    `streams` (CUDA): each arm's work on a stream of its own, so different arms' kernels can overlap.

    The clock ticks once per arm and batch (G steps of all arms): size its steps in multiples of len(gans).
    Returns each arm's (d_loss, g_loss) of every step. Autocast is the plain loop's: while StepGraphs is
    enabled it runs without its weight cache (torch.autocast inherits that setting).
    """
    device = torch.device(gans[0].speed.device)
    memory_format = gans[0].speed.settings.memory_format
    if graphs is None:
        graphs = [ArmGraphs(generator) for generator in generators or [None] * len(gans)]
        for arm_graphs in graphs if device.type == "cuda" else ():
            arm_graphs.enable()
    on_streams = streams and device.type == "cuda"
    arms = [
        _Arm(gan, arm_graphs, generator, torch.cuda.Stream(device) if on_streams else None)
        for gan, arm_graphs, generator in zip(gans, graphs, generators or [None] * len(gans), strict=True)
    ]
    losses: list[list[tuple[Tensor, Tensor]]] = [[] for _ in arms]
    clock.begin()
    for real, _ in _endless(batches):
        real = real.to(device).contiguous(memory_format=memory_format)
        done = False
        for arm, arm_losses in zip(arms, losses, strict=True):
            arm_losses.append(arm.train_on(real))
            done = clock.tick() or done
        if done:
            return losses
    return losses


def graphed_loop(
    gan: PlainGAN, batches: Iterable, clock: StepClock, graphs: StepGraphs | None = None
) -> list[tuple[Tensor, Tensor]]:
    """`plain_loop`'s training with each D step and G step run by `graphs` (see graphed_arms: one arm)."""
    return graphed_arms([gan], batches, clock, None if graphs is None else [graphs])[0]
