"""Every option conf/ offers composes, and every model x loss x normalization x regularizer trains.

The parameter lists come from the YAML files in conf/, so a new option is tested without editing this file.
"""

import csv
import itertools
import json
import math
from copy import deepcopy
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from torch.nn.utils import parametrize

from gan_lab.build import build_module
from gan_lab.core.regularizers import Regularizer
from gan_lab.train import train
from gan_lab.utils.config import compose_config, config_choices

MODELS, LOSSES = config_choices("model"), config_choices("loss")
NORMS, REGULARIZERS = config_choices("normalization"), config_choices("regularizer")


def test_conf_offers_the_documented_options():
    assert {"dcgan", "sndcgan"} <= set(MODELS)
    assert set(LOSSES) >= {"bce", "minimax", "wasserstein", "hinge", "lsgan"}
    assert set(NORMS) >= {"none", "batch", "spectral", "spectral_batch"}
    assert set(REGULARIZERS) >= {"none", "weight_clip", "gradient_penalty", "r1"}
    assert set(config_choices("scheduler")) >= {"none", "step", "cosine", "exponential", "linear"}
    assert set(config_choices("dataset")) >= {"cifar10", "lsun_church", "folder", "fake"}


def _combinations() -> list:
    """Every model x loss x normalization x regularizer; CI runs them all (the ones marked slow: make test-slow).

    The default suite runs one case per (model, regularizer), with the loss (m + r) mod |losses| and the
    normalization (m + 2r + r // 2) mod |norms| (m, r: their indices; r3gan: none): every model meets every
    loss, regularizer and normalization, every loss every regularizer and normalization, and most regularizers
    every normalization (20 of 24 pairs; all in CI).
    """
    cases = []
    for (m, model), (r, regularizer), (k, loss) in itertools.product(
        enumerate(MODELS), enumerate(REGULARIZERS), enumerate(LOSSES)
    ):
        for n, norm in enumerate(NORMS):
            if model == "r3gan" and norm != "none":
                continue  # no normalization layers by design (tests/test_r3gan.py checks the refusal)
            chosen = k == (m + r) % len(LOSSES) and (
                norm == "none" if model == "r3gan" else n == (m + 2 * r + r // 2) % len(NORMS)
            )
            cases.append(
                pytest.param(model, loss, norm, regularizer, marks=() if chosen else (pytest.mark.slow,))
            )
    return cases


@pytest.mark.parametrize(("model", "loss", "norm", "regularizer"), _combinations())
def test_every_combination_trains(tiny_config, model, loss, norm, regularizer):
    overrides = [
        f"model={model}",
        f"loss={loss}",
        f"normalization={norm}",
        f"regularizer={regularizer}",
        "steps=2",
    ]
    if model == "r3gan":
        overrides.append("model.channels_per_group=4")  # TINY_RUN's width 4 x expansion 2 = 8 channels
    cfg = tiny_config(*overrides)
    module = train(cfg)
    assert module.g_steps == 2
    with open(Path(cfg.paths.output_dir) / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert all(math.isfinite(float(last[f"train/{k}"])) for k in ("d_loss", "g_loss", "d_penalty"))
    d_step_lowers_its_objective_and_the_regularizer_acts(build_module(cfg), loss, regularizer)


# --- one real D step on fixed data -------------------------------------------------------------------------------
# The step moves D's weights a fixed small distance along minus the gradient, so its change of the objective is
# first order whatever the loss's scale: the check is on the direction the loss and the penalty give, not on
# Adam, whose sign-like steps overshoot the kinks of a gradient penalty near zero input gradients. The objective
# is measured in float64 so that changes far below float32's resolution still count.
SEED = 7  # the noise of the fake batch and GP's interpolation weights, the same in every measurement and step


class NormalizedDescent(torch.optim.Optimizer):
    """Moves all parameters together a distance `distance` along minus their gradient."""

    def __init__(self, params, distance=1e-6):
        super().__init__(params, {"distance": distance})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            norm = torch.cat([p.grad.flatten() for p in params]).norm()
            for p in params:
                p.sub_(group["distance"] * p.grad / norm)


def d_step(module, real, labels):
    """The module's own D step, once, outside a Trainer (the Lightning hooks it calls become plain torch)."""
    module.toggle_optimizer = module.untoggle_optimizer = lambda optimizer: None
    module.manual_backward = lambda loss: loss.backward()
    module.log = lambda *args, **kwargs: None
    if not hasattr(module, "test_opt_d"):
        module.test_opt_d = NormalizedDescent(module.discriminator.parameters())
    torch.manual_seed(SEED)
    module._discriminator_step(module.test_opt_d, real, labels)


def freeze_spectral_norms(module):
    """Spectral norm's power iteration runs at every training forward and would change D between two
    measurements by more than a small step does; with its vectors fixed, D is a smooth function of its weights."""
    for layer in module.modules():
        if parametrize.is_parametrized(layer):
            layer.parametrizations.eval()


def d_objective(module, real, labels) -> tuple[float, float]:
    """D's loss plus its penalty, and the margin mean D(real) - mean D(fake), on the fixed batch; measured in
    float64 on a copy, so the module's state is untouched."""
    copy, real = deepcopy(module).double(), real.double()
    torch.manual_seed(SEED)  # the draws of d_step, in its order: the fake batch's noise, then GP's weights
    with torch.no_grad():
        fake = copy.generator(copy.sample_noise(real.shape[0]).double(), labels)
    d = copy.discriminator
    real_logits, fake_logits = d(real, labels), d(fake, labels)
    loss = copy.loss.d_loss(real_logits, fake_logits)
    margin = (real_logits.mean() - fake_logits.mean()).item()
    return (loss + copy.regularizer.penalty(d, real, fake, labels)).item(), margin


def d_gradients(module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.discriminator.parameters() if p.grad is not None])


def d_step_lowers_its_objective_and_the_regularizer_acts(module, loss, regularizer):
    """A D step on fixed data lowers D's loss + penalty and, unpenalized, widens D(real) - D(fake); clipping
    bounds every weight; a penalty changes the step."""
    real = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(8) % 2 if module.num_classes else None
    freeze_spectral_norms(module)
    if regularizer == "weight_clip":
        assert max(p.abs().max() for p in module.discriminator.parameters()) > module.regularizer.clip
        d_step(module, real, labels)  # clamps DCGAN's N(0, 0.02) initial weights: measure from there
        assert max(p.abs().max() for p in module.discriminator.parameters()) <= module.regularizer.clip
        if type(module.discriminator).__name__ == "R3GANDiscriminator":
            # every weight at most 0.01 through R3GAN's depth scores every image ~0: one step moves the
            # objective by ~1e-12 (2 -> 2 with hinge), below what a comparison can tell
            return
    before, margin_before = d_objective(module, real, labels)
    unregularized = deepcopy(module)
    d_step(module, real, labels)
    after, margin_after = d_objective(module, real, labels)
    assert after < before, f"one D step raised D's objective on fixed data: {before:.6g} -> {after:.6g}"
    if regularizer in ("none", "weight_clip") and loss != "lsgan":  # LSGAN pulls fakes up to its target 0
        assert margin_after > margin_before, (
            f"D(real) - D(fake) shrank: {margin_before:.6g} -> {margin_after:.6g}"
        )
    if regularizer in ("gradient_penalty", "r1", "r2"):  # r3gan's gamma 0.05 moves the gradients by ~2e-7
        unregularized.regularizer = Regularizer()
        d_step(unregularized, real, labels)
        gap = (d_gradients(module) - d_gradients(unregularized)).norm() / d_gradients(unregularized).norm()
        # Dropping the penalty from the backward gives a gap of exactly 0. R1 on an unnormalized D at
        # initialization is small (its input gradients are), down to a gap of ~2e-5 here.
        assert gap > 1e-6, f"the {regularizer} penalty did not change D's gradients"


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in ("scheduler", "optim", "dataset") for o in config_choices(g)]
)
def test_every_option_composes_and_builds(tmp_path, group, option):
    extra = ["dataset.root=" + str(tmp_path)] if option == "folder" else []
    cfg = compose_config([f"{group}={option}", *extra], output_dir=tmp_path)
    assert build_module(cfg) is not None


def test_default_job_is_sndcgan_bce_on_cifar10(tmp_path):
    cfg = compose_config([], output_dir=tmp_path)
    assert (cfg.model.name, cfg.loss._target_, cfg.dataset._target_) == (
        "sndcgan",
        "gan_lab.core.losses.NonSaturatingLoss",
        "gan_lab.data.CIFAR10DataModule",
    )
    assert cfg.normalization.discriminator == "spectral"


def _same_networks(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sndcgan_is_dcgan_with_spectral_norm(tmp_path):
    torch.manual_seed(0)
    sn = build_module(compose_config(["model=sndcgan"], output_dir=tmp_path))
    torch.manual_seed(0)
    dc = build_module(compose_config(["model=dcgan", "normalization=spectral"], output_dir=tmp_path))
    assert _same_networks(sn.discriminator, dc.discriminator) and _same_networks(sn.generator, dc.generator)
    torch.manual_seed(0)
    plain = build_module(compose_config(["model=dcgan"], output_dir=tmp_path))
    assert not _same_networks(sn.discriminator, plain.discriminator)  # keys differ: parametrized weights


def test_explicit_normalization_beats_the_model_preset(tmp_path):
    cfg = compose_config(["model=sndcgan", "normalization=batch"], output_dir=tmp_path)
    assert cfg.normalization.discriminator == "batch"


def test_unknown_choice_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["loss=nonexistent"], output_dir=tmp_path)
    assert "Available options in 'loss'" in str(err.value) and "hinge" in str(err.value)


@pytest.mark.parametrize("model", ["resnet", "sagan"])
def test_every_preset_default_yields_to_the_command_line(tmp_path, model):
    preset = compose_config([f"model={model}"], output_dir=tmp_path)
    assert preset.loss._target_.endswith("HingeLoss") and list(preset.optim.betas) == [0.0, 0.9]
    chosen = compose_config(
        [f"model={model}", "loss=bce", "n_critic=2", "optim.betas=[0.5,0.999]", "scheduler=none"],
        output_dir=tmp_path,
    )
    assert chosen.loss._target_.endswith("NonSaturatingLoss") and chosen.n_critic == 2
    assert list(chosen.optim.betas) == [0.5, 0.999] and not chosen.scheduler


def _leaves(node, prefix=""):
    """{dotted key: value} of every leaf of a plain container."""
    if isinstance(node, dict) and node:
        return {k: v for key, child in node.items() for k, v in _leaves(child, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


@pytest.mark.parametrize("model", MODELS)
def test_every_model_preset_is_one_shape_whose_defaults_yield(tmp_path, model):
    """Each conf/model/ preset is a global recipe: `model:` builds the nets, every other key it sets is a default.

    Naming the plain DCGAN's choices on the command line turns the preset's whole setting outside `model`
    back into DCGAN's: nothing a preset sets is out of the command line's reach.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from gan_lab.utils.config import CONF_DIR

    assert (CONF_DIR / "model" / f"{model}.yaml").read_text().startswith("# @package _global_\n")

    def composed(overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", [*overrides, f"paths.output_dir={tmp_path}"], return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        plain = OmegaConf.to_container(cfg, resolve=False)
        plain.pop("hydra")
        return plain, choices

    preset, preset_choices = composed([f"model={model}"])
    plain, plain_choices = composed(["model=dcgan"])
    assert preset["model"]["name"] == model
    groups = [
        g
        for g in ("normalization", "loss", "regularizer", "optim", "scheduler")
        if preset_choices[g] != plain_choices[g]
    ]
    back = [f"{g}={plain_choices[g]}" for g in groups]  # first the groups, then keys the preset sets itself
    regrouped, _ = composed([f"model={model}", *back])
    outside = {k: v for k, v in _leaves(plain).items() if not k.startswith("model.")}
    back += [f"{k}={json.dumps(v)}" for k, v in outside.items() if _leaves(regrouped).get(k) != v]
    # keys the preset adds to a group the plain choice leaves without them (model=r3gan's scheduler.eta_min)
    back += [f"~{k}" for k in _leaves(regrouped) if not k.startswith("model.") and k not in outside]
    undone, _ = composed([f"model={model}", *back])
    assert {k: v for k, v in undone.items() if k != "model"} == {
        k: v for k, v in plain.items() if k != "model"
    }


def test_resnet_preset_sets_n_critic_and_linear_decay(tmp_path):
    cfg = compose_config(["model=resnet"], output_dir=tmp_path)
    assert cfg.n_critic == 5 and cfg.scheduler._target_ == "torch.optim.lr_scheduler.LinearLR"
