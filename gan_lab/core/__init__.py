"""The GAN algorithm: GANModule's D and G steps (module) and what they use: losses, regularizers, augment,
the generator EMA (ema), optimizers and schedulers (optim), the divergence guard (guards) and whole steps as CUDA graphs (graphs)."""
