"""Atomic checkpoint writes (kill -9, full disk) and the divergence guard (issue 6, items 2 and 3)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLI, TINY_RUN

from gan_lab.callbacks import last_checkpoint_path
from gan_lab.core.guards import Diverged
from gan_lab.core.losses import NonSaturatingLoss
from gan_lab.run.checkpoint_io import CheckpointWriteError, load_checkpoint
from gan_lab.run.checkpoint_io import save_checkpoint as atomic_torch_save
from gan_lab.train import train
from gan_lab.utils import io as file_io
from gan_lab.utils.config import compose_config


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    """A real training process writing last.ckpt every generator step is SIGKILLed in the middle of a write."""
    run_dir = tmp_path / "run"
    ckpt_dir = run_dir / "checkpoints"
    args = [
        *TINY_CLI,
        "model.width=64",
        "steps=100000",
        "callbacks.last.every_n_steps=1",
        "callbacks.diversity=null",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "gan_lab.train", *args, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    partial: list[Path] = []
    deadline = time.time() + 300
    try:
        while not partial:
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.time() < deadline, "never saw a checkpoint being written"
            # The temporary file of a write in progress, once a complete last.ckpt exists beside it.
            if (ckpt_dir / "last.ckpt").is_file():
                partial = [p for p in ckpt_dir.glob(".last.ckpt.tmp-*") if p.stat().st_size > 0]
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    leftover = [p for p in ckpt_dir.glob(".last.ckpt.tmp-*")]
    checkpoint = load_checkpoint(ckpt_dir / "last.ckpt")  # complete and readable
    assert checkpoint["gan_lab"]["g_steps"] >= 1
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    if leftover:  # killed mid-write: the half-written file is not a checkpoint, last.ckpt is untouched by it
        assert leftover[0].stat().st_size < (ckpt_dir / "last.ckpt").stat().st_size


def _fail_after_some_bytes(obj: object, f: object) -> None:
    f.write(b"PK\x03\x04 partial")  # type: ignore[attr-defined]
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"version": 1}, path)
    before = path.read_bytes()
    monkeypatch.setattr(file_io.torch, "save", _fail_after_some_bytes)
    with pytest.raises(CheckpointWriteError) as err:
        atomic_torch_save({"version": 2}, path)
    message = str(err.value)
    assert "No space left on device" in message and "the previous checkpoint is kept" in message
    assert "resume=" in message and "\n" not in message
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_full_disk_during_training_fails_in_one_line_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    train(compose_config([*TINY_RUN, "steps=2"], output_dir=run))
    ckpt = run / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()
    monkeypatch.setattr(file_io.torch, "save", _fail_after_some_bytes)
    overrides = ["steps=4", f"resume={run}"]
    with pytest.raises(CheckpointWriteError):
        train(compose_config([*TINY_RUN, *overrides]), overrides=overrides)
    assert ckpt.read_bytes() == before
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["error"]
    assert not list(ckpt.parent.glob(".*tmp*"))


def _nan_from_call(n: int):
    calls = {"count": 0}
    original = NonSaturatingLoss.g_loss

    def g_loss(self: NonSaturatingLoss, fake_logits: torch.Tensor) -> torch.Tensor:
        calls["count"] += 1
        loss = original(self, fake_logits)
        return loss * float("nan") if calls["count"] >= n else loss

    return g_loss


def test_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 batches per epoch: last.ckpt is written at generator step 4 (epoch end); g_loss is NaN from step 6.
    monkeypatch.setattr(NonSaturatingLoss, "g_loss", _nan_from_call(6))
    run = tmp_path / "run"
    with pytest.raises(Diverged) as err:
        train(compose_config([*TINY_RUN, "steps=20", "trainer.log_every_n_steps=2"], output_dir=run))
    message = str(err.value)
    assert "g_loss=nan at generator step 6 (discriminator step 6)" in message
    assert "non-finite generator weights" in message  # the NaN gradient reached G's weights
    assert f"the last good checkpoint is kept: {run / 'checkpoints' / 'last.ckpt'}" in message
    assert "lower optim.lr" in message and "\n" not in message
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["gan_lab"]["g_steps"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "training diverged" in status["error"]


def test_nan_weights_are_never_saved(tmp_path: Path, tiny_config) -> None:
    module = train(tiny_config("steps=1"))
    last = Path(module.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with torch.no_grad():
        next(module.discriminator.parameters()).fill_(float("inf"))
    with pytest.raises(Diverged, match=r"non-finite discriminator weights \(net\.0\.") as err:
        module.trainer.save_checkpoint(last)
    assert last.read_bytes() == before
    # The guard knows no checkpoints: the entry point adds the one a resume would read.
    assert "checkpoint is kept" not in str(err.value)
    assert last_checkpoint_path(module.trainer) == last and last_checkpoint_path(None) is None


def test_diverged_says_what_was_kept_before_the_fix() -> None:
    """What the entry point adds (`kept`) goes between what diverged and the fix; a pickled error (a launcher's
    failed job) comes back whole."""
    alone = Diverged("g_loss=nan at generator step 6 (discriminator step 6)")
    assert str(alone) == (
        "training diverged: g_loss=nan at generator step 6 (discriminator step 6); lower optim.lr or stabilise D "
        "(normalization=spectral, regularizer=gradient_penalty), then resume=<checkpoint> or start again"
    )
    kept = Diverged(alone.what, "the last good checkpoint is kept: run/checkpoints/last.ckpt")
    assert str(kept) == str(alone).replace(
        "(discriminator step 6); ",
        "(discriminator step 6); the last good checkpoint is kept: run/checkpoints/last.ckpt; ",
    )
    again = pickle.loads(pickle.dumps(kept))
    assert type(again) is Diverged and str(again) == str(kept) and again.what == alone.what


def test_diverged_cli_run_exits_1_with_one_line(tmp_path: Path) -> None:
    """lr=1e30 blows the weights up; the command line reports it in one line and exits 1."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "gan_lab.train", *TINY_CLI, "model=dcgan", "optim.lr=1e30", "steps=50",
         "trainer.log_every_n_steps=1", "callbacks.diversity=null", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("gan_lab: error:")]
    assert len(lines) == 1 and "training diverged" in lines[0] and "Traceback" not in result.stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
