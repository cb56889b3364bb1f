"""The dataset choices of conf/dataset: CIFAR-10, LSUN church, a folder of images, synthetic images."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from gan_lab.data.base import ImageDataModule, _positive_int, _warn_once
from gan_lab.data.folder import (
    HEADER_SAMPLE,
    ImageFileDataset,
    _DecodeFiles,
    _listing,
    none_readable,
    read_headers,
    scan_image_folder,
    unreadable_image,
)
from gan_lab.data.memory import _TensorImages
from gan_lab.data.transforms import reference_transform
from gan_lab.errors import ConfigError, DataError
from gan_lab.utils.images import generated_to_uint8


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
        on_device: bool | str = "auto",
        max_images: int | None = None,
    ) -> None:
        super().__init__(
            root, resolution, batch_size, num_workers, hflip, order_seed, in_memory, on_device, max_images
        )
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
        on_device: bool | str = "auto",
        max_images: int | None = None,
    ) -> None:
        # auto never picks memory here (num_images is unknown): 126k images at 128² take ~5.8 GiB.
        super().__init__(
            root, resolution, batch_size, num_workers, hflip, order_seed, in_memory, on_device, max_images
        )

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
        on_device: bool | str = "auto",
        max_images: int | None = None,
    ) -> None:
        super().__init__(
            root, resolution, batch_size, num_workers, hflip, order_seed, in_memory, on_device, max_images
        )
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

    def train_labels(self) -> torch.Tensor | None:
        return torch.tensor(self.labels, dtype=torch.long) if self.num_classes else None

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
                if not ok:
                    unreadable_image(self.files[i], reason, self.skip_corrupt)
        labels = torch.tensor(self.labels, dtype=torch.long)
        if bool(readable.all()):
            return images, labels
        if not bool(readable.any()):
            raise none_readable(n)
        source, nearest, ok = list(range(n)), 0, readable.tolist()
        for k in reversed(range(2 * n)):  # two sweeps: the next readable index wraps around the end
            if ok[k % n]:
                nearest = k % n
            elif k < n:
                source[k] = nearest
        return images[source], labels[source]


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
        on_device: bool | str = "auto",
        max_images: int | None = None,
    ) -> None:
        # Its images are generated in memory (no dataset.in_memory); on the device only with on_device=true.
        super().__init__(
            root, resolution, batch_size, num_workers, hflip, order_seed, None, on_device, max_images
        )
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

    def train_labels(self) -> torch.Tensor | None:
        return self.generate("train")[1] if self.num_classes else None

    def build_dataset(
        self, transform: Callable[[Image.Image], torch.Tensor], split: str = "train"
    ) -> Dataset:
        # Images are already tensors at the right size, so only the flip of the PIL pipeline applies.
        images, labels = self.generate(split)
        return _TensorImages(images, labels, None)

    def reference_dataset(self, split: str, resolution: int | None = None) -> Dataset:
        images, labels = self.generate(split)
        return _TensorImages(generated_to_uint8(images, resolution or self.resolution), labels, None)
