"""Every option conf/ offers composes, and every model x loss x normalization x regularizer trains.

The parameter lists come from the YAML files in conf/, so a new option is tested without editing this file.
"""

import csv
import itertools
import math
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from gan_lab.config import compose_config, config_choices
from gan_lab.train import build_module, train

MODELS, LOSSES = config_choices("model"), config_choices("loss")
NORMS, REGULARIZERS = config_choices("normalization"), config_choices("regularizer")


def test_conf_offers_the_documented_options():
    assert {"dcgan", "sndcgan"} <= set(MODELS)
    assert set(LOSSES) >= {"bce", "minimax", "wasserstein", "hinge", "lsgan"}
    assert set(NORMS) >= {"none", "batch", "spectral", "spectral_batch"}
    assert set(REGULARIZERS) >= {"none", "weight_clip", "gradient_penalty", "r1"}
    assert set(config_choices("scheduler")) >= {"none", "step", "cosine", "exponential", "linear"}
    assert set(config_choices("dataset")) >= {"cifar10", "lsun_church", "folder", "fake"}


@pytest.mark.parametrize(
    ("model", "loss", "norm", "regularizer"), list(itertools.product(MODELS, LOSSES, NORMS, REGULARIZERS))
)
def test_every_combination_trains(tiny_config, model, loss, norm, regularizer):
    cfg = tiny_config(
        f"model={model}", f"loss={loss}", f"normalization={norm}", f"regularizer={regularizer}", "steps=2"
    )
    module = train(cfg)
    assert module.g_steps == 2
    with open(Path(cfg.paths.output_dir) / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert all(math.isfinite(float(last[f"train/{k}"])) for k in ("d_loss", "g_loss", "d_penalty"))


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
        "gan_lab.losses.NonSaturatingLoss",
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


def test_resnet_preset_sets_n_critic_and_linear_decay(tmp_path):
    cfg = compose_config(["model=resnet"], output_dir=tmp_path)
    assert cfg.n_critic == 5 and cfg.scheduler._target_ == "torch.optim.lr_scheduler.LinearLR"
