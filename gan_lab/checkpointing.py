"""The old home of LastCheckpoint, kept because stored checkpoints name it (callbacks.last._target_)."""

from gan_lab.run.checkpoint_callback import LastCheckpoint

__all__ = ["LastCheckpoint"]
