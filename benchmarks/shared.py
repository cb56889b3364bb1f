"""The offline copies in ../shared (CIFAR-10 as JPEG, the FID Inception weights), found and extracted once."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

CIFAR_ARCHIVE = Path("data") / "cifar10-jpeg.tar.gz"
INCEPTION_WEIGHTS = Path("weights") / "inception-2015-12-05-fid.pth"


def shared_dir() -> Path:
    """$GAN_LAB_SHARED, else the `shared/` folder beside the project checkout."""
    env = os.environ.get("GAN_LAB_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def cache_dir() -> Path:
    """gan_lab's cache folder: $XDG_CACHE_HOME/gan_lab or ~/.cache/gan_lab."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan_lab"


def extract_cifar_jpeg(archive: Path, final: Path) -> Path | None:
    """Extract `archive` into `final` once; the folder holding train/ and test/, or None if it has no train/.

    Extracts beside the target then renames, so an interrupted run never leaves a half-filled cache, and a
    concurrent process that wins the rename is fine.
    """
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:
                    tar.extractall(tmp)  # Python < 3.11.4 has no extraction filters
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    # Allow an archive with one top-level folder around train/ and test/.
    for candidate in [final, *sorted(p for p in final.iterdir() if p.is_dir())]:
        if (candidate / "train").is_dir():
            return candidate
    return None


def cifar_jpeg_root() -> Path | None:
    """The extracted shared CIFAR-10 copy (train/<class>/*.jpg, test/...); None without the archive."""
    archive = shared_dir() / CIFAR_ARCHIVE
    if not archive.is_file():
        return None
    return extract_cifar_jpeg(archive, cache_dir() / "cifar10-jpeg")


def inception_weights() -> str | None:
    """$GAN_LAB_INCEPTION_WEIGHTS, else the shared copy, else None (torch-fidelity would download them)."""
    env = os.environ.get("GAN_LAB_INCEPTION_WEIGHTS")
    if env:
        return env
    path = shared_dir() / INCEPTION_WEIGHTS
    return str(path) if path.is_file() else None
