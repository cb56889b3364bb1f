"""The jobs of a Hydra multirun as gan_lab wrote them: overrides, status, metric series and metrics of their own;
which override keys vary, which columns are metrics and which value is a metric's best."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gan_lab.errors import GanLabError, one_line
from gan_lab.legacy import OLD_IS_COLUMN
from gan_lab.metrics.registry import higher_is_better, kind_of, register_extra
from gan_lab.run.checkpoint_io import trusted_package_prefixes
from gan_lab.run.paths import RunDir
from gan_lab.run.status import read_status

HINT = "pass the directory Hydra printed for the multirun, e.g. multirun/2026-01-01/12-00-00"
PREFERRED_KINDS = ("fid", "kid", "isc")  # the metric plotted when --metric is not given
# Where the classes of a run config's metrics.extra may come from, besides the packages of --trusted-packages.
METRIC_TARGETS = "gan_lab.metrics."

Points = list[tuple[int, float]]  # (generator step, value), sorted by step


@dataclass
class Job:
    """One job directory: its overrides {key: value}, status file, and metrics.csv as {column: points}."""

    name: str
    overrides: dict[str, str]
    status: str = "unknown"
    error: str = ""
    g_steps: int | None = None
    wall_time_s: float | None = None
    series: dict[str, Points] = field(default_factory=dict)
    extra: Any = None  # metrics.extra of its config.yaml: the metric kinds of its own, as configured


def number(cell: object) -> float | None:
    """A CSV cell as a float, or None when it is empty or not a number."""
    try:
        return float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # an empty cell of a sparse row, or a half-written last line


def read_overrides(path: Path) -> dict[str, str]:
    """{key: value} from .hydra/overrides.yaml ('+optim.lr=1e-4' -> {'optim.lr': '1e-4'}); {} if unreadable."""
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    pairs = (str(item).partition("=") for item in items)
    return {key.lstrip("+"): value for key, _, value in pairs}


def read_series(path: Path) -> dict[str, Points]:
    """{column: [(step, value), ...]} from a CSVLogger metrics.csv, skipping the empty cells of sparse rows."""
    series: dict[str, Points] = {}
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return series
    for row in rows:
        step = number(row.get("step"))
        for column, cell in row.items():
            value = number(cell)
            if step is not None and value is not None and column not in (None, "step", "epoch"):
                series.setdefault(column, []).append((int(step), value))
    for points in series.values():
        points.sort(key=lambda p: p[0])  # stable: a resumed run's repeated steps keep their file order
    return series


def read_extra(path: Path) -> Any:
    """metrics.extra of a run's config.yaml (plain YAML, never built here), or None."""
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    metrics = config.get("metrics") if isinstance(config, dict) else None
    return metrics.get("extra") if isinstance(metrics, dict) else None


def load_job(path: Path) -> Job:
    """A Job from its directory; missing or half-written files leave the fields empty."""
    run = RunDir(path)
    status = read_status(run)  # {}: killed before it was written, or read while being rewritten
    series = read_series(run.metrics)
    steps = status.get("g_steps", max((p[-1][0] for p in series.values()), default=None))
    return Job(
        name=path.name,
        overrides=read_overrides(run.overrides),
        status=status.get("status", "unknown"),
        error=str(status.get("error", "")),
        g_steps=steps,
        # a running job's status file was written at its start, so its wall time says nothing yet
        wall_time_s=status.get("wall_time_s") if status.get("status") != "running" else None,
        series=series,
        extra=read_extra(run.config_file),
    )


def load_jobs(sweep: Path) -> list[Job]:
    """Every job of a sweep directory (numbered subdirectories, or any with overrides/status), by number."""
    if not sweep.is_dir():
        raise GanLabError(f"{sweep} is not a directory; {HINT}")
    dirs = [
        d
        for d in sweep.iterdir()
        if d.is_dir() and (d.name.isdigit() or RunDir(d).overrides.is_file() or RunDir(d).status.is_file())
    ]
    if not dirs:
        single = " (it is one run's directory)" if RunDir(sweep).hydra.is_dir() else ""
        raise GanLabError(f"{sweep} has no job directories{single}; {HINT}")
    dirs.sort(key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name))
    return [load_job(d) for d in dirs]


def varying_override_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job, in command-line order."""
    known = [j for j in jobs if j.overrides]  # a job killed before Hydra wrote its overrides tells nothing
    keys = dict.fromkeys(k for j in known for k in j.overrides)
    return [k for k in keys if len({j.overrides.get(k) for j in known}) > 1]


def _targets(node: Any) -> list[str]:
    """Every `_target_` in a plain config."""
    if isinstance(node, dict):
        own = [str(node["_target_"])] if "_target_" in node else []
        return own + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, list):
        return [t for value in node for t in _targets(value)]
    return []


def learn_metric_kinds(jobs: list[Job], trusted_packages: Sequence[str] | None = None) -> list[str]:
    """Register the metric kinds of each job's metrics.extra whose classes are trusted; a note per refusal.

    Trusted: gan_lab.metrics.* and the packages given (as checkpoint.trusted_packages, never read from the
    run's own files, which must not choose what code runs).
    """
    prefixes = (METRIC_TARGETS, *trusted_package_prefixes(trusted_packages))
    problems: dict[str, list[str]] = {}  # {reason: job names}: a sweep's jobs mostly share one config
    for job in jobs:
        if not job.extra:
            continue
        untrusted = [t for t in _targets(job.extra) if not t.startswith(prefixes)]
        if untrusted:
            reason = (
                f"its metrics.extra names {', '.join(dict.fromkeys(untrusted))}, outside the trusted packages; "
                "to read those metrics, pass --trusted-packages PACKAGE"
            )
        else:
            try:
                register_extra(job.extra)
                continue
            except GanLabError as err:
                reason = one_line(err)
        problems.setdefault(reason, []).append(job.name)
    return [f"job {', '.join(names)}: {reason}" for reason, names in problems.items()]


def unknown_metric_columns(jobs: list[Job]) -> list[str]:
    """Logged val/ columns that are no metric kind this process knows (a *_std spread follows its metric)."""
    columns = {c for j in jobs for c in j.series if c.startswith("val/") and not c.endswith("_std")}
    return sorted(c for c in columns if metric_kind(c) is None)


def metric_kind(column: str) -> str | None:
    """The registry's kind of a column ('val/fid5k_train32' -> 'fid'); None for *_std spreads and non-metrics."""
    return "isc" if OLD_IS_COLUMN.fullmatch(column) else kind_of(column)


def maximize(metric: str) -> bool:
    """Whether higher is better for this metric column (IS, precision, ...), as the registry says."""
    return higher_is_better(metric_kind(metric) or metric)  # not a metric: the registry's KeyError names it


def metric_columns(jobs: list[Job]) -> list[str]:
    """The in-loop metrics any job logged, e.g. val/fid5k_train32 (the *_std columns are spreads, not metrics)."""
    return sorted({c for j in jobs for c in j.series if c.startswith("val/") and metric_kind(c)})


def pick_metric(metrics: list[str], wanted: str | None) -> str | None:
    """The metric to plot: the one asked for, else the first FID, KID, IS, other metric; None if none logged."""
    if wanted:
        wanted = wanted if wanted.startswith("val/") else f"val/{wanted}"
        if wanted not in metrics:
            logged = ", ".join(metrics) or "none (was the sweep run with metrics=none?)"
            raise GanLabError(f"--metric {wanted} was not logged by any job; logged: {logged}")
        return wanted
    preferred = (m for kind in PREFERRED_KINDS for m in metrics if metric_kind(m) == kind)
    return next(preferred, metrics[0] if metrics else None)


def best_point(points: Points, metric: str) -> tuple[int, float] | None:
    """(step, value) of the best finite value (max for IS, min for FID and KID); the earliest on ties."""
    finite = [p for p in points if math.isfinite(p[1])]
    return (max if maximize(metric) else min)(finite, key=lambda p: p[1]) if finite else None
