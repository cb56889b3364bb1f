"""Image files on disk: scanning a folder, checking headers, decoding files, unreadable files."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from gan_lab.data.transforms import to_rgb
from gan_lab.errors import DataError

log = logging.getLogger("gan_lab.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # an unreadable image file
HEADER_SAMPLE = 2000  # files whose headers FolderDataModule.setup opens (all of them in smaller folders)


def load_rgb(path: Path) -> Image.Image:
    """The image in `path`, fully decoded, as RGB; raises one of _READ_ERRORS where the file is unreadable."""
    with Image.open(path) as img:
        img.load()
        return to_rgb(img)


SKIP_CORRUPT = "dataset.skip_corrupt=true"


def unreadable_image(
    path: Path, reason: object, skip_corrupt: bool, skip_setting: str | None = SKIP_CORRUPT
) -> None:
    """Raise the DataError for an unreadable image file; with skip_corrupt, warn that it is skipped instead.
    `skip_setting`: the setting that skips such files, named in the error (None: there is none)."""
    if not skip_corrupt:
        skip = f", or set {skip_setting}" if skip_setting else ""
        raise DataError(f"cannot read image {path} ({reason}); delete or replace it{skip}")
    log.warning("skipping unreadable image %s (%s)", path, reason)


def none_readable(n: int) -> DataError:
    """The error when not one of the n image files of a training set can be read."""
    return DataError(f"none of the {n} image files can be read; check the files under dataset.root")


class ImageFileDataset(Dataset):
    """Image files with integer labels, decoded lazily; unreadable files raise or are skipped."""

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        transform: Callable,
        skip_corrupt: bool = False,
        unreadable: Collection[int] = (),
        skip_setting: str | None = SKIP_CORRUPT,
    ) -> None:
        self.files, self.labels, self.transform, self.skip_corrupt = files, labels, transform, skip_corrupt
        self._bad: set[int] = set(unreadable)  # known unreadable (FolderDataModule's header check)
        self.skip_setting = skip_setting  # the setting an unreadable file's error offers (None: none)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> Image.Image | None:
        path = self.files[index]
        try:
            return load_rgb(path)
        except _READ_ERRORS as e:
            unreadable_image(path, e, self.skip_corrupt, self.skip_setting)
            self._bad.add(index)  # skipped from now on: each bad file is warned about once per worker
            return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # With skip_corrupt, substitute the next readable file so batches keep their size.
        n = len(self.files)
        for offset in range(n):
            i = (index + offset) % n
            if i not in self._bad and (img := self._load(i)) is not None:
                return self.transform(img), self.labels[i]
        raise none_readable(n)


class _DecodeFiles(Dataset):
    """Item i: (reference_transform of file i or zeros, readable, why not), for FolderDataModule's decode."""

    def __init__(self, files: list[Path], transform: Callable, resolution: int) -> None:
        self.files, self.transform, self.resolution = files, transform, resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, str]:
        try:  # the same steps and errors as ImageFileDataset._load
            img = load_rgb(self.files[index])
        except _READ_ERRORS as e:
            return torch.zeros((3, self.resolution, self.resolution), dtype=torch.uint8), False, str(e)
        return self.transform(img), True, ""


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
