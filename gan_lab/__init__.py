"""gan_lab: train and compare GANs on images with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
