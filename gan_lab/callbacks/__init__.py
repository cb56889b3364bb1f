"""Lightning callbacks of gan_lab: sample grids, in-loop FID/KID/IS, a mode-collapse monitor, a progress bar.

Each lives in its own module; the names are re-exported here (`from gan_lab.callbacks import InLoopMetrics`).
Configs stored with earlier runs' checkpoints name some of them here (`gan_lab.callbacks.SampleGrid`): reading
one renames those to their modules (run/checkpoint_io.MOVED_TARGETS). They load on first use:
gan_lab.core.guards imports gan_lab.callbacks.base (through LastCheckpoint), and SampleGrid & co import
gan_lab.core.module.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gan_lab.callbacks.diversity import DiversityMonitor
    from gan_lab.callbacks.in_loop_metrics import InLoopMetrics
    from gan_lab.callbacks.progress import GANProgressBar
    from gan_lab.callbacks.sample_grid import SampleGrid

_HOMES = {
    "DiversityMonitor": "diversity",
    "GANProgressBar": "progress",
    "InLoopMetrics": "in_loop_metrics",
    "SampleGrid": "sample_grid",
}
__all__ = ["DiversityMonitor", "GANProgressBar", "InLoopMetrics", "SampleGrid"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
