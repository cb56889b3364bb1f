"""Loading gan_lab checkpoints safely: tensors and plain containers only (`torch.load(weights_only=True)`)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from gan_lab.errors import GanLabError


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a gan_lab run, on the CPU; refuses files that need arbitrary code to unpickle."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GanLabError(f"checkpoint {path} not found; pass ckpt=<run dir>/checkpoints/last.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise GanLabError(
            f"{path} holds objects other than tensors and plain containers, which gan_lab does not load "
            f"(a pickle can run code); only load checkpoints written by gan_lab ({str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise GanLabError(f"{path} is not a readable checkpoint ({err}); is the file complete?") from err
    if (
        not isinstance(checkpoint, dict)
        or "state_dict" not in checkpoint
        or "hyper_parameters" not in checkpoint
    ):
        raise GanLabError(f"{path} is not a gan_lab training checkpoint (no state_dict / run config in it)")
    return checkpoint


def run_dir_of(ckpt: str | Path) -> Path:
    """The training run directory of a checkpoint: the parent of checkpoints/ (else the ckpt's own folder)."""
    ckpt = Path(ckpt).expanduser().absolute()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


@dataclass
class LoadedGenerator:
    """A trained generator (eval mode) with the run config it was trained with."""

    generator: nn.Module
    config: DictConfig
    g_steps: int

    @property
    def z_dim(self) -> int:
        return int(self.config.model.z_dim)

    @property
    def num_classes(self) -> int:
        return int(self.config.model.get("num_classes", 0))


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Rebuild the generator of a checkpoint from its stored config and load its weights."""
    checkpoint = load_checkpoint(path)
    config = OmegaConf.create(checkpoint["hyper_parameters"])
    generator = instantiate(config.model.generator)
    state = checkpoint["state_dict"]
    # The EMA generator, when the run kept one, is the one to sample from.
    prefix = (
        "generator_ema.module." if any(k.startswith("generator_ema.module.") for k in state) else "generator."
    )
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    generator.load_state_dict(weights)
    generator.to(device).eval()
    return LoadedGenerator(generator, config, int(checkpoint.get("gan_lab", {}).get("g_steps", 0)))
