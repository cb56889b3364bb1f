"""gan_lab.report on hand-built sweep directories with known numbers, and once on a real tiny multirun."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CLI, run_module
from PIL import Image

from gan_lab.errors import GanLabError
from gan_lab.metrics import KINDS
from gan_lab.report import heatmap_grid, training_figure, write_report
from gan_lab.run.sweep import load_jobs, metric_columns, metric_kind, pick_metric, varying_override_keys

COMMON = ["model=sndcgan", "dataset=fake", "steps=300"]
FID, KID, IS = "val/fid500_train", "val/kid500_train", "val/is500"  # names before the resolution was in them
# names as logged now: the resolution the images were scored at is part of them
FID32, KID32, IS32, PRECISION32 = (
    "val/fid500_train32",
    "val/kid500_train32",
    "val/is1024_64",
    "val/precision5k_train32_inception",
)
TRAINING = ["train/d_accuracy", "train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "train/lr_g"]
COLUMNS = ["epoch", "step", *TRAINING, FID, KID, KID + "_std", IS, IS + "_std"]
COLUMNS += [FID32, KID32, KID32 + "_std", IS32, IS32 + "_std", PRECISION32]


def make_job(
    sweep: Path,
    name: str,
    overrides: list[str] | None,
    status: dict | None = None,
    val: dict[str, list[float]] | None = None,
    accuracy: list[float] = (),
    config: bool | str = True,
    val_steps: tuple[int, ...] = (100, 200, 300),
) -> Path:
    """A job directory like Hydra's and gan_lab.train's; val[metric][i] is logged at val_steps[i]."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True, exist_ok=True)
    if overrides is not None:
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if status is not None:
        (job / "status.json").write_text(json.dumps(status))
    if config:
        (job / "config.yaml").write_text(config if isinstance(config, str) else "seed: 42\n")
    if val is not None or accuracy:
        rows = [  # sparse like CSVLogger: training rows and metric rows are separate rows
            {
                "epoch": 0,
                "step": 50 * (i + 1),
                "train/d_accuracy": a,
                "train/d_loss": 1.3 - a,
                "train/g_loss": 0.7 + a,
                "train/d_real": a,
                "train/d_fake": -a,
                "train/lr_g": 2e-4,
            }
            for i, a in enumerate(accuracy)
        ]
        for i, step in enumerate(val_steps):
            rows.append({"epoch": 0, "step": step, **{m: v[i] for m, v in (val or {}).items() if i < len(v)}})
        rows.sort(key=lambda r: r["step"])
        with (job / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS + [m for m in val or {} if m not in COLUMNS])
            writer.writeheader()
            writer.writerows(rows)
    return job


def done(steps: int = 300) -> dict:
    return {"status": "completed", "wall_time_s": 12.5, "g_steps": steps}


@pytest.fixture
def lr_sweep(tmp_path: Path) -> Path:
    """Jobs 0-2 completed with optim.lr 1e-4, 1e-5, 1e-6; job 3 failed early without metrics or config."""
    sweep = tmp_path / "sweep"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    fids = {"0": [50.0, 30.0, 40.0], "1": [80.0, 70.0, 60.0], "2": [200.0, 190.0, 195.0]}
    for name, lr in (("0", "0.0001"), ("1", "1e-05"), ("2", "1e-06")):
        val = {FID: fids[name], KID: [0.05, 0.03, 0.04], KID + "_std": [0.01, 0.001, 0.002]}
        if name == "0":
            val[IS] = [2.0, 3.5, 3.0]
        make_job(sweep, name, [*COMMON, f"optim.lr={lr}"], done(), val, accuracy=[0.5, 0.6, 0.7, 0.8])
    error = "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB " + "x" * 200
    make_job(
        sweep, "3", [*COMMON, "optim.lr=0.001"], {**done(0), "status": "failed", "error": error}, config=False
    )
    return sweep


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["job"]: row for row in csv.DictReader(f)}


def assert_png(path: Path, min_size: int = 200) -> None:
    """A real image, not a blank canvas."""
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) >= min_size, image.size
        assert len(image.convert("RGB").getcolors(1 << 20) or range(1000)) > 20  # lines, text and colors


def test_lr_sweep_table_has_best_final_and_steps(lr_sweep):
    markdown, written = write_report(lr_sweep)
    rows = read_csv(lr_sweep / "report.csv")
    assert list(rows) == ["0", "1", "2", "3"]
    zero = rows["0"]
    assert float(zero[f"best {FID}"]) == 30.0 and zero[f"step of best {FID}"] == "200"
    assert float(zero[f"final {FID}"]) == 40.0
    assert float(zero[f"best {IS}"]) == 3.5 and zero[f"step of best {IS}"] == "200"  # IS: higher is better
    assert float(zero[f"best {KID}"]) == 0.03 and f"best {KID}_std" not in zero  # std is no metric of its own
    assert float(rows["1"][f"best {FID}"]) == 60.0 and rows["1"][f"step of best {FID}"] == "300"
    assert float(zero["final train/d_accuracy"]) == 0.8
    assert zero["status"] == "completed" and zero["g_steps"] == "300" and float(zero["wall_time_s"]) == 12.5
    assert rows["1"][f"best {IS}"] == ""  # job 1 logged no IS: empty, not 0
    # all overrides in the CSV, only the swept one in the markdown table
    assert zero["model"] == "sndcgan" and rows["2"]["optim.lr"] == "1e-06"
    header = next(line for line in markdown.splitlines() if line.startswith("| job"))
    assert header.split(" | ")[1] == "optim.lr" and "model" not in header and "dataset" not in header
    assert f"best {FID}" in header and f"step of best {FID}" in header
    assert "| 0 | 0.0001 | completed | 300 | 12.5 |" in markdown
    assert "3 completed, 1 failed" in markdown
    assert (lr_sweep / "report.md").read_text() == markdown
    plots = {"training_curves.png", "fid_vs_steps.png", "best_fid_vs_lr.png"}
    assert {p.name for p in written} == {"report.md", "report.csv", *plots}
    assert all(f"- [{name}]({name}): " in markdown for name in plots)  # report.md lists what was drawn


def test_failed_job_shows_status_and_shortened_error(lr_sweep):
    markdown, _ = write_report(lr_sweep)
    failed = read_csv(lr_sweep / "report.csv")["3"]
    assert failed["status"] == "failed" and failed["error"].endswith("x" * 200)  # the CSV keeps it whole
    assert failed[f"best {FID}"] == "" and failed["final train/d_accuracy"] == "" and failed["g_steps"] == "0"
    line = next(line for line in markdown.splitlines() if line.startswith("| 3 |"))
    assert "failed: RuntimeError: CUDA out of memory" in line and "x" * 100 not in line and "…" in line


def test_varying_override_keys_are_exactly_those_that_differ_between_jobs(tmp_path):
    make_job(tmp_path, "0", ["loss=hinge", "optim.lr=0.0001", "steps=5"], done())
    make_job(tmp_path, "1", ["loss=hinge", "optim.lr=0.0002", "steps=5", "+ema.decay=0.999"], done())
    make_job(tmp_path, "2", None, None)  # killed before Hydra wrote anything: says nothing about the sweep
    assert varying_override_keys(load_jobs(tmp_path)) == ["optim.lr", "ema.decay"]


def test_plots_are_real_pngs_and_lr_plot_only_when_lr_swept(lr_sweep, tmp_path):
    write_report(lr_sweep)
    assert_png(lr_sweep / "training_curves.png")  # with FID measured: the training curves and the FID plots
    assert_png(lr_sweep / "fid_vs_steps.png")
    assert_png(lr_sweep / "best_fid_vs_lr.png")
    assert not (lr_sweep / "loss_norm_heatmap.png").exists()
    other = tmp_path / "steps_sweep"
    for i, steps in enumerate((100, 300)):
        make_job(other, str(i), [*COMMON, f"n_critic={i + 1}"], done(steps), {FID: [90.0, 80.0, 70.0]})
    _, written = write_report(other)
    assert {p.name for p in written} == {"report.md", "report.csv", "fid_vs_steps.png"}  # no training rows


@pytest.fixture
def grid_sweep(tmp_path: Path) -> Path:
    """2 x 2 loss x normalization; hinge + none failed."""
    sweep = tmp_path / "grid"
    fids = {("bce", "batch"): 40.0, ("bce", "spectral"): 30.0, ("hinge", "spectral"): 25.0}
    cells = [(loss, norm) for loss in ("bce", "hinge") for norm in ("batch", "spectral")]
    for i, (loss, norm) in enumerate(cells):
        fid = fids.get((loss, norm))
        status = (
            done() if fid else {"status": "failed", "wall_time_s": 3.0, "g_steps": 10, "error": "nan loss"}
        )
        val = {FID: [fid + 10, fid, fid + 5]} if fid else {FID: [400.0]}  # the failed job logged a value
        make_job(sweep, str(i), [*COMMON, f"loss={loss}", f"normalization={norm}"], status, val)
    return sweep


def test_heatmap_of_best_fid_over_loss_and_normalization(grid_sweep):
    jobs = load_jobs(grid_sweep)
    losses, norms, grid = heatmap_grid(jobs, FID)
    assert losses == ["bce", "hinge"] and norms == ["batch", "spectral"]
    assert grid[0] == [40.0, 30.0] and math.isnan(grid[1][0]) and grid[1][1] == 25.0  # failed: NaN, not 400
    _, written = write_report(grid_sweep)
    assert {p.name for p in written} >= {"loss_norm_heatmap.png", "fid_vs_steps.png"}
    assert not (grid_sweep / "best_fid_vs_lr.png").exists()
    assert_png(grid_sweep / "loss_norm_heatmap.png")


def test_no_heatmap_when_only_loss_varies(tmp_path):
    for i, loss in enumerate(("bce", "hinge")):
        make_job(
            tmp_path, str(i), [f"loss={loss}", "normalization=spectral"], done(), {FID: [50.0, 40.0, 30.0]}
        )
    _, written = write_report(tmp_path)
    assert "loss_norm_heatmap.png" not in {p.name for p in written}
    assert not (tmp_path / "loss_norm_heatmap.png").exists()


def test_missing_files_and_odd_directories_do_not_crash(tmp_path):
    make_job(tmp_path, "10", ["optim.lr=0.0001"], done(), {FID: [9.0]}, config=False)
    make_job(tmp_path, "2", ["optim.lr=0.0002"], {"status": "running", "wall_time_s": 0.0})  # no metrics.csv
    make_job(tmp_path, "renamed", ["optim.lr=0.0003"], None)  # no status.json: unknown
    (tmp_path / "2" / "metrics.csv").write_text("")  # created but empty
    (tmp_path / "renamed" / "status.json").write_text('{"status": "compl')  # caught mid-write
    (tmp_path / "notes").mkdir()  # not a job: no overrides, no status
    markdown, _ = write_report(tmp_path)
    rows = read_csv(tmp_path / "report.csv")
    assert list(rows) == ["2", "10", "renamed"]  # numbers sort as numbers
    assert (
        rows["2"]["status"] == "running" and rows["2"]["wall_time_s"] == "" and rows["2"][f"best {FID}"] == ""
    )
    assert rows["renamed"]["status"] == "unknown" and rows["10"][f"final {FID}"] == "9.0"
    assert "1 running, 1 completed, 1 unknown" in markdown


def test_sweep_without_metrics_still_gets_training_curves(tmp_path):
    for i in range(2):
        make_job(tmp_path, str(i), [f"optim.lr={i + 1}e-4"], done(), accuracy=[0.5, 0.9])
    markdown, written = write_report(tmp_path)
    assert [p.name for p in written] == ["report.md", "report.csv", "training_curves.png"]
    assert_png(tmp_path / "training_curves.png")
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000
    assert not (tmp_path / "fid_vs_steps.png").exists() and "fid_vs_steps" not in markdown
    assert "- [training_curves.png](training_curves.png): " in markdown
    assert float(read_csv(tmp_path / "report.csv")["1"]["final train/d_accuracy"]) == 0.9
    with pytest.raises(GanLabError, match="metrics=none"):
        write_report(tmp_path, metric="val/fid500_train")


def test_training_figure_has_one_line_per_job_in_every_panel(lr_sweep):
    jobs = load_jobs(lr_sweep)  # job 3 failed before logging anything: no line, but no crash either
    fig = training_figure(jobs, varying_override_keys(jobs))
    labels = ["0: optim.lr=0.0001", "1: optim.lr=1e-05", "2: optim.lr=1e-06"]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert list(panels) == ["D loss", "G loss", "D accuracy", "mean D logit: real (solid), fake (dashed)"]
    for title, ax in panels.items():
        per_column = 2 if title.startswith("mean D logit") else 1  # real and fake, in the job's color
        assert sorted(line.get_label() for line in ax.lines) == sorted(labels * per_column), title
        assert ax.get_xlabel() == "generator steps"
    accuracy = panels["D accuracy"].lines[0]
    assert list(accuracy.get_xdata()) == [50, 100, 150, 200] and list(accuracy.get_ydata()) == [
        0.5,
        0.6,
        0.7,
        0.8,
    ]
    assert [text.get_text() for text in fig.legends[0].get_texts()] == labels


def test_training_figure_skips_jobs_and_panels_without_data(tmp_path):
    make_job(tmp_path, "0", ["loss=hinge"], done(), accuracy=[0.5, 0.6])
    make_job(tmp_path, "1", ["loss=bce"], {**done(10), "status": "failed"}, accuracy=[0.5, math.inf])
    make_job(tmp_path, "2", ["loss=wgan"], done(), {FID: [80.0]})  # only a metric row: in no training panel
    jobs = load_jobs(tmp_path)
    fig = training_figure(jobs, varying_override_keys(jobs))
    accuracy = next(ax for ax in fig.axes if ax.get_title() == "D accuracy")
    assert [line.get_label() for line in accuracy.lines] == ["0: loss=hinge", "1: loss=bce (failed)"]
    assert list(accuracy.lines[1].get_ydata()) == [0.5]  # the diverged value is left out, not drawn as inf
    assert training_figure(jobs[2:], []) is None


def test_metric_names_with_resolution_and_old_names_both_work(tmp_path):
    assert [metric_kind(c) for c in (FID32, KID32, IS32, PRECISION32, FID, IS)] == [
        "fid",
        "kid",
        "isc",
        "precision",
        "fid",
        "isc",
    ]
    assert metric_kind(KID32 + "_std") is None and metric_kind(IS + "_std") is None
    assert metric_kind("train/d_accuracy") is None and metric_kind("train/diversity") is None
    # FID, then KID, then IS, whatever sorts first
    assert pick_metric([IS32, KID32, PRECISION32, FID32], None) == FID32
    assert pick_metric([IS32, KID32, PRECISION32], None) == KID32
    assert pick_metric([PRECISION32, IS32], None) == IS32
    assert pick_metric([PRECISION32], None) == PRECISION32
    for i, lr in enumerate(("0.0001", "0.0002")):
        val = {FID32: [60.0, 50.0, 55.0], IS32: [2.0, 3.0, 2.5], PRECISION32: [0.2, 0.6, 0.4]}
        val[KID32 + "_std"] = [0.1, 0.1, 0.1]
        make_job(tmp_path, str(i), [f"optim.lr={lr}"], done(), val, accuracy=[0.5, 0.7])
    assert metric_columns(load_jobs(tmp_path)) == [FID32, IS32, PRECISION32]
    markdown, written = write_report(tmp_path)
    row = read_csv(tmp_path / "report.csv")["0"]
    assert (
        float(row[f"best {FID32}"]) == 50.0 and float(row[f"best {IS32}"]) == 3.0
    )  # lower / higher is better
    assert float(row[f"best {PRECISION32}"]) == 0.6 and row[f"step of best {PRECISION32}"] == "200"
    assert {"training_curves.png", "fid_vs_steps.png", "best_fid_vs_lr.png"} <= {p.name for p in written}
    assert f"- [fid_vs_steps.png](fid_vs_steps.png): {FID32} of every job" in markdown


def test_metric_option_picks_the_plotted_metric(lr_sweep):
    _, written = write_report(lr_sweep, metric="kid500_train")
    assert "fid_vs_steps.png" in {p.name for p in written}
    with pytest.raises(GanLabError, match=r"val/fid5k_train was not logged.*val/fid500_train"):
        write_report(lr_sweep, metric="val/fid5k_train")


MFD32 = "val/mfd500_train32"  # a metric of the researcher's own (tests/fixtures/my_lab/metrics.py)
OWN_METRIC = "seed: 42\nmetrics:\n  extra:\n    mfd:\n      _target_: my_lab.metrics.MeanFeatureDistance\n"


@pytest.fixture
def own_metric_sweep(tmp_path, monkeypatch):
    """Two jobs whose config.yaml has metrics.extra.mfd (lower is better) and which logged it."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "fixtures"))
    before = dict(KINDS)
    for i, lr in enumerate(("0.0001", "0.0002")):
        val = {FID32: [60.0, 50.0, 55.0], MFD32: [5.0 + i, 1.0 + i, 3.0 + i], MFD32 + "_std": [0.1] * 3}
        make_job(tmp_path, str(i), [f"optim.lr={lr}"], done(), val, accuracy=[0.5, 0.7], config=OWN_METRIC)
    yield tmp_path
    KINDS.clear()
    KINDS.update(before)


def test_a_metric_of_ones_own_is_learnt_from_the_run_config_of_a_trusted_package(own_metric_sweep):
    markdown, _ = write_report(own_metric_sweep, trusted_packages=["my_lab"])
    row = read_csv(own_metric_sweep / "report.csv")["1"]
    assert float(row[f"best {MFD32}"]) == 2.0 and row[f"step of best {MFD32}"] == "200"  # lower is better
    assert "Note:" not in markdown
    _, written = write_report(own_metric_sweep, metric="mfd500_train32", trusted_packages=["my_lab"])
    assert "fid_vs_steps.png" in {p.name for p in written}


def test_a_metric_of_an_untrusted_package_is_skipped_with_one_line(own_metric_sweep):
    markdown, _ = write_report(own_metric_sweep)
    assert "mfd" not in KINDS  # its class was never imported
    notes = [line for line in markdown.splitlines() if line.startswith("Note: ")]
    assert notes == [
        "Note: job 0, 1: its metrics.extra names my_lab.metrics.MeanFeatureDistance, outside the trusted packages; "
        "to read those metrics, pass --trusted-packages PACKAGE",
        f"Note: skipped {MFD32}: not a metric kind gan_lab knows (see above)",
    ]
    row = read_csv(own_metric_sweep / "report.csv")["0"]
    assert float(row[f"best {FID32}"]) == 50.0 and not any("mfd" in column for column in row)


def test_an_unknown_metric_column_without_a_config_is_skipped_with_one_line(tmp_path):
    make_job(
        tmp_path, "0", ["optim.lr=0.1"], done(), {FID32: [3.0, 2.0, 1.0], "val/abc500_train32": [1.0] * 3}
    )
    markdown, _ = write_report(tmp_path)
    assert (
        "Note: skipped val/abc500_train32: not a metric kind gan_lab knows (no job's config.yaml defines it in "
        "metrics.extra)" in markdown.splitlines()
    )


def test_cli_trusted_packages_reads_a_metric_of_ones_own(own_metric_sweep):
    fixtures = str(Path(__file__).parent / "fixtures")
    result = run_module(
        "gan_lab.report", str(own_metric_sweep), "--trusted-packages", "my_lab", cwd=own_metric_sweep,
        PYTHONPATH=fixtures,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"best {MFD32}" in (own_metric_sweep / "report.csv").read_text() and "Note:" not in result.stdout


@pytest.mark.parametrize("kind", ["empty", "missing", "one run"])
def test_a_directory_that_is_no_sweep_is_one_clear_error(tmp_path, kind):
    target = tmp_path / "sweep"
    if kind != "missing":
        target.mkdir()
    if kind == "one run":
        make_job(tmp_path, "sweep", ["optim.lr=0.0001"], done())
    with pytest.raises(
        GanLabError, match=r"pass the directory Hydra printed for the multirun, e\.g\. multirun/"
    ):
        write_report(target)


def test_cli_bad_directory_is_one_line(tmp_path):
    result = run_module("gan_lab.report", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"gan_lab: error: {tmp_path} has no job directories; pass the directory Hydra printed for the "
        "multirun, e.g. multirun/2026-01-01/12-00-00"
    )


@pytest.mark.slow  # ~14 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_end_to_end_on_a_real_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    train = run_module(
        "gan_lab.train",
        "-m",
        *TINY_CLI,
        "steps=2",
        "optim.lr=1e-4,2e-4",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    result = run_module("gan_lab.report", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    markdown = (sweep / "report.md").read_text()
    assert "2 jobs: 2 completed; swept: optim.lr" in markdown
    assert "| 0 | 0.0001 | completed | 2 |" in markdown and "| 1 | 0.0002 | completed | 2 |" in markdown
    assert markdown in result.stdout and f"wrote {sweep / 'report.csv'}" in result.stdout
    assert_png(sweep / "training_curves.png")  # metrics=none: the training curves all the same


def test_a_job_with_a_single_row_is_drawn_as_a_dot(tmp_path):
    """A 20-step sweep logs one row per job (the budget's last step): a line alone would draw nothing."""
    make_job(tmp_path, "0", ["optim.lr=1e-4"], done(20), accuracy=[0.5])
    make_job(tmp_path, "1", ["optim.lr=2e-4"], done(20), accuracy=[0.6])
    jobs = load_jobs(tmp_path)
    fig = training_figure(jobs, varying_override_keys(jobs))
    for ax in (ax for ax in fig.axes if ax.get_visible()):
        assert ax.lines and all(line.get_marker() == "o" for line in ax.lines), ax.get_title()
