"""Images held in memory as tensors: the decoded uint8 training set, its batches and its cache file."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from gan_lab.data.transforms import uint8_to_unit_range
from gan_lab.utils.io import atomic_torch_save

DECODED_FORMAT = 1  # bump when the decoded cache's content or layout changes


class InMemoryImages(Dataset):
    """Decoded training images as uint8 (N, 3, R, R) with labels (N,) int64, held in memory.

    Item i is what the file pipeline gives for image i: ``(float image in [-1, 1], label)``. The training
    loader instead reads whole uint8 batches through `batch`, where index i + N means image i mirrored (the
    StreamSampler's encoding), and the datamodule's `on_after_batch_transfer` turns them into floats.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images.contiguous(), labels
        self._pixels = (
            self.images.numpy()
        )  # a view: numpy gathers and mirrors uint8 rows ~30x faster than torch

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """[uint8 images (B, 3, R, R), labels (B,)] of `indices`, flipped left-right where index >= N."""
        index = np.asarray(indices, dtype=np.int64)
        n = len(self.images)
        images, flip = self._pixels[index % n], index >= n  # fancy indexing copies the rows
        if flip.any():
            images[flip] = images[flip][..., ::-1]
        return [torch.from_numpy(images), self.labels[torch.from_numpy(index % n)]]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.batch([index])
        return uint8_to_unit_range(images[0]), int(labels[0])


class _UInt8Batches(Dataset):
    """The training loader's view of InMemoryImages: `__getitems__` returns a whole uint8 batch at once."""

    def __init__(self, images: InMemoryImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.images.batch([index])
        return images[0], labels[0]

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return self.images.batch(indices)


def _whole_batch(batch: list[torch.Tensor]) -> list[torch.Tensor]:
    """collate_fn of the in-memory loader: `__getitems__` already returns the batch tensors."""
    return batch


class _TensorImages(Dataset):
    """In-memory image tensors with labels and an optional tensor transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index]
        return (self.transform(img) if self.transform else img), int(self.labels[index])


def _datasets_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan_lab" / "datasets"


def _checksum(images: torch.Tensor, labels: torch.Tensor) -> int:
    return zlib.crc32(labels.numpy(), zlib.crc32(images.numpy()))


def _write_decoded(path: Path, key: dict[str, object], images: torch.Tensor, labels: torch.Tensor) -> None:
    """Store decoded images atomically: a killed run never leaves a truncated cache."""
    payload = {"key": key, "images": images, "labels": labels, "crc32": _checksum(images, labels)}
    atomic_torch_save(payload, path)


def _read_decoded(path: Path, key: dict[str, object], resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cached (images, labels) of `key`; raises unless the file is complete, for `key`, and intact."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("key") != key:
        raise ValueError("it was written for other settings")
    images, labels = data["images"], data["labels"]
    if images.dtype != torch.uint8 or images.shape[1:] != (3, resolution, resolution) or not len(images):
        raise ValueError(f"it holds {images.dtype} images of shape {tuple(images.shape)}")
    if labels.dtype != torch.long or labels.shape != (len(images),):
        raise ValueError(f"it holds {labels.dtype} labels of shape {tuple(labels.shape)}")
    if _checksum(images, labels) != data["crc32"]:
        raise ValueError("its checksum does not match its content")
    return images, labels
