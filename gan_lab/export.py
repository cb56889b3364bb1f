"""`python -m gan_lab.export ckpt=PATH [out=DIR]`: a checkpoint's generator as safetensors (conf/export.yaml).

Writes into out: generator.safetensors (the trained generator), generator_ema.safetensors (runs with ema.decay)
and config.yaml (the run config, secret-looking values redacted, plus `export.format` and `export.g_steps`).
Safetensors files hold tensors only, so an export can be shared and loaded without trusting a pickle;
`python -m gan_lab.sample ckpt=<out>` and `python -m gan_lab.evaluate ckpt=<out>` take it as they take a .ckpt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file
from torch import Tensor

from gan_lab.cli import user_errors_as_one_line
from gan_lab.errors import ConfigError, GanLabError
from gan_lab.run.checkpoint_io import (
    EMA_PREFIX,
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    GENERATOR_PREFIX,
    build_generator,
    generator_state,
    load_checkpoint,
    trusted_packages,
)
from gan_lab.run.paths import LAST_CKPT_EXAMPLE, RunDir
from gan_lab.utils.config import redact_secrets

log = logging.getLogger("gan_lab.export")
# (file stem, state_dict prefix) of the generators an export can hold.
GENERATORS = (("generator", GENERATOR_PREFIX), ("generator_ema", EMA_PREFIX))


def default_out_dir(ckpt: Path) -> Path:
    """<run dir>/export."""
    return RunDir.of(ckpt).export


def standalone(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU copies that share no memory: safetensors refuses aliased or strided tensors."""
    return {key: value.detach().cpu().clone().contiguous() for key, value in weights.items()}


def export_config(hyper_parameters: dict, g_steps: int) -> DictConfig:
    """The run config (secret-looking values redacted again: older checkpoints kept them) with an export node."""
    config = OmegaConf.create(redact_secrets(hyper_parameters))
    config.export = {"format": EXPORT_FORMAT, "g_steps": g_steps}
    return config


def export_checkpoint(
    ckpt: str | Path, out: str | Path | None = None, trusted: Sequence[str] | None = None
) -> dict[str, Path]:
    """Write generator[_ema].safetensors and config.yaml of ckpt into out; returns {name: path}. `trusted`:
    checkpoint.trusted_packages, the user's own packages whose generators may be built."""
    ckpt = Path(ckpt).expanduser().absolute()
    checkpoint = load_checkpoint(ckpt)
    out = Path(out).expanduser().absolute() if out else default_out_dir(ckpt)
    g_steps = int(checkpoint.get("gan_lab", {}).get("g_steps", 0))
    config = export_config(checkpoint["hyper_parameters"], g_steps)
    paths: dict[str, Path] = {}
    out.mkdir(parents=True, exist_ok=True)
    for name, prefix in GENERATORS:
        path = out / f"{name}.safetensors"
        weights = generator_state(checkpoint["state_dict"], prefix)
        if not weights:
            if name == "generator":
                raise GanLabError(f"{ckpt} holds no generator weights (no {prefix}* in its state_dict)")
            path.unlink(missing_ok=True)  # a stale EMA file from an earlier export would be loaded first
            continue
        build_generator(config, weights, ckpt, trusted)  # refuse to write an export that would not load
        metadata = {"format": EXPORT_FORMAT, "g_steps": str(g_steps), "generator": name}
        save_file(standalone(weights), path, metadata=metadata)
        paths[name] = path
    paths["config"] = out / EXPORT_CONFIG
    OmegaConf.save(config, paths["config"])
    log.info("exported %s (%d generator steps) to %s", ckpt, g_steps, out)
    return paths


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise ConfigError(f"ckpt is required: python -m gan_lab.export ckpt={LAST_CKPT_EXAMPLE}")
    for name, path in export_checkpoint(cfg.ckpt, cfg.out, trusted_packages(cfg)).items():
        print(f"{name + ':':<15}{path}")


if __name__ == "__main__":
    main()
