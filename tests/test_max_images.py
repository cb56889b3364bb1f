"""dataset.max_images: a fixed, class-stratified training subset, the same in every mode and for every seed."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset

from gan_lab import build, data
from gan_lab.data import FakeDataModule, FolderDataModule, ImageFileDataset, InMemoryImages, StreamSampler
from gan_lab.data.base import fixed_subset
from gan_lab.data.memory import _TensorImages
from gan_lab.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded-image caches go to tmp_path (never the user's), and tiny sets are cached too."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data.base, "MIN_CACHED_IMAGES", 0)
    return tmp_path / "cache" / "gan_lab" / "datasets"


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    """Three class folders of 6, 5 and 4 distinct 12x12 PNGs (each image its own colour)."""
    root = tmp_path / "labelled"
    rng = np.random.default_rng(0)
    for cls, count in (("a", 6), ("b", 5), ("c", 4)):
        (root / cls).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def stream(dm, batches: int = 6) -> list[list[torch.Tensor]]:
    """The first batches the model sees (several passes of a small set), floats after the transfer hook."""
    dm.setup("fit")
    out = []
    while len(out) < batches:
        for batch in dm.train_dataloader():
            out.append(dm.on_after_batch_transfer(batch, 0))
        trained = len(out)
        dm.trained_batches = lambda trained=trained: (
            trained
        )  # the next pass, as training positions the stream
    return out[:batches]


def assert_same_stream(a, b) -> None:
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.dtype == xb.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)


def folder(root: Path, **kwargs) -> FolderDataModule:
    return FolderDataModule(str(root), **{"resolution": 8, "batch_size": 2, "num_workers": 0, **kwargs})


# --- null: today's data, untouched ---------------------------------------------------------------------------------


def test_null_trains_on_every_image_in_today_s_order() -> None:
    dm = FakeDataModule(num_samples=32, num_classes=2, batch_size=8, order_seed=3)
    assert dm.max_images is None
    dm.setup("fit")
    assert type(dm.train_set) is _TensorImages and len(dm.train_set) == 32 and dm.subset is None
    images, labels = dm.generate()
    order = StreamSampler(dm.train_set, 8, lambda: 0, seed=3).pass_indices(0)
    for b, (x, y) in enumerate(stream(dm, 4)):  # the whole first pass: the same batches as before max_images
        assert torch.equal(x, images[order[8 * b : 8 * b + 8]]) and torch.equal(
            y, labels[order[8 * b : 8 * b + 8]]
        )


def test_null_folder_keeps_its_datasets(labelled_folder: Path) -> None:
    files, memory = folder(labelled_folder, in_memory=False), folder(labelled_folder, in_memory=True)
    files.setup("fit")
    memory.setup("fit")
    assert type(files.train_set) is ImageFileDataset and len(files.train_set) == 15
    assert type(memory.train_set) is InMemoryImages and len(memory.train_set) == 15


def test_all_images_as_a_subset_is_the_full_set_in_the_same_order() -> None:
    full = FakeDataModule(num_samples=32, num_classes=2, batch_size=8)
    every = FakeDataModule(num_samples=32, num_classes=2, batch_size=8, max_images=32)
    assert_same_stream(stream(full), stream(every))
    assert every.subset.tolist() == list(range(32))


# --- the rule ------------------------------------------------------------------------------------------------------


def test_subset_size_and_exact_class_counts() -> None:
    dm = FakeDataModule(num_samples=40, num_classes=3, batch_size=2, max_images=7)  # classes of 14, 13, 13
    dm.setup("fit")
    _, labels = dm.generate()
    assert len(dm.train_set) == 7 and len(dm.subset) == 7
    assert torch.bincount(dm.train_set.labels, minlength=3).tolist() == [3, 2, 2]  # remainder to class 0
    assert torch.equal(dm.train_set.labels, labels[dm.subset])
    assert dm.subset.tolist() == sorted(set(dm.subset.tolist()))  # distinct indices, ascending


def test_the_documented_rule_and_its_pinned_result() -> None:
    labels = torch.arange(40) % 3
    g, kept = torch.Generator().manual_seed(0), []
    for k, quota in enumerate([3, 2, 2]):  # the docstring's rule, written out independently
        group = torch.nonzero(labels == k).flatten()
        kept += group[torch.randperm(len(group), generator=g)[:quota]].tolist()
    assert fixed_subset(labels, 3, 7).tolist() == sorted(kept) == [8, 9, 12, 21, 25, 29, 34]
    assert fixed_subset(torch.zeros(40, dtype=torch.long), 0, 7).tolist() == [4, 5, 11, 14, 16, 21, 39]
    assert set(fixed_subset(labels, 3, 7).tolist()) <= set(fixed_subset(labels, 3, 13).tolist())  # nested


def test_subset_changes_only_with_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    before = fixed_subset(torch.arange(40) % 3, 3, 7)
    monkeypatch.setattr(data.base, "SUBSET_SEED", 1)
    assert not torch.equal(fixed_subset(torch.arange(40) % 3, 3, 7), before)


def test_subset_does_not_depend_on_seed_order_seed_or_global_rng(tiny_config) -> None:
    subsets, first_batches = [], []
    for seed in (1, 2):
        cfg = tiny_config(f"seed={seed}", "dataset.max_images=16")
        assert cfg.dataset.order_seed == seed
        torch.manual_seed(100 + seed)
        dm = build.build_datamodule(cfg)
        dm.setup("fit")
        subsets.append(dm.subset)
        first_batches.append(next(iter(dm.train_dataloader()))[0])
    assert torch.equal(subsets[0], subsets[1]) and len(subsets[0]) == 16
    assert not torch.equal(first_batches[0], first_batches[1])  # the seeds did reach the data order


def test_one_info_line_names_the_subset(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gan_lab.data"):
        FakeDataModule(num_samples=40, num_classes=3, batch_size=2, max_images=7).setup("fit")
        FakeDataModule(num_samples=40, num_classes=2, batch_size=2, max_images=8).setup("fit")
        FakeDataModule(num_samples=40, batch_size=2, max_images=8).setup("fit")
    lines = [r.getMessage() for r in caplog.records if "subset" in r.getMessage()]
    assert lines == [
        "training on a fixed subset of 7 of 40 images (2 or 3 per class)",
        "training on a fixed subset of 8 of 40 images (4 per class)",
        "training on a fixed subset of 8 of 40 images",
    ]


# --- every mode: the same images -------------------------------------------------------------------------------------


@pytest.mark.parametrize("hflip", [False, True])
def test_in_memory_and_files_give_the_same_subset(labelled_folder: Path, hflip: bool) -> None:
    files = folder(labelled_folder, in_memory=False, max_images=7, hflip=hflip)
    memory = folder(labelled_folder, in_memory=True, max_images=7, hflip=hflip)
    assert_same_stream(stream(files), stream(memory))
    assert isinstance(files.train_set, Subset) and isinstance(memory.train_set, InMemoryImages)
    assert torch.equal(files.subset, memory.subset) and len(memory.train_set) == 7
    assert torch.bincount(memory.train_set.labels).tolist() == [3, 2, 2]
    full = folder(labelled_folder, in_memory=False)
    full.setup("fit")
    for i, index in enumerate(
        memory.subset.tolist()
    ):  # item i is image subset[i] of the full set, pixel for pixel
        (xm, ym), (xf, yf), (x, y) = memory.train_set[i], files.train_set[i], full.train_set[index]
        assert torch.equal(xm, x) and torch.equal(xf, x) and ym == yf == y


def test_in_memory_cache_is_the_full_set_shared_with_full_runs(
    labelled_folder: Path, cache_home: Path
) -> None:
    folder(labelled_folder, in_memory=True).setup("fit")
    cached = sorted(cache_home.glob("*"))
    assert len(cached) == 1
    subset = folder(labelled_folder, in_memory=True, max_images=7)
    subset.setup("fit")
    assert sorted(cache_home.glob("*")) == cached  # read, not a second file
    assert len(torch.load(cached[0], weights_only=True)["images"]) == 15
    assert subset.num_images() == 15  # what the in-memory decision weighs: the full decode


@pytest.mark.parametrize("in_memory", [True, False])
def test_on_device_gathers_the_same_subset(labelled_folder: Path, in_memory: bool) -> None:
    if in_memory:
        device, host = (
            folder(labelled_folder, in_memory=True, max_images=7, on_device=v) for v in (True, False)
        )
    else:  # generated images are held as tensors: on_device=true works for them without in_memory
        device, host = (
            FakeDataModule(num_samples=40, num_classes=3, batch_size=2, max_images=7, on_device=v)
            for v in (True, False)
        )
    assert_same_stream(stream(device), stream(host))
    assert device.device_images is not None and device.device_images.n == 7 and host.device_images is None


# --- the reference images stay the full training set ----------------------------------------------------------------


@pytest.mark.parametrize("in_memory", [True, False])
def test_reference_train_split_is_the_full_set(labelled_folder: Path, in_memory: bool) -> None:
    dm = folder(labelled_folder, in_memory=in_memory, max_images=7)
    dm.setup("fit")
    reference = dm.reference_dataset("train")
    full = folder(labelled_folder, in_memory=False).reference_dataset("train")
    assert len(dm.train_set) == 7 and len(reference) == len(full) == 15
    for i in range(15):
        (xa, ya), (xb, yb) = reference[i], full[i]
        assert xa.dtype == torch.uint8 and torch.equal(xa, xb) and ya == yb


def test_fake_reference_train_split_is_the_full_set() -> None:
    dm = FakeDataModule(num_samples=40, num_classes=3, batch_size=2, max_images=7)
    dm.setup("fit")
    assert len(dm.train_set) == 7 and len(dm.reference_dataset("train")) == 40


# --- errors ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -3, True, 2.5, "100"])
def test_max_images_must_be_a_positive_integer_or_null(value: object) -> None:
    with pytest.raises(ConfigError) as excinfo:
        FakeDataModule(num_samples=40, max_images=value)
    assert str(excinfo.value) == (
        f"dataset.max_images={value!r} must be a positive integer or null (all images); "
        "set e.g. dataset.max_images=2000"
    )


def test_more_than_the_dataset_has(labelled_folder: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        FakeDataModule(num_samples=40, batch_size=2, max_images=41).setup("fit")
    assert str(excinfo.value) == (
        "dataset.max_images=41 but FakeDataModule has only 40 training images; lower it or set null"
    )
    with pytest.raises(ConfigError) as excinfo:
        folder(labelled_folder, in_memory=True, max_images=16).setup("fit")
    assert str(excinfo.value) == (
        "dataset.max_images=16 but FolderDataModule has only 15 training images; lower it or set null"
    )


def test_fewer_than_the_classes() -> None:
    with pytest.raises(ConfigError) as excinfo:
        FakeDataModule(num_samples=40, num_classes=3, batch_size=2, max_images=2).setup("fit")
    assert str(excinfo.value) == (
        "dataset.max_images=2 is fewer than the 3 classes of FakeDataModule: the subset takes the same number of "
        "images from each class; set dataset.max_images to at least 3, or null"
    )
    dm = FakeDataModule(num_samples=40, batch_size=2, max_images=2)  # unlabelled: any count up to the size
    dm.setup("fit")
    assert len(dm.train_set) == 2


def test_a_class_too_small_for_its_share(labelled_folder: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:  # 5 per class, but class c has 4 images
        folder(labelled_folder, in_memory=False, max_images=15).setup("fit")
    assert str(excinfo.value) == (
        "dataset.max_images=15 takes 5 images of class 'c', which has only 4; lower it or set null"
    )


def test_batch_larger_than_the_subset_names_max_images() -> None:
    with pytest.raises(DataError) as excinfo:
        FakeDataModule(num_samples=40, batch_size=8, max_images=4).setup("fit")
    assert str(excinfo.value) == (
        "dataset.batch_size=8 is larger than the 4 images in FakeDataModule (dataset.max_images=4); "
        "lower dataset.batch_size"
    )


# --- a training run ------------------------------------------------------------------------------------------------------


def test_tiny_training_run_on_a_subset(tiny_config) -> None:
    from gan_lab.train import train

    module = train(tiny_config("dataset.max_images=16", "steps=2"))
    dm = module.trainer.datamodule
    assert module.g_steps == 2
    assert len(dm.train_set) == 16 and dm.subset is not None and len(dm.subset) == 16
    assert torch.bincount(dm.train_set.labels).tolist() == [8, 8]  # TINY_RUN: 32 images of 2 classes
