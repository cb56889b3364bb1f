"""Adversarial losses.

Convention, everywhere in gan_lab: the discriminator returns raw logits of shape (N,), higher = more real.
Each loss turns logits into a scalar to minimise: `d_loss(real_logits, fake_logits)` for the discriminator and
`g_loss(fake_logits, real_logits)` for the generator. Only relativistic losses read `real_logits` on the generator
side; they say so with `uses_real_logits = True`, and only for them does the G step score a real batch (the one of
the D step it follows; for the others it passes None). Sigmoid-based losses use the stable `*_with_logits` forms.
`real_threshold` is the logit above which D "calls" a sample real, used for discriminator accuracy;
None means the critic has no absolute scale (Wasserstein) and the midpoint of the batch means is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class GANLoss:
    """Base class: a pair of objectives on discriminator logits."""

    real_threshold: float | None = 0.0
    uses_real_logits: bool = False  # whether g_loss reads real_logits (the G step then scores a real batch)

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NonSaturatingLoss(GANLoss):
    """Goodfellow et al. 2014 with the non-saturating generator loss -log D(G(z)) (the usual "BCE GAN")."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return _bce(fake_logits, 1.0)


class MinimaxLoss(NonSaturatingLoss):
    """The original saturating game: G minimises log(1 - D(G(z)))."""

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        # log(1 - sigmoid(l)) = -BCE(l, target 0)
        return -_bce(fake_logits, 0.0)


class WassersteinLoss(GANLoss):
    """WGAN critic objective (Arjovsky et al. 2017); needs a Lipschitz constraint (clipping, GP or SN)."""

    real_threshold = None

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return -fake_logits.mean()


class HingeLoss(GANLoss):
    """Hinge loss of SNGAN / SAGAN / BigGAN."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return -fake_logits.mean()


class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017) with targets fake=0, real=1 for D and 1 for G."""

    real_threshold = 0.5

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return 0.5 * ((real_logits - 1.0).pow(2).mean() + fake_logits.pow(2).mean())

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        return 0.5 * (fake_logits - 1.0).pow(2).mean()


class RelativisticPairingLoss(GANLoss):
    """RpGAN (Jolicoeur-Martineau 2019), R3GAN's loss (Huang et al. 2024): each real image is paired with a fake.

    D minimises softplus(-(D(x_real) - D(x_fake))), G minimises softplus(-(D(x_fake) - D(x_real))), averaged over
    the pairs (i-th real with i-th fake). Only differences of logits count, so D has no absolute scale.
    """

    real_threshold = None
    uses_real_logits = True

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        return F.softplus(fake_logits - real_logits).mean()

    def g_loss(self, fake_logits: Tensor, real_logits: Tensor | None = None) -> Tensor:
        if real_logits is None:
            raise ValueError(
                "RelativisticPairingLoss.g_loss needs the real logits of the batch it is paired with"
            )
        return F.softplus(real_logits - fake_logits).mean()


def decision_threshold(loss: GANLoss, real_logits: Tensor, fake_logits: Tensor) -> Tensor | float:
    """The logit above which D calls a sample real: the loss's `real_threshold`, or for a loss without an absolute
    scale (Wasserstein, relativistic) the midpoint of the batch's mean real and mean fake logits."""
    if loss.real_threshold is not None:
        return loss.real_threshold
    return 0.5 * (real_logits.mean() + fake_logits.mean())


def discriminator_accuracy(loss: GANLoss, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Share of real samples scored real and fake samples scored fake, over both halves of the batch."""
    threshold = decision_threshold(loss, real_logits, fake_logits)
    correct = (real_logits > threshold).sum() + (fake_logits <= threshold).sum()
    return correct.float() / (real_logits.numel() + fake_logits.numel())


def real_margin(loss: GANLoss, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """How far above D's decision threshold each real sample scores (N,); its sign is ADA's overfitting signal."""
    return real_logits - decision_threshold(loss, real_logits, fake_logits)
