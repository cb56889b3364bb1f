"""Hydra's submitit launcher (the cluster path) runs gan_lab jobs; submitit_local stands in for SLURM here."""

import json

from conftest import TINY_CLI, run_module
from omegaconf import OmegaConf


def test_submitit_local_runs_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_module(
        "gan_lab.train", "-m", "hydra/launcher=submitit_local", "optim.lr=1e-4,2e-4", *TINY_CLI, "steps=2",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "status.json").read_text())["status"] == "completed"
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    lrs = sorted(OmegaConf.load(sweep / job / "config.yaml").optim.lr for job in ("0", "1"))
    assert lrs == [1e-4, 2e-4]
