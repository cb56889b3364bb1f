"""A run's objective (its best in-loop metric) and Hydra's Optuna sweeper searching by it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CLI, TINY_RUN, run_module
from hydra import compose, initialize_config_dir

from gan_lab import objective
from gan_lab.callbacks import InLoopMetrics
from gan_lab.errors import ConfigError
from gan_lab.metrics import MetricSettings
from gan_lab.utils.config import CONF_DIR, compose_config

# In-loop FID on 8 generated vs 8 real images every 2 generator steps: Inception (and FID's 2048² matrix
# functions) on CPU are slow, so few evaluations.
TINY_METRICS = ["metrics=fid", "metrics.num_fake=8", "metrics.num_real=8", "metrics.every_unit=step",
                "metrics.every=2"]  # fmt: skip


def csv_column(path: Path, name: str) -> list[float]:
    with open(path) as f:
        return [float(row[name]) for row in csv.DictReader(f) if row.get(name)]


@pytest.fixture(scope="module")
def trained(inception_weights, tmp_path_factory):
    """A tiny run with two in-loop evaluations: (config, module)."""
    from gan_lab.train import train

    tmp = tmp_path_factory.mktemp("objective")
    overrides = [*TINY_RUN, *TINY_METRICS, "steps=4", f"metrics.inception_weights={inception_weights}",
                 f"metrics.cache_dir={tmp / 'cache'}"]  # fmt: skip
    cfg = compose_config(overrides, output_dir=tmp / "run")
    return cfg, train(cfg)


def test_run_returns_the_best_fid_it_logged(trained):
    from gan_lab.train import run_objective

    cfg, module = trained
    fids = csv_column(Path(cfg.paths.output_dir) / "metrics.csv", "val/fid8_train32")
    assert len(fids) == 2
    assert run_objective(cfg, module) == pytest.approx(min(fids))
    kids = csv_column(Path(cfg.paths.output_dir) / "metrics.csv", "val/kid8_train32")
    cfg.objective = "kid"
    assert run_objective(cfg, module) == pytest.approx(min(kids))
    cfg.objective = "val/fid8_train32"  # a full logged name, with or without val/
    assert run_objective(cfg, module) == pytest.approx(min(fids))
    cfg.objective = "fid5k_train32"  # another protocol than the run's: the worst value, and why
    value, why = objective.run_value(cfg.objective, module.trainer.callbacks)
    assert value == math.inf and "not logged (this run logged val/fid8_train32, val/kid8_train32)" in why


def metrics_with(history: list[dict[str, float]]) -> InLoopMetrics:
    callback = InLoopMetrics(MetricSettings(), {})
    callback.evaluator = object()  # as if set up
    callback.history = history
    return callback


def test_a_higher_is_better_objective_picks_the_max():
    history = [
        {"g_step": 2, "val/fid8_train32": 300.0, "val/is8_32": 2.0, "val/is8_32_std": 9.0},
        {"g_step": 4, "val/fid8_train32": 250.0, "val/is8_32": 3.5, "val/is8_32_std": 9.0},
        {"g_step": 6, "val/fid8_train32": 280.0, "val/is8_32": 3.0, "val/is8_32_std": 9.0},
    ]
    callbacks = [metrics_with(history)]
    assert objective.run_value(None, callbacks) == (250.0, None)
    assert objective.run_value("isc", callbacks) == (3.5, None)
    assert objective.run_value("is8_32", callbacks) == (3.5, None)
    assert objective.direction("isc") == "maximize" and objective.direction(None) == "minimize"
    assert objective.worst("isc") == -math.inf and objective.worst("kid") == math.inf


def test_no_metric_reports_the_worst_value_and_why():
    value, why = objective.run_value(None, [])
    assert value == math.inf and "no in-loop metrics (metrics=none" in why
    off = metrics_with([])
    off.evaluator = None
    assert "the Inception weights could not be had" in objective.run_value("isc", [off])[1]
    assert objective.run_value("isc", [off])[0] == -math.inf
    assert "no in-loop evaluation ran" in objective.run_value(None, [metrics_with([])])[1]
    nan = metrics_with([{"g_step": 2, "val/fid8_train32": math.nan}])
    assert objective.run_value(None, [nan]) == (
        math.inf,
        "every val/fid8_train32 value this run logged is NaN or infinite",
    )
    with pytest.raises(ConfigError, match="objective=fdi is not a metric gan_lab logs"):
        objective.resolve("fdi")


def search_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", [*overrides, "hydra/sweeper=optuna"], return_hydra_config=True)


def test_the_search_direction_comes_from_the_registry():
    cfg = search_config("metrics=fid", "metrics.isc=true", "objective=isc")
    objective.set_search_direction(cfg)
    assert cfg.hydra.sweeper.direction == "maximize"
    cfg = search_config("metrics=fid")
    objective.set_search_direction(cfg)
    assert getattr(cfg.hydra.sweeper.direction, "name", None) == "minimize"  # the sweeper's default, kept
    with pytest.raises(
        ConfigError, match="leave hydra.sweeper.direction out .* or set hydra.sweeper.direction=minimize"
    ):
        objective.set_search_direction(search_config("metrics=fid", "hydra.sweeper.direction=maximize"))
    with pytest.raises(ConfigError, match="metrics=none turns in-loop metrics off"):
        objective.set_search_direction(search_config("metrics=none"))
    with pytest.raises(ConfigError, match="metrics.isc=false"):
        objective.set_search_direction(search_config("metrics=fid", "objective=isc"))


def test_a_search_that_cannot_measure_its_objective_stops_at_once(tmp_path):
    result = run_module("gan_lab.train", "-m", "hydra/sweeper=optuna", *TINY_CLI, "optim.lr=choice(1e-4,2e-4)",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "gan_lab: error: a search optimizes the in-loop FID (objective=null), but metrics=none turns in-loop "
        "metrics off; use metrics=fid (in-loop FID/KID, Inception weights required)"
    )
    assert not (tmp_path / "sweep" / "0").exists()


@pytest.mark.slow
def test_optuna_search_goes_on_past_failed_trials(inception_weights, tmp_path):
    """The lr study searched by Optuna, four trials: one trains, one fails a config check, one raises inside
    torch (Adam's beta1 = 2); the search completes and picks the one that trained."""
    sweep = tmp_path / "sweep"
    result = run_module(
        "gan_lab.train", "-m", "experiment=sndcgan_lr_sweep", *TINY_CLI, "dataset.resolution=32", *TINY_METRICS,
        "steps=2", "metrics.kid=false",
        f"metrics.inception_weights={inception_weights}", f"metrics.cache_dir={tmp_path / 'cache'}",
        "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=4",
        "optim.lr=choice(2e-4,-1)", "optim.betas.0=choice(0.5,2.0)", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "optim.lr must be a number > 0, got -1; e.g. optim.lr=2e-4; this trial reports fid=inf"
        in result.stderr
    )
    assert (
        "Invalid beta parameter at index 0: 2.0; this trial reports fid=inf (the worst value)"
        in result.stderr
    )
    statuses = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        key = tuple(o for o in overrides if o.startswith(("optim.lr=", "optim.betas.0=")))
        statuses[key] = json.loads((job / "status.json").read_text())["status"]
        if statuses[key] == "completed":
            fid = min(csv_column(job / "metrics.csv", "val/fid8_train32"))
    assert sorted(statuses.values()) == ["completed", "failed", "failed", "failed"]
    assert statuses[("optim.lr=0.0002", "optim.betas.0=0.5")] == "completed"
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"] == {"optim.lr": 0.0002, "optim.betas.0": 0.5}
    assert best["best_value"] == pytest.approx(fid)
