"""Run configs: composed from Python (notebooks, tests) exactly as the command line does; plain (resolved,
container) ones with secret-looking keys redacted or dropped, and nesting flattened."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
SECRET_WORDS = ("key", "token", "secret", "password")


def compose_config(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None, config_name: str = "train"
) -> DictConfig:
    """The config `python -m gan_lab.<config_name> <overrides>` would run; output_dir replaces the run directory."""
    overrides = list(overrides)
    if output_dir is not None:
        overrides.append(f"paths.output_dir={Path(output_dir).as_posix()}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def config_choices(group: str) -> list[str]:
    """The options a config group offers, from the YAML files in conf/<group>/."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def is_secret(key: object) -> bool:
    """Whether a config key looks like it holds a credential (key, token, secret, password)."""
    return any(word in str(key).lower() for word in SECRET_WORDS)


def redact_secrets(config: Any) -> Any:
    """A copy of a plain config with the values of secret-looking keys replaced by "<redacted>"."""
    if isinstance(config, Mapping):
        return {k: "<redacted>" if is_secret(k) else redact_secrets(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [redact_secrets(v) for v in config]
    return config


def flatten_config(config: Mapping[str, Any], sep: str = ".") -> dict[str, Any]:
    """{"optim": {"lr": 2e-4}} -> {"optim.lr": 2e-4}; drops secret-looking keys with everything under them.

    Lists of scalars stay lists (optim.betas); lists holding mappings are indexed (augment.0._target_).
    """
    flat: dict[str, Any] = {}

    def visit(value: Any, prefix: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not is_secret(key):
                    visit(item, f"{prefix}{sep}{key}" if prefix else str(key))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            for i, item in enumerate(value):
                visit(item, f"{prefix}{sep}{i}")
        else:
            flat[prefix] = list(value) if isinstance(value, tuple) else value

    visit(config, "")
    return flat


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (-m)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
