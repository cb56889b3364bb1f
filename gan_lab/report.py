"""`python -m gan_lab.report DIR [--metric val/fid5k_train32]`: compare the jobs of a Hydra multirun.

Writes report.md / report.csv (one row per job) and plots into DIR; partial and partly failed sweeps are fine.
Plots: training_curves.png (losses, D accuracy, D logits of every job against generator steps) always; when an
in-loop metric was logged also fid_vs_steps.png, best_fid_vs_lr.png (lr swept) and loss_norm_heatmap.png (loss
and normalization swept). Which way a metric is better comes from gan_lab.metrics.registry.

A run's metrics of its own (metrics.extra in its config.yaml) are learnt from that config when their classes are
gan_lab's or in a package passed with --trusted-packages (building them runs their code); the columns of a kind
it cannot learn are left out with one line saying so.
"""

from __future__ import annotations

import argparse
import csv
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from gan_lab.cli import user_errors_as_one_line
from gan_lab.run.sweep import (
    Job,
    Points,
    best_point,
    learn_metric_kinds,
    load_jobs,
    maximize,
    metric_columns,
    number,
    pick_metric,
    unknown_metric_columns,
    varying_override_keys,
)

LR_KEYS = ("optim.lr", "optim.lr_g", "optim.lr_d")
D_ACCURACY = "train/d_accuracy"
ERROR_CHARS = 80  # failed jobs' errors in the markdown table; report.csv keeps them whole
FEW_POINTS = 50  # up to this many rows a job's line is also drawn as dots: a single row would draw nothing
# training_curves.png: {panel title: the train/ columns it overlays}; panels no job logged are left out
TRAINING_PANELS = {
    "D loss": ("train/d_loss",),
    "G loss": ("train/g_loss",),
    "D accuracy": (D_ACCURACY,),
    "mean D logit: real (solid), fake (dashed)": ("train/d_real", "train/d_fake"),
    "D penalty": ("train/d_penalty",),
    "sample diversity": ("train/diversity",),
}


def summarize(jobs: list[Job], metrics: list[str]) -> list[dict[str, object]]:
    """One row per job: every override, status, steps, wall time, final/best/best step per metric, D accuracy."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    rows = []
    for job in jobs:
        row: dict[str, object] = {"job": job.name, **{k: job.overrides.get(k, "") for k in keys}}
        row.update(status=job.status, error=job.error, g_steps=job.g_steps, wall_time_s=job.wall_time_s)
        for metric in metrics:
            points = job.series.get(metric, [])
            best = best_point(points, metric)
            row[f"final {metric}"] = points[-1][1] if points else None
            row[f"best {metric}"] = best[1] if best else None
            row[f"step of best {metric}"] = best[0] if best else None
        accuracy = job.series.get(D_ACCURACY)
        row[f"final {D_ACCURACY}"] = accuracy[-1][1] if accuracy else None
        rows.append(row)
    return rows


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, object]], swept: list[str], sweep: Path) -> str:
    """The report as markdown: a summary line and the table with only the swept overrides."""
    statuses = [str(r["status"]) for r in rows]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    values = [c for c in rows[0] if c.startswith(("final ", "best ", "step of best "))]
    columns = ["job", *swept, "status", "g_steps", "wall_time_s", *values]
    summary = f"{len(rows)} jobs: {counts}; swept: {', '.join(swept) or 'nothing'}"
    header = "| " + " | ".join(columns) + " |"
    lines = [f"# Sweep {sweep}", "", summary, "", header, "|---" * len(columns) + "|"]
    for row in rows:
        error = textwrap.shorten(str(row["error"]), ERROR_CHARS, placeholder=" …")
        wall = row["wall_time_s"]
        cells = {**row, "status": f"{row['status']}: {error}" if error else row["status"]}
        cells["wall_time_s"] = f"{wall:.1f}" if isinstance(wall, (int, float)) else wall  # not .4g: 1.2e+04 s
        lines.append("| " + " | ".join(_cell(cells[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_table(rows: list[dict[str, object]], path: Path) -> Path:
    """report.csv: every column, full precision, empty cells for missing values."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return path


def describe(job: Job, keys: list[str]) -> str:
    """'optim.lr=0.0001, loss=hinge': the job's values of the given override keys."""
    return ", ".join(f"{k}={job.overrides.get(k, '')}" for k in keys)


def job_label(job: Job, swept: list[str]) -> str:
    """'3: optim.lr=0.0001': the job's number first, so equal or missing overrides stay distinguishable."""
    label = f"{job.name}: {describe(job, swept)}" if swept else job.name
    return label + (" (failed)" if job.status == "failed" else "")


def training_lines(jobs: list[Job], swept: list[str]) -> dict[str, list[tuple[str, str, Points]]]:
    """{panel title: [(job label, column, finite points), ...]}: one line per job and column that logged it."""
    panels: dict[str, list[tuple[str, str, Points]]] = {}
    for title, columns in TRAINING_PANELS.items():
        for job in jobs:
            for column in columns:
                # a diverged job's inf/nan would wreck the axis limits of every other job
                if points := [p for p in job.series.get(column, []) if math.isfinite(p[1])]:
                    panels.setdefault(title, []).append((job_label(job, swept), column, points))
    return panels


def training_figure(jobs: list[Job], swept: list[str]) -> Figure | None:
    """One panel per training quantity, one line per job (its color the same in every panel); None if no data."""
    panels = training_lines(jobs, swept)
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5.5 * cols + 2.5, 3.2 * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    # ten distinct colors while they last, then a continuous map: a long sweep must not reuse colors
    cmap = colormaps["turbo"]
    many = len(jobs) > 10
    colors = {job_label(j, swept): cmap(i / (len(jobs) - 1)) if many else f"C{i}" for i, j in enumerate(jobs)}
    handles = {}
    for ax, (title, lines) in zip(axes, panels.items(), strict=False):
        for label, column, points in lines:
            style = "--" if column == "train/d_fake" else "-"
            dots = {"marker": "o", "markersize": 3} if len(points) <= FEW_POINTS else {}  # a lone row shows
            (line,) = ax.plot(
                *zip(*points, strict=True), style, color=colors[label], label=label, lw=1, **dots
            )
            handles.setdefault(label, line)
        ax.set(title=title, xlabel="generator steps")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:  # the empty cell of an odd panel count
        ax.set_visible(False)
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize="small")
    return fig


def plot_training_curves(jobs: list[Job], swept: list[str], path: Path) -> Path | None:
    """training_curves.png, whether or not any in-loop metric was measured."""
    if (fig := training_figure(jobs, swept)) is None:
        return None
    fig.savefig(path, dpi=100)
    return path


def plot_curves(jobs: list[Job], swept: list[str], metric: str, path: Path) -> Path | None:
    """The metric against generator steps, one line per job (dashed: failed)."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for job in jobs:
        if points := job.series.get(metric):
            steps, values = zip(*points, strict=True)
            style = "--" if job.status == "failed" else "-"
            ax.plot(steps, values, style, marker="o", markersize=3, label=describe(job, swept) or job.name)
    if not ax.lines:
        return None
    ax.set(xlabel="generator steps", ylabel=metric, title=f"{metric} per job")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: sweeps can be long
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_best_vs_lr(jobs: list[Job], swept: list[str], metric: str, path: Path) -> Path | None:
    """Best metric against the swept learning rate (log x), completed jobs; one line per other setting."""
    lr_key = next((k for k in LR_KEYS if k in swept), None)
    if lr_key is None:
        return None
    others = [k for k in swept if k != lr_key]
    groups: dict[str, list[tuple[float, float]]] = {}
    for job in jobs:
        lr, best = number(job.overrides.get(lr_key)), best_point(job.series.get(metric, []), metric)
        if job.status == "completed" and lr and lr > 0 and best:
            groups.setdefault(describe(job, others), []).append((lr, best[1]))
    if not groups:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, points in groups.items():
        ax.plot(*zip(*sorted(points), strict=True), marker="o", label=name or None)
    ax.set_xscale("log")
    ax.set(xlabel=lr_key, ylabel=f"best {metric}", title=f"best {metric} against {lr_key} (completed jobs)")
    ax.grid(alpha=0.3, which="both")
    if others:
        ax.legend(fontsize="small")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def heatmap_grid(jobs: list[Job], metric: str) -> tuple[list[str], list[str], list[list[float]]]:
    """(losses, normalizations, best metric per [loss][normalization]); NaN where no job completed."""
    losses = sorted({j.overrides.get("loss", "") for j in jobs})
    norms = sorted({j.overrides.get("normalization", "") for j in jobs})
    cells: dict[tuple[str, str], float] = {}
    for job in jobs:
        best = best_point(job.series.get(metric, []), metric)
        if job.status == "completed" and best:
            cell = (job.overrides.get("loss", ""), job.overrides.get("normalization", ""))
            # other swept overrides put several jobs in one cell: show the best of them
            cells[cell] = (max if maximize(metric) else min)(cells.get(cell, best[1]), best[1])
    return losses, norms, [[cells.get((loss, norm), math.nan) for norm in norms] for loss in losses]


def plot_heatmap(jobs: list[Job], swept: list[str], metric: str, path: Path) -> Path | None:
    """Best metric for each loss x normalization pair, annotated; only when both groups are swept."""
    if not {"loss", "normalization"} <= set(swept):
        return None
    losses, norms, grid = heatmap_grid(jobs, metric)
    fig = Figure(figsize=(2 + 1.4 * len(norms), 1.5 + 0.8 * len(losses)))
    ax = fig.subplots()
    cmap = "viridis" if maximize(metric) else "viridis_r"  # bright = better either way
    image = ax.imshow(grid, cmap=cmap, aspect="auto")
    for i, row in enumerate(grid):
        for k, value in enumerate(row):
            text = f"{value:.3g}" if math.isfinite(value) else "n/a"
            ax.text(k, i, text, ha="center", va="center", bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
    ax.set_xticks(range(len(norms)), norms)
    ax.set_yticks(range(len(losses)), losses)
    ax.set(xlabel="normalization", ylabel="loss", title=f"best {metric} (n/a: failed or missing)")
    fig.colorbar(image, ax=ax)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_list(plots: list[Path], metric: str | None) -> str:
    """The markdown section that names each plot written, with what it shows."""
    shows = {
        "training_curves.png": "losses, D accuracy and D logits of every job against generator steps",
        "fid_vs_steps.png": f"{metric} of every job against generator steps",
        "best_fid_vs_lr.png": f"best {metric} against the swept learning rate",
        "loss_norm_heatmap.png": f"best {metric} for each loss x normalization",
    }
    items = [f"- [{p.name}]({p.name}): {shows[p.name]}" for p in plots]
    return "\n## Plots\n\n" + "\n".join(items or ["none (no job logged training values yet)"]) + "\n"


def write_report(
    sweep: str | Path, metric: str | None = None, trusted_packages: Sequence[str] | None = None
) -> tuple[str, list[Path]]:
    """Write report.md, report.csv and the plots into the sweep directory; returns (markdown, paths).

    `trusted_packages`: packages whose metric kinds (metrics.extra of a job's config.yaml) may be built.
    """
    sweep = Path(sweep)
    jobs = load_jobs(sweep)
    notes = learn_metric_kinds(jobs, trusted_packages)
    if skipped := unknown_metric_columns(jobs):
        why = "see above" if notes else "no job's config.yaml defines it in metrics.extra"
        notes.append(f"skipped {', '.join(skipped)}: not a metric kind gan_lab knows ({why})")
    swept, metrics = varying_override_keys(jobs), metric_columns(jobs)
    chosen = pick_metric(metrics, metric)
    rows = summarize(jobs, metrics)
    plots = [plot_training_curves(jobs, swept, sweep / "training_curves.png")]
    if chosen is not None:
        for plot, name in (
            (plot_curves, "fid_vs_steps.png"),
            (plot_best_vs_lr, "best_fid_vs_lr.png"),
            (plot_heatmap, "loss_norm_heatmap.png"),
        ):
            plots.append(plot(jobs, swept, chosen, sweep / name))
    written = [p for p in plots if p is not None]
    markdown = markdown_table(rows, swept, sweep) + "".join(f"\nNote: {note}\n" for note in notes)
    markdown += plot_list(written, chosen)
    (sweep / "report.md").write_text(markdown)
    return markdown, [sweep / "report.md", write_table(rows, sweep / "report.csv"), *written]


@user_errors_as_one_line
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gan_lab.report",
        description="Compare the jobs of a Hydra multirun: report.md, report.csv and plots in DIR.",
    )
    parser.add_argument("sweep_dir", help="the multirun directory, e.g. multirun/2026-01-01/12-00-00")
    parser.add_argument("--metric", help="metric to plot (default: the first FID, else KID, else IS column)")
    parser.add_argument(
        "--trusted-packages",
        nargs="+",
        metavar="PACKAGE",
        help="packages whose metric classes (metrics.extra of the runs' config.yaml) may be built, e.g. my_lab",
    )
    args = parser.parse_args(argv)
    markdown, written = write_report(args.sweep_dir, args.metric, args.trusted_packages)
    print(markdown)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
