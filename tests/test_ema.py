"""Generator EMA: the closed-form average of parameters, buffers copied, used for samples, kept in checkpoints."""

import pytest
import torch
from torch import nn

from gan_lab.core.losses import NonSaturatingLoss
from gan_lab.core.module import GANModule
from gan_lab.errors import ConfigError
from gan_lab.run.checkpoint_io import load_generator
from gan_lab.train import train


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.register_buffer("stat", torch.zeros(3))

    def forward(self, z, labels=None):
        return z[:, :3] * self.weight


def module_with_ema(decay: float, start: int) -> GANModule:
    return GANModule(Tiny(), Tiny(), NonSaturatingLoss(), ema_decay=decay, ema_start_step=start, z_dim=3)


@pytest.mark.parametrize("start", [0, 2])
def test_ema_matches_closed_form(start):
    decay, values = 0.9, [1.0, 2.0, 4.0, 8.0, 16.0]
    module = module_with_ema(decay, start)
    for step, value in enumerate(values, start=1):
        with torch.no_grad():
            module.generator.weight.fill_(value)
            module.generator.stat.fill_(-value)
        module.g_steps = step
        module._update_ema()
    # until `start` the average copies G; then ema <- decay * ema + (1 - decay) * w
    expected = values[start - 1] if start else values[0]
    for value in values[max(start, 1) :]:
        expected = decay * expected + (1 - decay) * value
    ema = module.generator_ema.module
    torch.testing.assert_close(ema.weight, torch.full((3,), expected))
    torch.testing.assert_close(ema.stat, torch.full((3,), -values[-1]))  # buffers copied, not averaged


def test_ema_rampup_caps_the_decay_by_the_steps_seen():
    """StyleGAN2-ADA's ramp-up: beta_t = min(decay, 0.5 ** (1 / (rampup * t))) at generator step t."""
    decay, rampup, values = 0.9, 0.5, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    module = GANModule(Tiny(), Tiny(), NonSaturatingLoss(), ema_decay=decay, ema_rampup=rampup, z_dim=3)
    expected = values[0]  # the first step copies G
    for step, value in enumerate(values, start=1):
        with torch.no_grad():
            module.generator.weight.fill_(value)
        module.g_steps = step
        module._update_ema()
        if step > 1:
            beta = min(
                decay, 0.5 ** (1 / (rampup * step))
            )  # 0.5, 0.63, 0.71, 0.76, 0.79, 0.82, then 0.9 caps
            expected = beta * expected + (1 - beta) * value
    torch.testing.assert_close(module.generator_ema.module.weight, torch.full((3,), expected))
    constant = module_with_ema(decay, 0)  # without the ramp-up the average stays nearer the first weights
    for step, value in enumerate(values, start=1):
        with torch.no_grad():
            constant.generator.weight.fill_(value)
        constant.g_steps = step
        constant._update_ema()
    assert constant.generator_ema.module.weight[0] < expected < values[-1]
    with pytest.raises(ConfigError, match="ema.rampup"):
        GANModule(Tiny(), Tiny(), NonSaturatingLoss(), ema_decay=decay, ema_rampup=0.0, z_dim=3)


def test_ema_decay_is_checked():
    with pytest.raises(ConfigError, match="ema.decay"):
        module_with_ema(1.5, 0)


def test_ema_generator_samples_and_is_saved(tiny_config, tmp_path):
    module = train(tiny_config("steps=4", "ema.decay=0.5", "normalization.generator=spectral_batch"))
    assert module.sampling_generator is module.generator_ema.module
    live = dict(module.generator.named_buffers())
    for name, buffer in module.generator_ema.module.named_buffers():  # incl. spectral-norm u, v and BN stats
        assert torch.equal(buffer, live[name]), name
    z = torch.randn(4, module.z_dim)
    loaded = load_generator(tmp_path / "run" / "checkpoints" / "last.ckpt")
    torch.testing.assert_close(loaded.generator(z), module.generate(z))  # the EMA weights were loaded
    assert not torch.allclose(module.generator.eval()(z), module.generate(z))


@pytest.mark.parametrize("start_step", [0, 1, 3])
def test_ema_update_equals_torchs_averaged_model_without_a_sync(start_step) -> None:
    """update_ema computes what AveragedModel.update_parameters does, step by step, n_averaged included."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from gan_lab.core.ema import build_ema, update_ema
    from gan_lab.nets.dcgan import DCGANGenerator

    torch.manual_seed(0)
    generator = DCGANGenerator(z_dim=8, resolution=32, width=4, norm="spectral_batch")
    ours = build_ema(generator, 0.9)
    reference = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=False)
    for g_steps in range(1, 7):
        with torch.no_grad():
            for p in generator.parameters():
                p.add_(torch.randn_like(p))
        generator(torch.randn(4, 8))  # moves BN statistics and spectral norm's vectors
        update_ema(ours, generator, g_steps, start_step)
        if g_steps <= start_step:
            reference.n_averaged.zero_()
        reference.update_parameters(generator)
        for (name, a), b in zip(ours.state_dict().items(), reference.state_dict().values(), strict=True):
            assert torch.equal(a, b), (g_steps, name)
