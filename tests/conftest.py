"""Shared test fixtures: an extracted CIFAR-10 JPEG copy and a tiny mixed-format image folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _shared_dir() -> Path:
    env = os.environ.get("GAN_LAB_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def skip_without_shared(what: str) -> None:
    """Skip a test that needs ../shared; under GAN_LAB_REQUIRE_SHARED=1 (CI) fail it instead."""
    message = f"needs ../shared/{what}"
    if os.environ.get("GAN_LAB_REQUIRE_SHARED") == "1":
        pytest.fail(f"{message}, and GAN_LAB_REQUIRE_SHARED=1 says it must be there")
    pytest.skip(message)


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan_lab"


@pytest.fixture(scope="session")
def cifar_jpeg_root() -> Path:
    """Directory holding ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, extracted once and cached."""
    from benchmarks.shared import extract_cifar_jpeg  # shared with `python -m benchmarks`

    archive = _shared_dir() / "data" / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        skip_without_shared("data/cifar10-jpeg.tar.gz")
    final = _cache_dir() / "cifar10-jpeg"
    root = extract_cifar_jpeg(archive, final)
    if root is None:
        pytest.fail(f"{archive} has no train/ folder; delete {final} and check the archive")
    return root


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None]
    return (x + y) / 2


@pytest.fixture
def tiny_image_folder(tmp_path: Path) -> Path:
    """Two class folders, 12 images of mixed sizes (>= 32 px) and modes: RGB jpg, L, RGBA, P, 16-bit png."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    sizes = [(32, 32), (48, 40), (40, 64), (64, 64), (50, 33), (33, 70)]
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(sizes):
            g = _gradient(w, h)
            if i in (0, 1):
                arr = np.stack([g, g[::-1], rng.uniform(0, 255, (h, w))], -1).astype(np.uint8)
                Image.fromarray(arr, "RGB").save(root / cls / f"rgb{i}.jpg", quality=90)
            elif i == 2:
                Image.fromarray(g.astype(np.uint8), "L").save(root / cls / "gray.png")
            elif i == 3:
                arr = np.stack([g, g, g, g[::-1]], -1).astype(np.uint8)
                Image.fromarray(arr, "RGBA").save(root / cls / "alpha.png")
            elif i == 4:
                rgb = Image.fromarray(np.stack([g, g, g], -1).astype(np.uint8), "RGB")
                rgb.quantize(16).save(root / cls / "palette.png")
            else:
                Image.fromarray((g * 257).astype(np.uint16)).save(root / cls / "deep16.png")
    return root


# Overrides that make any composed config a few-second CPU run on synthetic data.
TINY_RUN = [
    "dataset=fake",
    "dataset.batch_size=8",
    "dataset.num_samples=32",
    "dataset.num_classes=2",  # labels for the conditional models; unconditional ones ignore them
    "model.width=4",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "metrics=none",
    "overwrite=true",  # tests train into one directory again on purpose (test_run_store.py checks the refusal)
]


@pytest.fixture
def tiny_config(tmp_path: Path):
    """compose(*overrides): the real train config shrunk by TINY_RUN, writing into tmp_path."""
    from gan_lab.utils.config import compose_config

    def compose(*overrides: str):
        return compose_config([*TINY_RUN, *overrides], output_dir=tmp_path / "run")

    return compose


@pytest.fixture(scope="session")
def inception_weights() -> Path:
    """The FID Inception weights of ../shared (NaN classifier head: FID/KID only)."""
    path = _shared_dir() / "weights" / "inception-2015-12-05-fid.pth"
    if not path.is_file():
        skip_without_shared("weights/inception-2015-12-05-fid.pth")
    return path


@pytest.fixture(scope="session")
def inception(inception_weights):
    """torch-fidelity's FID Inception-v3 built once per session (loading takes seconds)."""
    from gan_lab.metrics import build_inception

    return build_inception(str(inception_weights))


def copy_images(source: Path, dest: Path, count: int, stride: int = 1) -> Path:
    """A flat folder of `count` copies of images of source (every `stride`-th, round robin over classes).

    Copies, not symlinks: torch-fidelity orders files by their resolved paths, gan_lab by the names it lists,
    and KID's random subsets depend on that order.
    """
    dest.mkdir(parents=True)
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    files = [sorted(c.iterdir()) for c in classes]
    for i in range(count):
        image = files[i % len(classes)][(i // len(classes)) * stride]
        shutil.copyfile(image, dest / f"{i:05d}{image.suffix}")
    return dest


# Overrides for a seconds-long run from the command line (subprocess tests of train, multirun, launchers).
TINY_CLI = [
    "dataset=fake",
    "dataset.num_samples=32",
    "dataset.batch_size=8",
    "model.width=4",
    "metrics=none",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]


def run_module(
    module: str, *args: str, cwd: Path, timeout: int = 600, **env: str
) -> subprocess.CompletedProcess:
    """`python -m module args` in cwd, as a user runs it (one-line errors: HYDRA_FULL_ERROR=0)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def _metric_kinds_of_this_test_only():
    """Kinds a test registers (metrics.extra) are unregistered after it: the registry lives as long as the process."""
    from gan_lab.metrics.registry import KINDS, unregister

    before = set(KINDS)
    yield
    for name in set(KINDS) - before:
        unregister(name)


# The aten ops that move data between host and device mid-step on a GPU (a host sync; no CUDA graph can hold them):
# tensors made from Python data (lift_fresh: torch.tensor(...), `t[i] = 0.5`), reads back to the host (item,
# nonzero, `if t:`). Checked on the CPU, where the same ops run.
HOST_ROUND_TRIPS = {"lift_fresh", "_local_scalar_dense", "is_nonzero", "nonzero", "item"}


class HostRoundTrips:
    """`with HostRoundTrips() as seen:` lists, in `seen`, the host round-trip ops run inside the block."""

    def __enter__(self) -> list[str]:
        from torch.utils._python_dispatch import TorchDispatchMode

        seen: list[str] = []

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.__name__.split(".")[0] in HOST_ROUND_TRIPS:
                    seen.append(func.__name__.split(".")[0])
                return func(*args, **(kwargs or {}))

        self._mode = Record()
        self._mode.__enter__()
        return seen

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)
