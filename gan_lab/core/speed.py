"""The speed settings: trainer.precision=auto (bf16 autocast where the hardware runs bf16 fast, full fp32
elsewhere), speed.tf32 and speed.channels_last.

(Kept out of train.py: `python -m gan_lab.train` runs that file as __main__, whose functions launchers such as
submitit pickle by value, and torch.backends' module objects cannot be pickled.)
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from gan_lab.core.graphs import capture_mode
from gan_lab.errors import ConfigError

log = logging.getLogger(__name__)


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
    """trainer.precision=auto: bf16 autocast where bf16 is fast (about 2x here), else full fp32."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if fast_bf16_available(str(accelerator)) else "32-true"


def set_tf32(enabled: bool | None) -> None:
    """speed.tf32: fp32 matmuls and convolutions on CUDA use TF32 tensor cores (True) or full fp32 (False).

    Process-wide torch.backends flags, read only by CUDA kernels: no effect on CPU, nor on the ops bf16 autocast
    runs in bf16. None (a config from before the key existed) leaves torch's own defaults.
    """
    if enabled is None:
        return
    if not isinstance(enabled, bool):
        raise ConfigError(f"speed.tf32 must be true or false, got {enabled!r}")
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def use_channels_last(speed: Any, accelerator: str = "auto") -> bool:
    """speed.channels_last, except under speed.capture=nets on CUDA, where the compiler chooses the layout.

    There, with channels_last weights, torch 2.11's compiled convolution_backward expects a channels_last weight
    gradient where cuDNN returns a contiguous one (G's first layer, whose input is 1x1): the captured step fails
    its stride check (seen on an H200). Inductor lays convolutions out itself (its layout optimisation).
    """
    wanted = bool(speed.get("channels_last", False))
    if wanted and capture_mode(speed.get("capture", False)) == "nets" and trains_on_cuda(accelerator):
        log.info(
            "speed.capture=nets on CUDA: channels_last is left to the compiler, which lays out the convolutions itself"
        )
        return False
    return wanted
