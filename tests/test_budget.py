"""`budget`: a training budget in minutes of wall-clock time (issue 14), beside `steps`.

It stops a run like `steps` does (status completed, last.ckpt written), whichever of the two comes first; it
counts the run's training time across resumes (Lightning's Timer, whose elapsed time every checkpoint holds).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_RUN
from lightning.pytorch.callbacks import Timer

from gan_lab.build import build_trainer
from gan_lab.cli import user_errors_as_one_line
from gan_lab.run.checkpoint_io import load_checkpoint
from gan_lab.run.paths import RunDir
from gan_lab.train import train
from gan_lab.utils.config import compose_config


def _status(run: Path) -> dict:
    return json.loads(RunDir(run).status.read_text())


def _saved_training_seconds(run: Path) -> float:
    """The training time last.ckpt holds (the Timer's state)."""
    return load_checkpoint(RunDir(run).last_ckpt)["callbacks"]["Timer"]["time_elapsed"]["train"]


def _timer(trainer) -> Timer:
    (timer,) = [c for c in trainer.callbacks if isinstance(c, Timer)]
    return timer


def test_budget_stops_the_run_by_time(tmp_path: Path) -> None:
    """budget=0.05 (3 s), no steps: trainer.max_epochs=1 (4 generator steps, well under 3 s) does not stop it
    first; it stops at the first step past 3 s, cleanly."""
    run = tmp_path / "run"
    module = train(compose_config([*TINY_RUN, "budget=0.05", "trainer.max_epochs=1"], output_dir=run))
    assert module.trainer.max_epochs == -1  # the budget replaced trainer.max_epochs
    assert 3.0 <= _timer(module.trainer).time_elapsed() < 60  # stopped by time, not by one epoch
    assert module.g_steps >= 1 and _status(run)["status"] == "completed"
    checkpoint = load_checkpoint(RunDir(run).last_ckpt)
    assert checkpoint["gan_lab"]["g_steps"] == module.g_steps
    assert _saved_training_seconds(run) >= 3.0


def test_steps_stop_first_when_the_budget_is_large(tmp_path: Path) -> None:
    run = tmp_path / "run"
    module = train(compose_config([*TINY_RUN, "steps=2", "budget=60"], output_dir=run))
    assert module.g_steps == 2
    assert _status(run)["status"] == "completed" and RunDir(run).last_ckpt.is_file()
    assert _timer(module.trainer).time_elapsed() < 60


@pytest.mark.parametrize("value", ["0", "-1", "abc", "true", "nan"])
def test_bad_budget_is_one_line(value: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = compose_config([*TINY_RUN, f"budget={value}"], output_dir=tmp_path / "run")
    with pytest.raises(SystemExit) as exited:
        user_errors_as_one_line(train)(cfg)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("gan_lab: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gan_lab: error: budget must be a number of minutes > 0 (or null: none), got ")
    assert lines[0].endswith("; e.g. budget=30")


def test_the_trainer_gets_one_timer(tiny_config) -> None:
    """budget replaces trainer.max_time and trainer.max_epochs; without either the Timer only keeps time."""
    cases = {
        ("budget=0.5",): (30.0, -1),
        ("+trainer.max_time='00:00:01:00'",): (60.0, 25),
        ("budget=0.5", "+trainer.max_time='00:00:01:00'"): (30.0, -1),
        (): (None, 25),
    }
    for overrides, (seconds, max_epochs) in cases.items():
        trainer = build_trainer(tiny_config(*overrides))
        assert _timer(trainer).time_remaining() == seconds, overrides
        assert trainer.max_epochs == max_epochs, overrides


def test_resume_with_a_new_budget_counts_the_whole_run(tmp_path: Path) -> None:
    """A run stopped by budget=0.02 (1.2 s) resumed with budget=0.05 trains until 3 s in all, not 3 s more."""
    run = tmp_path / "run"
    first = train(compose_config([*TINY_RUN, "budget=0.02"], output_dir=run))
    first_seconds = _saved_training_seconds(run)
    assert first_seconds >= 1.2
    resume = ["budget=0.05", f"resume={run}"]
    resumed = train(compose_config([*TINY_RUN, *resume], output_dir=tmp_path / "unused"), overrides=resume)
    assert resumed.g_steps > first.g_steps and _status(run)["status"] == "completed"
    timer = _timer(resumed.trainer)
    this_process = timer.end_time() - timer.start_time()
    assert timer.time_elapsed() - this_process == pytest.approx(first_seconds)  # the earlier time counts
    assert timer.time_elapsed() >= 3.0 and _saved_training_seconds(run) >= 3.0
    assert not (tmp_path / "unused").exists()
    # the same budget again: it is spent, so the run ends at once, completed, where it was
    again = ["budget=0.05", f"resume={run}"]
    same = train(compose_config([*TINY_RUN, *again], output_dir=tmp_path / "unused"), overrides=again)
    assert same.g_steps == resumed.g_steps and _status(run)["status"] == "completed"
