"""A training run on disk: its directory layout, checkpoints, resume and preemption."""
