"""A metric of one's own (issue 13): one class (tests/fixtures/my_lab/metrics.py) + one metrics.extra entry is
registered, named, computed by the Evaluator and the in-loop callback on known features, and its direction is
honoured; clashes are one line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_CLI, run_module
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from gan_lab.errors import ConfigError
from gan_lab.metrics import (
    KINDS,
    LOGITS,
    POOL,
    Evaluator,
    MetricKind,
    MetricSettings,
    better,
    compute_metrics,
    higher_is_better,
    kind_of,
    metric_name,
    metric_names,
    register,
    settings_from_config,
)
from gan_lab.metrics import evaluator as evaluator_module
from gan_lab.metrics.registry import BUILT_IN

FIXTURES = Path(__file__).parent / "fixtures"
PACKAGE = Path(__file__).resolve().parents[1] / "gan_lab"
MFD = {"_target_": "my_lab.metrics.MeanFeatureDistance"}
MLS = {"_target_": "my_lab.metrics.MeanLogitSpread"}


@pytest.fixture
def my_lab(monkeypatch):
    """tests/fixtures importable as a researcher's package is (conftest forgets the kinds a test registers)."""
    monkeypatch.syspath_prepend(str(FIXTURES))


@dataclass
class LogitMeanGap(MetricKind):
    """sum |mean(fake logits) - mean(real logits)|: a kind that compares real *logits* (a second cached pass)."""

    prefix: str = "lmg"
    higher_is_better: bool = False
    description: str = "L1 distance between the mean Inception logits of fake and real images"
    features: str = LOGITS

    def compute(self, fake: Tensor, real: Tensor | None) -> float:
        return float((fake.mean(0) - real.mean(0)).abs().sum())


# --- registration, names and directions ----------------------------------------------------------------------
def test_a_kind_of_ones_own_is_registered_named_and_its_direction_honoured(my_lab):
    settings = settings_from_config({"fid": True, "extra": {"mfd": MFD, "mls": MLS}})
    assert list(settings.extra) == ["mfd", "mls"] and KINDS["mfd"] is settings.extra["mfd"]
    assert metric_name("mfd", 5000, "train", 32) == "mfd5k_train32"
    assert metric_name("mls", 5000, "train", 32) == "mls5k_32"  # no reference: no split in the name
    assert kind_of("val/mfd5k_train32") == "mfd" and kind_of("val/mls5k_32") == "mls"
    assert kind_of("val/mls5k_32_std") is None  # a spread, as KID's
    assert not higher_is_better("val/mfd5k_train32") and higher_is_better("mls")
    assert better("val/mfd5k_train32", 1.0, 2.0) and not better("val/mfd5k_train32", 2.0, 1.0)
    assert better("val/mls5k_32", 2.0, 1.0) and not better("val/mls5k_32", 1.0, 2.0)
    names = metric_names(settings.resolved("cpu"), 32)
    assert (names["fid"], names["mfd"], names["mls"]) == ("fid500_train32", "mfd500_train32", "mls500_32")
    # the same config again (a second Evaluator, a resumed run in the same process) is no clash
    assert settings_from_config({"extra": {"mfd": MFD}}).extra["mfd"].prefix == "mfd"
    # a list is named by each kind's prefix; a null entry is off
    assert list(settings_from_config({"extra": [MLS]}).extra) == ["mls"]
    assert settings_from_config({"extra": {"mfd": None}}).extra == {}


def test_the_built_in_kinds_are_unchanged_without_extra():
    assert BUILT_IN == ("fid", "kid", "isc", "precision", "recall", "density", "coverage")
    assert tuple(KINDS)[: len(BUILT_IN)] == BUILT_IN  # other tests of this process may have registered more
    assert settings_from_config({"fid": True}).extra == {}
    assert [higher_is_better(k) for k in BUILT_IN] == [False, False, True, True, True, True, True]
    assert [KINDS[k].prefix for k in BUILT_IN] == [
        "fid",
        "kid",
        "is",
        "precision",
        "recall",
        "density",
        "coverage",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"fid": MFD}, r"metrics\.extra\.fid clashes with the built-in metric kind 'fid'"),
        (
            {"mine": {**MFD, "prefix": "is"}},
            r"prefix 'is' is already the prefix of the built-in metric kind 'isc'",
        ),
        (
            {"mfd": MFD, "other": MFD},
            r"metrics\.extra\.other: prefix 'mfd' is already the prefix of .* 'mfd'",
        ),
        (
            {"mfd": {**MFD, "higher_is_better": True}},
            r"clashes with the metric kind 'mfd' already registered",
        ),
        ({"mine": {**MFD, "prefix": "mfd2"}}, r"prefix 'mfd2' must be lowercase .* not ending in a digit"),
        ({"num_fake": {**MFD, "prefix": "nf"}}, r"'num_fake' is a field of the results"),
        (
            {"mine": {"_target_": "my_lab.nowhere.Metric"}},
            r"cannot import my_lab\.nowhere\.Metric; .*importable",
        ),
        ({"mine": {**MFD, "colour": 1}}, r"cannot build my_lab\.metrics\.MeanFeatureDistance: .*colour"),
        (
            {"mine": {"_target_": "collections.OrderedDict"}},
            r"collections\.OrderedDict is not a subclass of gan_lab\.metrics\.MetricKind",
        ),
        ({"mine": {"prefix": "x"}}, r"metrics\.extra\.mine needs a _target_"),
        ({"mine": {"_target_": "os.system", "command": "touch pwned"}}, r"os\.system is not a subclass of"),
    ],
)
def test_a_bad_or_clashing_kind_is_one_config_error_line(my_lab, extra, message):
    settings_from_config({"extra": {"mfd": MFD}})  # registered earlier in this process
    with pytest.raises(ConfigError, match=message) as err:
        settings_from_config({"extra": extra})
    assert "\n" not in str(err.value)
    assert "mfd" in KINDS and "fid" in KINDS and KINDS["fid"].prefix == "fid"  # nothing was replaced


def test_a_kind_without_compute_is_refused():
    plain = MetricKind(prefix="plain", higher_is_better=True, description="no compute")
    with pytest.raises(ConfigError, match="does not define compute"):
        register("plain", plain)
    assert "plain" not in KINDS


def test_directions_are_only_declared_in_the_registry():
    """The registry is the one place that knows which way is better: no other module states a direction."""
    declaring = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if any(f"higher_is_better{s}" in p.read_text() for s in ("=True", "=False", ": bool ="))
    }
    assert declaring == {"metrics/registry.py"}


# --- computed on known features --------------------------------------------------------------------------------
def test_compute_metrics_gives_the_known_answer_of_a_kind_of_ones_own(my_lab):
    settings = settings_from_config({"fid": False, "kid": False, "extra": {"mfd": MFD, "mls": MLS}})
    fake = {POOL: torch.tensor([[1.0, 2.0], [3.0, 4.0]]), LOGITS: torch.tensor([[0.0, 5.0], [1.0, -1.0]])}
    real = {POOL: torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.0, 1.0]])}
    results = compute_metrics(fake, real, settings)
    # mean fake (2, 3), mean real (0, 1): 2² + 2² = 8; largest logits 5 and 1: mean 3, std (Bessel) 2√2
    assert results == pytest.approx({"mfd": 8.0, "mls": 3.0, "mls_std": 2 * math.sqrt(2)})


class ChannelMeans(nn.Module):
    """A stand-in for Inception: pool features = the mean pixel of each channel, logits = (means, -means)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        self.calls += 1
        means = images.float().mean(dim=(2, 3))
        return means, torch.cat([means, -means], dim=1)


class ConstantReference:
    """A datamodule whose reference split is six 8x8 images of value 100."""

    resolution = 8
    num_workers = 0

    def native_resolution(self) -> int:
        return 8

    def reference_dataset(self, split: str, resolution: int) -> TensorDataset:
        return TensorDataset(torch.full((6, 3, 8, 8), 100, dtype=torch.uint8))


def known_evaluator(monkeypatch, tmp_path, **extra_settings) -> tuple[Evaluator, ChannelMeans]:
    network = ChannelMeans()
    monkeypatch.setattr(evaluator_module, "build_inception", lambda weights, device: network)
    monkeypatch.delenv("GAN_LAB_INCEPTION_WEIGHTS", raising=False)
    settings = MetricSettings(
        fid=False, kid=False, num_fake=4, num_real=6, batch_size=3, cache_dir=str(tmp_path), **extra_settings
    )
    return Evaluator(settings, ConstantReference(), {"_target_": "constant", "value": 100}, "cpu"), network


# four generated images of value 10, 20, 30 and 40, in two batches
FAKE = [
    torch.tensor(pair, dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 3, 8, 8) for pair in ((10, 20), (30, 40))
]


def test_evaluator_scores_kinds_of_ones_own_with_the_known_answer(my_lab, monkeypatch, tmp_path):
    from my_lab.metrics import MeanFeatureDistance, MeanLogitSpread

    kinds = {"mfd": MeanFeatureDistance(), "mls": MeanLogitSpread(), "lmg": LogitMeanGap()}
    evaluator, network = known_evaluator(monkeypatch, tmp_path, extra=kinds)
    results = evaluator.score(evaluator.fake_features(FAKE))
    # pool: fake mean 25 per channel, real 100: 3 x 75²; largest logit of each image is its value: mean 25, std
    # sqrt(500/3); logits (25, 25, 25, -25, -25, -25) against (100, ..., -100, ...): 6 x 75
    named = evaluator.named(results)
    assert named == pytest.approx(
        {"mfd4_train8": 3 * 75.0**2, "mls4_8": 25.0, "mls4_8_std": math.sqrt(500 / 3), "lmg4_train8": 450.0}
    )
    assert (
        results["num_real"] == 6 and network.calls == 2 + 2
    )  # fake: 2 batches; reference: one pass, 2 batches
    assert evaluator.protocol()["extra"]["mfd"] == {
        "class": "my_lab.metrics.MeanFeatureDistance",
        "description": MeanFeatureDistance.description,
        "features": "inception",
        "higher_is_better": False,
    }
    again, network = known_evaluator(monkeypatch, tmp_path, extra=kinds)
    assert again.score(again.fake_features(FAKE))["lmg"] == 450.0 and network.calls == 2  # reference cached


def test_a_kind_without_reference_needs_no_real_images(my_lab, monkeypatch, tmp_path):
    from my_lab.metrics import MeanLogitSpread

    evaluator, network = known_evaluator(monkeypatch, tmp_path, extra={"mls": MeanLogitSpread()})
    assert not evaluator.needs_reference()
    assert evaluator.named(evaluator.score(evaluator.fake_features(FAKE)))["mls4_8"] == 25.0
    assert network.calls == 2  # the fake images only


# --- the in-loop callback --------------------------------------------------------------------------------------
class Scripted:
    """An Evaluator stand-in returning the next scripted results."""

    def __init__(self, values: list[dict[str, float]]) -> None:
        self.values, self.names = iter(values), {"fid": "fid4_train8", "mls": "mls4_8", "mfd": "mfd4_train8"}

    def score(self, features: dict) -> dict[str, float]:
        return next(self.values)

    def named(self, results: dict[str, float]) -> dict[str, float]:
        return {self.names[k]: v for k, v in results.items()}


@pytest.mark.parametrize(("kind", "kept_at"), [("mls", [1, 2]), ("mfd", [1, 3]), ("fid", [1, 3])])
def test_the_best_checkpoint_follows_the_direction_of_the_chosen_kind(my_lab, tmp_path, kind, kept_at):
    from gan_lab.callbacks import InLoopMetrics

    settings_from_config({"extra": {"mfd": MFD, "mls": MLS}})
    callback = InLoopMetrics(
        MetricSettings(), {}, best_ckpt_path=str(tmp_path / "best.ckpt"), best_metric=kind
    )
    values = [3.0, 5.0, 2.0, math.nan]
    callback.evaluator = Scripted([{"fid": v, "mls": v, "mfd": v} for v in values])
    saved = []
    module = SimpleNamespace(g_steps=0, log=lambda *args, **kwargs: None)
    trainer = SimpleNamespace(
        loggers=[],
        current_epoch=0,
        is_global_zero=False,
        save_checkpoint=lambda path: saved.append(module.g_steps),
    )
    callback._gathered_features = lambda trainer, module: {}
    for step in range(1, 5):
        module.g_steps = step
        callback.evaluate(trainer, module)
    assert saved == kept_at and callback.best_value == values[kept_at[-1] - 1]
    state = callback.state_dict()
    assert state["best_metric"] == kind and state["best_fid"] == (2.0 if kind == "fid" else math.inf)
    resumed = InLoopMetrics(MetricSettings(), {}, best_metric=kind)
    resumed.load_state_dict(state)
    assert resumed.best_value == callback.best_value


def test_a_checkpoint_of_before_best_metric_resumes_its_best_fid():
    from gan_lab.callbacks import InLoopMetrics

    callback = InLoopMetrics(MetricSettings(), {})
    callback.load_state_dict({"history": [], "best_fid": 12.5})
    assert callback.best_value == 12.5 and callback.best_fid == 12.5


def test_in_loop_metrics_log_a_kind_of_ones_own_by_its_registered_name(
    my_lab, tiny_config, monkeypatch, tmp_path
):
    from gan_lab.callbacks import InLoopMetrics
    from gan_lab.train import train

    monkeypatch.setattr(evaluator_module, "build_inception", lambda weights, device: ChannelMeans())
    monkeypatch.delenv("GAN_LAB_INCEPTION_WEIGHTS", raising=False)
    overrides = [
        "metrics=fid", "metrics.num_fake=8", "metrics.kid=false", "metrics.every=1", "metrics.every_unit=step",
        f"metrics.cache_dir={tmp_path / 'cache'}", "+metrics.extra.mfd._target_=my_lab.metrics.MeanFeatureDistance",
    ]  # fmt: skip
    module = train(tiny_config("steps=2", *overrides))
    (callback,) = [c for c in module.trainer.callbacks if isinstance(c, InLoopMetrics)]
    assert [sorted(k for k in h if k.startswith("val/")) for h in callback.history] == [
        ["val/fid8_train32", "val/mfd8_train32"]
    ] * 2
    assert all(h["val/mfd8_train32"] >= 0 for h in callback.history)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert "val/mfd8_train32" in rows[0].split(",")


# --- the evaluate command, with the metric's YAML in the researcher's own config dir -------------------------
@pytest.mark.shared
@pytest.mark.slow  # ~10 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_evaluate_cli_takes_a_metric_from_the_researchers_config_dir(
    tmp_path, inception_weights, tiny_image_folder
):
    own = tmp_path / "my_conf" / "metrics"
    own.mkdir(parents=True)
    (own / "mfd.yaml").write_text(
        "defaults:\n  - fid\n  - _self_\n\nextra:\n  mfd:\n    _target_: my_lab.metrics.MeanFeatureDistance\n"
    )
    out = tmp_path / "eval.json"
    args = [
        f"fake_dir={tiny_image_folder}", "dataset=folder", f"dataset.root={tiny_image_folder}",
        "dataset.resolution=32", "dataset.num_workers=0", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]",
        "metrics=mfd", "metrics.num_fake=4", "metrics.resolution=32", "metrics.kid=false", f"metrics.inception_weights={inception_weights}",
        f"metrics.cache_dir={tmp_path / 'cache'}", f"out={out}",
    ]  # fmt: skip
    done = run_module("gan_lab.evaluate", *args, cwd=tmp_path, PYTHONPATH=str(FIXTURES))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["names"]["mfd"] == "mfd4_train32" and set(report["metrics"]) == {
        "fid4_train32",
        "mfd4_train32",
    }
    assert (
        report["metrics"]["mfd4_train32"] == report["mfd"]
        and math.isfinite(report["mfd"])
        and report["mfd"] >= 0
    )
    assert report["protocol"]["extra"]["mfd"]["higher_is_better"] is False


def test_evaluate_cli_clash_is_one_line(tmp_path):
    done = run_module(
        "gan_lab.evaluate", f"fake_dir={tmp_path}", "+metrics.extra.fid._target_=my_lab.metrics.MeanFeatureDistance",
        cwd=tmp_path, PYTHONPATH=str(FIXTURES),
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "gan_lab: error: metrics.extra.fid clashes with the built-in metric kind 'fid'; give your kind another name"
    )


def test_train_cli_names_no_metric_it_cannot_build(tmp_path):
    done = run_module(
        "gan_lab.train", *TINY_CLI, "metrics=fid", "+metrics.extra.mine._target_=my_lab.nowhere.Metric",
        "steps=1", cwd=tmp_path, PYTHONPATH=str(FIXTURES),
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "metrics.extra.mine: cannot import my_lab.nowhere.Metric" in done.stderr
