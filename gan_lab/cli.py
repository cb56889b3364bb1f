"""What the command-line entry points (train, evaluate, sample) share."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from gan_lab.errors import ConfigError, one_line, user_error


def user_errors_as_one_line(main: Callable[..., Any]) -> Callable[..., None]:
    """Wrap an entry point: a GanLabError prints one `gan_lab: error:` line and exits 1.

    Other exceptions, and every exception when HYDRA_FULL_ERROR=1, propagate with their traceback. In a
    multirun the failed job's error is printed and re-raised, so the remaining jobs still run.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            main(*args, **kwargs)
        except Exception as exc:
            err = user_error(exc)
            if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"gan_lab: error: {one_line(err)}", file=sys.stderr)
            if _in_multirun():
                raise  # Hydra marks this job failed, runs the others, and reports the failure at the end
            sys.exit(1)

    return wrapper


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def resolve_device(name: str) -> torch.device:
    """`auto` = cuda if available, else cpu; otherwise any torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{name}'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is visible; use device=auto or device=cpu")
    return device
