"""dataset.on_device: the in-memory training set held on the training device, each batch gathered there.

The loader then yields only the StreamSampler's indices (int64 (B,)); after Lightning moves them to the device,
`DeviceImages.batch` gathers the rows and mirrors those with index >= N, as the host path does before the copy.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from gan_lab.data.memory import InMemoryImages, _TensorImages
from gan_lab.errors import ConfigError

# dataset.on_device=auto holds the images on the GPU when they take at most this share of its free memory at
# the start of training. The rest is for what a step needs beside them: G and D, their optimizer states and
# activations (two D forwards per step, a gradient penalty's double backward), the metrics' Inception network
# and the allocator's slack. CIFAR-10 at 64² (0.57 GiB) is under 1% of an 80 GB card; LSUN church at 128²
# (5.8 GiB, with dataset.in_memory=true) goes on cards with more than 23 GiB free.
AUTO_SHARE_OF_FREE = 0.25


class DeviceImages:
    """Training images (N, 3, R, R) (uint8 decoded, or float generated) and labels (N,) int64 on one device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device, flip: bool) -> None:
        self.images, self.labels = images.to(device), torch.as_tensor(labels, dtype=torch.long).to(device)
        self.n, self.flip = len(images), flip

    @property
    def device(self) -> torch.device:
        return self.images.device

    def batch(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """[images (B, 3, R, R), labels (B,)] at the sampler's `indices` (B,), mirrored where index >= N.

        Only device ops, none of which waits for the device: a gather and, with flips, a select between the
        rows and their mirror images (a boolean mask would need a host sync to count the flipped rows).
        """
        if indices.device != self.images.device:  # used outside a fit (no trainer): follow the batch, once
            self.images, self.labels = self.images.to(indices.device), self.labels.to(indices.device)
        rows = indices % self.n
        images = self.images.index_select(0, rows)
        if self.flip:
            images = torch.where((indices >= self.n).view(-1, 1, 1, 1), images.flip(-1), images)
        return [images, self.labels.index_select(0, rows)]


class IndexBatches(Dataset):
    """The device path's loader dataset: N items, and a batch of them is just their indices, int64 (B,)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        return torch.tensor(indices, dtype=torch.long)


def as_collated(batch: torch.Tensor) -> torch.Tensor:
    """collate_fn of the index loader: `__getitems__` already returns the batch."""
    return batch


def held_tensors(train_set: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(images, labels) of a training set held in memory as tensors as the loader serves them, else None."""
    if isinstance(train_set, InMemoryImages):
        return train_set.images, train_set.labels
    if isinstance(train_set, _TensorImages) and train_set.transform is None:  # generated (dataset=fake)
        return train_set.images, train_set.labels
    return None


def choose_device_images(
    setting: bool | str, train_set: object, in_memory: bool | str | None, device: torch.device, hflip: bool
) -> tuple[DeviceImages | None, str | None]:
    """Resolve dataset.on_device for training on `device`: (the images there or None, the line to log or None).

    auto: on for a decoded in-memory set (dataset.in_memory) when training on CUDA and the set takes at most
    AUTO_SHARE_OF_FREE of the GPU's free memory. true: on wherever the set is in memory as tensors (on the CPU
    the tensors stay where they are). Raises ConfigError where true cannot be honoured.
    """
    if setting is False:
        return None, None
    tensors = held_tensors(train_set)
    if setting == "auto":
        if device.type != "cuda" or not isinstance(train_set, InMemoryImages):
            return None, None
    elif tensors is None:
        if in_memory is None:
            raise ConfigError(
                f"dataset.on_device=true needs training images held in memory as tensors, which "
                f"{type(train_set).__name__} is not; set dataset.on_device=auto"
            )
        raise ConfigError(
            "dataset.on_device=true needs the training images in memory, but they are decoded from their "
            f"files every step (dataset.in_memory={str(in_memory).lower()}); set dataset.in_memory=true"
        )
    assert tensors is not None  # InMemoryImages holds them
    gib = sum(t.element_size() * t.numel() for t in tensors) / 2**30
    size = f"{tensors[0].shape[0]} {str(tensors[0].dtype).removeprefix('torch.')} images, {gib:.2f} GiB"
    if setting == "auto":
        free_gib = torch.cuda.mem_get_info(device)[0] / 2**30
        share = f"{AUTO_SHARE_OF_FREE:g} of the {free_gib:.1f} GiB free on {device}"
        if gib > AUTO_SHARE_OF_FREE * free_gib:
            line = f"training images: kept in host memory ({size} > {share}, dataset.on_device=auto)"
            return None, line
        why = f"{size} <= {share}, dataset.on_device=auto"
    else:
        why = f"{size}, dataset.on_device=true"
    try:
        images = DeviceImages(*tensors, device, hflip)
    except torch.OutOfMemoryError as e:
        raise ConfigError(
            f"dataset.on_device=true: the training images ({size}) do not fit on {device}; "
            "set dataset.on_device=auto to keep them in host memory"
        ) from e
    line = f"training images: held on {device}, each batch gathered there from the loader's indices ({why})"
    return images, line
