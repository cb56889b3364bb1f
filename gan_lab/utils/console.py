"""What a run prints: third-party lines that ask a GAN user for nothing are silenced; warnings that ask the user to
act are kept. One place, so that a newcomer sees every filter at once."""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as pl
from lightning.pytorch.utilities.model_summary import get_human_readable_count

log = logging.getLogger("gan_lab.train")

IGNORED_WARNINGS = (
    # The run directory already holds the run config when the CSV logger starts.
    r"Experiment logs directory .* exists and is not empty",
    # Lightning cannot see that gan_lab's sampler resumes mid-epoch (data.StreamSampler follows the trained batches).
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # gan_lab logs at its own generator-step counter, not at Lightning's batch-based logging interval.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # Lightning's summary table is replaced by ModelSize's line, which counts parameters, not bytes.
    r"Precision .* is not supported by the model summary",
    # Deprecations inside Lightning's own code (torch's pytree API): nothing a user of gan_lab can change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class _DropLightningTips(logging.Filter):
    """Lightning's advertisement for its cloud logger ("💡 Tip: ... litlogger")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_third_party() -> None:
    """Install the filters (idempotent: filters are compared by value)."""
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTips) for f in logger.filters):
            logger.addFilter(_DropLightningTips())


def quiet_worker_advice() -> None:
    """Lightning's "does not have many workers" advice, for data served from memory: there, batches are one
    index into a tensor in this process, and workers would only add copies."""
    warnings.filterwarnings("ignore", message=r"The 'train_dataloader' does not have many workers")


class ModelSize(pl.Callback):
    """One line instead of Lightning's summary table, whose FLOPs column reads 0 for GANs (no example input)."""

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        parts = []
        for name in ("generator", "discriminator"):
            net = getattr(module, name)
            parts.append(
                f"{name} {type(net).__name__} {get_human_readable_count(sum(p.numel() for p in net.parameters()))}"
            )
        log.info("parameters: %s", ", ".join(parts))
