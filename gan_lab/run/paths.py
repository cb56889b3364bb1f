"""The name of every file and folder of a run directory."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINTS_DIR = "checkpoints"  # LAST_CKPT, BEST_CKPT and the periodic epochNNN.ckpt
LAST_CKPT = "last.ckpt"  # kept current during the run: what resume= continues from
BEST_CKPT = "best.ckpt"  # the checkpoint at the best in-loop FID
LOCK_FILE = "run.lock"  # held by the one process writing the run (gan_lab/run/lock.py)
STATUS_FILE = "status.json"  # running / completed / failed / preempted, wall time, error
CONFIG_FILE = "config.yaml"  # the resolved run config (secret-looking values redacted)
METRICS_FILE = "metrics.csv"  # the CSV logger's metrics
FID_CURVE = "fid_curve.png"  # in-loop FID against generator steps
SAMPLES_DIR = "samples"  # the sample grids
EXPORT_DIR = "export"  # python -m gan_lab.export's default output folder
GENERATED_DIR = "generated"  # python -m gan_lab.sample's default output folders, one per seed
MULTIRUN_FILE = "multirun.yaml"  # in a sweep directory: Hydra's record of the sweep (its overrides, launcher)
HYDRA_DIR = ".hydra"  # Hydra's copy of the job config
OVERRIDES_FILE = "overrides.yaml"  # in HYDRA_DIR: the job's command-line overrides
RUN_ID_FILE = "wandb_run_id.txt"  # the W&B run id, so resume= continues the same W&B run
# The checkpoint to name in messages, e.g. "pass ckpt=<run dir>/checkpoints/last.ckpt".
LAST_CKPT_EXAMPLE = f"<run dir>/{CHECKPOINTS_DIR}/{LAST_CKPT}"


@dataclass(frozen=True)
class RunDir:
    """A run directory and the paths of its files."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> RunDir:
        """The run directory of a checkpoint or export: the parent of checkpoints/ or export/, else its folder.

        An export directory is its own folder, so a standalone shared export keeps what is made from it inside it.
        """
        path = Path(path).expanduser().absolute()
        folder = path if path.is_dir() else path.parent
        return cls(folder.parent if folder.name in (CHECKPOINTS_DIR, EXPORT_DIR) else folder)

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    @property
    def last_ckpt(self) -> Path:
        return self.checkpoints / LAST_CKPT

    @property
    def best_ckpt(self) -> Path:
        return self.checkpoints / BEST_CKPT

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def status(self) -> Path:
        return self.root / STATUS_FILE

    @property
    def config_file(self) -> Path:
        # Not `config`: submitit pickles train() by value, and cloudpickle then also pickles every imported
        # submodule whose name is an attribute train() reads (torch.distributed.config cannot be pickled).
        return self.root / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def fid_curve(self) -> Path:
        return self.root / FID_CURVE

    @property
    def samples(self) -> Path:
        return self.root / SAMPLES_DIR

    @property
    def export(self) -> Path:
        return self.root / EXPORT_DIR

    @property
    def hydra(self) -> Path:
        return self.root / HYDRA_DIR

    @property
    def overrides(self) -> Path:
        return self.hydra / OVERRIDES_FILE

    @property
    def wandb_run_id(self) -> Path:
        return self.root / RUN_ID_FILE

    def generated(self, seed: int) -> Path:
        """The default folder of `python -m gan_lab.sample seed=<seed>`."""
        return self.root / GENERATED_DIR / f"seed{seed}"

    def evaluation(self, metric: str, source: str) -> Path:
        """The default JSON file of `python -m gan_lab.evaluate` scoring `source` (a checkpoint's stem)."""
        return self.root / evaluation_name(metric, source)


def evaluation_name(metric: str, source: str) -> str:
    """evaluation_<metric>_<source>.json: the default name of an evaluation's results."""
    return f"evaluation_{metric}_{source}.json"


def resumed_run_or(resume: Any, new_dir: str) -> str:
    """The directory of the run `resume` names (a run directory or a checkpoint in it), else new_dir.

    A resumed run's Hydra job (its log) goes where the run is, not into a new empty directory; a path that does
    not exist, and a sweep directory (continued with -m), leave new_dir, and train() says what is wrong.
    """
    path = Path(str(resume)).expanduser() if resume else None
    if path is None or not path.exists() or (path / MULTIRUN_FILE).is_file():
        return new_dir
    return str(RunDir.of(path).root)


def register_run_dir_resolver() -> None:
    """The resolvers conf/ uses to name run directories and files, so YAML spells no file name:
    `${run_dir:checkpoints}` is RunDir(paths.output_dir).checkpoints; `${unique_suffix:}` is 4 random hex digits,
    drawn once per config (two runs started in the same second get different directories);
    `${resumed_run_or:${resume},DIR}` is resumed_run_or."""
    from omegaconf import OmegaConf

    def run_dir(name: str, _root_: Any) -> str:
        return str(getattr(RunDir(_root_.paths.output_dir), name))

    resolvers = {
        "run_dir": (run_dir, False),
        "unique_suffix": (lambda: secrets.token_hex(2), True),  # cached: every read of the config agrees
        "resumed_run_or": (resumed_run_or, False),
    }
    for name, (resolver, cached) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=cached)
