"""A run's speed settings, read once from the config into `SpeedSettings`, and how GANModule's steps run under
them (`StepRunner`: G and D compiled in place, or whole steps as CUDA graphs, core/graphs.py).

The settings: trainer.precision (`auto`: bf16 autocast where the hardware runs bf16 fast, full fp32 elsewhere),
speed.channels_last, speed.compile, speed.capture and speed.tf32 (conf/train.yaml); this file reads every one of
them. build.py reads them once (`SpeedSettings.from_config`) for the GANModule and the Trainer, and a built
GANModule keeps them (`module.speed`) for whatever must run as the run did. What each one buys:
docs/performance.md.

(Kept out of train.py: `python -m gan_lab.train` runs that file as __main__, whose functions launchers such as
submitit pickle by value, and torch.backends' module objects cannot be pickled.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from gan_lab.core.graphs import (
    StepGraphs,
    count_lightning_step,
    hooks_inside_a_step,
    is_compiled,
    steps_run_eagerly,
    uncompiled,
)
from gan_lab.errors import ConfigError
from gan_lab.legacy import capture_spelling

log = logging.getLogger(__name__)
step_log = logging.getLogger("gan_lab.module")  # GANModule logs its step lines here too: one logger

CAPTURE_MODES = ("false", "nets", "steps", "auto")  # speed.capture's values (StepRunner says what each runs)


def capture_mode(value: Any) -> str:
    """speed.capture as one of CAPTURE_MODES; `true` is the old spelling of `nets` (legacy.capture_spelling)."""
    value = capture_spelling(value)
    if value is None or value is False:
        return "false"
    if isinstance(value, str) and value.lower() in CAPTURE_MODES:
        return value.lower()
    raise ConfigError(f"speed.capture must be false, nets, steps or auto (true = nets), got {value!r}")


@dataclass(frozen=True)
class SpeedSettings:
    """How a run trains fast, resolved for this machine: what GANModule and the Trainer use.

    The defaults are a config without a `speed` group, in fp32.
    """

    precision: str | int = "32-true"  # Lightning's trainer.precision, `auto` resolved (bf16-mixed or 32-true)
    channels_last: bool = False  # NHWC nets and batches (speed.channels_last, off under capture=nets on CUDA)
    compile: bool = False  # speed.compile: G and D compiled in place when built
    capture: str = "false"  # speed.capture as one of CAPTURE_MODES: false, nets, steps, auto
    tf32: bool | None = None  # speed.tf32: CUDA fp32 matmuls on TF32 tensor cores; None leaves torch's flags

    def __post_init__(self) -> None:
        object.__setattr__(self, "capture", capture_mode(self.capture))  # true: nets
        check_tf32(self.tf32)

    @classmethod
    def from_config(
        cls, speed: Mapping[str, Any] | None, precision: Any = "auto", accelerator: Any = "auto"
    ) -> SpeedSettings:
        """The settings of a config's `speed` group, trainer.precision and trainer.accelerator."""
        speed = speed or {}
        return cls(
            precision=resolve_precision(precision, accelerator),
            channels_last=use_channels_last(speed, accelerator),
            compile=bool(speed.get("compile", False)),
            capture=speed.get("capture", False),
            tf32=speed.get("tf32"),
        )

    @property
    def memory_format(self) -> torch.memory_format:
        # channels_last (NHWC) convolutions are faster on CPUs (oneDNN) and on GPU tensor cores.
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def compiles_nets(self) -> bool:
        """Whether G and D run compiled: speed.compile, or speed.capture=nets, which includes it."""
        return self.compile or self.capture == "nets"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trains_on_cuda(accelerator: str = "auto") -> bool:
    """Whether trainer.accelerator puts training on a CUDA GPU here."""
    return str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def fast_bf16_available(accelerator: str = "auto") -> bool:
    """Whether bf16 matrix products are fast here: a CUDA GPU with bf16, or a CPU with AMX / AVX-512 bf16."""
    if trains_on_cuda(accelerator):
        return torch.cuda.is_bf16_supported()
    cpu = torch.backends.cpu.get_cpu_capability()  # e.g. "AVX512", "AVX2", "DEFAULT"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return cpu.startswith("AVX512") and (amx or avx512_bf16)


def resolve_precision(precision: Any, accelerator: str = "auto") -> Any:
    """trainer.precision=auto: bf16 autocast where bf16 matmuls are fast, else full fp32."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if fast_bf16_available(str(accelerator)) else "32-true"


def set_tf32(enabled: bool | None) -> None:
    """speed.tf32: fp32 matmuls and convolutions on CUDA use TF32 tensor cores (True) or full fp32 (False).

    Process-wide torch.backends flags, read only by CUDA kernels: no effect on CPU, nor on the ops bf16 autocast
    runs in bf16. None (a config from before the key existed) leaves torch's own defaults.
    """
    if check_tf32(enabled) is None:
        return
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def check_tf32(enabled: Any) -> bool | None:
    """speed.tf32 as given, or ConfigError if it is neither true, false nor null."""
    if enabled is not None and not isinstance(enabled, bool):
        raise ConfigError(f"speed.tf32 must be true or false, got {enabled!r}")
    return enabled


def use_channels_last(speed: Mapping[str, Any], accelerator: Any = "auto") -> bool:
    """speed.channels_last, except under speed.capture=nets on CUDA, where the compiler chooses the layout.

    There, with channels_last weights, torch 2.11's compiled convolution_backward expects a channels_last weight
    gradient where cuDNN returns a contiguous one (G's first layer, whose input is 1x1): the captured step fails
    its stride check. Inductor lays convolutions out itself (its layout optimisation).
    """
    wanted = bool(speed.get("channels_last", False))
    if wanted and capture_mode(speed.get("capture", False)) == "nets" and trains_on_cuda(accelerator):
        log.info(
            "speed.capture=nets on CUDA: channels_last is left to the compiler, which lays out the convolutions itself"
        )
        return False
    return wanted


class StepRunner:
    """Runs GANModule's D and G updates under its SpeedSettings: eagerly, with G and D compiled in place
    (speed.compile, speed.capture=nets: each network call a CUDA graph on CUDA) or each whole update recorded as
    one CUDA graph and replayed (speed.capture=steps, `StepGraphs`; `auto`: steps where they can be recorded,
    else eager, with one log line on a GPU and none off one). The bookkeeping around them stays eager. A penalty differentiates D's input gradient again, which a compiled D cannot do: it calls D
    uncompiled, on the same weights."""

    def __init__(self, speed: SpeedSettings) -> None:
        self.speed = speed
        self.cuda_graphs = False  # set by start: capture=nets on a CUDA device
        self.graphs = StepGraphs()  # enabled by start: capture=steps or auto, where they record
        self._said_penalty_is_eager = False

    def compile_in_place(self, nets: Sequence[nn.Module]) -> None:
        """speed.compile: each net compiled in place (nn.Module.compile), so parameter names, and checkpoints, stay
        those of the plain nets; G and D separately, not the LightningModule, whose step has Python control flow.
        speed.capture=nets includes speed.compile: with both set, capture decides (it compiles in `start`)."""
        if self.speed.compile and self.speed.capture != "nets":
            for net in nets:
                net.compile()

    def sampler(self, generator: nn.Module) -> nn.Module:
        """The generator to sample with. Captured: a CUDA graph's output is overwritten by its next replay, and eval
        mode would compile another graph; samples and metrics are rare enough to run G uncompiled."""
        return uncompiled(generator) if self.speed.capture == "nets" else generator

    def optimizer_flags(self, module: pl.LightningModule) -> tuple[bool, bool]:
        """(prefer_fused, capturable) for build_optimizer. Captured: the single-kernel step where the optimizer has
        one; recorded steps need capturable ones, built only where `start` will record (capturable optimizers run
        slower outside a graph)."""
        whole_steps = self.speed.capture in ("steps", "auto") and why_steps_run_eagerly(module, []) is None
        return self.speed.capture == "nets" or whole_steps, whole_steps

    def start(self, module: pl.LightningModule, nets: Sequence[nn.Module], penalty: str | None) -> None:
        """When fitting starts, on the module's device: enable the whole-step graphs where they record, or compile
        `nets` (G, D) for capture=nets, with speed.tf32's kernels (process-wide). `penalty`: the name of the
        regularizer whose penalty calls D uncompiled."""
        set_tf32(self.speed.tf32)
        capture = self.speed.capture
        if capture in ("steps", "auto"):
            why = why_steps_run_eagerly(module, module.optimizers())
            if why is None:
                self.graphs.enable()
            elif capture == "steps" or module.device.type == "cuda":  # auto: silent off a GPU
                step_log.info("speed.capture=%s: %s, so the steps run eagerly", capture, why)
        if capture == "nets" and not is_compiled(nets[0]):
            cuda = module.device.type == "cuda"
            for net in nets:
                net.compile(mode="reduce-overhead" if cuda else None)
            self.cuda_graphs = cuda
        if is_compiled(nets[-1]) and penalty and not self._said_penalty_is_eager:
            self._said_penalty_is_eager = True
            step_log.info(
                "%s: the %s penalty calls D uncompiled (eagerly), on the same weights: its double backward "
                "cannot go through a compiled D; the rest of the step stays compiled",
                "speed.capture" if capture == "nets" else "speed.compile",
                penalty,
            )

    def run(
        self, name: str, update: Callable[..., Any], optimizer: Any, *inputs: Any, scheduled: bool = False
    ) -> Any:
        """`update(*inputs)`, which steps `optimizer`, as the step `name` (one CUDA graph under capture=steps).
        `scheduled`: a scheduler changes the optimizer's learning rate, which recorded steps then read at every
        replay."""
        if self.cuda_graphs:
            # A new iteration of the CUDA graphs: the last step's graph outputs may be overwritten now.
            torch.compiler.cudagraph_mark_step_begin()
        out = self.graphs.run(name, update, *inputs, live_lr=optimizer if scheduled else None)
        if self.graphs.replayed:
            count_lightning_step(optimizer)
        if self.cuda_graphs:
            # Under CUDA graphs, gradients live in the graphs' memory, which the next step's replays overwrite (and
            # reading them after that raises): drop them once the optimizer has used them.
            optimizer.zero_grad(set_to_none=True)
        return out

    def end(self) -> None:
        self.graphs.reset()  # the graphs hold GPU memory, and the nets may move to the CPU now


def why_steps_run_eagerly(module: pl.LightningModule, optimizers: Any) -> str | None:
    """Why speed.capture=steps cannot record `module`'s steps in its trainer (None: it can)."""
    trainer = module.trainer
    hooks = hooks_inside_a_step(trainer.callbacks, module)
    return steps_run_eagerly(module.device, trainer.precision_plugin, optimizers, trainer.world_size, hooks)
