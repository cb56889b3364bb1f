"""Real images for the metrics: a fixed random subset of a split, and their features cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gan_lab.errors import ConfigError
from gan_lab.utils.io import atomic_torch_save

log = logging.getLogger("gan_lab.metrics")

REFERENCE_SEED = 0  # which real images form the reference set: fixed, so the cache can be reused


def image_batches(
    dataset: Dataset, num: int | None, batch_size: int, num_workers: int = 0, what: str = "", fix: str = ""
) -> Iterator[Tensor]:
    """uint8 batches of a fixed random subset of `num` items (None: all) of a dataset of (image, label) or images."""
    size = len(dataset)  # type: ignore[arg-type]
    num = size if num is None else num
    if size < num:
        raise ConfigError(
            f"{what or 'the dataset'} has {size} images, fewer than the {num} requested; "
            f"{fix or 'lower metrics.num_real / metrics.num_fake'}"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(REFERENCE_SEED))
    subset = Subset(dataset, sorted(order[:num].tolist()))
    # Its own generator: a loader without one draws its base seed from the global RNG, and a run would then
    # train differently depending on whether its reference features were cached.
    loader = DataLoader(
        subset, batch_size=batch_size, num_workers=num_workers, generator=torch.Generator().manual_seed(0)
    )
    for batch in loader:
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


def _weights_identity(weights: str | None, network: str) -> str:
    if weights is None:
        return f"download:{network}"
    stat = Path(weights).stat()
    return f"{weights}:{stat.st_size}:{int(stat.st_mtime)}"


class ReferenceFeatures:
    """Features of real images, computed once per (dataset, split, resolution, count, network, resizer, weights)."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        base = (
            cache_dir
            or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan_lab" / "metrics"
        )
        self.cache_dir = Path(base).expanduser()

    def key(
        self,
        dataset_id: str,
        split: str,
        resolution: int,
        num: int | str,
        weights: str | None,
        network: str = "inception",
        resizer: str = "legacy",
    ) -> dict[str, object]:
        return {
            "dataset": dataset_id,
            "split": split,
            "resolution": resolution,
            "num": num,
            "network": network,
            "resizer": resizer,
            "weights": _weights_identity(weights, network),
            "format": 2,
        }

    def path(self, key: dict[str, object]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"real_{key['split']}_{key['resolution']}px_{key['num']}_{digest}.pt"

    def get(self, key: dict[str, object], compute: Callable[[], Any]) -> Any:
        """Cached features for key, or compute() them and store them atomically."""
        path = self.path(key)
        if path.is_file():
            log.info("real-image features: cache hit, %s", path)
            return torch.load(path, weights_only=True)["features"]
        log.info("real-image features: cache miss, computing %s images (%s)", key["num"], key["dataset"])
        features = compute()
        atomic_torch_save({"features": features, "key": key}, path)  # a killed run leaves no truncated file
        log.info("real-image features: cached in %s", path)
        return features


# Dataset settings that do not change which real images the reference holds. The training resolution stays in
# the identity although the images are taken at the metric resolution: generated datasets (dataset=fake) draw
# different images at each resolution, and a shared cache entry would be a silently wrong FID.
_NOT_IDENTITY = {
    "batch_size",
    "num_workers",
    "hflip",
    "order_seed",
    "skip_corrupt",
    "download",
    "in_memory",
    "on_device",
    "max_images",  # a training subset: the reference is the full training set (ImageDataModule.reference_dataset)
}


def dataset_identity(dataset_cfg: Mapping[str, Any]) -> str:
    """The reference images' identity from the dataset config: class, roots (absolute), crop, ..."""
    ident = {}
    for key, value in sorted(dataset_cfg.items()):
        if key in _NOT_IDENTITY:
            continue
        if key.endswith("root") and value:
            value = str(Path(value).expanduser().resolve())
        ident[key] = value
    return json.dumps(ident, sort_keys=True, default=str)
