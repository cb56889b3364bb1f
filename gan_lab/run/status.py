"""What a run writes about itself: its config as run, and its status file (running / completed / failed /
preempted), so a sweep report can tell jobs apart; and the check that its directory takes files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from gan_lab.errors import ConfigError
from gan_lab.run.paths import RunDir
from gan_lab.utils.config import redact_secrets
from gan_lab.utils.io import atomic_write_bytes, atomic_write_text


def check_writable(directory: Path) -> None:
    """Create the run directory and prove it takes files, before anything is trained."""
    probe = directory / f".write_test_{time.time_ns()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write to the output directory {directory} ({err.strerror or err}); choose a writable "
            "one with hydra.run.dir=PATH (or paths.output_dir=PATH), or fix its permissions"
        ) from err


@rank_zero_only  # DDP ranks share the run directory
def save_config(cfg: DictConfig, path: Path) -> None:
    """The resolved config, as run (values of secret-looking keys redacted)."""
    config = OmegaConf.create(redact_secrets(OmegaConf.to_container(cfg, resolve=True)))
    atomic_write_text(path, OmegaConf.to_yaml(config))


# Command-line overrides that tell this process what to do with the run, not what the run is: left out of the
# job's overrides.yaml, which the sweep report reads as the job's settings.
INSTRUCTIONS = ("resume", "overwrite", "retry_failed")


@rank_zero_only  # DDP ranks share the run directory
def save_hydra_files(run: RunDir, cfg: DictConfig) -> None:
    """Hydra's record of the job (.hydra/config.yaml, hydra.yaml, overrides.yaml) for the composed `cfg`.

    gan_lab writes it once the run directory is known to be this run's (hydra.output_subdir is null): Hydra
    itself would write it before the job starts, over the files of a run that directory already holds.
    Nothing is written outside a Hydra job (train() called from Python).
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    task = [o for o in hydra_cfg.overrides.task if o.lstrip("+~").split("=", 1)[0] not in INSTRUCTIONS]
    files = {
        "config.yaml": OmegaConf.to_yaml(cfg),  # as composed: interpolations unresolved
        "hydra.yaml": OmegaConf.to_yaml({"hydra": hydra_cfg}),
        run.overrides.name: OmegaConf.to_yaml(task),
    }
    for name, text in files.items():
        atomic_write_text(run.hydra / name, text)


@rank_zero_only  # DDP ranks share the run directory
def write_status(output_dir: Path, status: str, started: float, **extra: Any) -> None:
    """The status, wall time since `started` (time.time()), and what went wrong; written whole (atomic)."""
    record = {"status": status, "wall_time_s": round(time.time() - started, 1), **extra}
    atomic_write_text(RunDir(output_dir).status, json.dumps(record, indent=2) + "\n")


def read_status(run: RunDir) -> dict[str, Any]:
    """The run's status record; {} when it has none, or it is being rewritten or unreadable."""
    try:
        return json.loads(run.status.read_text())
    except (OSError, ValueError):
        return {}


def saved_files(output_dir: Path) -> dict[str, bytes]:
    """The config and status files an earlier run left in output_dir, to put back if this one fails early."""
    run = RunDir(output_dir)
    return {p.name: p.read_bytes() for p in (run.config_file, run.status) if p.is_file()}


@rank_zero_only
def restore_files(output_dir: Path, contents: dict[str, bytes]) -> None:
    for name, content in contents.items():
        atomic_write_bytes(Path(output_dir) / name, content)
