"""Every study preset in conf/experiment/ runs, arm by arm, with a tiny budget on fake data.

The arms come from each preset's own `hydra.sweeper.params`, so a new preset or arm is tested for free.
"""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gan_lab.train import train
from gan_lab.utils.config import CONF_DIR, config_choices

TINY = ["dataset.resolution=32", "metrics=none"]


def arms(experiment: str) -> list[list[str]]:
    """The override lists of every job `-m experiment=NAME` launches."""
    params = (
        OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml").get("hydra", {}).get("sweeper", {})
    )
    params = params.get("params", {}) if params else {}
    choices = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(combo) for combo in itertools.product(*choices)]


def test_every_study_has_a_preset():
    studies = {
        "sndcgan_lr_sweep",
        "sn_study",
        "dcgan_lsun_church128",
        "dcgan_vs_sagan",
        "cgan_study",
        "modern_study",
    }
    assert studies <= set(config_choices("experiment"))
    assert len(arms("sndcgan_lr_sweep")) == 3 and len(arms("sn_study")) == 5 and len(arms("cgan_study")) == 24
    assert len(arms("modern_study")) == 6


@pytest.mark.parametrize(
    ("experiment", "arm"), [(e, a) for e in config_choices("experiment") for a in arms(e)], ids=str
)
def test_every_arm_trains(tiny_config, experiment, arm):
    r3gan = ["model.channels_per_group=4"] * any(
        "r3gan" in override for override in arm
    )  # width 4 x 2 = 8 channels
    cfg = tiny_config(f"experiment={experiment}", *arm, *TINY, *r3gan, "steps=2")
    if cfg.dataset.get("max_images"):  # a small-data arm: a subset of the 32 fake images
        cfg.dataset.max_images = 16
    for override in arm:  # the arm's own settings survive the tiny-run overrides
        key, value = override.split("=", 1)
        if key == "optim.lr":
            assert cfg.optim.lr == float(value)
    assert train(cfg).g_steps == 2


def test_study_settings_are_in_the_presets(tmp_path):
    from gan_lab.utils.config import compose_config

    lr = compose_config(["experiment=sndcgan_lr_sweep"], output_dir=tmp_path)
    assert (lr.dataset.resolution, lr.dataset.batch_size, list(lr.optim.betas)) == (64, 128, [0.5, 0.999])
    assert (
        lr.trainer.max_epochs == 100 and lr.metrics.resolution == "native"
    )  # the study's budget, papers' 32²
    assert lr.normalization.discriminator == "spectral_batch" and lr.loss._target_.endswith(
        "NonSaturatingLoss"
    )
    sn = compose_config(["experiment=sn_study", "variant=sn_study/wgan_sn"], output_dir=tmp_path)
    assert (sn.metrics.isc, sn.metrics.num_fake, sn.metrics.isc_splits) == (True, 1024, 5)
    assert list(sn.optim.betas) == [0.0, 0.999] and sn.normalization.discriminator == "spectral"
    sagan = compose_config(["experiment=dcgan_vs_sagan", "variant=dcgan_vs_sagan/sagan"], output_dir=tmp_path)
    assert (sagan.optim.lr_d, sagan.optim.lr_g, list(sagan.optim.betas)) == (4e-4, 1e-4, [0.0, 0.9])
    assert sagan.normalization.generator == "spectral_batch"
    church = compose_config(["experiment=dcgan_lsun_church128"], output_dir=tmp_path)
    assert church.dataset.resolution == 128 and church.callbacks.samples.interpolation_rows > 0
    assert church.trainer.max_epochs == 100


def test_multirun_of_a_study_runs_every_arm(tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [
        "experiment=sndcgan_lr_sweep",
        "dataset=fake",
        "dataset.num_samples=16",
        "dataset.batch_size=8",
        "model.width=4",
        "steps=1",
        *TINY,
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "gan_lab.train", "-m", *overrides],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 3
    lrs = sorted(OmegaConf.load(job / "config.yaml").optim.lr for job in jobs)
    assert lrs == [1e-6, 1e-5, 1e-4]
    assert all(json.loads((job / "status.json").read_text())["status"] == "completed" for job in jobs)
    assert all((job / "checkpoints" / "last.ckpt").is_file() for job in jobs)
    assert Path(sweep / "multirun.yaml").is_file()


def test_metrics_none_wins_over_a_presets_metric_settings(tmp_path):
    from gan_lab.build import build_metrics_callback
    from gan_lab.utils.config import compose_config

    assert (
        build_metrics_callback(compose_config(["experiment=sn_study", "metrics=none"], output_dir=tmp_path))
        is None
    )
    on = build_metrics_callback(compose_config(["experiment=sn_study"], output_dir=tmp_path))
    assert on is not None and on.settings.isc and not on.settings.fid


def test_a_failing_job_lets_the_others_run_and_fails_the_sweep(tmp_path):
    from conftest import TINY_CLI, run_module

    sweep = tmp_path / "sweep"
    done = run_module(
        "gan_lab.train",
        "-m",
        "optim.lr=1e-4,-1,2e-4",
        *TINY_CLI,
        "steps=2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("gan_lab: error:")]
    assert len(errors) == 1 and "optim.lr" in errors[0], done.stderr[-2000:]
    statuses = [json.loads((sweep / str(n) / "status.json").read_text())["status"] for n in range(3)]
    assert statuses == ["completed", "failed", "completed"]
    assert (sweep / "2" / "checkpoints" / "last.ckpt").is_file()  # the job after the failure ran whole
