"""W&B logging (`logger=wandb`), offline: runs are read back from wandb's own transaction log (run-*.wandb)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gan_lab.errors import ConfigError
from gan_lab.loggers import (
    RUN_ID_FILE,
    X_AXIS,
    job_swept_overrides,
    resolve_mode,
    run_group,
    run_name,
    wandb_logger,
)
from gan_lab.utils.config import flatten_config

pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_BLOCK, _HEADER = (
    32768,
    7,
)  # wandb's transaction log: LevelDB-style 32 KiB blocks of (crc, length, type) records


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every Record of a `run-<id>.wandb` file (wandb >= 0.20 ships no Python reader for it)."""
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "not a wandb transaction log"
    records, pos, chunks = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        if _BLOCK - pos % _BLOCK < _HEADER:  # a block tail too short for a header is zero padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0:
            break
        chunks += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


class OfflineRun:
    """What one offline run recorded: config, history rows, summary, exit code, telemetry."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        (self.file,) = run_dir.glob("run-*.wandb")
        self.records = read_records(self.file)
        kinds = [r.WhichOneof("record_type") for r in self.records]
        self.run = next(r.run for r, k in zip(self.records, kinds, strict=True) if k == "run")
        self.config = {
            _key(u): json.loads(u.value_json)
            for r, k in zip(self.records, kinds, strict=True)
            if k == "config"
            for u in r.config.update
        }
        self.history = [
            {_key(i): json.loads(i.value_json) for i in r.history.item}
            for r, k in zip(self.records, kinds, strict=True)
            if k == "history"
        ]
        self.summary = {
            _key(u): json.loads(u.value_json)
            for r, k in zip(self.records, kinds, strict=True)
            if k == "summary"
            for u in r.summary.update
        }
        exits = [r.exit for r, k in zip(self.records, kinds, strict=True) if k == "exit"]
        self.exit_code = exits[-1].exit_code if exits else None
        self.offline = any(
            r.telemetry.feature.offline for r, k in zip(self.records, kinds, strict=True) if k == "telemetry"
        )


def offline_runs(save_dir: Path) -> list[OfflineRun]:
    """The offline runs under save_dir/wandb, oldest first, read once wandb has written them out."""
    import wandb

    # run.finish() returns before wandb-core has flushed the transaction log; stopping wandb-core (what
    # happens at interpreter exit) waits for it.
    wandb.teardown()
    return [OfflineRun(d) for d in sorted((save_dir / "wandb").glob("offline-run-*"))]


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """No W&B key anywhere (env, netrc, settings) and every wandb directory inside tmp_path."""
    for var in (
        "WANDB_API_KEY",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_MODE",
        "WANDB_BASE_URL",
        "WANDB_PROJECT",
    ):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))  # absent
    for var, sub in (("WANDB_DIR", "wandb"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")):  # fmt: skip
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))
    yield home
    import wandb

    wandb.finish()  # nothing may stay open for the next test
    wandb.teardown()  # the settings singleton read this test's environment


# --- pure functions ------------------------------------------------------------------------------------------
def test_run_name_from_overrides():
    overrides = [
        "optim.lr=1e-4",
        "model=sndcgan",
        "hydra.job.chdir=true",
        "hydra/launcher=basic",
        "paths.output_dir=/somewhere",
        "logger=[csv,wandb]",
        "logger.wandb.tags=[a]",
        "+seed=3",
        "~ema",
    ]
    assert run_name(overrides, fallback="12-00-00") == "optim.lr=1e-4,model=sndcgan,seed=3,~ema"
    assert run_name(["paths.output_dir=/x", "hydra.verbose=true"], fallback="12-00-00") == "12-00-00"
    assert run_name([], fallback=None) is None
    assert len(run_name([f"k{i}=value{i}" for i in range(50)])) <= 128


def test_multirun_jobs_are_named_by_their_swept_overrides():
    sweep = ["dataset=fake", "optim.lr=1e-4,2e-4", "model=glob(sn*)", "steps=2", "+tag=range(3)"]
    job = ["dataset=fake", "optim.lr=0.0002", "model=sndcgan", "steps=2", "+tag=1"]  # as Hydra renders them
    assert job_swept_overrides(job, sweep) == ["optim.lr=0.0002", "model=sndcgan", "+tag=1"]
    assert job_swept_overrides(["steps=2"], ["steps=2"]) == ["steps=2"]  # a one-job sweep: all of them


def test_name_and_group_of_a_hydra_multirun_job(tmp_path, hydra_restore_singletons):
    """A study preset sweeps `variant` in hydra.sweeper.params; the command line sweeps optim.lr on top."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from gan_lab.utils.config import CONF_DIR

    sweep_dir = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    sweep_dir.mkdir(parents=True)
    command_line = ["experiment=sn_study", "steps=2", "optim.lr=1e-4,2e-4"]
    OmegaConf.save({"hydra": {"overrides": {"task": command_line}}}, sweep_dir / "multirun.yaml")
    job = [
        "variant=sn_study/wgan",
        "experiment=sn_study",
        "steps=2",
        "optim.lr=0.0002",
    ]  # as Hydra renders it
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", [*job, f"hydra.sweep.dir={sweep_dir}", "hydra.mode=MULTIRUN"], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(sweep_dir / "1")
    HydraConfig.instance().set_config(cfg)

    logger = wandb_logger(save_dir=sweep_dir / "1", mode="offline")  # no run starts until it logs
    assert logger._wandb_init["name"] == "variant=sn_study/wgan,optim.lr=0.0002"
    assert logger._wandb_init["group"] == "2024-05-01_12-00-00"
    assert logger._wandb_init["mode"] == "offline"


def test_run_group_is_the_sweep_directory():
    assert run_group(True, "multirun/2024-05-01/12-00-00") == "2024-05-01_12-00-00"
    assert run_group(True, "/abs/sweeps/lr_study") == "lr_study"
    assert run_group(False, "multirun/2024-05-01/12-00-00") is None
    assert run_group(True, None) is None


def test_mode_follows_credentials(no_credentials, monkeypatch):
    assert resolve_mode(None) == "offline"
    assert resolve_mode("offline") == "offline"
    with pytest.raises(ConfigError, match="wandb login"):  # would prompt for a key mid-run
        resolve_mode("online")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(None) == "disabled"
    monkeypatch.delenv("WANDB_MODE")

    netrc = no_credentials / ".netrc"
    netrc.write_text("machine example.com login user password x\n")
    assert resolve_mode(None) == "offline"  # a netrc without the W&B host
    netrc.write_text("machine api.wandb.ai login user password " + "0" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_mode(None) == "online"
    netrc.unlink()

    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    assert resolve_mode(None) == "online"
    assert resolve_mode("offline") == "offline"


def test_flatten_config_drops_secrets():
    config = {
        "optim": {"lr": 2e-4, "betas": (0.5, 0.999), "api_key": "x"},
        "model": {"name": "sndcgan", "generator": {"_target_": "G"}},
        "Secrets": {"anything": 1},
        "auth_TOKEN": "t",
        "db_password": "p",
        "augment": [{"_target_": "A", "client_secret": "s"}],
        "steps": None,
    }
    assert flatten_config(config) == {
        "optim.lr": 2e-4,
        "optim.betas": [0.5, 0.999],
        "model.name": "sndcgan",
        "model.generator._target_": "G",
        "augment.0._target_": "A",
        "steps": None,
    }


# --- runs --------------------------------------------------------------------------------------------------------
def test_tiny_training_writes_an_offline_run(no_credentials, tiny_config, tmp_path, caplog):
    from gan_lab.train import train

    cfg = tiny_config(
        "logger=[csv,wandb]",
        "steps=4",
        "callbacks.samples.every_n_steps=2",
        "optim.lr=3e-4",
        "+paths.api_key=hunter2",
    )
    caplog.set_level("INFO", logger="gan_lab.loggers")
    train(cfg)
    import wandb

    assert wandb.run is None  # finished at the end of the fit
    save_dir = tmp_path / "run"
    assert (save_dir / "metrics.csv").is_file()  # the CSV logger still writes
    (run,) = offline_runs(save_dir)
    assert run.offline and run.exit_code == 0
    assert (save_dir / RUN_ID_FILE).read_text().strip() == run.run.run_id
    assert run.run.project == "gan_lab" and run.run.display_name == "run"  # the run directory's name

    train_rows = [row for row in run.history if "train/d_loss" in row]
    assert [row[X_AXIS] for row in train_rows] == [1, 2, 3, 4]
    assert all("train/g_loss" in row and row["train/d_step"] == row[X_AXIS] for row in train_rows)
    image_rows = [row for row in run.history if "samples._type" in row or "samples" in row]
    assert [row[X_AXIS] for row in image_rows] == [2, 4]
    assert (run.dir / "files" / image_rows[0]["samples.path"]).is_file()
    steps = [row["_step"] for row in run.history]
    assert steps == sorted(set(steps))  # no row was merged or dropped

    assert run.config["optim.lr"] == pytest.approx(3e-4)
    assert run.config["model.name"] == "sndcgan"
    assert run.config["loss._target_"] == "gan_lab.core.losses.NonSaturatingLoss"
    assert not any(isinstance(v, dict) for k, v in run.config.items() if k != "_wandb")  # flat
    assert not [k for k in run.config if any(w in k.lower() for w in ("key", "token", "secret", "password"))]
    assert "hunter2" not in run.file.read_bytes().decode("latin-1")

    assert f"wandb sync {run.dir}" in caplog.text


def test_logger_keeps_best_fid_and_marks_failed_fits(no_credentials, tmp_path):
    logger = wandb_logger(save_dir=tmp_path / "job", name="direct", tags=["t"])
    logger.log_metrics({"train/g_loss": 1.0}, step=1)
    logger.log_metrics({"val/fid5k_train": 30.0}, step=1)  # same generator step, after the training row
    logger.log_metrics({"train/g_loss": 0.5}, step=2)
    logger.log_metrics({"val/fid5k_train": 20.0}, step=2)
    logger.log_metrics({"val/fid5k_train": 25.0}, step=3)
    for step, value in ((1, 2.0), (2, 3.0), (3, 2.5)):  # higher is better for IS and precision
        logger.log_metrics(
            {"val/is5k_32": value, "val/is5k_32_std": value, "val/precision5k_train32_vgg16": value / 5},
            step=step,
        )
    logger.finalize("failed")
    logger.log_metrics({"train/g_loss": 0.1}, step=4)  # a later use starts a new run with the same id
    logger.finalize("success")
    first, second = offline_runs(tmp_path / "job")
    assert first.exit_code == 1 and second.exit_code == 0
    assert first.run.run_id == second.run.run_id and first.run.display_name == "direct"
    assert [(r[X_AXIS], r["val/fid5k_train"]) for r in first.history if "val/fid5k_train" in r] == [
        (1, 30.0),
        (2, 20.0),
        (3, 25.0),
    ]
    assert first.summary["best/val/fid5k_train"] == 20.0
    assert first.summary["val/fid5k_train"] == 25.0
    assert (
        first.summary["best/val/is5k_32"] == 3.0
        and first.summary["best/val/precision5k_train32_vgg16"] == 0.6
    )
    assert "best/val/is5k_32_std" not in first.summary  # a spread, not a metric
    assert list(first.run.tags) == ["t"]


@pytest.mark.slow  # ~10 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_multirun_jobs_get_one_finished_run_each(no_credentials, tmp_path):
    from conftest import TINY_RUN

    sweep = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    result = subprocess.run(
        [sys.executable, "-m", "gan_lab.train", "-m", *TINY_RUN, "logger=wandb", "steps=2",
         "optim.lr=1e-4,2e-4", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [run for job in ("0", "1") for run in offline_runs(sweep / job)]
    assert [r.run.display_name for r in runs] == ["optim.lr=0.0001", "optim.lr=0.0002"]
    assert {r.run.run_group for r in runs} == {"2024-05-01_12-00-00"}
    assert runs[0].run.run_id != runs[1].run.run_id
    assert [r.exit_code for r in runs] == [0, 0]
    assert [r.config["optim.lr"] for r in runs] == [1e-4, 2e-4]
    assert f"wandb sync {runs[0].dir}" in (sweep / "0" / "train.log").read_text()
