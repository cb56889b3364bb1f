"""Checkpoint and export files: atomic durable saves, and loads that run no code (tensors, gan_lab targets).

What a checkpoint holds beyond Lightning's own: the global RNG states (utils/rng.rng_state, as types a weights-only
load reads), and a stored run config that is read back with the `_target_`s of moved classes upgraded.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from yaml import YAMLError

from gan_lab.errors import ConfigError, GanLabError
from gan_lab.legacy import upgrade_stored_config
from gan_lab.run.paths import CONFIG_FILE, LAST_CKPT_EXAMPLE
from gan_lab.utils.io import atomic_torch_save

GENERATOR_PREFIX = "generator."
EMA_PREFIX = "generator_ema.module."  # AveragedModel keeps the averaged copy of G under .module
EXPORT_FORMAT = "gan_lab.generator.v1"  # the "format" tag in the safetensors metadata of gan_lab exports
EXPORT_CONFIG = CONFIG_FILE  # an export carries the run config, named as in the run directory
# An export directory's weights in order of preference: the EMA generator first, as from a .ckpt.
EXPORT_FILES = ("generator_ema.safetensors", "generator.safetensors")
# A checkpoint (.ckpt) is read with torch.load(weights_only=True); an export (python -m gan_lab.export) is
# safetensors weights plus a config.yaml. Either way the generator is rebuilt from its stored config, whose
# `_target_`s must name gan_lab classes: a shared file never gets to pick the callable Hydra instantiates.
# The only callables a loaded config may name: Hydra calls `_target_` with the stored arguments, so a shared
# checkpoint or config.yaml naming e.g. os.system would otherwise run code just like a pickle.
TRUSTED_TARGETS = {"model.generator": "gan_lab.nets.", "dataset": "gan_lab.data."}
# gan_lab and torch are always trusted (within the prefixes above); checkpoint.trusted_packages adds a
# researcher's own packages, e.g. [gan_lab, torch, my_lab], so that my_lab.nets.MyGenerator loads.
BUILT_IN_PACKAGES = ("gan_lab", "torch")


def trusted_package_prefixes(packages: Sequence[str] | None) -> tuple[str, ...]:
    """'my_lab.' for each package of checkpoint.trusted_packages beyond the built-in ones; ConfigError if a
    name is not a dotted Python package name."""
    extra = []
    for name in packages or ():
        name = str(name)
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(
                f"checkpoint.trusted_packages has '{name}', which is not a Python package name; "
                "e.g. checkpoint.trusted_packages=[gan_lab,torch,my_lab]"
            )
        if name not in BUILT_IN_PACKAGES:
            extra.append(f"{name}.")
    return tuple(extra)


def trusted_packages(cfg: DictConfig) -> list[str] | None:
    """checkpoint.trusted_packages of a command's own config (never of the file it loads)."""
    packages = OmegaConf.select(cfg, "checkpoint.trusted_packages", default=None)
    return list(packages) if packages is not None else None


def generator_targets(packages: Sequence[str] | None = None) -> dict[str, tuple[str, ...]]:
    """TRUSTED_TARGETS widened by the user's own packages."""
    extra = trusted_package_prefixes(packages)
    return {key: (prefix, *extra) for key, prefix in TRUSTED_TARGETS.items()}


# torch.save (and so Lightning) writes zip archives; gan_lab never wrote anything else.
_ZIP_MAGIC = b"PK\x03\x04"
# No torch.serialization.add_safe_globals: a gan_lab checkpoint (weights, Adam and LR-scheduler states, EMA,
# callback states, the run config as a plain dict) holds only tensors, str, int, float, bool, None, dict, list
# and tuple, which weights_only=True accepts as is (tests/test_export.py loads one from a real run).


class CheckpointWriteError(GanLabError):
    """A checkpoint could not be written (disk full, permissions); the previous one is untouched."""


def save_checkpoint(checkpoint: Any, path: str | os.PathLike[str]) -> None:
    """torch.save atomically and durably: a kill, a crash or a full disk leaves the previous file whole."""
    path = Path(path)
    try:
        atomic_torch_save(checkpoint, path, durable=True)
    except OSError as err:
        kept = "the previous checkpoint is kept" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({err.strerror or err}); {kept}; free disk space or "
            "fix the folder's permissions, then continue with resume=<run dir>"
        ) from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes (remote URLs keep Lightning's own writer)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        save_checkpoint(checkpoint, path)


def _refusal_reason(err: Exception) -> str:
    """The line of torch's weights-only refusal naming the offending global (the rest advises unsafe loading)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Weights only load failed", "Check the doc"))]
    return (reasons or ["an object that is not a tensor"])[0].rstrip(".")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of a gan_lab run, on the CPU, its run config upgraded (upgrade_stored_config);
    refuses files that need arbitrary code to unpickle."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GanLabError(f"checkpoint {path} not found; pass ckpt={LAST_CKPT_EXAMPLE}")
    with path.open("rb") as file:
        magic = file.read(len(_ZIP_MAGIC))
    if magic != _ZIP_MAGIC:  # refused before unpickling anything: a bare pickle, a text file, an empty file
        raise GanLabError(
            f"{path} is not a PyTorch checkpoint (not a torch.save zip archive); pass a .ckpt written by "
            "gan_lab training, or an export directory written by python -m gan_lab.export"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise GanLabError(
            f"{path} holds objects other than tensors and plain containers ({_refusal_reason(err)}), which "
            "gan_lab refuses to unpickle because a pickle can run code; only load checkpoints written by "
            "gan_lab, or ask for an export (python -m gan_lab.export: safetensors, no pickle)"
        ) from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as err:
        reason = " ".join(str(err).split(". ")[0].split())[:150] or type(err).__name__  # first sentence
        raise GanLabError(f"{path} is not a readable checkpoint ({reason}); is the file complete?") from err
    if (
        not isinstance(checkpoint, dict)
        or not isinstance(checkpoint.get("state_dict"), dict)
        or not isinstance(checkpoint.get("hyper_parameters"), dict)
    ):
        raise GanLabError(f"{path} is not a gan_lab training checkpoint (no state_dict / run config in it)")
    checkpoint["hyper_parameters"] = upgrade_stored_config(checkpoint["hyper_parameters"])
    return checkpoint


@dataclass
class LoadedGenerator:
    """A trained generator (eval mode) with the run config it was trained with."""

    generator: nn.Module
    config: DictConfig
    g_steps: int

    @property
    def z_dim(self) -> int:
        return int(self.config.model.z_dim)

    @property
    def num_classes(self) -> int:
        return int(self.config.model.get("num_classes", 0))


def generator_state(state_dict: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of a module state_dict under prefix (GENERATOR_PREFIX or EMA_PREFIX), prefix removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def check_trusted_targets(
    config: DictConfig, source: Path, trusted: Mapping[str, str | tuple[str, ...]] = TRUSTED_TARGETS
) -> None:
    """Refuse a config where a key of `trusted` names a `_target_` outside its allowed module prefix(es)."""

    def visit(node: Any, key: str, prefix: str | tuple[str, ...]) -> None:
        if isinstance(node, Mapping):
            target = node.get("_target_")
            if target is not None and not str(target).startswith(prefix):
                allowed = "* or ".join(prefix) if isinstance(prefix, tuple) else prefix
                raise GanLabError(
                    f"{source}: {key}._target_ is '{target}', but gan_lab only builds {allowed}* classes from a "
                    "loaded config (a shared file must not choose what code runs); was this file made by gan_lab? "
                    "If it names your own package, list it: checkpoint.trusted_packages=[gan_lab,torch,PACKAGE]"
                )
            for k, v in node.items():
                visit(v, f"{key}.{k}", prefix)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                visit(v, f"{key}.{i}", prefix)

    for key, prefix in trusted.items():
        visit(resolved(config, key, source), key, prefix)


def resolved(config: DictConfig, key: str, source: Path) -> Any:
    """config[key] as plain containers with interpolations resolved: exactly what Hydra would instantiate."""
    try:
        node = OmegaConf.select(config, key, throw_on_missing=True)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except OmegaConfBaseException as err:
        raise GanLabError(
            f"{source}: cannot resolve {key} of the run config ({' '.join(str(err).split())[:200]})"
        ) from err


def build_generator(
    config: DictConfig,
    weights: Mapping[str, Tensor],
    source: Path,
    trusted_packages: Sequence[str] | None = None,
) -> nn.Module:
    """The generator config.model.generator describes, holding `weights`; GanLabError when they do not fit.
    Its `_target_` must be a gan_lab class or one of `trusted_packages` (checkpoint.trusted_packages)."""
    spec = resolved(config, "model.generator", source)
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise GanLabError(f"{source}: the run config has no model.generator; was this file made by gan_lab?")
    check_trusted_targets(config, source, generator_targets(trusted_packages))
    generator, target = instantiate(spec), spec["_target_"]
    try:
        missing, unexpected = generator.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches; the first line after torch's header names one
        detail = [line.strip() for line in str(err).splitlines()[1:] if line.strip()][:1]
        raise GanLabError(
            f"{source}: the weights do not fit {target} as configured ({' '.join(detail)[:200]}); "
            "keep the weights with the config they were exported with"
        ) from err
    if missing or unexpected:
        raise GanLabError(
            f"{source}: the weights do not fit {target} as configured ({len(missing)} missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); keep the weights with the "
            "config they were exported with"
        )
    return generator


def find_export_weights(path: Path) -> Path:
    """The weights file of an export: path itself, or in an export directory generator_ema / generator."""
    if path.is_dir():
        for name in EXPORT_FILES:
            if (path / name).is_file():
                return path / name
        raise GanLabError(
            f"{path} holds neither {' nor '.join(EXPORT_FILES)}; pass an export directory written by "
            "python -m gan_lab.export, one of its .safetensors files, or a .ckpt"
        )
    if not path.is_file():
        raise GanLabError(
            f"{path} not found; export one with python -m gan_lab.export ckpt={LAST_CKPT_EXAMPLE}"
        )
    return path


def load_export(path: str | Path) -> tuple[DictConfig, dict[str, Tensor], int]:
    """(run config, upgraded, generator weights, g_steps) of an export: a .safetensors file or its directory."""
    weights_path = find_export_weights(Path(path).expanduser())
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            weights = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError) as err:
        raise GanLabError(
            f"{weights_path} is not a readable safetensors file ({' '.join(str(err).split())[:200]}); is the "
            "file complete? Re-export it with python -m gan_lab.export"
        ) from err
    if metadata.get("format") != EXPORT_FORMAT:
        raise GanLabError(
            f"{weights_path} is not a gan_lab generator export (no format={EXPORT_FORMAT} in its metadata); "
            f"write one with python -m gan_lab.export ckpt={LAST_CKPT_EXAMPLE}"
        )
    config_path = weights_path.parent / EXPORT_CONFIG
    if not config_path.is_file():
        raise GanLabError(
            f"{config_path} not found: an export needs the {EXPORT_CONFIG} written beside its weights to rebuild "
            "the generator; copy the whole export directory"
        )
    try:
        config = OmegaConf.load(config_path)
    except (YAMLError, OmegaConfBaseException, OSError) as err:
        raise GanLabError(
            f"{config_path} is not a readable config ({' '.join(str(err).split())[:200]})"
        ) from err
    if not isinstance(config, DictConfig):
        raise GanLabError(f"{config_path} is not a gan_lab run config (not a mapping)")
    config = OmegaConf.create(upgrade_stored_config(OmegaConf.to_container(config)))
    g_steps = metadata.get("g_steps", "0")
    return config, weights, int(g_steps) if g_steps.isdigit() else 0


def load_generator(
    path: str | Path, device: str | torch.device = "cpu", trusted_packages: Sequence[str] | None = None
) -> LoadedGenerator:
    """Rebuild the generator of a checkpoint (.ckpt) or an export (directory or .safetensors) and load its weights."""
    path = Path(path).expanduser()
    if path.is_dir() or path.suffix == ".safetensors":
        config, weights, g_steps = load_export(path)
    else:
        checkpoint = load_checkpoint(path)
        try:
            config = OmegaConf.create(checkpoint["hyper_parameters"])
        except OmegaConfBaseException as err:
            raise GanLabError(f"{path}: its run config is not a valid config ({type(err).__name__})") from err
        state = checkpoint["state_dict"]
        # The EMA generator, when the run kept one, is the one to sample from.
        weights = generator_state(state, EMA_PREFIX) or generator_state(state, GENERATOR_PREFIX)
        g_steps = int(checkpoint.get("gan_lab", {}).get("g_steps", 0))
    generator = build_generator(config, weights, path, trusted_packages)
    generator.to(device).eval()
    return LoadedGenerator(generator, config, g_steps)
