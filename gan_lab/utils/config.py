"""Plain (resolved, container) run configs: secret-looking keys redacted or dropped, nesting flattened."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SECRET_WORDS = ("key", "token", "secret", "password")


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
