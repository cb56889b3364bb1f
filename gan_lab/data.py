"""Lightning data modules that yield ``(image, label)`` with images as RGB float tensors CHW in [-1, 1].

- ``ImageDataModule``: shared settings, validation, the training dataloader and the in-memory mode
  (``dataset.in_memory``): images decoded once into a uint8 tensor, cached on disk, served as uint8 batches
  that ``on_after_batch_transfer`` turns into the very floats the file pipeline gives, on the device.
- ``CIFAR10DataModule``: torchvision CIFAR-10 (train split, 10 classes), downloaded by ``prepare_data``.
- ``LSUNChurchDataModule``: LSUN church_outdoor from its lmdb folder (unconditional).
- ``FolderDataModule``: any folder of images; top-level subfolders become class labels.
- ``FakeDataModule``: small deterministic synthetic images generated in memory, for tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms

from gan_lab.errors import ConfigError, DataError
from gan_lab.images import generated_to_uint8

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # an unreadable image file

# dataset.in_memory=auto holds the decoded uint8 training set in RAM up to this size: CIFAR-10 takes 0.15 GiB
# at 32², 0.57 GiB at 64², 2.3 GiB at 128²; LSUN church at 128² (126k images, ~5.8 GiB) streams from its files.
IN_MEMORY_MAX_BYTES = 4 * 2**30
MIN_CACHED_IMAGES = 2000  # smaller sets decode in a second or so: not worth a cache file
DECODE_BATCH = 256  # images per worker batch while decoding into memory
DECODED_FORMAT = 1  # bump when the decoded cache's content or layout changes


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, scaling 16-bit images instead of clipping them."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # PIL's own conversion clips 16-bit values at 255; 65535 / 257 = 255 maps the full range.
        arr = np.asarray(img, dtype=np.float64) / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    elif img.mode in ("P", "PA", "LA"):
        # Going through RGBA keeps palette transparency from triggering a PIL warning.
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


class _ResizeCrop:
    """[Center-crop to ``first_crop``,] resize the shorter side to ``size`` and center-crop; no-op if it fits."""

    def __init__(self, size: int, first_crop: int | None = None) -> None:
        self.size = size
        self.first_crop = transforms.CenterCrop(first_crop) if first_crop else None
        self.resize = transforms.Resize(size)
        self.crop = transforms.CenterCrop(size)

    def __call__(self, img: Image.Image) -> Image.Image:
        if self.first_crop is not None:
            img = self.first_crop(img)
        if img.size == (self.size, self.size):
            return img
        return self.crop(self.resize(img))


def reference_transform(resolution: int, crop: int | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> RGB -> square ``resolution`` crop -> uint8 tensor (3, R, R), for metric reference images."""
    return transforms.Compose([to_rgb, _ResizeCrop(resolution, crop), transforms.PILToTensor()])


def image_transform(resolution: int, crop: int | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> RGB -> [center crop] -> square ``resolution`` -> tensor in [-1, 1] (flips: StreamSampler)."""
    steps = [
        to_rgb,
        _ResizeCrop(resolution, crop),
        transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3),
    ]
    return transforms.Compose(steps)


def _unit_range_table() -> torch.Tensor:
    """(256,) float32: what ToTensor + Normalize(0.5, 0.5) of `image_transform` give each uint8 value.

    Computed by those very transforms on the CPU, as the file pipeline runs them. Looking values up is exact on
    any device, whereas recomputing them is not: CUDA divides by a scalar as a * (1 / b), which differs from
    the CPU's a / b in the last bit for 126 of the 256 values.
    """
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8).reshape(1, 256, 1), 3, axis=2))
    return transforms.Normalize([0.5] * 3, [0.5] * 3)(transforms.ToTensor()(ramp))[0, 0].contiguous()


_UNIT_RANGE = _unit_range_table()
_unit_range_on: dict[torch.device, torch.Tensor] = {}


def _look_up_unit_range(images: torch.Tensor) -> torch.Tensor:
    table = _unit_range_on.get(images.device)
    if table is None:
        table = _unit_range_on.setdefault(images.device, _UNIT_RANGE.to(images.device))
    return table.index_select(0, images.reshape(-1).int()).view(images.shape)


def uint8_to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1], bit-identical to `image_transform`'s ToTensor + Normalize."""
    if images.device.type == "cpu":
        # ToTensor's and Normalize's own CPU ops, in their order (here ~8x faster than the table look-up).
        return images.float().div_(255).sub_(0.5).div_(0.5)
    return _look_up_unit_range(images)


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


class StreamSampler(DistributedSampler):
    """The training data as one endless stream of shuffled passes, positioned by the batches already trained.

    Pass p is a permutation seeded by (seed, p), so the order never depends on the global RNG. Each
    `iter()` continues the stream at `position()` (batches this rank has trained on, the module's d_steps),
    so a resumed run, or a run whose last epoch was cut short, sees exactly the batches an uninterrupted run
    would. With `flip`, index i + len(dataset) means "item i mirrored" (see `Mirrored`), again drawn per
    pass, so flips resume exactly too and need no RNG in worker processes. Subclassing DistributedSampler
    keeps Lightning from wrapping it: it already shards across DDP ranks.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        position: Callable[[], int],
        seed: int = 0,
        flip: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size, self.position, self.flip = batch_size, position, flip
        self.batches_per_pass = self.num_samples // batch_size

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the pass follows from the trained batches, not from Lightning's epoch counter."""

    def pass_indices(self, pass_index: int) -> list[int]:
        """This rank's sample indices of one pass, flips encoded as index + len(dataset)."""
        n = len(self.dataset)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(self.seed + pass_index)
        order = torch.randperm(n, generator=g)[: self.total_size]
        if self.flip:
            order = order + n * torch.randint(0, 2, (n,), generator=g)[: self.total_size]
        return order[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        # Evaluated lazily, when the loader starts the pass: by then every earlier batch has been trained on.
        pass_index, batch_offset = divmod(self.position(), self.batches_per_pass)
        yield from self.pass_indices(pass_index)[batch_offset * self.batch_size :]


class Mirrored(Dataset):
    """`dataset` plus its horizontal mirror images: index i + len(dataset) is item i flipped left-right."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self)
        image, label = self.dataset[index % n]
        return (image.flip(-1) if index >= n else image), label


def _datasets_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan_lab" / "datasets"


def _checksum(images: torch.Tensor, labels: torch.Tensor) -> int:
    return zlib.crc32(labels.numpy(), zlib.crc32(images.numpy()))


def _write_decoded(path: Path, key: dict[str, object], images: torch.Tensor, labels: torch.Tensor) -> None:
    """Store decoded images atomically (temp file + rename: a killed run never leaves a truncated cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        payload = {"key": key, "images": images, "labels": labels, "crc32": _checksum(images, labels)}
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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


def _positive_int(name: str, value: object, example: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer; set e.g. {name}={example}")
    return value


class ImageDataModule(pl.LightningDataModule):
    """Shared settings and the training dataloader; subclasses only build the dataset."""

    def __init__(
        self,
        root: str | None,
        resolution: int,
        batch_size: int,
        num_workers: int,
        hflip: bool,
        order_seed: int = 0,
        in_memory: bool | str | None = None,
    ) -> None:
        super().__init__()
        if in_memory not in (None, True, False, "auto"):
            raise ConfigError(
                f"dataset.in_memory={in_memory!r} must be auto, true or false; set dataset.in_memory=auto"
            )
        self.in_memory = in_memory  # None: not applicable (the images are generated in memory)
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
        if split == "train" and resolution == self.resolution and isinstance(self.train_set, InMemoryImages):
            # The decoded images are reference_transform's output already: the same bytes, no second decode.
            return _TensorImages(self.train_set.images, self.train_set.labels, None)
        return self.build_dataset(reference_transform(resolution, self.crop), split)

    def native_resolution(self) -> int | None:
        """The side of the dataset's own square images (CIFAR-10: 32), or None when sizes differ or are unknown."""
        return None

    def num_images(self) -> int | None:
        """Images in the training set, known without decoding any; None: unknown (in_memory=auto is then off)."""
        return None

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
            train_set: Dataset = InMemoryImages(*self.load_decoded())
        else:
            train_set = self.build_dataset(image_transform(self.resolution, self.crop))
        size = len(train_set)  # type: ignore[arg-type]
        if size < self.batch_size:
            where = self.root if self.root is not None else type(self).__name__
            raise DataError(
                f"dataset.batch_size={self.batch_size} is larger than the {size} images in {where}; "
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
        """Turn the in-memory loader's uint8 images into the file pipeline's floats, after the device transfer."""
        if isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
            if batch[0].dtype == torch.uint8:
                return [uint8_to_unit_range(batch[0]), batch[1]]
        return batch

    def trained_batches(self) -> int:
        """Batches this rank has trained on so far (the module's d_steps, restored on resume); 0 outside fit."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return int(getattr(module, "d_steps", 0))

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``batch_size`` (a pass's incomplete last batch is dropped), resumable mid-pass.

        In memory, the images come as uint8: `on_after_batch_transfer` (which Lightning calls after moving a
        batch to the device) turns them into the floats that the file pipeline yields.
        """
        self.setup("fit")
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        if isinstance(self.train_set, InMemoryImages):
            # uint8 batches straight from memory in this process: one index + one flip per batch, no workers.
            batches = _UInt8Batches(self.train_set)
            return DataLoader(
                batches,
                batch_size=self.batch_size,
                sampler=StreamSampler(
                    batches, self.batch_size, self.trained_batches, self.order_seed, self.hflip, world, rank
                ),
                drop_last=True,
                collate_fn=_whole_batch,
                pin_memory=torch.cuda.is_available(),
                # Without a generator, every iter() would draw its base seed from the global RNG (see below).
                generator=torch.Generator().manual_seed(self.order_seed),
            )
        dataset = Mirrored(self.train_set) if self.hflip else self.train_set
        sampler = StreamSampler(
            dataset, self.batch_size, self.trained_batches, self.order_seed, self.hflip, world, rank
        )
        return DataLoader(
            dataset,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # Worker seeds come from this generator, not the global RNG, which resume restores at batch start.
            generator=torch.Generator().manual_seed(self.order_seed),
        )


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 train split (50,000 images, 10 classes) via torchvision."""

    CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def __init__(
        self,
        root: str,
        resolution: int = 32,
        batch_size: int = 64,
        num_workers: int = 2,
        hflip: bool = False,
        order_seed: int = 0,
        download: bool = True,
        in_memory: bool | str = "auto",
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, hflip, order_seed, in_memory)
        self.download = download
        self.num_classes = 10
        self.class_names = list(self.CLASS_NAMES)

    def prepare_data(self) -> None:
        """Download CIFAR-10 into ``root`` unless it is already there."""
        if not self.download:
            return
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(self.root), train=True, download=True)
        except Exception as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            raise DataError(
                f"CIFAR-10 could not be downloaded to {self.root} ({reason}); to use a local copy instead "
                "pass dataset=folder dataset.root=/path/to/cifar10/train (one subfolder per class)"
            ) from e

    def build_dataset(
        self, transform: Callable[[Image.Image], torch.Tensor], split: str = "train"
    ) -> Dataset:
        from torchvision.datasets import CIFAR10

        try:
            return CIFAR10(str(self.root), train=split == "train", transform=transform, download=False)
        except RuntimeError as e:
            raise DataError(
                f"CIFAR-10 is not in {self.root}; set dataset.download=true, or pass "
                "dataset=folder dataset.root=/path/to/cifar10/train for a local ImageFolder copy"
            ) from e

    def num_images(self) -> int:
        return 50_000

    def native_resolution(self) -> int:
        return 32

    def source_files(self) -> list[Path]:
        from torchvision.datasets import CIFAR10

        return [self.root / CIFAR10.base_folder / name for name, _ in CIFAR10.train_list]  # type: ignore[operator]

    def needs_decoding(self) -> bool:
        return self.resolution != 32

    def decode_train_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.needs_decoding():
            return super().decode_train_images()
        # torchvision holds the images as a uint8 array (N, 32, 32, 3); at 32² the file pipeline's PIL steps
        # (to_rgb, _ResizeCrop) leave each Image.fromarray(row) as it is, so the array is their output.
        dataset = self.build_dataset(reference_transform(self.resolution))
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # type: ignore[attr-defined]
        return images, torch.tensor(dataset.targets, dtype=torch.long)  # type: ignore[attr-defined]


class LSUNChurchDataModule(ImageDataModule):
    """LSUN church_outdoor train set (~126k images, unconditional) read from its lmdb folder."""

    def __init__(
        self,
        root: str,
        resolution: int = 128,
        batch_size: int = 64,
        num_workers: int = 2,
        hflip: bool = False,
        order_seed: int = 0,
        in_memory: bool | str = "auto",
    ) -> None:
        # auto never picks memory here (num_images is unknown): 126k images at 128² take ~5.8 GiB.
        super().__init__(root, resolution, batch_size, num_workers, hflip, order_seed, in_memory)

    def source_files(self) -> list[Path]:
        return [self.root / "church_outdoor_train_lmdb" / "data.mdb"]  # type: ignore[operator]

    def build_dataset(
        self, transform: Callable[[Image.Image], torch.Tensor], split: str = "train"
    ) -> Dataset:
        try:
            import lmdb  # noqa: F401
        except ImportError as e:
            msg = "LSUN needs the lmdb package; pip install lmdb (or pip install gan_lab[lsun])"
            raise DataError(msg) from e
        category = "church_outdoor_train" if split == "train" else "church_outdoor_val"  # LSUN's test split
        lmdb_dir = self.root / f"{category}_lmdb"  # type: ignore[operator]
        if not lmdb_dir.is_dir():
            raise DataError(
                f"LSUN folder {lmdb_dir} not found; get it with `python download.py -c church_outdoor` from "
                f"https://github.com/fyu/lsun and unzip it into {self.root} (or set dataset.root=...)"
            )
        from torchvision.datasets import LSUN

        return LSUN(str(self.root), classes=[category], transform=transform)


class ImageFileDataset(Dataset):
    """Image files with integer labels, decoded lazily; unreadable files raise or are skipped."""

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        transform: Callable,
        skip_corrupt: bool = False,
        unreadable: Collection[int] = (),
    ) -> None:
        self.files, self.labels, self.transform, self.skip_corrupt = files, labels, transform, skip_corrupt
        self._bad: set[int] = set(unreadable)  # known unreadable (FolderDataModule's header check)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> Image.Image | None:
        path = self.files[index]
        try:
            with Image.open(path) as img:
                img.load()
                return to_rgb(img)
        except _READ_ERRORS as e:
            if not self.skip_corrupt:
                raise DataError(
                    f"cannot read image {path} ({e}); delete or replace it, or set dataset.skip_corrupt=true"
                ) from e
            if index not in self._bad:  # remembered so each bad file is warned about once per worker
                log.warning("skipping unreadable image %s (%s)", path, e)
                self._bad.add(index)
            return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # With skip_corrupt, substitute the next readable file so batches keep their size.
        n = len(self.files)
        for offset in range(n):
            i = (index + offset) % n
            if i not in self._bad and (img := self._load(i)) is not None:
                return self.transform(img), self.labels[i]
        raise DataError(f"none of the {n} image files can be read; check the files under dataset.root")


def scan_image_folder(
    root: Path | None, key: str = "dataset.root"
) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class_names) of a folder searched recursively; only lists names, opens nothing.

    Top-level subfolders are classes when every image sits in one; otherwise the folder is unlabelled.
    """
    if root is not None and root.is_file():
        archive = root.suffix.lower() in (".zip", ".tar", ".gz", ".tgz", ".xz", ".7z", ".rar")
        raise DataError(
            f"image folder {root} is a file, not a folder{' (extract the archive first)' * archive}; "
            f"set {key}=/path/to/images"
        )
    if root is None or not root.is_dir():
        raise DataError(f"image folder {root} does not exist; set {key}=/path/to/images")
    files: list[Path] = []
    others: list[Path] = []  # named in the error when there are no images: a wrong format or an archive
    for dirpath, dirnames, filenames in os.walk(root):
        # Hidden entries (.git, macOS ._* resource forks) are never images.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                (files if f.lower().endswith(IMAGE_EXTENSIONS) else others).append(Path(dirpath, f))
    if not files:
        n = len(others)
        example = others[0].relative_to(root) if n else None
        found = f"only {n} other file{'s' * (n != 1)} (e.g. {example})" if n else "it is empty"
        raise DataError(
            f"no image files ({' '.join(IMAGE_EXTENSIONS)}, any case) under {root}, {found}; "
            f"set {key} to a folder of images"
        )
    files.sort()
    top = [f.relative_to(root).parts for f in files]
    if all(len(parts) > 1 for parts in top):
        class_names = sorted({parts[0] for parts in top})
        index = {name: i for i, name in enumerate(class_names)}
        return files, [index[parts[0]] for parts in top], class_names
    return files, [0] * len(files), []


@rank_zero_only  # DDP ranks check the same files: one warning is enough
def _warn_once(msg: str, *args: object) -> None:
    log.warning(msg, *args)


@rank_zero_only
def _info_once(msg: str, *args: object) -> None:
    log.info(msg, *args)


HEADER_SAMPLE = 2000  # files whose headers FolderDataModule.setup opens (all of them in smaller folders)


def read_headers(
    files: Sequence[Path], limit: int = HEADER_SAMPLE
) -> tuple[int, dict[int, str], dict[int, tuple[int, int]]]:
    """Open the headers of up to `limit` evenly spaced files; PIL decodes no pixels, so this is cheap.

    Returns (files checked, {index: why unreadable}, {index: (width, height)}). A truncated file passes:
    it fails when loaded.
    """
    n = len(files)
    indices = range(n) if n <= limit else sorted({i * n // limit for i in range(limit)})
    unreadable: dict[int, str] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for i in indices:
        try:
            with Image.open(files[i]) as img:
                sizes[i] = img.size
        except _READ_ERRORS as e:
            empty = isinstance(e, UnidentifiedImageError) and files[i].stat().st_size == 0
            unreadable[i] = (
                "empty file"
                if empty
                else "not an image"
                if isinstance(e, UnidentifiedImageError)
                else " ".join(str(e).split())
            )
    return len(indices), unreadable, sizes


def _listing(files: Sequence[Path], reasons: dict[int, str], most: int = 5) -> str:
    shown = [f"{files[i]} ({reasons[i]})" for i in sorted(reasons)[:most]]
    more = len(reasons) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


class FolderDataModule(ImageDataModule):
    """Any folder of images, searched recursively; top-level subfolders become class labels."""

    def __init__(
        self,
        root: str,
        resolution: int = 64,
        batch_size: int = 64,
        num_workers: int = 2,
        hflip: bool = False,
        order_seed: int = 0,
        skip_corrupt: bool = False,
        test_root: str | None = None,
        crop: int | None = None,
        in_memory: bool | str = "auto",
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, hflip, order_seed, in_memory)
        self.crop = _positive_int("dataset.crop", crop, 108) if crop is not None else None
        self.skip_corrupt = skip_corrupt
        self.test_root = Path(test_root).expanduser() if test_root else None
        self.files, self.labels, self.class_names = scan_image_folder(self.root)
        self.num_classes = len(self.class_names)
        self.unreadable: dict[int, str] = {}  # with skip_corrupt, files the header check could not open

    def setup(self, stage: str | None = None) -> None:
        """Check the images' headers first: unreadable files fail (or are skipped), small ones are warned about."""
        if self.train_set is None:
            self.check_images()
        super().setup(stage)

    def check_images(self) -> None:
        """Open the headers of (a sample of) the files: list the unreadable ones, warn about upscaled images."""
        checked, unreadable, sizes = read_headers(self.files, HEADER_SAMPLE)
        of = f"the {checked}" if checked == len(self.files) else f"{checked} sampled"
        if unreadable:
            if not sizes and checked == len(self.files):
                raise DataError(
                    f"none of the {checked} image files under {self.root} can be read, e.g. "
                    f"{_listing(self.files, unreadable, 1)}; set dataset.root to a folder of images"
                )
            listing = _listing(self.files, unreadable)
            if not self.skip_corrupt:
                raise DataError(
                    f"{len(unreadable)} of {of} image files under {self.root} cannot be read: {listing}; "
                    "delete or replace them, or set dataset.skip_corrupt=true to skip them"
                )
            _warn_once("skipping %d unreadable image files under %s: %s", len(unreadable), self.root, listing)
            self.unreadable = unreadable
        if not sizes:
            return
        if self.crop is not None:
            if self.crop < self.resolution:
                _warn_once(
                    "dataset.crop=%d is smaller than dataset.resolution=%d, so every crop is upscaled, which "
                    "blurs it; set dataset.crop to at least %d, or lower dataset.resolution",
                    self.crop,
                    self.resolution,
                    self.resolution,
                )
            small = {i: size for i, size in sizes.items() if min(size) < self.crop}
            if small:
                i, (w, h) = min(small.items(), key=lambda item: min(item[1]))
                _warn_once(
                    "%d of %s images under %s are smaller than dataset.crop=%d (e.g. %s is %dx%d) and get black "
                    "borders; lower dataset.crop (e.g. dataset.crop=%d), or set dataset.crop=null",
                    *(len(small), of, self.root, self.crop, self.files[i], w, h, min(w, h)),
                )
            return
        small = {i: size for i, size in sizes.items() if min(size) < self.resolution}
        if small:
            i, (w, h) = min(small.items(), key=lambda item: min(item[1]))
            fits = 2 ** int(math.log2(max(min(w, h), 1)))  # the largest power of two the smallest covers
            _warn_once(
                "%d of %s images under %s are smaller than dataset.resolution=%d (e.g. %s is %dx%d) and are "
                "upscaled, which blurs them; lower dataset.resolution%s, or ignore this if upscaling is intended",
                *(len(small), of, self.root, self.resolution, self.files[i], w, h),
                f" (e.g. dataset.resolution={fits})" if fits >= 32 else "",
            )

    def build_dataset(
        self, transform: Callable[[Image.Image], torch.Tensor], split: str = "train"
    ) -> Dataset:
        if split == "train":
            return ImageFileDataset(self.files, self.labels, transform, self.skip_corrupt, self.unreadable)
        if self.test_root is None:
            raise ConfigError(
                "the test split of a folder dataset needs dataset.test_root=/path/to/test/images "
                "(or use metrics.reference_split=train)"
            )
        files, labels, _ = scan_image_folder(self.test_root, key="dataset.test_root")
        return ImageFileDataset(files, labels, transform, self.skip_corrupt)

    def num_images(self) -> int:
        return len(self.files)

    def native_resolution(self) -> int | None:
        """The common image size (read from up to HEADER_SAMPLE headers), after dataset.crop; None if sizes differ."""
        _, _, sizes = read_headers(self.files, HEADER_SAMPLE)
        if len(set(sizes.values())) != 1:
            return None
        side = min(next(iter(sizes.values())))
        return min(side, self.crop) if self.crop else side

    def source_files(self) -> list[Path]:
        return self.files

    def decode_train_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every file as ImageFileDataset would; an unreadable one becomes the next readable file."""
        n, r = len(self.files), self.resolution
        todo = [i for i in range(n) if i not in self.unreadable]  # the header check's finds: reported already
        decoder = _DecodeFiles(self.files, reference_transform(r, self.crop), r)
        images, readable = torch.zeros((n, 3, r, r), dtype=torch.uint8), torch.zeros(n, dtype=torch.bool)
        start = 0
        for batch_images, batch_readable, reasons in self._decode_loader(decoder, todo):
            index = todo[start : start + len(batch_images)]
            images[index], readable[index] = batch_images, batch_readable
            start += len(batch_images)
            for i, ok, reason in zip(index, batch_readable.tolist(), reasons, strict=True):
                if ok:
                    continue
                if not self.skip_corrupt:
                    raise DataError(
                        f"cannot read image {self.files[i]} ({reason}); delete or replace it, "
                        "or set dataset.skip_corrupt=true"
                    )
                log.warning("skipping unreadable image %s (%s)", self.files[i], reason)
        labels = torch.tensor(self.labels, dtype=torch.long)
        if bool(readable.all()):
            return images, labels
        if not bool(readable.any()):
            raise DataError(f"none of the {n} image files can be read; check the files under dataset.root")
        source, nearest, ok = list(range(n)), 0, readable.tolist()
        for k in reversed(range(2 * n)):  # two sweeps: the next readable index wraps around the end
            if ok[k % n]:
                nearest = k % n
            elif k < n:
                source[k] = nearest
        return images[source], labels[source]


class _DecodeFiles(Dataset):
    """Item i: (reference_transform of file i or zeros, readable, why not), for FolderDataModule's decode."""

    def __init__(self, files: list[Path], transform: Callable, resolution: int) -> None:
        self.files, self.transform, self.resolution = files, transform, resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, str]:
        try:  # the same steps and errors as ImageFileDataset._load
            with Image.open(self.files[index]) as img:
                img.load()
                img = to_rgb(img)
        except _READ_ERRORS as e:
            return torch.zeros((3, self.resolution, self.resolution), dtype=torch.uint8), False, str(e)
        return self.transform(img), True, ""


class _TensorImages(Dataset):
    """In-memory image tensors with labels and an optional tensor transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index]
        return (self.transform(img) if self.transform else img), int(self.labels[index])


class FakeDataModule(ImageDataModule):
    """Deterministic synthetic images: a soft blob over a gradient, coloured by class, for tests."""

    def __init__(
        self,
        root: str | None = None,
        resolution: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        hflip: bool = False,
        order_seed: int = 0,
        num_samples: int = 256,
        num_classes: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, hflip, order_seed)
        self.num_samples = _positive_int("dataset.num_samples", num_samples, 256)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"dataset.num_classes={num_classes!r} must be >= 0 (0 = unconditional)")
        self.num_classes = num_classes
        self.class_names = [f"class{i}" for i in range(num_classes)]
        self.seed = seed

    def generate(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(images, labels)``: images (N, 3, R, R) in [-1, 1], same output for the same seed and split."""
        n, r = self.num_samples, self.resolution
        g = torch.Generator().manual_seed(self.seed + (0 if split == "train" else 1))
        labels = torch.arange(n) % max(self.num_classes, 1)
        if self.num_classes:
            # Evenly spaced hues, so each class has its own clearly distinct colour.
            hue = labels.float() / self.num_classes
        else:
            hue = torch.rand(n, generator=g)
        phase = torch.tensor([0.0, 2.0, 4.0]) * math.pi / 3
        colour = torch.cos(2 * math.pi * hue[:, None] + phase)  # (N, 3) in [-1, 1]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, r), torch.linspace(-1, 1, r), indexing="ij")
        centre = torch.rand(n, 2, generator=g) * 1.2 - 0.6
        radius = torch.rand(n, generator=g) * 0.3 + 0.25
        dist2 = (xs - centre[:, 0, None, None]) ** 2 + (ys - centre[:, 1, None, None]) ** 2
        blob = torch.exp(-dist2 / (2 * radius[:, None, None] ** 2))  # (N, R, R) in (0, 1]
        angle = torch.rand(n, generator=g) * 2 * math.pi
        gradient = xs * torch.cos(angle)[:, None, None] + ys * torch.sin(angle)[:, None, None]
        background = 0.3 * gradient[:, None] - 0.4
        images = background + blob[:, None] * (colour[:, :, None, None] - background)
        return images.clamp(-1, 1), labels

    def build_dataset(
        self, transform: Callable[[Image.Image], torch.Tensor], split: str = "train"
    ) -> Dataset:
        # Images are already tensors at the right size, so only the flip of the PIL pipeline applies.
        images, labels = self.generate(split)
        return _TensorImages(images, labels, None)

    def reference_dataset(self, split: str, resolution: int | None = None) -> Dataset:
        images, labels = self.generate(split)
        return _TensorImages(generated_to_uint8(images, resolution or self.resolution), labels, None)
