"""The benchmark's contenders: gan_lab run as a user runs it, and what the baselines are fed.

gan_lab is `gan_lab.train.train` on a composed config (`run_gan_lab`); the plain loop trains on gan_lab's own
batches (`PlainBatches`); the classic DCGAN design takes a latent of CLASSIC_NZ; the FID contenders score the
same images (`load_images`). Their loops are in `loops`; `suite` runs and summarises them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from benchmarks.loops import RunSpeed, StepTimer, timer_config
from gan_lab.utils.config import CONF_DIR, compose_config

CLASSIC_NZ = 100


# --- gan_lab configs ----------------------------------------------------------------------------------------


def check_overrides(overrides: Sequence[str], base: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(usable overrides, notes): `key=value` overrides whose key the config composed from `base` lacks are
    dropped, so the benchmark runs against any version of gan_lab and says which settings it could not set.
    """
    base_cfg = compose_config(list(base), output_dir=tempfile.gettempdir())
    kept, notes = [], []
    for override in overrides:
        key = override.split("=", 1)[0]
        is_group = "." not in key and (CONF_DIR / key).is_dir()
        if (
            key.startswith(("+", "~"))
            or is_group
            or OmegaConf.select(base_cfg, key, default=_MISSING) is not _MISSING
        ):
            kept.append(override)
        else:
            notes.append(f"`{override}` left out: this gan_lab has no `{key}` setting")
    return kept, notes


_MISSING = object()


def gan_lab_overrides(
    data_root: Path, model: str, resolution: int, batch_size: int, width: int | None, extra: Sequence[str]
) -> list[str]:
    """A folder-dataset run as a user starts it; in-loop metrics off (Inception would dominate a CPU step)."""
    overrides = [
        f"model={model}",
        "dataset=folder",
        f"dataset.root={data_root}",
        f"dataset.resolution={resolution}",
        f"dataset.batch_size={batch_size}",
        "metrics=none",
        "trainer.enable_model_summary=false",  # printed once before training: not part of any timing
    ]
    if width is not None:
        overrides.append(f"model.width={width}")
    return overrides + list(extra)


def run_gan_lab(
    overrides: Sequence[str],
    output_dir: Path,
    steps: int,
    budget_s: float | None = None,
    sync_at: Collection[int] | None = None,
) -> tuple[Any, StepTimer]:
    """`gan_lab.train.train` on the composed config, with a StepTimer callback; (module, timer).

    `sync_at`: the generator steps whose timestamps wait for the GPU (see StepClock); default every step.
    """
    from gan_lab.train import train

    cfg = compose_config([*overrides, f"steps={steps}"], output_dir=output_dir)
    key = StepTimer.new_key()
    with open_dict(cfg):
        cfg.callbacks.bench_timer = timer_config(key, budget_s, sync_at)
    try:
        module = train(cfg)
    finally:
        timer = StepTimer.find(key)
    if timer is None or timer.clock is None:
        raise RuntimeError("gan_lab's run never started training")
    return module, timer


# --- the baselines' inputs ----------------------------------------------------------------------------------


class PlainBatches:
    """The batches gan_lab trains on, outside Lightning: the data module's loader, the move to `device` and
    the after-transfer hook, in Lightning's order.

    The hook is what Lightning calls on every batch (the in-memory loader's uint8 -> [-1, 1] floats, on the
    device), so the plain loop gets exactly gan_lab's tensors and the comparison leaves data loading out of
    the ratio.
    """

    def __init__(self, datamodule: Any, device: str = "cpu") -> None:
        datamodule.setup("fit")
        self.datamodule, self.loader = datamodule, datamodule.train_dataloader()
        self.device = torch.device(device)

    def __iter__(self) -> Iterator[Any]:
        from lightning.fabric.utilities.apply_func import move_data_to_device

        for batch in self.loader:
            yield self.datamodule.on_after_batch_transfer(move_data_to_device(batch, self.device), 0)


def speed_text(speed: RunSpeed) -> str:
    """How gan_lab ran, for the descriptions: precision, memory format, compile or capture, fused Adam."""
    settings = speed.settings
    parts = [str(settings.precision), "channels_last" if settings.channels_last else "NCHW"]
    parts += [f"speed.capture={settings.capture}"] if settings.capture != "false" else []
    parts += ["compiled"] if settings.compile and settings.capture != "nets" else []
    parts += [f"fused Adam={speed.fused}"]
    return ", ".join(parts)


# --- FID features -------------------------------------------------------------------------------------------


class UInt8Images(Dataset):
    """A uint8 tensor (N, 3, H, W) as the Dataset of tensors torch-fidelity takes."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


def load_images(root: Path, count: int, resolution: int) -> Tensor:
    """`count` images spread over a folder, as gan_lab's metrics see them (uint8, square `resolution`)."""
    from gan_lab.data import reference_transform, scan_image_folder

    files, _, _ = scan_image_folder(root)
    transform = reference_transform(resolution)
    picks = [files[i * len(files) // count] for i in range(count)]
    images = []
    for path in picks:
        with Image.open(path) as img:
            images.append(transform(img))
    return torch.stack(images)
