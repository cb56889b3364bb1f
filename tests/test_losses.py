"""Each loss against values computed by hand for fixed logits."""

import math

import pytest
import torch

from gan_lab.core.losses import (
    HingeLoss,
    LeastSquaresLoss,
    MinimaxLoss,
    NonSaturatingLoss,
    RelativisticPairingLoss,
    WassersteinLoss,
    discriminator_accuracy,
    real_margin,
)

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_non_saturating():
    loss = NonSaturatingLoss()
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    expected_d = mean([softplus(-2.0), softplus(1.0)]) + mean([softplus(0.5), softplus(-3.0)])
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-6)
    assert loss.g_loss(FAKE).item() == pytest.approx(mean([softplus(-0.5), softplus(3.0)]), rel=1e-6)


def test_minimax_generator_minimises_log_one_minus_d():
    loss = MinimaxLoss()
    sigmoid = [1 / (1 + math.exp(-f)) for f in FAKE.tolist()]
    assert loss.g_loss(FAKE).item() == pytest.approx(mean([math.log(1 - s) for s in sigmoid]), rel=1e-6)
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(NonSaturatingLoss().d_loss(REAL, FAKE).item())


def test_wasserstein():
    loss = WassersteinLoss()
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(mean([0.5, -3.0]) - mean([2.0, -1.0]))
    assert loss.g_loss(FAKE).item() == pytest.approx(1.25)


def test_hinge():
    loss = HingeLoss()
    # relu(1 - r): [0, 2]; relu(1 + f): [1.5, 0]
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(1.0 + 0.75)
    assert loss.g_loss(FAKE).item() == pytest.approx(1.25)


def test_least_squares():
    loss = LeastSquaresLoss()
    # 0.5 * (mean((r-1)^2) + mean(f^2)) = 0.5 * (mean(1, 4) + mean(0.25, 9))
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(0.5 * (2.5 + 4.625))
    # 0.5 * mean((f-1)^2) = 0.5 * mean(0.25, 16)
    assert loss.g_loss(FAKE).item() == pytest.approx(0.5 * 8.125)


def test_sigmoid_losses_are_finite_for_extreme_logits():
    big = torch.tensor([1e4, -1e4])
    for loss in (NonSaturatingLoss(), MinimaxLoss()):
        assert torch.isfinite(loss.d_loss(big, big)) and torch.isfinite(loss.g_loss(big))


def test_discriminator_accuracy():
    # threshold 0: real [2, -1] -> 1 right; fake [0.5, -3] -> 1 right
    assert discriminator_accuracy(NonSaturatingLoss(), REAL, FAKE).item() == pytest.approx(0.5)
    perfect = discriminator_accuracy(HingeLoss(), torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -2.0]))
    assert perfect.item() == 1.0
    # LSGAN targets are 0 and 1, so its threshold is 0.5
    assert discriminator_accuracy(LeastSquaresLoss(), torch.tensor([0.4]), torch.tensor([0.3])).item() == 0.5
    # Wasserstein critics have no absolute scale: threshold = midpoint of the batch means (here 10.5)
    shifted = discriminator_accuracy(WassersteinLoss(), torch.tensor([11.0, 12.0]), torch.tensor([9.0, 10.0]))
    assert shifted.item() == 1.0


def test_relativistic_pairing_pairs_the_ith_real_with_the_ith_fake():
    loss = RelativisticPairingLoss()
    # D: softplus(-(r_i - f_i)) = softplus(f_i - r_i): pairs (2, 0.5), (-1, -3)
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(mean([softplus(-1.5), softplus(-2.0)]), rel=1e-6)
    # G: softplus(-(f_i - r_i)) = softplus(r_i - f_i)
    assert loss.g_loss(FAKE, REAL).item() == pytest.approx(mean([softplus(1.5), softplus(2.0)]), rel=1e-6)
    # Only differences count: shifting every logit changes nothing.
    assert loss.d_loss(REAL + 7, FAKE + 7).item() == pytest.approx(loss.d_loss(REAL, FAKE).item(), rel=1e-6)
    with pytest.raises(ValueError, match="real logits"):
        loss.g_loss(FAKE)


def test_only_relativistic_losses_read_real_logits_and_the_others_ignore_them():
    classic = [NonSaturatingLoss(), MinimaxLoss(), WassersteinLoss(), HingeLoss(), LeastSquaresLoss()]
    assert RelativisticPairingLoss.uses_real_logits and not any(loss.uses_real_logits for loss in classic)
    for loss in classic:  # the G step passes no real logits to them; given some, their value is unchanged
        assert torch.equal(loss.g_loss(FAKE, REAL), loss.g_loss(FAKE))


def test_relativistic_accuracy_and_ada_signal_use_the_batch_midpoint():
    # no absolute scale: threshold = midpoint of the means (here 10.5), like Wasserstein
    real, fake = torch.tensor([11.0, 12.0]), torch.tensor([9.0, 10.0])
    assert discriminator_accuracy(RelativisticPairingLoss(), real, fake).item() == 1.0
    assert real_margin(RelativisticPairingLoss(), real, fake).tolist() == [0.5, 1.5]
    assert real_margin(NonSaturatingLoss(), real, fake).tolist() == [11.0, 12.0]  # threshold 0
    assert real_margin(LeastSquaresLoss(), real, fake).tolist() == [10.5, 11.5]  # threshold 0.5
