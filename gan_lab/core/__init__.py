"""The GAN algorithm: GANModule's D and G steps (module) and what they use: losses, regularizers, augment,
the generator EMA (ema), optimizers and schedulers (optim), the divergence guard (guards), the speed settings and
how the steps run under them (speed), and whole steps as CUDA graphs (graphs)."""
