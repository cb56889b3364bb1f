"""Lightning data modules that yield ``(image, label)`` with images as RGB float tensors CHW in [-1, 1].

- ``ImageDataModule``: shared settings, validation and the training dataloader.
- ``CIFAR10DataModule``: torchvision CIFAR-10 (train split, 10 classes), downloaded by ``prepare_data``.
- ``LSUNChurchDataModule``: LSUN church_outdoor from its lmdb folder (unconditional).
- ``FolderDataModule``: any folder of images; top-level subfolders become class labels.
- ``FakeDataModule``: small deterministic synthetic images generated in memory, for tests.
"""

from __future__ import annotations

import logging
import math
import os
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
from gan_lab.images import to_uint8

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


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
    ) -> None:
        super().__init__()
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

    def reference_dataset(self, split: str) -> Dataset:
        """Real images of ``split`` as uint8 (3, R, R) at the training resolution, unflipped, for metrics."""
        if split not in ("train", "test"):
            raise ConfigError(f"metrics.reference_split must be 'train' or 'test', got '{split}'")
        return self.build_dataset(reference_transform(self.resolution, self.crop), split)

    def setup(self, stage: str | None = None) -> None:
        """Build the training set once and check it holds at least one batch."""
        if self.train_set is not None:
            return
        train_set = self.build_dataset(image_transform(self.resolution, self.crop))
        size = len(train_set)  # type: ignore[arg-type]
        if size < self.batch_size:
            where = self.root if self.root is not None else type(self).__name__
            raise DataError(
                f"dataset.batch_size={self.batch_size} is larger than the {size} images in {where}; "
                "lower dataset.batch_size"
            )
        self.train_set = train_set

    def trained_batches(self) -> int:
        """Batches this rank has trained on so far (the module's d_steps, restored on resume); 0 outside fit."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        return int(getattr(module, "d_steps", 0))

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``batch_size`` (a pass's incomplete last batch is dropped), resumable mid-pass."""
        self.setup("fit")
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
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
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, hflip, order_seed)
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
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, hflip, order_seed)

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
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
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
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
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
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, hflip, order_seed)
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

    def reference_dataset(self, split: str) -> Dataset:
        images, labels = self.generate(split)
        return _TensorImages(to_uint8(images), labels, None)
