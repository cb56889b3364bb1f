"""checkpoint.trusted_packages: a researcher's own generator (tests/fixtures/my_lab) trains, resumes, samples and
exports when its package is listed, and is refused, without running it, when it is not."""

import os
from pathlib import Path

import pytest
from conftest import TINY_RUN, run_module

from gan_lab.errors import ConfigError, GanLabError
from gan_lab.export import export_checkpoint
from gan_lab.run.checkpoint_io import load_generator, trusted_package_prefixes
from gan_lab.train import train
from gan_lab.utils.config import compose_config

FIXTURES = Path(__file__).parent / "fixtures"
OWN_GENERATOR = "model.generator._target_=my_lab.nets.MyGenerator"
TRUST = ["gan_lab", "torch", "my_lab"]


@pytest.fixture
def own_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    run = tmp_path / "run"
    train(compose_config([*TINY_RUN, OWN_GENERATOR, "steps=2"], output_dir=run))
    return run


def test_an_unlisted_package_is_refused_before_anything_is_built(own_run):
    with pytest.raises(GanLabError, match=r"my_lab\.nets\.MyGenerator.*checkpoint\.trusted_packages"):
        load_generator(own_run / "checkpoints" / "last.ckpt")


def test_a_listed_package_samples_exports_and_resumes(own_run, tmp_path):
    loaded = load_generator(own_run / "checkpoints" / "last.ckpt", trusted_packages=TRUST)
    assert type(loaded.generator).__module__ == "my_lab.nets" and loaded.g_steps == 2
    exported = export_checkpoint(own_run / "checkpoints" / "last.ckpt", tmp_path / "export", TRUST)
    assert (
        type(load_generator(exported["generator"], trusted_packages=TRUST).generator).__name__
        == "MyGenerator"
    )

    resume = [f"resume={own_run}", "steps=4"]
    with pytest.raises(GanLabError, match="checkpoint.trusted_packages"):
        train(compose_config([*TINY_RUN, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    resume.append("checkpoint.trusted_packages=[gan_lab,torch,my_lab]")
    resumed = train(compose_config([*TINY_RUN, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    assert resumed.g_steps == 4 and type(resumed.generator).__name__ == "MyGenerator"


@pytest.mark.slow  # ~13 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_the_sample_command_takes_the_list(own_run, tmp_path):
    env = {"PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")])}
    ckpt = f"ckpt={own_run / 'checkpoints' / 'last.ckpt'}"
    args = [ckpt, f"out_dir={tmp_path / 'out'}", "num_images=4", "grid_size=4", "interpolation.rows=1"]
    refused = run_module("gan_lab.sample", *args, cwd=tmp_path, **env)
    assert refused.returncode == 1 and "checkpoint.trusted_packages" in refused.stderr
    listed = run_module(
        "gan_lab.sample", *args, "checkpoint.trusted_packages=[gan_lab,torch,my_lab]", cwd=tmp_path, **env
    )
    assert listed.returncode == 0, listed.stderr
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 4


def test_package_names_are_checked():
    assert trusted_package_prefixes(["gan_lab", "torch", "my_lab", "lab.nets"]) == ("my_lab.", "lab.nets.")
    with pytest.raises(ConfigError, match="not a Python package name"):
        trusted_package_prefixes(["my-lab"])
