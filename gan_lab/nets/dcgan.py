"""DCGAN (Radford et al. 2015) generator and discriminator for any power-of-two resolution >= 32.

The depth follows the resolution: a 4x4 seed is doubled log2(R/4) times. At 64x64 this is the classic DCGAN
(5 transposed convs in G, 5 convs in D, as in the SN-DCGAN study); at 128x128 the 6-layer nets of the LSUN
church study. Channels halve at each doubling, ending at `width` next to the image.
"""

from __future__ import annotations

from torch import Tensor, nn

from gan_lab.nets.layers import get_norm, init_dcgan_weights, num_doublings, with_spectral_norm


class DCGANGenerator(nn.Module):
    """z (N, z_dim) -> images (N, channels, R, R) in [-1, 1]."""

    def __init__(
        self, z_dim: int = 100, resolution: int = 64, width: int = 64, norm: str = "batch", channels: int = 3
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        n_up = num_doublings(resolution)
        spec = get_norm(norm)
        widths = [width * 2 ** (n_up - 1 - i) for i in range(n_up)]  # e.g. 512, 256, 128, 64 at 64x64
        layers: list[nn.Module] = []
        in_ch = z_dim
        for i, out_ch in enumerate(widths):
            stride, padding = (1, 0) if i == 0 else (2, 1)  # first layer: 1x1 -> 4x4, then x2 each
            conv = nn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=not spec.batch)
            layers += [conv, nn.BatchNorm2d(out_ch) if spec.batch else nn.Identity(), nn.ReLU(inplace=True)]
            in_ch = out_ch
        layers += [nn.ConvTranspose2d(in_ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)
        # Spectral norm wraps the already-initialised weights, so init and SN compose in either setting.
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.ConvTranspose2d):
                self.net[i] = with_spectral_norm(layer, spec.spectral)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """images (N, channels, R, R) -> logits (N,), higher = more real."""

    def __init__(self, resolution: int = 64, width: int = 64, norm: str = "batch", channels: int = 3) -> None:
        super().__init__()
        n_down = num_doublings(resolution)
        spec = get_norm(norm)
        layers: list[nn.Module] = []
        in_ch = channels
        for i in range(n_down):
            out_ch = width * 2**i
            # No batch norm on the first layer, as in DCGAN: it would normalise away the input statistics.
            use_bn = spec.batch and i > 0
            conv = nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=not use_bn)
            layers += [
                conv,
                nn.BatchNorm2d(out_ch) if use_bn else nn.Identity(),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_ch = out_ch
        layers.append(nn.Conv2d(in_ch, 1, 4, 1, 0))  # 4x4 -> 1x1 logit
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.Conv2d):
                self.net[i] = with_spectral_norm(layer, spec.spectral)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.net(x).view(x.shape[0])
