"""Every patch gan_lab makes to a private API of another library, one small function each.

Each function names the library version it was written against; when that library changes, this is the one
file to check. The libraries are imported inside the functions, so importing this module imports none of them.

Also used, not patched (plain calls or reads of private names, where they are used):
- lightning `lightning.fabric.utilities.logger._convert_params` / `_convert_json_serializable`
  (loggers.GANWandbLogger.log_hyperparams);
- lightning `ExperimentWriter._check_log_dir_exists`, overridden by the subclass loggers._CSVWriter (it also
  uses the writer's `_fs`);
- lightning logger internals used by gan_lab's subclasses in loggers.py: `_experiment` (created on first use,
  reset after a fit), `_fs`, `_save_dir`, `_prefix`, `_wandb_init` (passed to `wandb.init`);
- wandb `wandb._attach` (loggers.GANWandbLogger.experiment: a spawned DDP worker attaches to the parent's run);
- torch `torch.cpu._is_amx_tile_supported` / `_is_avx512_bf16_supported` (core/speed.fast_bf16_available);
- torch `nn.Module._compiled_call_impl` / `_call_impl` (core/graphs.py: whether a net is compiled in place, and
  its eager call, for penalties and samples under speed.compile and speed.capture).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor


@contextmanager
def hydra_steps_run_through(step: Callable[[Callable[[], Any]], Any]) -> Iterator[None]:
    """Within the block Hydra runs each step (compose, run) as `step(func)` inside its own run_and_report.

    A Hydra without hydra._internal.utils.run_and_report runs as it is.
    """
    # hydra-core 1.3.8: hydra._internal.utils.run_and_report, looked up in its module at call time.
    from hydra._internal import utils as hydra_utils

    report = getattr(hydra_utils, "run_and_report", None)
    if report is None:
        yield
        return
    hydra_utils.run_and_report = lambda func: report(functools.partial(step, func))
    try:
        yield
    finally:
        hydra_utils.run_and_report = report


def set_ddp_subprocess_command(command: Callable[[int], tuple[Sequence[str], str]]) -> None:
    """Make Lightning's subprocess launcher start DDP rank `local_rank` under Hydra with `command(local_rank)`."""
    # lightning 2.6.6: lightning.fabric.strategies.launchers.subprocess_script._hydra_subprocess_cmd, which
    # lightning.pytorch's launcher imports by name: both modules' names are replaced.
    from lightning.fabric.strategies.launchers import subprocess_script
    from lightning.pytorch.strategies.launchers import subprocess_script as pl_subprocess_script

    subprocess_script._hydra_subprocess_cmd = command
    pl_subprocess_script._hydra_subprocess_cmd = command


@contextmanager
def inception_resize_returning(images: Tensor) -> Iterator[None]:
    """Within the block torch-fidelity's Inception resize returns `images` (in its input's dtype) unchanged."""
    # torch-fidelity 0.4.0 (and 0.3): feature_extractor_inceptionv3 looks interpolate_bilinear_2d_like_tensorflow1x
    # up in its module at call time.
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    resize = inception_module.interpolate_bilinear_2d_like_tensorflow1x
    inception_module.interpolate_bilinear_2d_like_tensorflow1x = lambda x, **_: images.to(x.dtype)
    try:
        yield
    finally:
        inception_module.interpolate_bilinear_2d_like_tensorflow1x = resize


def mark_sigterm_received(trainer: Any) -> None:
    """Make Lightning stop `trainer` as after a SIGTERM: between batches, in step on every DDP rank."""
    # lightning 2.6.6: Trainer._signal_connector.received_sigterm.
    trainer._signal_connector.received_sigterm = True


def drop_wandb_anonymous(logger: Any) -> None:
    """Leave `anonymous` out of the wandb.init arguments of a Lightning WandbLogger (deprecated: it only warns)."""
    # lightning 2.6.6 WandbLogger._wandb_init always holds anonymous; wandb 0.31.0 warns on it.
    logger._wandb_init.pop("anonymous", None)


def set_wandb_run_id(logger: Any, run_id: str) -> None:
    """Make a Lightning WandbLogger's next wandb.init continue the run `run_id`."""
    # lightning 2.6.6: WandbLogger._id and WandbLogger._wandb_init["id"].
    logger._id = logger._wandb_init["id"] = run_id
