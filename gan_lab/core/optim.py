"""Optimizers and learning-rate schedulers of G and D, built from conf/optim and conf/scheduler."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import get_class, instantiate

from gan_lab.errors import ConfigError

_LR_KEYS = ("lr", "lr_g", "lr_d")
# Scheduler arguments that mean "the whole run" when left null in conf/scheduler/.
_RUN_LENGTH_KEYS = ("T_max", "total_iters")


def learning_rates(optim: Mapping[str, Any]) -> tuple[float, float]:
    """(lr_g, lr_d): `lr` for both networks unless `lr_g` / `lr_d` override it (two time-scale update rule)."""
    rates = []
    for key in ("lr_g", "lr_d"):
        name, value = (
            (f"optim.{key}", optim[key]) if optim.get(key) is not None else ("optim.lr", optim.get("lr"))
        )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be a number > 0, got {value!r}; e.g. {name}=2e-4")
        rates.append(float(value))
    return rates[0], rates[1]


def build_optimizer(
    optim: Mapping[str, Any], params: Any, lr: float, prefer_fused: bool = False, capturable: bool = False
) -> torch.optim.Optimizer:
    """Instantiate conf/optim's `_target_` for one network with its own learning rate.

    `fused: null` picks the fused (single-kernel) implementation when every parameter is a float tensor on
    a device that has one (CPU and CUDA in current torch): it is the fastest, and equal to the per-parameter
    loop up to rounding. Fused Adam keeps its step count on the device, so a step needs no host sync.
    `prefer_fused` (speed.capture) treats an optimizer that takes `fused` but whose config leaves it out as
    `fused: null`. `capturable` (speed.capture=steps on CUDA: the optimizer step is inside the step's CUDA graph)
    is set where the optimizer takes it; otherwise it stays off: torch runs a capturable optimizer slower outside
    a graph.
    """
    kwargs = {k: v for k, v in optim.items() if k not in _LR_KEYS}
    params = list(params)
    accepted = inspect.signature(get_class(kwargs["_target_"])).parameters
    if prefer_fused and "fused" in accepted and "fused" not in kwargs:
        kwargs["fused"] = None
    if capturable and "capturable" in accepted:
        kwargs["capturable"] = True
    if "fused" in kwargs and kwargs["fused"] is None:
        kwargs["fused"] = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    unknown = sorted(k for k in kwargs if k != "_target_" and k not in accepted)
    if unknown:  # e.g. a preset's Adam betas after optim=rmsprop
        raise ConfigError(
            f"{kwargs['_target_']} takes no {', '.join(unknown)}; drop it with "
            + " ".join(f"~optim.{k}" for k in unknown)
        )
    return instantiate(kwargs, params=params, lr=lr, _convert_="all")


def lazy_regularization(
    optim: Mapping[str, Any], lr: float, interval: int
) -> tuple[dict[str, Any], float, str]:
    """D's optimizer settings under lazy regularization (Karras et al. 2020, StyleGAN2): (optim, lr, what changed).

    A penalty added every `interval` = k D steps, weighted by k, makes the regularized steps larger; StyleGAN2
    compensates with c = k / (k + 1): lr * c and each beta ** c (Adam's betas; an optimizer without betas gets
    lr * c only). k = 1 returns the settings unchanged and says nothing.
    """
    optim = dict(optim)
    if interval == 1:
        return optim, lr, ""
    c = interval / (interval + 1)
    said = f"the penalty every {interval} D steps, weighted by {interval}; D's lr {lr:g} -> {lr * c:g}"
    if optim.get("betas") is not None:
        betas = [float(beta) ** c for beta in optim["betas"]]
        said += f", betas {tuple(optim['betas'])} -> {tuple(round(beta, 6) for beta in betas)}"
        optim["betas"] = betas
    return optim, lr * c, said


def build_scheduler(scheduler: Mapping[str, Any], optimizer: torch.optim.Optimizer, run_length: int) -> Any:
    """Instantiate conf/scheduler's `_target_`; null T_max / total_iters become the run length in intervals."""
    kwargs = {k: v for k, v in scheduler.items() if k != "interval"}
    for key in _RUN_LENGTH_KEYS:
        if key in kwargs and kwargs[key] is None:
            kwargs[key] = run_length
    return instantiate(kwargs, optimizer=optimizer, _convert_="all")


def restore_built_flags(optimizer: Any) -> None:
    """Set a restored optimizer's `capturable` and `fused` flags back to how this run built it.

    A checkpoint's optimizer state brings the param-group flags of the run that saved it: a speed.capture=steps
    run on a GPU saves capturable groups, which torch refuses on the CPU (`trainer.accelerator` may change on
    resume). Step counts move to where the flags keep them: the parameters' device when capturable or fused,
    else the CPU.
    """
    optimizer = getattr(optimizer, "optimizer", optimizer)  # Lightning's LightningOptimizer wraps it
    for group in optimizer.param_groups:
        for flag in ("capturable", "fused"):
            if flag in optimizer.defaults:
                group[flag] = optimizer.defaults[flag]
        on_device = bool(group.get("capturable") or group.get("fused"))
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].to(param.device if on_device else "cpu")
