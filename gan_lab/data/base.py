"""ImageDataModule: the datasets' shared settings, training dataloader, in-memory and on-device modes."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from gan_lab.data.device import DeviceImages, IndexBatches, as_collated, choose_device_images
from gan_lab.data.memory import (
    DECODED_FORMAT,
    InMemoryImages,
    _datasets_cache_dir,
    _read_decoded,
    _TensorImages,
    _UInt8Batches,
    _whole_batch,
    _write_decoded,
)
from gan_lab.data.sampler import Mirrored, StreamSampler
from gan_lab.data.transforms import image_transform, reference_transform, uint8_to_unit_range
from gan_lab.errors import ConfigError, DataError
from gan_lab.utils.console import quiet_worker_advice

log = logging.getLogger("gan_lab.data")

# dataset.in_memory=auto holds the decoded uint8 training set in RAM up to this size: CIFAR-10 takes 0.15 GiB
# at 32², 0.57 GiB at 64², 2.3 GiB at 128²; LSUN church at 128² (126k images, ~5.8 GiB) streams from its files.
IN_MEMORY_MAX_BYTES = 4 * 2**30
MIN_CACHED_IMAGES = 2000  # smaller sets decode in a second or so: not worth a cache file
DECODE_BATCH = 256  # images per worker batch while decoding into memory
# dataset.max_images: the seed of the fixed training subset's permutations. A constant, not the run's seed or
# order_seed, so that every arm of a study (seeds, augmentations, losses) trains on the very same images, and a
# subset can be cited and reproduced; changing it changes every subset (see `fixed_subset`).
SUBSET_SEED = 0


@rank_zero_only  # DDP ranks check the same files: one warning is enough
def _warn_once(msg: str, *args: object) -> None:
    log.warning(msg, *args)


@rank_zero_only
def _info_once(msg: str, *args: object) -> None:
    log.info(msg, *args)


def _positive_int(name: str, value: object, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer; set e.g. {name}={example}")
    return value


def fixed_subset(labels: torch.Tensor, num_classes: int, count: int) -> torch.Tensor:
    """The indices, ascending, of the fixed `count`-image subset of a training set labelled `labels` (N,).

    The rule (dataset.max_images): with K = num_classes > 0 classes, class k (k = 0..K-1) gets count // K images,
    and the first count % K classes one more each; without labels (K = 0) all N images form one group that gets
    `count`. One generator, ``g = torch.Generator().manual_seed(SUBSET_SEED)``, permutes the groups in turn
    (class 0 first): each group's indices, in dataset order, are reordered by ``torch.randperm(len(group),
    generator=g)`` and the first ones the group gets are kept; the kept indices of all groups are sorted
    ascending. Nothing else enters (not the run's seed nor order_seed), so the subset is the same for every run;
    and a larger count keeps a smaller count's images. The caller checks that each group has enough images.
    """
    if num_classes == 0:
        groups = [torch.arange(len(labels))]
    else:
        groups = [torch.nonzero(labels == k).flatten() for k in range(num_classes)]
    g, kept = torch.Generator().manual_seed(SUBSET_SEED), []
    for k, group in enumerate(groups):
        quota = count // len(groups) + (k < count % len(groups))
        kept.append(group[torch.randperm(len(group), generator=g)[:quota]])
    return torch.cat(kept).sort().values


def _subset(dataset: Dataset, keep: torch.Tensor) -> Dataset:
    """Items `keep` of `dataset`; tensors held in memory are indexed (a copy), so they stay tensors (on_device)."""
    if isinstance(dataset, InMemoryImages):
        return InMemoryImages(dataset.images[keep], dataset.labels[keep])
    if isinstance(dataset, _TensorImages):
        return _TensorImages(dataset.images[keep], dataset.labels[keep], dataset.transform)
    return Subset(dataset, keep.tolist())


class ImageDataModule(pl.LightningDataModule):
    """Shared settings and the training dataloader; subclasses only build the dataset.

    dataset.max_images=N trains on a fixed subset of N training images (small-data studies, as in ADA), chosen
    by `fixed_subset`: class-stratified where the dataset has labels, independent of seed and order_seed. It is
    the training set only (what the sampler draws from, `train_set`, `subset` its indices into the full set);
    the metrics' reference images (`reference_dataset("train")`) stay the FULL training set, as in the ADA paper.
    The in-memory mode decodes (and caches) the full set and then keeps the subset, so the decoded cache is
    shared with full-data runs; `num_images` therefore counts the full set, which is what the decode holds.
    """

    def __init__(
        self,
        root: str | None,
        resolution: int,
        batch_size: int,
        num_workers: int,
        hflip: bool,
        order_seed: int = 0,
        in_memory: bool | str | None = None,
        on_device: bool | str = "auto",
        max_images: int | None = None,
    ) -> None:
        super().__init__()
        if max_images is not None and (
            isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
        ):
            raise ConfigError(
                f"dataset.max_images={max_images!r} must be a positive integer or null (all images); "
                "set e.g. dataset.max_images=2000"
            )
        self.max_images = max_images  # train on a fixed subset of this many images (None: all of them)
        # With max_images, set by setup: the subset's indices into the full training set (ascending).
        self.subset: torch.Tensor | None = None
        for key, value, allowed in (
            ("in_memory", in_memory, (None, True, False, "auto")),  # None: the images are generated in memory
            ("on_device", on_device, (True, False, "auto")),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"dataset.{key}={value!r} must be auto, true or false; set dataset.{key}=auto"
                )
        self.in_memory = in_memory
        self.on_device = on_device  # hold the in-memory images on the training device (data/device.py)
        self.device_images: DeviceImages | None = None  # set by train_dataloader where on_device is chosen
        self._on_device_for: torch.device | None = None  # the device that on_device was resolved for
        self.root = Path(root).expanduser() if root is not None else None
        self.resolution = _positive_int("dataset.resolution", resolution, 64)
        self.batch_size = _positive_int("dataset.batch_size", batch_size, 64)
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"dataset.num_workers={num_workers!r} must be >= 0; set dataset.num_workers=2")
        self.num_workers = num_workers
        self.hflip = bool(hflip)
        self.order_seed = order_seed  # pass p over the data is shuffled with order_seed + p (StreamSampler)
        self.crop: int | None = None  # center crop before resizing (FolderDataModule's dataset.crop)
        self.num_classes: int = 0
        self.class_names: list[str] = []
        self.train_set: Dataset | None = None

    def build_dataset(
        self, transform: Callable[[Image.Image], torch.Tensor], split: str = "train"
    ) -> Dataset:
        """Return the dataset of ``split`` ("train" or "test") whose items are ``(transform(image), label)``."""
        raise NotImplementedError

    def reference_dataset(self, split: str, resolution: int | None = None) -> Dataset:
        """Real images of ``split`` as uint8 (3, r, r) at ``resolution`` (default: training's), unflipped, for metrics."""
        if split not in ("train", "test"):
            raise ConfigError(f"metrics.reference_split must be 'train' or 'test', got '{split}'")
        resolution = resolution or self.resolution
        held = isinstance(self.train_set, InMemoryImages) and self.max_images is None
        if split == "train" and resolution == self.resolution and held:
            # The decoded images are reference_transform's output already: the same bytes, no second decode.
            return _TensorImages(self.train_set.images, self.train_set.labels, None)  # type: ignore[union-attr]
        # With dataset.max_images, train is still the full training set (not the subset trained on): a small-data
        # study's FID compares with all the real images, as ADA's does.
        return self.build_dataset(reference_transform(resolution, self.crop), split)

    def native_resolution(self) -> int | None:
        """The side of the dataset's own square images (CIFAR-10: 32), or None when sizes differ or are unknown."""
        return None

    def num_images(self) -> int | None:
        """Images in the training set, known without decoding any; None: unknown (in_memory=auto is then off).

        The full set even with dataset.max_images: the in-memory mode decodes all of them before it keeps the subset.
        """
        return None

    def train_labels(self) -> torch.Tensor | None:
        """Labels (N,) of the full training set in dataset order, known without decoding; None: no classes."""
        if not self.num_classes:
            return None
        dataset = self.build_dataset(reference_transform(self.resolution, self.crop))
        labels = getattr(dataset, "targets", None)  # torchvision's name (CIFAR10)
        if labels is None:
            labels = dataset.labels  # type: ignore[attr-defined]
        return torch.as_tensor(labels, dtype=torch.long)

    def choose_subset(self, total: int) -> torch.Tensor:
        """dataset.max_images' indices into the `total` training images (`fixed_subset`), checked and logged."""
        n, name = self.max_images, type(self).__name__
        assert n is not None
        if n > total:
            raise ConfigError(
                f"dataset.max_images={n} but {name} has only {total} training images; lower it or set null"
            )
        labels, classes = self.train_labels(), self.num_classes
        if labels is None:
            labels, classes = torch.zeros(total, dtype=torch.long), 0
        elif len(labels) != total:
            raise DataError(f"{name} lists {len(labels)} labels for its {total} training images")
        if classes and n < classes:
            raise ConfigError(
                f"dataset.max_images={n} is fewer than the {classes} classes of {name}: the subset takes the same "
                f"number of images from each class; set dataset.max_images to at least {classes}, or null"
            )
        counts = torch.bincount(labels, minlength=max(classes, 1)).tolist()
        for k in range(classes):
            quota = n // classes + (k < n % classes)
            if counts[k] < quota:
                cls = self.class_names[k] if k < len(self.class_names) else str(k)
                raise ConfigError(
                    f"dataset.max_images={n} takes {quota} images of class {cls!r}, which has only {counts[k]}; "
                    "lower it or set null"
                )
        keep = fixed_subset(labels, classes, n)
        per_class = (
            f" ({n // classes}{f' or {n // classes + 1}' * bool(n % classes)} per class)" if classes else ""
        )
        _info_once("training on a fixed subset of %d of %d images%s", n, total, per_class)
        return keep

    def use_in_memory(self) -> bool:
        """Resolve dataset.in_memory (auto: the decoded uint8 set fits IN_MEMORY_MAX_BYTES) and log which."""
        if self.in_memory is None:
            return False
        n, r = self.num_images(), self.resolution
        gib = n * 3 * r * r / 2**30 if n is not None else None
        size = f"{n} images of 3x{r}x{r} uint8 = {gib:.2f} GiB" if gib is not None else "size unknown"
        if self.in_memory == "auto":
            chosen = gib is not None and gib <= IN_MEMORY_MAX_BYTES / 2**30
            why = f"{size} {'<=' if chosen else '>'} {IN_MEMORY_MAX_BYTES / 2**30:g} GiB, dataset.in_memory=auto"
        else:
            chosen, why = bool(self.in_memory), f"{size}, dataset.in_memory={str(self.in_memory).lower()}"
        if chosen:
            _info_once("training images: decoded once into memory, served as uint8 batches (%s)", why)
        else:
            _info_once("training images: decoded from their files every step (%s)", why)
        return chosen

    def setup(self, stage: str | None = None) -> None:
        """Build the training set once and check it holds at least one batch."""
        if self.train_set is not None:
            return
        if self.use_in_memory():
            # The full set is decoded (and cached, shared with runs on all images), then the subset kept.
            train_set: Dataset = InMemoryImages(*self.load_decoded())
        else:
            train_set = self.build_dataset(image_transform(self.resolution, self.crop))
        if self.max_images is not None:
            self.subset = self.choose_subset(len(train_set))  # type: ignore[arg-type]
            train_set = _subset(train_set, self.subset)
        size = len(train_set)  # type: ignore[arg-type]
        if size < self.batch_size:
            where = self.root if self.root is not None else type(self).__name__
            of = f" (dataset.max_images={self.max_images})" if self.max_images is not None else ""
            raise DataError(
                f"dataset.batch_size={self.batch_size} is larger than the {size} images in {where}{of}; "
                "lower dataset.batch_size"
            )
        self.train_set = train_set

    def source_files(self) -> list[Path]:
        """The files the training images come from; their names, sizes and mtimes key the decoded cache."""
        return []

    def decoded_cache_key(self) -> dict[str, object]:
        """What the decoded training images depend on: class, root, resolution, crop, the source files."""
        files = hashlib.sha256()
        for path in self.source_files():
            stat = path.stat()
            files.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return {
            "datamodule": type(self).__name__,
            "root": str(self.root.resolve()) if self.root is not None else None,
            "resolution": self.resolution,
            "crop": self.crop,
            "skip_corrupt": getattr(self, "skip_corrupt", False),
            "files": files.hexdigest(),
            "format": DECODED_FORMAT,
        }

    def load_decoded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (N, 3, R, R), int64 labels (N,)) of the training set, from the cache when it is valid."""
        if not self.needs_decoding():
            return self.decode_train_images()
        key = self.decoded_cache_key()
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = _datasets_cache_dir() / f"{type(self).__name__.lower()}_{self.resolution}px_{digest}.pt"
        if path.is_file():
            try:
                images, labels = _read_decoded(path, key, self.resolution)
                log.info("training images: read %d decoded images from the cache %s", len(images), path)
                return images, labels
            except Exception as e:  # any damage means the file is not trusted: decode again
                reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                log.warning(
                    "decoded-image cache %s is unusable (%s); decoding the images again", path, reason
                )
        start = time.perf_counter()
        images, labels = self.decode_train_images()
        seconds = time.perf_counter() - start
        if len(images) < MIN_CACHED_IMAGES:
            return images, labels
        try:
            _write_decoded(path, key, images, labels)
            log.info("training images: decoded %d images in %.1f s, cached in %s", len(images), seconds, path)
        except OSError as e:
            log.warning("training images: could not write the decoded-image cache %s (%s)", path, e)
        return images, labels

    def needs_decoding(self) -> bool:
        """False where the images are in memory as uint8 already (CIFAR-10 at 32²): then nothing is cached."""
        return True

    def decode_train_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the training set through `reference_transform` (the file pipeline's PIL steps), in workers."""
        dataset = self.build_dataset(reference_transform(self.resolution, self.crop))
        n, r = len(dataset), self.resolution  # type: ignore[arg-type]
        images, labels = torch.empty((n, 3, r, r), dtype=torch.uint8), torch.empty(n, dtype=torch.long)
        start = 0
        for batch_images, batch_labels in self._decode_loader(dataset, range(n)):
            images[start : start + len(batch_images)] = batch_images
            labels[start : start + len(batch_images)] = batch_labels
            start += len(batch_images)
        return images, labels

    def _decode_loader(self, dataset: Dataset, indices: Sequence[int]) -> DataLoader:
        """Batches of `dataset` at `indices`, in order, decoded by up to dataset.num_workers processes."""
        workers = min(self.num_workers, math.ceil(len(indices) / DECODE_BATCH))
        return DataLoader(
            dataset,
            batch_size=DECODE_BATCH,
            sampler=indices,  # type: ignore[arg-type]
            num_workers=workers,
            # Its own generator: a loader without one draws a seed from the global RNG, which would make a
            # run that decodes differ from one that reads the cache.
            generator=torch.Generator().manual_seed(0),
        )

    def on_after_batch_transfer(self, batch: object, dataloader_idx: int) -> object:
        """Turn the in-memory loader's uint8 images into the file pipeline's floats, after the device transfer.

        On the device path the batch is the sampler's indices (B,): the images are gathered first, there.
        """
        if self.device_images is not None and isinstance(batch, torch.Tensor):
            batch = self.device_images.batch(batch)
        if isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
            if batch[0].dtype == torch.uint8:
                return [uint8_to_unit_range(batch[0]), batch[1]]
        return batch

    def trained_batches(self) -> int:
        """Batches this rank has trained on so far (the module's d_steps, restored on resume); 0 outside fit."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return int(getattr(module, "d_steps", 0))

    def use_on_device(self) -> DeviceImages | None:
        """Resolve dataset.on_device for the trainer's device (CPU without one) once per device, and log it."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self._on_device_for != device:
            self.device_images, line = choose_device_images(
                self.on_device, self.train_set, self.in_memory, device, self.hflip
            )
            self._on_device_for = device
            if line is not None:
                _info_once("%s", line)
        return self.device_images

    def _sampler(self, dataset: Dataset) -> StreamSampler:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return StreamSampler(
            dataset, self.batch_size, self.trained_batches, self.order_seed, self.hflip, world, rank
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``batch_size`` (a pass's incomplete last batch is dropped), resumable mid-pass.

        In memory, the images come as uint8: `on_after_batch_transfer` (which Lightning calls after moving a
        batch to the device) turns them into the floats that the file pipeline yields. On the device
        (dataset.on_device), the loader yields only the sampler's indices and that hook gathers the images.
        """
        self.setup("fit")
        if self.use_on_device() is not None:
            # Only the sampler's indices, int64 (B,): nothing for workers or pinned memory to speed up.
            quiet_worker_advice()
            indices = IndexBatches(len(self.train_set))  # type: ignore[arg-type]
            return DataLoader(
                indices,
                batch_size=self.batch_size,
                sampler=self._sampler(indices),
                drop_last=True,
                collate_fn=as_collated,
                generator=torch.Generator().manual_seed(
                    self.order_seed
                ),  # its base seed, not the global RNG's
            )
        if isinstance(self.train_set, InMemoryImages):
            # uint8 batches straight from memory in this process: one index + one flip per batch, no workers.
            quiet_worker_advice()
            batches = _UInt8Batches(self.train_set)
            return DataLoader(
                batches,
                batch_size=self.batch_size,
                sampler=self._sampler(batches),
                drop_last=True,
                collate_fn=_whole_batch,
                pin_memory=torch.cuda.is_available(),
                # Without a generator, every iter() would draw its base seed from the global RNG (see below).
                generator=torch.Generator().manual_seed(self.order_seed),
            )
        dataset = Mirrored(self.train_set) if self.hflip else self.train_set
        return DataLoader(
            dataset,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            sampler=self._sampler(dataset),
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # Worker seeds come from this generator, not the global RNG, which resume restores at batch start.
            generator=torch.Generator().manual_seed(self.order_seed),
        )
