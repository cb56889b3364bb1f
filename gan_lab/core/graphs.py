"""Whole training steps recorded as CUDA graphs and replayed (speed.capture=steps, and auto where they record),
and the eager call of a net compiled in place (speed.compile, speed.capture=nets). core/speed.py reads the
settings and decides which runs; docs/performance.md has the measurements.

`StepGraphs` records each whole D step (noise, G forward, augmentations, D on real and fake, loss, penalty,
backward, optimizer step) and each whole G step once as one CUDA graph (torch.cuda.graph) and replays it: a step
costs one graph launch and a copy of the batch into the graph's input instead of a launch from Python per
kernel, which is what bounds a small GAN's step on a GPU. With an lr scheduler the graphs read each optimizer's
learning rates from device tensors, refreshed from the param groups before every replay (`_LiveLearningRates`);
without one the recorded lr is the lr. `steps_run_eagerly` says why a run's steps cannot be recorded (no CUDA
GPU, several devices, 16-mixed, an optimizer without a capturable mode, a callback hook Lightning calls inside a
step).

`StepGraphs` follows PyTorch's whole-network capture recipe: the first calls of a step run eagerly on a side
stream (cuDNN autotuning and the optimizers' lazy state happen there), gradients are None when recording starts
(so backward allocates them in the graph's memory), optimizers are `capturable` (their step counts on the GPU),
autocast runs without its weight cache in every step of such a run (a cached cast would go stale between
replays; captured or not, each step computes the same way). Random numbers drawn inside a graph advance the CUDA
generator as eager calls do, so checkpoints keep the RNG state as usual. A replay runs none of the step's Python:
Lightning's hooks around backward and the optimizer step run when a step is recorded, not at its replays, and
`count_lightning_step` keeps Lightning's global_step counting.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gan_lab.errors import ConfigError

log = logging.getLogger(__name__)

# Lightning calls these from inside a training step (manual_backward, optimizer.step): a recorded graph replays
# the step's kernels but never calls them again.
HOOKS_INSIDE_A_STEP = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def hooks_inside_a_step(callbacks: Sequence[Any], module: Any) -> list[str]:
    """The callbacks' and the LightningModule's own implementations of HOOKS_INSIDE_A_STEP, as `Class.hook`."""
    import lightning.pytorch as pl

    found = []
    for owner, base in [*((callback, pl.Callback) for callback in callbacks), (module, pl.LightningModule)]:
        for hook in HOOKS_INSIDE_A_STEP:
            implementation = getattr(owner, hook, None)  # an instance's own too (Lightning's LambdaCallback)
            if getattr(implementation, "__func__", implementation) is not getattr(base, hook):
                found.append(f"{type(owner).__name__}.{hook}")
    return found


def steps_run_eagerly(
    device: torch.device,
    precision_plugin: Any,
    optimizers: Any,
    world_size: int = 1,
    step_hooks: Sequence[str] = (),
) -> str | None:
    """Why speed.capture=steps cannot record this run's steps (None: it can). `step_hooks`: what
    hooks_inside_a_step found."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA GPU and this run trains on {device.type}"
    if world_size > 1:
        return "DDP's gradient all-reduce is not recorded in gan_lab's graphs"
    if getattr(precision_plugin, "scaler", None) is not None:
        return "16-mixed's loss scaler reads the gradients' finiteness back to the host at every step"
    if step_hooks:
        return f"{', '.join(step_hooks)} would run only when a step is recorded, never at its replays"
    optimizers = optimizers if isinstance(optimizers, list | tuple) else [optimizers]
    for opt in optimizers:
        if not getattr(opt, "defaults", {}).get("capturable"):
            return f"{type(getattr(opt, 'optimizer', opt)).__name__} has no capturable mode"
    return None


class StepGraphs:
    """Runs named training steps eagerly or as CUDA graphs: `run(name, step, *inputs)`.

    Disabled (the default, and anywhere but CUDA), `run` calls `step(*inputs)`. Enabled, a step's first
    `warmup` calls run eagerly on a side stream; the next call records it with the given inputs copied into
    buffers of the graph's own, then replays it; later calls copy their inputs into those buffers and replay.
    `step` returns tensors (or a tuple/dict of them) that the graph overwrites at its next replay: use or copy
    them before. A call whose inputs differ in shape from the recorded ones runs eagerly (one log line).
    """

    def __init__(self, warmup: int = 3) -> None:
        self.enabled = False
        self.warmup = warmup
        self.replayed = False  # whether the last `run` replayed a recorded graph (no Python of the step ran)
        self._calls: Counter[str] = Counter()
        self._graphs: dict[str, _Graph] = {}
        self._live_lrs: dict[str, _LiveLearningRates] = {}
        self._said_shape: set[str] = set()

    def enable(self) -> None:
        self.enabled = True

    def reset(self) -> None:
        """Forget recorded graphs (e.g. when fitting ends): the next calls warm up and record again."""
        self._calls.clear()
        self._graphs.clear()
        self._live_lrs.clear()

    @contextlib.contextmanager
    def autocast_without_cache(self) -> Iterator[None]:
        """While enabled: autocast without its weight cache (see the module's docstring)."""
        if not self.enabled:
            yield
            return
        before = torch.is_autocast_cache_enabled()
        torch.set_autocast_cache_enabled(False)
        try:
            yield
        finally:
            torch.set_autocast_cache_enabled(before)

    def run(self, name: str, step: Callable[..., Any], *inputs: Tensor | None, live_lr: Any = None) -> Any:
        """`live_lr`: the optimizer the step steps, where a scheduler changes its learning rate (None: the graph
        keeps the lr it was recorded with)."""
        self.replayed = False
        if not self.enabled:
            return step(*inputs)
        with self.autocast_without_cache():
            graph = self._graphs.get(name)
            if graph is not None:
                if graph.fits(inputs):
                    self.replayed = True
                    if name in self._live_lrs:
                        self._live_lrs[name].refresh()
                    return graph.replay(inputs)
                if name not in self._said_shape:
                    self._said_shape.add(name)
                    log.info("speed.capture=steps: a %s step with inputs of another shape runs eagerly", name)
                return step(*inputs)
            self._calls[name] += 1
            if self._calls[name] <= self.warmup:
                return _on_side_stream(step, inputs)
            self._graphs[name] = graph = self._record(name, step, inputs, live_lr)
            return graph.replay(inputs)

    def _record(
        self, name: str, step: Callable[..., Any], inputs: Sequence[Tensor | None], live_lr: Any
    ) -> _Graph:
        live = contextlib.nullcontext()
        if live_lr is not None:
            self._live_lrs[name] = _LiveLearningRates(live_lr)
            live = self._live_lrs[name].swapped_in()
        try:
            with live:
                return _Graph(step, inputs)
        except Exception as exc:
            # Stopping is the honest way out: a step whose recording failed half-way (Lightning's hooks run,
            # the CUDA generator in capture) cannot be run again eagerly as if nothing had happened.
            why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            raise ConfigError(
                f"speed.capture (steps, or auto on a GPU) could not record the {name} step as a CUDA graph ({why}); "
                "train with speed.capture=nets or speed.capture=false"
            ) from exc


def count_lightning_step(optimizer: Any) -> None:
    """Count a replayed optimizer step as Lightning does when LightningOptimizer.step runs (its global_step, which
    checkpoints and ModelCheckpoint read): the replay ran the step's kernels but none of its Python."""
    optimizer._on_before_step()
    optimizer._on_after_step()


class _LiveLearningRates:
    """An optimizer's learning rates as device tensors that a recorded step reads at every replay.

    The param groups keep plain floats, which is what schedulers, Lightning and checkpoints see. While a step
    is recorded each group's lr is swapped for a float32 tensor on its parameters' device (what fused and
    capturable optimizers take), so the graph reads that tensor instead of holding a number; `refresh`, before
    each replay, fills the tensors with the groups' current values (a fill kernel where one changed, no host
    sync). The optimizer then computes with the lr rounded to float32: equal to eager steps to rounding.
    """

    def __init__(self, optimizer: Any) -> None:
        self.groups = optimizer.param_groups
        self.values = [float(group["lr"]) for group in self.groups]
        self.tensors = [
            torch.full((), value, dtype=torch.float32, device=group["params"][0].device)
            for group, value in zip(self.groups, self.values, strict=True)
        ]

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        floats = [group["lr"] for group in self.groups]
        for group, tensor in zip(self.groups, self.tensors, strict=True):
            group["lr"] = tensor
        try:
            yield
        finally:
            for group, value in zip(self.groups, floats, strict=True):
                group["lr"] = value

    def refresh(self) -> None:
        for i, (group, tensor) in enumerate(zip(self.groups, self.tensors, strict=True)):
            if group["lr"] != self.values[i]:
                self.values[i] = float(group["lr"])
                tensor.fill_(self.values[i])


def _on_side_stream(step: Callable[..., Any], inputs: Sequence[Tensor | None]) -> Any:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = step(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    return out


class _Graph:
    """One recorded step: its input buffers, the CUDA graph and the outputs the graph writes."""

    def __init__(self, step: Callable[..., Any], inputs: Sequence[Tensor | None]) -> None:
        self.inputs = [None if t is None else t.clone() for t in inputs]
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of other threads (a loader's pin-memory thread) do not spoil the recording.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = step(*self.inputs)

    def fits(self, inputs: Sequence[Tensor | None]) -> bool:
        return len(inputs) == len(self.inputs) and all(
            (a is None and b is None) or (a is not None and b is not None and a.shape == b.shape)
            for a, b in zip(inputs, self.inputs, strict=True)
        )

    def replay(self, inputs: Sequence[Tensor | None]) -> Any:
        for buffer, value in zip(self.inputs, inputs, strict=True):
            if buffer is not None and value is not None:
                buffer.copy_(value)
        self.graph.replay()
        return self.outputs


# --- nets compiled in place (speed.compile, speed.capture=nets) ------------------------------------------------
# torch 2.2-2.14: nn.Module.compile() keeps the compiled call in `_compiled_call_impl` and `_call_impl` is the
# plain one (utils/compat.py lists these reads).
def is_compiled(module: nn.Module) -> bool:
    """Whether nn.Module.compile() was applied to `module` in place."""
    return getattr(module, "_compiled_call_impl", None) is not None


class _Uncompiled(nn.Module):
    """`module` called without its in-place compilation: same parameters, buffers and hooks."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.training = module.training  # this flag only: train() would reset every submodule of `module`

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module._call_impl(*args, **kwargs)


def uncompiled(module: nn.Module) -> nn.Module:
    """`module`, or a view of it that skips the torch.compile nn.Module.compile() put in place."""
    return _Uncompiled(module) if is_compiled(module) else module
