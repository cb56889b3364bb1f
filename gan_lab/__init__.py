"""gan_lab: train and compare GANs on images with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"

from gan_lab.run.paths import register_run_dir_resolver  # noqa: E402  (conf/ names run files through it)

register_run_dir_resolver()
