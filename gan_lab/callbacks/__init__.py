"""Lightning callbacks of gan_lab: the last checkpoint, sample grids, in-loop FID/KID/IS, a mode-collapse monitor,
a progress bar.

Each lives in its own module; the names are re-exported here (`from gan_lab.callbacks import InLoopMetrics`).
Configs stored with earlier runs' checkpoints name some of them by earlier homes (`gan_lab.callbacks.SampleGrid`,
`gan_lab.run.checkpoint_callback.LastCheckpoint`): reading one renames those (gan_lab.legacy.MOVED_TARGETS).
"""

from gan_lab.callbacks.diversity import DiversityMonitor
from gan_lab.callbacks.in_loop_metrics import InLoopMetrics
from gan_lab.callbacks.last_checkpoint import LastCheckpoint, last_checkpoint_path
from gan_lab.callbacks.progress import GANProgressBar
from gan_lab.callbacks.sample_grid import SampleGrid

__all__ = [
    "DiversityMonitor",
    "GANProgressBar",
    "InLoopMetrics",
    "LastCheckpoint",
    "SampleGrid",
    "last_checkpoint_path",
]
