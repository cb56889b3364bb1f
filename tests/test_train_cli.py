"""End to end through the command line, as a user runs it."""

import csv
import subprocess
from pathlib import Path

import torch
from conftest import run_module
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_module("gan_lab.train", *args, cwd=cwd, timeout=300)


def test_folder_run_writes_checkpoint_grids_and_metrics(tiny_image_folder, tmp_path):
    result = run_cli(
        "model=sndcgan",
        "loss=wasserstein",
        "dataset=folder",
        f"dataset.root={tiny_image_folder}",
        "dataset.resolution=32",
        "dataset.batch_size=4",
        "dataset.num_workers=0",
        "model.width=8",
        "steps=6",
        "callbacks.samples.every_n_steps=3",
        "trainer.log_every_n_steps=1",
        "metrics=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["gan_lab"]["g_steps"] == 6
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_0000003.png", "step_0000006.png"]
    assert Image.open(run / "samples" / "step_0000006.png").size[0] > 8 * 32  # an 8x8 grid of 32px images
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"train/d_loss", "train/g_loss", "train/d_accuracy", "train/lr_g"} <= set(rows[0])
    assert len(rows) >= 6
    resolved = (run / "config.yaml").read_text()
    assert "WassersteinLoss" in resolved and "discriminator: spectral" in resolved and "${" not in resolved


def test_missing_dataset_is_one_clear_line(tmp_path):
    result = run_cli(
        "dataset=folder", f"dataset.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("gan_lab: error:")]
    assert len(lines) == 1 and "nowhere" in lines[0] and "dataset.root" in lines[0]
    assert "Traceback" not in result.stderr


def test_offline_cifar10_says_how_to_use_a_local_copy(tmp_path):
    # This machine (and CI) cannot download: the default job must stop with the folder recipe.
    result = run_cli(
        f"paths.data_dir={tmp_path}/data", "steps=1", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path
    )
    if result.returncode == 0:  # a machine with internet downloaded CIFAR-10: nothing to check here
        return
    assert "dataset=folder" in result.stderr and "Traceback" not in result.stderr


def test_folder_without_root_names_the_missing_key(tmp_path):
    result = run_cli("dataset=folder", f"hydra.run.dir={tmp_path}/r", cwd=tmp_path)
    assert result.returncode == 1
    assert "gan_lab: error: dataset.root must be set" in result.stderr and "Traceback" not in result.stderr


def test_secrets_in_the_config_are_not_written(tiny_config, tmp_path):
    from gan_lab.train import train

    train(tiny_config("steps=1", "+wandb_api_key=hunter2", "+tokens.hf_token=hunter3"))
    run = tmp_path / "run"
    for path in (run / "config.yaml", run / "hparams.yaml"):
        text = path.read_text()
        assert "hunter" not in text and "wandb_api_key: <redacted>" in text, path
    stored = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert stored["wandb_api_key"] == "<redacted>" and stored["tokens"] == "<redacted>"
