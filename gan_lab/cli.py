"""What the command-line entry points (train, evaluate, sample) share."""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gan_lab.errors import ConfigError, one_line, user_error
from gan_lab.utils import compat
from gan_lab.utils.config import in_multirun


def user_errors_as_one_line(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an entry point: a GanLabError prints one `gan_lab: error:` line and exits 1.

    Other exceptions, and every exception when HYDRA_FULL_ERROR=1, propagate with their traceback. In a
    multirun the failed job's error is printed and re-raised, so the remaining jobs still run. The entry
    point's return value is passed on (a training run's objective, for Hydra's Optuna sweeper).
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except Exception as exc:
            err = user_error(exc)
            if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"gan_lab: error: {one_line(err)}", file=sys.stderr)
            if in_multirun():
                raise  # Hydra marks this job failed, runs the others, and reports the failure at the end
            sys.exit(getattr(err, "exit_code", 1))  # e.g. 143 after SIGTERM (preempted)

    return wrapper


def config_errors_as_one_line(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a `@hydra.main` entry point: a config Hydra cannot compose prints one `gan_lab: error:` line.

    Hydra reports an unknown option (model=foo), an unknown key (optim.lrr=1) or an override it cannot parse
    as a multi-line dump of its search path; this prints the problem and the available options or the fix,
    and exits 1. With HYDRA_FULL_ERROR=1 Hydra's own report, with the traceback, is kept.
    """

    @functools.wraps(hydra_main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # Hydra composes, runs and reports every step through run_and_report: catch the composition errors
        # before it prints them. A Hydra without that function keeps its own report.
        with compat.hydra_steps_run_through(_composed_or_exit):
            return hydra_main(*args, **kwargs)

    return wrapper


def _composed_or_exit(func: Callable[[], Any]) -> Any:
    from hydra.errors import ConfigCompositionException, OverrideParseException

    try:
        return func()
    except (ConfigCompositionException, OverrideParseException) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"gan_lab: error: {config_error_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        # Hydra creating or writing the run directory (hydra.run.dir) before any gan_lab code runs.
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or _raised_by_gan_lab(exc):
            raise
        print(
            f"gan_lab: error: cannot write the run directory {exc.filename or ''} ({exc.strerror or exc}); "
            "choose a writable one with hydra.run.dir=PATH, or fix its permissions",
            file=sys.stderr,
        )
        sys.exit(1)


def _raised_by_gan_lab(exc: BaseException) -> bool:
    package = str(Path(__file__).resolve().parent)
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(package) and not filename.endswith("cli.py"):
            return True
        tb = tb.tb_next
    return False


def config_error_line(exc: Exception) -> str:
    """One line for a Hydra composition error: the problem, then the options or the fix."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    text = str(exc).split("\nConfig search path:")[0]  # the search path is noise to a user
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cause = exc.__cause__
    overridden = re.search(r"Could not override '([^']+)'", text)
    if overridden and f"{overridden.group(1)}.".startswith("augment.hflip."):
        from gan_lab.legacy import HFLIP_REPLACED  # the flip's probability is no longer a setting

        return HFLIP_REPLACED
    if isinstance(exc, MissingConfigException) and "/" in (exc.missing_cfg_file or ""):
        group, _, name = exc.missing_cfg_file.partition("/")
        options = list(exc.options or []) if "/" not in name else []
        options = options or _group_options(group)
        where = re.match(r"In '([^']+/[^']+)':", text)  # a default asked for by a group's file, not by you
        named_in = f" (named in conf/{where.group(1)}.yaml)" if where else ""
        if options:
            return f"unknown {group} '{name}'{named_in}; choose one of: {', '.join(options)}"
        return f"unknown {group} '{name}'{named_in}; no conf/{group}/ options were found"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
        append = re.search(r"use (\+\S+)", text)
        add = f"add a new key with {append.group(1)}" if append else "add a new key with +KEY=VALUE"
        parent = cause.parent_node
        known = [k for k in parent.keys() if k != "hydra"] if hasattr(parent, "keys") else []
        prefix = cause.full_key.rpartition(".")[0]
        prefix = f"{prefix}." if prefix else ""
        close = difflib.get_close_matches(str(cause.key), [str(k) for k in known], n=1)
        if close:
            return f"unknown config key '{cause.full_key}'; did you mean '{prefix}{close[0]}'? (or {add})"
        listing = (
            f" ({prefix.rstrip('.') or 'the config'} has: {', '.join(map(str, known))})" if known else ""
        )
        return f"unknown config key '{cause.full_key}'{listing}; fix the name, or {add}"
    if isinstance(exc, OverrideParseException):
        detail = f" ({lines[0]})" if lines else ""
        return f"cannot parse the override '{exc.override}'{detail}; {'; '.join(lines[1:]) or 'check its syntax'}"
    line = "; ".join(lines) or type(exc).__name__
    if isinstance(cause, OmegaConfBaseException):
        line += f" ({str(cause).strip().splitlines()[0]})"
    return line


def _group_options(group: str) -> list[str]:
    """The options of a config group in conf/, found recursively (variant=sn_study/dcgan)."""
    from gan_lab.utils.config import CONF_DIR

    folder = CONF_DIR / group
    return sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.yaml"))


def resolve_device(name: str) -> torch.device:
    """`auto` = cuda if available, else cpu; otherwise any torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{name}'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is visible; use device=auto or device=cpu")
    return device
