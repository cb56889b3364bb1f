"""Hydra's submitit launcher (the cluster path) runs gan_lab jobs; submitit_local stands in for SLURM here."""

import json
import subprocess
import sys

from omegaconf import OmegaConf


def test_submitit_local_runs_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable, "-m", "gan_lab.train", "-m", "hydra/launcher=submitit_local", "optim.lr=1e-4,2e-4",
            "dataset=fake", "dataset.num_samples=32", "dataset.batch_size=8", "model.width=4", "steps=2",
            "metrics=none", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={sweep}",
        ],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "status.json").read_text())["status"] == "completed"
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    lrs = sorted(OmegaConf.load(sweep / job / "config.yaml").optim.lr for job in ("0", "1"))
    assert lrs == [1e-4, 2e-4]
