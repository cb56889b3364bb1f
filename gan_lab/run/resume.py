"""`resume=<run dir or checkpoint>`: the config and checkpoint a run continues from, exactly where it stopped."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gan_lab.errors import ConfigError, GanLabError
from gan_lab.run.checkpoint_io import check_trusted_targets, load_checkpoint, trusted_package_prefixes
from gan_lab.run.paths import RunDir
from gan_lab.utils.config import flatten_config
from gan_lab.utils.io import atomic_path

log = logging.getLogger(__name__)
_ABSENT = object()

# The resumed run keeps the checkpoint's own config (model, loss, data, optimizer, seed, logging, ...): the
# command line may only change the keys in CHANGEABLE (the budget, the hardware, how the run is watched, and
# where files are), so a resume cannot silently change the run; overriding any other key to a different value
# is an error. Everything else that makes the continuation exact lives with its owner: GANModule saves counters
# and RNG states, data.StreamSampler positions the data stream, Lightning restores optimizers and schedulers.
CHANGEABLE = (
    "resume", "overwrite", "retry_failed", "steps", "budget", "paths", "logger", "callbacks", "metrics", "hydra", "objective", "checkpoint",
    "trainer.max_epochs", "trainer.max_steps", "trainer.max_time", "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.default_root_dir",
    "dataset.root", "dataset.test_root", "dataset.num_workers", "dataset.download",
    "dataset.in_memory", "dataset.on_device",  # where the same batches are gathered: bit-identical either way
)  # fmt: skip


@dataclass(frozen=True)
class Resumed:
    """The checkpoint a run continues from: its path, generator step, and the shape of each weight."""

    path: Path
    g_steps: int
    shapes: dict[str, tuple[int, ...]]


def continue_from(cfg: DictConfig, ckpt_path: Path, overrides: Sequence[str]) -> tuple[DictConfig, Resumed]:
    """The checkpoint at ckpt_path, loaded safely, and the config of the run continued from it (resume_config);
    of the checkpoint, only what the run's build is checked against is kept (Lightning reads the file itself)."""
    checkpoint = load_checkpoint(ckpt_path)  # weights_only: a shared checkpoint cannot run code
    # The run is rebuilt from the checkpoint's config: like its pickle, it must not choose what code runs.
    # The packages to trust come from this command line, never from the file being checked.
    packages = OmegaConf.select(cfg, "checkpoint.trusted_packages", default=None)
    trusted = ("gan_lab.", "torch.", "lightning.pytorch.", *trusted_package_prefixes(packages))
    saved = OmegaConf.create(checkpoint["hyper_parameters"])
    # metrics.extra may change on the command line, but a checkpoint's own list still names code to import.
    checked = [k for k in saved if not _is_changeable(k)] + ["metrics.extra"]
    check_trusted_targets(saved, ckpt_path, dict.fromkeys(checked, trusted))
    resumed = Resumed(
        ckpt_path,
        int(checkpoint.get("gan_lab", {}).get("g_steps", 0)),
        {k: tuple(getattr(v, "shape", ())) for k, v in checkpoint["state_dict"].items()},
    )
    return resume_config(cfg, checkpoint, ckpt_path, overrides), resumed


def check_resumed(resumed: Resumed, module_state: Mapping[str, Any], run: RunDir) -> None:
    """Once the run is built: its networks fit the checkpoint's weights, and metrics.csv ends at its step."""
    check_same_architecture(module_state, resumed.shapes, resumed.path)
    trim_metrics_csv(run.metrics, resumed.g_steps)
    log.info("resuming %s from %s at generator step %d", run.root, resumed.path, resumed.g_steps)


def _is_changeable(key: str) -> bool:
    return any(key == c or key.startswith(c + ".") for c in CHANGEABLE)


def _override_key(override: str) -> str:
    """The config key an override sets: `+a.b=1` -> `a.b`, `~optim.betas` -> `optim.betas`, `model=x` -> `model`."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {prefix: value}
    return flatten_config({prefix: value} if prefix else value)


def _differences(current: Any, saved: Any, prefix: str = "") -> list[str]:
    """`key (checkpoint: a, now: b)` for every leaf where the two plain configs differ (secrets skipped)."""
    flat_now, flat_saved = _flat(current, prefix), _flat(saved, prefix)
    keys = sorted(k for k in set(flat_now) | set(flat_saved) if not _is_changeable(k))
    return [
        f"{k} (checkpoint: {flat_saved.get(k, '<unset>')}, now: {flat_now.get(k, '<unset>')})"
        for k in keys
        if flat_now.get(k, "<unset>") != flat_saved.get(k, "<unset>")
    ]


def check_overrides(cfg: DictConfig, saved: DictConfig, overrides: Sequence[str]) -> None:
    """Refuse command-line overrides that would change what the checkpoint was trained with."""
    problems: list[str] = []
    for key in dict.fromkeys(_override_key(o) for o in overrides):
        if _is_changeable(key):
            continue
        empty = (None, {})  # augment=hflip leaves no augment node where a stored run has augment: {}
        if (
            _plain(OmegaConf.select(cfg, key, default=None)) in empty
            and _plain(OmegaConf.select(saved, key, default=None)) in empty
        ):
            # a group whose options write to the top level (experiment=, variant=, augment=hflip): compare everything
            current = {k: _plain(v) for k, v in cfg.items() if not _is_changeable(k)}
            problems += _differences(
                current, {k: _plain(v) for k, v in saved.items() if not _is_changeable(k)}
            )
            continue
        problems += _differences(
            _plain(OmegaConf.select(cfg, key)), _plain(OmegaConf.select(saved, key)), key
        )
    if not problems:
        return
    problems = list(dict.fromkeys(problems))
    what = (
        "a checkpoint of a different architecture"
        if any(p.startswith("model.") for p in problems)
        else ("a checkpoint trained with other settings")
    )
    shown = ", ".join(problems[:4]) + (f" and {len(problems) - 4} more" if len(problems) > 4 else "")
    raise ConfigError(
        f"resume: the command line asks for {what}: {shown}; a resumed run keeps its checkpoint's settings "
        "(only the budget, devices, logging and paths may change): drop those overrides, or start a new run"
    )


def resume_config(
    cfg: DictConfig, checkpoint: Mapping[str, Any], ckpt_path: Path, overrides: Sequence[str]
) -> DictConfig:
    """The config of the continued run: the checkpoint's, plus the CHANGEABLE keys `overrides` set in `cfg`.
    The checkpoint's config is taken as trusted: continue_from checks what code it names first."""
    run_dir = RunDir.of(ckpt_path).root
    saved_plain = checkpoint["hyper_parameters"]
    old_dir = str((saved_plain.get("paths") or {}).get("output_dir") or run_dir)
    saved = OmegaConf.create(_moved(saved_plain, old_dir, str(run_dir)))
    check_overrides(cfg, saved, overrides)
    merged = saved.copy()
    raw = OmegaConf.to_container(cfg, resolve=False)  # interpolations such as ${paths.output_dir} stay live
    for key in _keys_to_take(overrides):
        node: Any = raw
        for part in key.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is not _ABSENT:
            OmegaConf.update(merged, key, node, merge=False, force_add=True)
    _warn_if_schedule_length_changes(saved, merged)
    merged.paths.output_dir = str(run_dir)  # the run continues in its own directory, wherever it now is
    merged.resume = str(ckpt_path)
    _continue_wandb_run(merged, run_dir)
    csv_logger = (merged.get("logger") or {}).get("csv")
    if csv_logger is not None and str(csv_logger.get("_target_", "")).startswith("gan_lab."):
        csv_logger.append = True  # continue metrics.csv (trimmed to the checkpoint's step by train)
    return merged


def _keys_to_take(overrides: Sequence[str]) -> list[str]:
    """The CHANGEABLE keys the command line sets: `steps=..`, or the changeable part of `trainer=ddp`."""
    keys: list[str] = []
    for key in dict.fromkeys(_override_key(o) for o in overrides):
        if key == "resume":
            continue
        keys += [key] if _is_changeable(key) else [c for c in CHANGEABLE if c.startswith(key + ".")]
    return keys


def _moved(config: Any, old_dir: str, new_dir: str) -> Any:
    """The plain config with paths inside the old run directory re-pointed to where the run is now."""
    if isinstance(config, Mapping):
        return {k: _moved(v, old_dir, new_dir) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [_moved(v, old_dir, new_dir) for v in config]
    if isinstance(config, str) and (config == old_dir or config.startswith(old_dir.rstrip("/") + "/")):
        return new_dir + config[len(old_dir) :]
    return config


def _warn_if_schedule_length_changes(saved: DictConfig, merged: DictConfig) -> None:
    """A scheduler sized to the run (null T_max / total_iters) keeps the checkpoint's length: say so."""
    scheduler = saved.get("scheduler") or {}
    sized_to_run = any(key in scheduler and scheduler[key] is None for key in ("T_max", "total_iters"))
    budget = ("steps", "trainer.max_epochs")
    if sized_to_run and any(OmegaConf.select(saved, k) != OmegaConf.select(merged, k) for k in budget):
        log.warning(
            "resume with a new budget: the %s scheduler keeps the length of the original run (its state is "
            "restored from the checkpoint), so the learning rate follows the old schedule",
            scheduler.get("_target_", "?").rsplit(".", 1)[-1],
        )


def _continue_wandb_run(cfg: DictConfig, run_dir: Path) -> None:
    """Point a W&B logger at the run id the interrupted run saved, so W&B continues it instead of a new run."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    id_file = RunDir(run_dir).wandb_run_id
    if wandb_cfg is None or not id_file.is_file() or wandb_cfg.get("id"):
        return
    wandb_cfg.id = id_file.read_text().strip()
    wandb_cfg.resume = "allow"


def trim_metrics_csv(path: Path, g_steps: int) -> None:
    """Drop rows logged after the checkpoint (the resumed run logs those steps again), and a last row a kill cut
    short; atomic rewrite."""
    if not path.is_file():
        return
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]  # a row is written whole, with its newline, or not at all
    reader = csv.DictReader(io.StringIO(complete, newline=""))
    fields, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if not r.get("step") or float(r["step"]) <= g_steps]
    if len(kept) == len(rows) and complete == text:
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    log.info(
        "resume: dropped %d rows of %s logged after generator step %d", len(rows) - len(kept), path, g_steps
    )


def check_same_architecture(
    module_state: Mapping[str, Any], saved: Mapping[str, tuple[int, ...]], ckpt_path: Path
) -> None:
    """Refuse a checkpoint whose weights (`saved`: their shapes) do not fit the networks built from its config
    (e.g. code changed)."""
    missing = [k for k in module_state if k not in saved]
    unexpected = [k for k in saved if k not in module_state]
    resized = [k for k in module_state if k in saved and saved[k] != tuple(module_state[k].shape)]
    if missing or unexpected or resized:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", resized))
            if keys
        )
        raise GanLabError(
            f"resume: {ckpt_path} holds weights of a different architecture than its config builds ({detail}); "
            "resume with the gan_lab version that wrote it, or start a new run"
        )
