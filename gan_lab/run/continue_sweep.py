"""`python -m gan_lab.train -m resume=multirun/<date>/<time>`: the sweep stored there, launched again.

The command line becomes the stored sweep's own (its overrides, launcher and sweep directory, as Hydra recorded
them in the sweep directory) plus `resume=<that directory>` and what else the new command line says. Hydra then
expands the same jobs in the same order, so each lands in its own numbered directory, and each job decides from
that directory what to do (gan_lab/run/store.py: skip, continue from its last checkpoint, or start). This works through
any launcher that numbers jobs as Hydra's basic one does (basic, joblib, submitit).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from gan_lab.errors import ConfigError
from gan_lab.run.paths import MULTIRUN_FILE

MULTIRUN_FLAGS = ("-m", "--multirun")


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def expand_command_line(argv: Sequence[str]) -> list[str]:
    """argv, with `-m resume=<multirun dir>` replaced by that sweep's command line (see the module docstring);
    any other argv unchanged."""
    argv = list(argv)
    if not any(a in MULTIRUN_FLAGS for a in argv):
        return argv
    resume = next((a.split("=", 1)[1] for a in argv if _key(a) == "resume" and "=" in a), None)
    if not resume or not (Path(resume).expanduser() / MULTIRUN_FILE).is_file():
        return argv
    sweep = Path(resume).expanduser().absolute()
    stored = OmegaConf.load(sweep / MULTIRUN_FILE).hydra
    sweeper = str((stored.get("sweeper") or {}).get("_target_", ""))
    if "BasicSweeper" not in sweeper:
        raise ConfigError(
            f"resume={resume}: that sweep ran with {sweeper.rsplit('.', 1)[-1] or 'an unknown sweeper'}, whose "
            "jobs cannot be listed again; continue its jobs one by one with resume=<job directory>"
        )
    is_override = ["=" in a and not a.startswith("-") for a in argv]
    given = [a for a, o in zip(argv, is_override, strict=True) if o and _key(a) != "resume"]
    replaced = {_key(a) for a in given} | {"resume", "hydra.sweep.dir"}
    stored_overrides = [*stored.overrides.hydra, *stored.overrides.task]
    kept = [str(o) for o in stored_overrides if _key(str(o)) not in replaced]
    flags = [
        a for a, o in zip(argv, is_override, strict=True) if not o
    ]  # argv[0], -m, --config-name NAME, ...
    return [*flags, *kept, *given, f"hydra.sweep.dir={sweep}", f"resume={sweep}"]
