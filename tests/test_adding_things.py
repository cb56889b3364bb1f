"""The extension table (README's "Adding things", in full in docs/extending.md): a researcher's own loss,
regularizer, normalization, GAN family, dataset and metric, each one code file + one YAML in their own package
(tests/fixtures/my_lab, its YAMLs in my_lab/conf), train together, resume exactly and are evaluated, with no file
of gan_lab edited."""

import csv
import math
from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from gan_lab.evaluate import evaluate
from gan_lab.train import train
from gan_lab.utils.config import compose_config

FIXTURES = Path(__file__).parent / "fixtures"
TRUST = "checkpoint.trusted_packages=[gan_lab,torch,my_lab]"
OWN = [  # one choice of each from my_lab/conf
    f"hydra.searchpath=[file://{(FIXTURES / 'my_lab' / 'conf').as_posix()}]",
    "model=mlp", "loss=smoothed_bce", "regularizer=gp0", "normalization=weight", "dataset=npz", "metrics=with_mfd",
]  # fmt: skip
TINY = [
    "model.width=32", "dataset.batch_size=8", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "trainer.log_every_n_steps=1", "metrics.every=2",
    "metrics.every_unit=step", "metrics.num_fake=16", "metrics.kid=false", TRUST,
]  # fmt: skip
METRIC = "val/mfd16_train32"  # the own metric's name: 16 samples against the training images at 32²


@pytest.fixture
def own_setup(tmp_path, monkeypatch, inception_weights):
    from my_lab.data import write_example  # noqa: PLC0415  (importable once the fixture path is on sys.path)

    write_example(tmp_path / "images.npz")
    return [f"paths.data_dir={tmp_path}", f"metrics.inception_weights={inception_weights}"]


@pytest.fixture(autouse=True)
def my_lab_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))


def test_a_researchers_own_pieces_train_resume_and_evaluate(tmp_path, own_setup):
    overrides = [*OWN, *TINY, *own_setup]
    straight = train(compose_config([*overrides, "steps=4"], output_dir=tmp_path / "straight"))

    # Each piece is the researcher's own, built from their YAML.
    assert type(straight.generator).__module__ == "my_lab.family"
    assert type(straight.loss).__name__ == "SmoothedLabelsLoss" and straight.loss.real_target == 0.9
    assert type(straight.regularizer).__name__ == "ZeroCentredGP"
    linears = [m for m in straight.discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(type(m.parametrizations.weight[0]).__name__ == "_WeightNorm" for m in linears)
    assert not any(parametrize.is_parametrized(m) for m in straight.generator.modules())  # G: batch norm
    assert type(straight.trainer.datamodule).__name__ == "NpzDataModule"
    with open(tmp_path / "straight" / "metrics.csv") as f:
        values = [float(row[METRIC]) for row in csv.DictReader(f) if row.get(METRIC)]
    assert len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values)  # at G steps 2 and 4

    # Resumed half-way, the run ends with the same weights as the uninterrupted one.
    half = tmp_path / "half"
    train(compose_config([*overrides, "steps=2"], output_dir=half))
    resume = [f"resume={half}", "steps=4", TRUST]
    resumed = train(compose_config([*overrides, *resume], output_dir=half), overrides=resume)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    # The evaluate command scores the checkpoint with the own metric, against the own dataset.
    ckpt = half / "checkpoints" / "last.ckpt"
    report = evaluate(
        compose_config(
            [
                OWN[0],
                "metrics=with_mfd",
                f"ckpt={ckpt}",
                "metrics.num_fake=16",
                "metrics.kid=false",
                "metrics.fid=false",
                own_setup[1],
                TRUST,
                f"out={tmp_path / 'eval.json'}",
            ],
            config_name="evaluate",
        )  # fmt: skip
    )
    assert math.isfinite(report["metrics"]["mfd16_train32"]) and report["metrics"]["mfd16_train32"] > 0
