"""A relativistic loss in the training step: the G step pairs its fakes with the real batch of the D step it
follows (same images, same labels), and only for losses that read real logits (issue 23, items 1 and 2)."""

import pytest
import torch
import torch.nn.functional as F

from gan_lab.build import build_datamodule, build_module, build_trainer
from gan_lab.core.losses import RelativisticPairingLoss
from gan_lab.core.module import GANModule


class PairingRecorder(GANModule):
    """Records the real batch of each D step and what each G update was given."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d_batches: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        self.g_inputs: list[tuple[int, torch.Tensor | None, torch.Tensor | None]] = []

    def _discriminator_step(self, opt_d, real, labels):
        self.d_batches.append((real.clone(), None if labels is None else labels.clone()))
        super()._discriminator_step(opt_d, real, labels)

    def _generator_update(self, opt_g, n, real=None, labels=None):
        self.g_inputs.append((self.d_steps, real, labels))
        return super()._generator_update(opt_g, n, real, labels)


def fit_recorder(cfg) -> PairingRecorder:
    datamodule = build_datamodule(cfg)  # sets model.num_classes for conditional models
    built = build_module(cfg)
    keys = ("generator", "discriminator", "loss", "regularizer", "optim", "n_critic", "max_g_steps", "z_dim")
    recorder = PairingRecorder(**{key: getattr(built, key) for key in keys}, num_classes=built.num_classes)
    build_trainer(cfg).fit(recorder, datamodule=datamodule)
    return recorder


def test_the_g_step_scores_the_real_batch_and_labels_of_the_d_step_it_follows(tiny_config):
    module = fit_recorder(tiny_config("loss=rpgan", "model=cgan", "n_critic=2", "steps=3"))
    assert [d_step for d_step, *_ in module.g_inputs] == [2, 4, 6]
    for d_step, real, labels in module.g_inputs:
        d_real, d_labels = module.d_batches[d_step - 1]  # the n_critic-th D step's batch, not an earlier one
        assert torch.equal(real, d_real) and torch.equal(labels, d_labels)


@pytest.mark.parametrize("loss", ["bce", "hinge", "wasserstein", "lsgan", "minimax"])
def test_classic_losses_get_no_real_batch_in_the_g_step(tiny_config, loss):
    module = fit_recorder(tiny_config(f"loss={loss}", "steps=2"))
    assert [(real, labels) for _, real, labels in module.g_inputs] == [(None, None)] * 2


def test_the_relativistic_g_loss_is_softplus_of_real_minus_fake_logits(tiny_config):
    """One G update against the hand value from the same noise; fails if the real logits are dropped or zeroed."""
    module = build_module(tiny_config("loss=rpgan", "model=cgan", "model.num_classes=null"))
    module.num_classes = 2
    module.discriminator.eval()  # BN in eval mode: D's value on a batch does not depend on the call
    module.generator.eval()
    opt_g = torch.optim.SGD(module.generator.parameters(), lr=0.0)
    real, labels = torch.rand(8, 3, 32, 32) * 2 - 1, torch.arange(8) % 2
    module.manual_backward = lambda loss: loss.backward()
    torch.manual_seed(3)
    g_loss = module._generator_update(opt_g, 8, real, labels)
    torch.manual_seed(3)
    with torch.no_grad():
        fake = module.generator(module.sample_noise(8), labels)  # the fakes take the real batch's labels
        real_logits, fake_logits = module.discriminator(real, labels), module.discriminator(fake, labels)
    assert real_logits.abs().min() > 0  # so zeros in place of the real logits would change the value
    expected = F.softplus(real_logits - fake_logits).mean()
    torch.testing.assert_close(g_loss, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(expected, F.softplus(-fake_logits).mean())


def test_rpgan_trains_with_r1_r2_ema_diffaugment_and_n_critic(tiny_config):
    from gan_lab.train import train

    module = train(
        tiny_config(
            "loss=rpgan", "regularizer=[r1,r2]", "augment=diffaugment", "ema.decay=0.9", "n_critic=2",
            "model=cgan_projection", "model.num_classes=null", "steps=3",
        )
    )  # fmt: skip
    assert isinstance(module.loss, RelativisticPairingLoss) and module.g_steps == 3
    assert all(torch.isfinite(p).all() for p in module.parameters())
