"""Weights & Biases for gan_lab: `logger=wandb`, or beside the CSV log with `logger=[csv,wandb]`.

Offline unless W&B credentials exist (WANDB_API_KEY, a .netrc entry for the W&B host, or an api_key in wandb's
settings): offline runs are written to `<run dir>/wandb/offline-run-*` and the log prints the `wandb sync`
command that uploads them later. Nothing here ever asks for a login.

`GANWandbLogger` is Lightning's WandbLogger with what gan_lab needs:
- one W&B run per fit, finished when the fit ends or fails (`finalize`), so every multirun job gets its own run;
- the x-axis of every chart is `trainer/g_step` (generator steps, the `step` that gan_lab logs with), while W&B's
  own `_step` just counts log calls, so training and validation rows of the same generator step never collide;
- the resolved config flattened to `optim.lr`-style keys, without secret-looking keys;
- `best/<metric>` in the run summary: the best value so far of every metric, in the registry's direction
  (lowest FID/KID, highest IS/precision/recall);
- the run id in `<run dir>/wandb_run_id.txt`.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import netrc
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.logger import _convert_json_serializable, _convert_params
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from PIL import Image

from gan_lab.errors import ConfigError
from gan_lab.metrics.registry import better, kind_of
from gan_lab.run.paths import MULTIRUN_FILE, RUN_ID_FILE
from gan_lab.utils import compat
from gan_lab.utils.config import flatten_config
from gan_lab.utils.io import atomic_path

log = logging.getLogger(__name__)

X_AXIS = "trainer/g_step"  # generator steps: the `step` of every gan_lab log_metrics call
DEFAULT_BASE_URL = "https://api.wandb.ai"
_MODES = {
    "online": "online",
    "run": "online",
    "offline": "offline",
    "dryrun": "offline",
    "disabled": "disabled",
}
# Overrides that say where and how a run is recorded, not what it trains: left out of run names.
_NAME_SKIP_PREFIXES = ("hydra", "paths.", "logger")
_MAX_NAME_LEN = 128


# --- CSV ---------------------------------------------------------------------------------------------------
class _CSVWriter(ExperimentWriter):
    """Lightning's writer, except that an earlier metrics.csv is replaced when the first metrics are saved.

    Lightning deletes it as soon as the writer exists, at the start of the fit: a run that failed on bad input
    before training (a dataset smaller than a batch, unreadable images, missing Inception weights) would lose
    the metrics of the run that wrote that directory before.
    """

    def __init__(self, log_dir: str, append: bool = False) -> None:
        self._append = append  # a resumed run continues the file (its rows after the checkpoint are trimmed)
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        exists = self._fs.isfile(self.metrics_file_path)
        self._replace_earlier = exists and not self._append
        if exists and self._append:
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def save(self) -> None:
        if self.metrics and self._replace_earlier:
            self._fs.rm_file(self.metrics_file_path)
            self._replace_earlier = False
        super().save()

    def _rewrite_with_new_header(self, fields: list[str]) -> None:
        """Lightning's rewrite for a new column, done atomically: a kill mid-rewrite loses no earlier row."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        with atomic_path(self.metrics_file_path) as tmp, open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class CSVLogger(LightningCSVLogger):
    """metrics.csv and hparams.yaml as Lightning's CSVLogger writes them; a failed run leaves an earlier one.

    append=True (set by `resume=`) adds rows to an existing metrics.csv instead of replacing it.
    """

    def __init__(self, *args: Any, append: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._append = append

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _CSVWriter(log_dir=self.log_dir, append=self._append)
        return self._experiment


# --- credentials and mode ----------------------------------------------------------------------------------
def _netrc_path() -> Path | None:
    """The .netrc wandb reads: $NETRC, else ~/.netrc or ~/_netrc."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    for name in (".netrc", "_netrc"):
        path = Path("~", name).expanduser()
        if path.is_file():
            return path
    return None


def has_wandb_credentials() -> bool:
    """Whether W&B could log in without a prompt; reads the environment and files only, no network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    base_url = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    path = _netrc_path()
    if path is not None and path.is_file():
        try:
            if netrc.netrc(path).authenticators(urlsplit(base_url).netloc or base_url):
                return True
        except (netrc.NetrcParseError, OSError):
            pass
    try:  # an api_key in wandb's system or workspace settings file
        from wandb.sdk import wandb_setup

        return bool(wandb_setup.singleton().settings.api_key)
    except Exception:  # noqa: BLE001 (a broken wandb settings file must not stop training)
        return False


def resolve_mode(mode: str | None = None) -> str:
    """`mode` when given; else $WANDB_MODE when set; else "online" with credentials and "offline" without."""
    requested = mode or os.environ.get("WANDB_MODE") or None
    if requested is None:
        return "online" if has_wandb_credentials() else "offline"
    if requested not in _MODES:
        raise ConfigError(
            f"logger.wandb.mode must be online, offline, disabled or null (auto), got '{requested}'"
        )
    resolved = _MODES[requested]
    if resolved == "online" and not has_wandb_credentials():
        # wandb would prompt for a key (or fail) in the middle of the run; say so before training starts.
        raise ConfigError(
            "logger.wandb.mode=online needs W&B credentials: run `wandb login` or set WANDB_API_KEY; "
            "or use logger.wandb.mode=offline and `wandb sync` the run later"
        )
    return resolved


# --- run name and group from the Hydra job ---------------------------------------------------------------------
def run_name(overrides: Sequence[str], fallback: str | None = None) -> str | None:
    """A display name from command-line overrides, e.g. `optim.lr=1e-4,model=sndcgan`; `fallback` if none.

    Overrides of hydra.*, paths.* and logger.* say where the run is written, not what it trains: left out.
    """
    kept = []
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0]
        if not key.startswith(_NAME_SKIP_PREFIXES):
            kept.append(override.lstrip("+"))
    name = ",".join(kept)
    if len(name) > _MAX_NAME_LEN:
        name = name[: _MAX_NAME_LEN - 3] + "..."
    return name or fallback


def job_swept_overrides(job_overrides: Sequence[str], sweep_overrides: Sequence[str]) -> list[str]:
    """The overrides that tell a multirun's jobs apart: the job's values of the keys that `sweep_overrides`
    sweeps (`optim.lr=0.0001` from `optim.lr=1e-4,2e-4`); all of them when nothing is swept."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    swept = {
        (o.key_or_group, o.package)
        for o in parser.parse_overrides(list(sweep_overrides))
        if o.is_sweep_override()
    }
    jobs = parser.parse_overrides(list(job_overrides))
    kept = [text for text, o in zip(job_overrides, jobs, strict=True) if (o.key_or_group, o.package) in swept]
    return kept or list(job_overrides)


def run_group(multirun: bool, sweep_dir: str | os.PathLike[str] | None) -> str | None:
    """The W&B group of a multirun job: its sweep directory's name (with the date for Hydra's default
    `multirun/<date>/<time>`); None for a single run."""
    if not multirun or not sweep_dir:
        return None
    path = Path(sweep_dir)
    if re.fullmatch(r"\d{2}-\d{2}-\d{2}", path.name) and path.parent.name:
        return f"{path.parent.name}_{path.name}"
    return path.name


def _hydra_job() -> tuple[list[str], str | None, str | None]:
    """(overrides naming the job, sweep dir if a multirun, job output dir) of the current Hydra job.

    In a multirun only the swept overrides name a job (the group names the sweep); outside Hydra (compose
    API, notebooks) all three are empty.
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        from omegaconf import OmegaConf

        if not HydraConfig.initialized():
            return [], None, None
        hc = HydraConfig.get()
        overrides = list(hc.overrides.task)
        if hc.mode != RunMode.MULTIRUN:
            return overrides, None, hc.runtime.get("output_dir")
        sweep_dir = Path(hc.runtime.cwd, hc.sweep.dir)
        # What is swept: a preset's hydra.sweeper.params, and the sweep's command line (Hydra's sweep record, which
        # Hydra writes before starting the jobs).
        sweep = [f"{key}={value}" for key, value in (hc.sweeper.get("params") or {}).items()]
        with contextlib.suppress(Exception):
            sweep += list(OmegaConf.load(sweep_dir / MULTIRUN_FILE).hydra.overrides.task)
        with contextlib.suppress(Exception):
            overrides = job_swept_overrides(overrides, sweep)
        return overrides, str(sweep_dir), hc.runtime.get("output_dir")
    except Exception:  # noqa: BLE001 (a partial Hydra config only costs the automatic name and group)
        return [], None, None


# --- the logger --------------------------------------------------------------------------------------------------
class GANWandbLogger(WandbLogger):
    """WandbLogger with one finished run per fit, a generator-step x-axis, a flat config and best-metric summaries."""

    def __init__(self, *args: Any, mode: str = "offline", **kwargs: Any) -> None:
        super().__init__(*args, mode=mode, **kwargs)
        compat.drop_wandb_anonymous(self)  # deprecated in wandb >= 0.2x: it only warns
        self._mode = mode
        self._best: dict[str, float] = {}

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The wandb Run, started on first use with `trainer/g_step` as the x-axis of every metric."""
        if self._experiment is None:
            import wandb

            # A spawned DDP worker unpickles the logger with the parent's run to attach to.
            attach_id = getattr(self, "_attach_id", None)
            if attach_id is not None and hasattr(wandb, "_attach"):
                self._experiment = wandb._attach(attach_id)
                return self._experiment
            if wandb.run is not None:  # one run per fit: a run left open by other code is not continued
                log.warning("finishing the W&B run %s left open before this one", wandb.run.id)
                wandb.finish()
            self._experiment = wandb.init(**self._wandb_init)
            if getattr(self._experiment, "define_metric", None):
                self._experiment.define_metric(X_AXIS)
                self._experiment.define_metric("*", step_metric=X_AXIS, step_sync=True)
            if self._save_dir and getattr(self._experiment, "id", None):
                (Path(self._save_dir) / RUN_ID_FILE).write_text(f"{self._experiment.id}\n")
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """The config as flat `group.key` entries (W&B filters and groups runs by them), secrets dropped."""
        params = _convert_json_serializable(flatten_config(_convert_params(params)))
        self.experiment.config.update(params, allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log at generator step `step` (the `trainer/g_step` axis); keeps `best/<metric>` = its best so far."""
        row = {
            (f"{self._prefix}{self.LOGGER_JOIN_CHAR}{k}" if self._prefix else k): v
            for k, v in metrics.items()
        }
        if step is not None:
            row[X_AXIS] = step
        self.experiment.log(row)
        for key, value in metrics.items():
            if kind_of(key) and isinstance(value, (int, float)) and math.isfinite(value):
                if key not in self._best or better(key, value, self._best[key]):
                    self._best[key] = float(value)
                    self.experiment.summary[f"best/{key}"] = float(value)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Finish the W&B run at the end of every fit (failed fits are marked failed); print `wandb sync`."""
        super().finalize(status)
        run = self._experiment
        if run is None or not hasattr(run, "finish"):
            return
        settings = getattr(run, "settings", None)
        sync_dir = getattr(settings, "sync_dir", None) if self._mode == "offline" else None
        run.finish(exit_code=0 if status in ("success", "finished") else 1)
        # A later fit with this logger continues the same run id instead of silently reusing a finished one.
        compat.set_wandb_run_id(self, run.id)
        self._experiment = None
        if sync_dir:
            log.info("W&B run saved offline; upload it with: wandb sync %s", sync_dir)


def wandb_logger(
    project: str = "gan_lab",
    entity: str | None = None,
    tags: Iterable[str] = (),
    group: str | None = None,
    name: str | None = None,
    mode: str | None = None,
    save_dir: str | os.PathLike[str] = ".",
    log_model: bool | str = False,
    **init_kwargs: Any,
) -> GANWandbLogger:
    """The W&B logger of conf/logger/wandb.yaml; null name/group/mode are filled in from the Hydra job.

    name: the job's overrides (`optim.lr=1e-4,model=sndcgan`; in a multirun the swept ones), else the run
    directory's name. group: the sweep directory of a multirun. mode: see `resolve_mode`. Other keyword
    arguments go to `wandb.init` (e.g. `+logger.wandb.notes=...`, `+logger.wandb.id=...` to continue a run).
    """
    overrides, sweep_dir, job_dir = _hydra_job()
    resolved_mode = resolve_mode(mode)
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    return GANWandbLogger(
        project=project,
        entity=entity,
        tags=list(tags or ()),
        group=group or run_group(sweep_dir is not None, sweep_dir),
        name=name or run_name(overrides, fallback=Path(job_dir or save_dir).absolute().name),
        mode=resolved_mode,
        save_dir=str(save_dir),
        log_model=log_model,
        **init_kwargs,
    )


def log_image(loggers: Iterable[Any], key: str, path: str | os.PathLike[str], step: int) -> None:
    """Log the image file at `path` as `key` at generator step `step` to every W&B and TensorBoard logger (the
    CSV logger keeps its files beside it)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            logger.log_metrics({key: wandb.Image(str(path), caption=Path(path).name)}, step=step)
        elif isinstance(logger, TensorBoardLogger):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            logger.experiment.add_image(key, pixels, global_step=step, dataformats="HWC")
