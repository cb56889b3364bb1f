"""Generator and discriminator networks. Networks only map tensors; training logic lives in GANModule."""
