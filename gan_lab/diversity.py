"""The old home of DiversityMonitor (now gan_lab.callbacks.diversity), kept because the configs stored with
earlier runs' checkpoints name `gan_lab.diversity.DiversityMonitor` (callbacks.diversity._target_)."""

from gan_lab.callbacks.diversity import DiversityMonitor

__all__ = ["DiversityMonitor"]
