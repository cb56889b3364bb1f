"""trainer.precision=auto: bf16 autocast where the hardware runs bf16 fast, full fp32 elsewhere.

(Kept out of train.py: `python -m gan_lab.train` runs that file as __main__, whose functions launchers such as
submitit pickle by value, and torch.backends' module objects cannot be pickled.)
"""

from __future__ import annotations

from typing import Any

import torch


def fast_bf16_available(accelerator: str = "auto") -> bool:
    """Whether bf16 matrix products are fast here: a CUDA GPU with bf16, or a CPU with AMX / AVX-512 bf16."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
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
