"""dataset.in_memory: the decoded uint8 training set gives bit-identical batches, items, references and training."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from conftest import TINY_RUN
from PIL import Image
from torchvision.datasets import CIFAR10
from torchvision.transforms import Normalize, ToTensor

from gan_lab import data
from gan_lab.data import (
    CIFAR10DataModule,
    FakeDataModule,
    FolderDataModule,
    ImageFileDataset,
    InMemoryImages,
    LSUNChurchDataModule,
    uint8_to_unit_range,
)
from gan_lab.errors import ConfigError, DataError
from gan_lab.utils.config import compose_config


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded-image caches go to tmp_path, and even these tiny sets are cached so the cache is exercised."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data.base, "MIN_CACHED_IMAGES", 0)
    return tmp_path / "cache" / "gan_lab" / "datasets"


def stream(dm, positions: tuple[int, ...] = (0, 1, 3, 7)) -> list[list[torch.Tensor]]:
    """Batches the model sees, starting at several positions of the stream (resume points, later passes)."""
    out = []
    for position in positions:
        dm.trained_batches = lambda position=position: position
        for batch in dm.train_dataloader():
            out.append(dm.on_after_batch_transfer(batch, 0))
    return out


def assert_same_stream(memory, files, positions: tuple[int, ...] = (0, 1, 3, 7)) -> None:
    a, b = stream(memory, positions), stream(files, positions)
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.dtype == xb.dtype == torch.float32
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def cached_files(cache_home: Path) -> list[Path]:
    return sorted(cache_home.glob("*")) if cache_home.is_dir() else []


# --- folders: the same batches, items and reference images as the file pipeline ----------------------------


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize(("resolution", "crop", "workers"), [(32, None, 0), (16, None, 1), (24, 32, 0)])
def test_folder_in_memory_equals_files(tiny_image_folder, hflip, resolution, crop, workers) -> None:
    kwargs = dict(resolution=resolution, crop=crop, batch_size=4, hflip=hflip)
    memory = FolderDataModule(str(tiny_image_folder), num_workers=workers, in_memory=True, **kwargs)
    files = FolderDataModule(str(tiny_image_folder), num_workers=0, in_memory=False, **kwargs)
    memory.setup("fit")
    files.setup("fit")
    assert isinstance(memory.train_set, InMemoryImages) and isinstance(files.train_set, ImageFileDataset)
    loader = memory.train_dataloader()
    assert loader.num_workers == 0
    raw_images, _ = next(iter(loader))
    assert raw_images.dtype == torch.uint8 and raw_images.shape == (4, 3, resolution, resolution)
    assert_same_stream(memory, files)
    for i in range(len(files.train_set)):  # items, as e.g. the diversity callback reads them
        (xa, ya), (xb, yb) = memory.train_set[i], files.train_set[i]
        assert torch.equal(xa, xb) and ya == yb
    # Metrics' reference images reuse the decoded tensor: identical to decoding the files for them.
    ref_memory, ref_files = memory.reference_dataset("train"), files.reference_dataset("train")
    assert not isinstance(ref_files, type(ref_memory))
    assert len(ref_memory) == len(ref_files) == 12
    for i in range(12):
        (xa, ya), (xb, yb) = ref_memory[i], ref_files[i]
        assert xa.dtype == xb.dtype == torch.uint8 and torch.equal(xa, xb) and ya == yb


def test_uint8_to_unit_range_equals_the_transforms_for_every_value() -> None:
    ramp = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    expected = Normalize([0.5] * 3, [0.5] * 3)(ToTensor()(Image.fromarray(ramp)))
    values = torch.from_numpy(ramp).permute(2, 0, 1)
    assert uint8_to_unit_range(values).dtype == torch.float32
    assert torch.equal(uint8_to_unit_range(values), expected)  # on the CPU: the transforms' own ops
    # Elsewhere: their values, looked up.
    assert torch.equal(data.transforms._look_up_unit_range(values), expected)


def test_hook_passes_other_batches_through() -> None:
    dm = FakeDataModule()
    floats = [torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long)]
    assert dm.on_after_batch_transfer(floats, 0) is floats
    other = {"x": torch.zeros(2, dtype=torch.uint8)}
    assert dm.on_after_batch_transfer(other, 0) is other


# --- unreadable files: the same substitutes, the same errors --------------------------------------------------


@pytest.fixture
def folder_with_bad_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "bad"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
    not_image = root / "2.jpg"
    not_image.write_text("not an image")  # the header check finds it
    truncated = root / "4.jpg"  # the last file: its substitute wraps around to 0.jpg
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    return root, not_image, truncated


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_corrupt_substitutes_the_same_images(folder_with_bad_files, workers, caplog) -> None:
    root, not_image, truncated = folder_with_bad_files
    kwargs = dict(resolution=32, batch_size=2, skip_corrupt=True, hflip=True)
    memory = FolderDataModule(str(root), num_workers=workers, in_memory=True, **kwargs)
    with caplog.at_level(logging.WARNING, logger="gan_lab.data"):
        memory.setup("fit")
    assert len(caplog.messages) == 2  # the header check's listing, then the truncated file, once
    assert str(not_image) in caplog.messages[0] and str(truncated) in caplog.messages[1]
    files = FolderDataModule(str(root), num_workers=0, in_memory=False, **kwargs)
    files.setup("fit")
    for i in range(5):
        (xa, ya), (xb, yb) = memory.train_set[i], files.train_set[i]
        assert torch.equal(xa, xb) and ya == yb
    assert torch.equal(memory.train_set[4][0], memory.train_set[0][0])  # wrapped around
    assert torch.equal(memory.train_set[2][0], memory.train_set[3][0])
    assert_same_stream(memory, files)


def test_unreadable_file_fails_as_the_file_loader_does(folder_with_bad_files) -> None:
    root, not_image, truncated = folder_with_bad_files
    not_image.unlink()
    dm = FolderDataModule(str(root), resolution=32, batch_size=2, num_workers=1, in_memory=True)
    with pytest.raises(DataError) as raised:
        dm.setup("fit")
    files = FolderDataModule(str(root), resolution=32, batch_size=2, num_workers=0, in_memory=False)
    files.setup("fit")
    with pytest.raises(DataError) as raised_by_file:
        files.train_set[3]
    assert str(raised.value) == str(raised_by_file.value)
    assert str(raised.value).startswith(f"cannot read image {truncated} (") and "\n" not in str(raised.value)


# --- CIFAR-10: torchvision's array at 32², the PIL path at other sizes ----------------------------------------


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A CIFAR-10 folder in torchvision's format with 5 x 8 random train images (checksums not checked)."""
    folder = tmp_path / "cifar" / CIFAR10.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, _ in [*CIFAR10.train_list, *CIFAR10.test_list]:
        batch = {
            "data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, 8).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / CIFAR10.meta["filename"]).write_bytes(
        pickle.dumps({"label_names": CIFAR10DataModule.CLASS_NAMES})
    )
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    return tmp_path / "cifar"


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize("resolution", [32, 48])
def test_cifar_in_memory_equals_files(cifar_root, cache_home, hflip, resolution) -> None:
    kwargs = dict(resolution=resolution, batch_size=8, hflip=hflip, download=False, num_workers=0)
    memory = CIFAR10DataModule(str(cifar_root), in_memory=True, **kwargs)
    files = CIFAR10DataModule(str(cifar_root), in_memory=False, **kwargs)
    memory.setup("fit")
    assert isinstance(memory.train_set, InMemoryImages) and len(memory.train_set) == 40
    assert_same_stream(memory, files, positions=(0, 2, 5, 11))
    ref_memory, ref_files = memory.reference_dataset("train"), files.reference_dataset("train")
    for i in range(40):
        assert torch.equal(ref_memory[i][0], ref_files[i][0]) and ref_memory[i][1] == ref_files[i][1]
    # 32² is torchvision's array as it is: nothing to decode, nothing cached.
    assert len(cached_files(cache_home)) == (resolution != 32)


def test_fake_data_has_no_in_memory_mode() -> None:
    dm = FakeDataModule(num_samples=8, batch_size=4)
    dm.setup("fit")
    assert dm.in_memory is None and not isinstance(dm.train_set, InMemoryImages)
    assert next(iter(dm.train_dataloader()))[0].dtype == torch.float32


# --- the cache ----------------------------------------------------------------------------------------------------


def test_cache_is_written_once_and_reused(tiny_image_folder, cache_home, monkeypatch, caplog) -> None:
    first = FolderDataModule(
        str(tiny_image_folder), resolution=32, batch_size=4, num_workers=0, in_memory=True
    )
    with caplog.at_level(logging.INFO, logger="gan_lab.data"):
        first.setup("fit")
    assert any("decoded 12 images" in m and "cached in" in m for m in caplog.messages)
    [cache] = cached_files(cache_home)  # one file, no temp file left behind
    assert cache.suffix == ".pt" and torch.load(cache, weights_only=True)["images"].shape == (12, 3, 32, 32)
    written = cache.stat().st_mtime_ns

    def no_decoding(self):
        raise AssertionError("decoded although the cache holds the images")

    monkeypatch.setattr(FolderDataModule, "decode_train_images", no_decoding)
    second = FolderDataModule(
        str(tiny_image_folder), resolution=32, batch_size=4, num_workers=0, in_memory=True
    )
    second.setup("fit")
    assert torch.equal(second.train_set.images, first.train_set.images)
    assert torch.equal(second.train_set.labels, first.train_set.labels)
    assert cached_files(cache_home) == [cache] and cache.stat().st_mtime_ns == written
    # Other settings or changed files are other images: they are decoded, not read from this cache.
    for kwargs in ({"resolution": 16}, {"crop": 30}):
        other = FolderDataModule(
            str(tiny_image_folder), **{"resolution": 32, **kwargs}, batch_size=4, in_memory=True
        )
        with pytest.raises(AssertionError, match="decoded although"):
            other.setup("fit")
    changed = tiny_image_folder / "cats" / "gray.png"
    Image.new("L", (40, 64), 7).save(changed)
    again = FolderDataModule(
        str(tiny_image_folder), resolution=32, batch_size=4, num_workers=0, in_memory=True
    )
    with pytest.raises(AssertionError, match="decoded although"):
        again.setup("fit")


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "edit_pixel", "other_key"])
def test_damaged_cache_is_rebuilt(tiny_image_folder, cache_home, damage, caplog) -> None:
    def module():
        return FolderDataModule(
            str(tiny_image_folder), resolution=32, batch_size=4, num_workers=0, in_memory=True
        )

    good = module()
    good.setup("fit")
    [cache] = cached_files(cache_home)
    raw = cache.read_bytes()
    if damage == "truncate":
        cache.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip_byte":  # most of the file is pixels: its middle byte is one
        cache.write_bytes(
            raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0xFF]) + raw[len(raw) // 2 + 1 :]
        )
    else:
        payload = torch.load(cache, weights_only=True)
        if damage == "edit_pixel":
            payload["images"][3, 1, 2, 2] += 1
        else:
            payload["key"]["resolution"] = 64
        torch.save(payload, cache)
    rebuilt = module()
    with caplog.at_level(logging.WARNING, logger="gan_lab.data"):
        rebuilt.setup("fit")
    assert any(f"decoded-image cache {cache} is unusable" in m for m in caplog.messages), caplog.messages
    assert torch.equal(rebuilt.train_set.images, good.train_set.images)
    assert cache.read_bytes() != b"" and torch.load(cache, weights_only=True)["crc32"] is not None
    assert cached_files(cache_home) == [cache]
    again = module()  # the rewritten cache is good again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gan_lab.data"):
        again.setup("fit")
    assert not caplog.messages and torch.equal(again.train_set.images, good.train_set.images)


def test_small_sets_are_not_cached(tiny_image_folder, cache_home, monkeypatch) -> None:
    monkeypatch.setattr(data.base, "MIN_CACHED_IMAGES", 13)
    dm = FolderDataModule(str(tiny_image_folder), resolution=32, batch_size=4, num_workers=0, in_memory=True)
    dm.setup("fit")
    assert isinstance(dm.train_set, InMemoryImages) and not cached_files(cache_home)


# --- auto -----------------------------------------------------------------------------------------------------------


def test_auto_holds_small_sets_in_memory_and_streams_large_ones(
    tiny_image_folder, monkeypatch, caplog
) -> None:
    def setup(**kwargs):
        dm = FolderDataModule(str(tiny_image_folder), resolution=32, batch_size=4, num_workers=0, **kwargs)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gan_lab.data"):
            dm.setup("fit")
        return dm, [m for m in caplog.messages if "dataset.in_memory=" in m]

    decoded = 12 * 3 * 32 * 32
    dm, [line] = setup()  # auto is the default
    assert isinstance(dm.train_set, InMemoryImages)
    assert (
        "into memory" in line
        and "12 images of 3x32x32 uint8" in line
        and "<= 4 GiB, dataset.in_memory=auto" in line
    )
    monkeypatch.setattr(data.base, "IN_MEMORY_MAX_BYTES", decoded - 1)
    dm, [line] = setup(in_memory="auto")
    assert isinstance(dm.train_set, ImageFileDataset)
    assert "from their files" in line and "dataset.in_memory=auto" in line
    dm, [line] = setup(in_memory=True)  # true holds it in memory whatever its size
    assert isinstance(dm.train_set, InMemoryImages) and "dataset.in_memory=true" in line
    monkeypatch.setattr(data.base, "IN_MEMORY_MAX_BYTES", decoded)
    dm, _ = setup(in_memory=False)
    assert isinstance(dm.train_set, ImageFileDataset)
    assert isinstance(setup(in_memory="auto")[0].train_set, InMemoryImages)


def test_auto_streams_lsun_and_bad_values_fail(tmp_path) -> None:
    assert LSUNChurchDataModule(str(tmp_path)).use_in_memory() is False
    assert CIFAR10DataModule(str(tmp_path), resolution=128).use_in_memory() is True  # 2.3 GiB
    assert CIFAR10DataModule(str(tmp_path), resolution=256).use_in_memory() is False  # 9.2 GiB
    with pytest.raises(ConfigError, match=r"^dataset.in_memory='yes' must be auto, true or false; set "):
        CIFAR10DataModule(str(tmp_path), in_memory="yes")


# --- training -----------------------------------------------------------------------------------------------------


def test_training_in_memory_gives_the_same_weights(
    tiny_image_folder, tmp_path, cache_home, monkeypatch
) -> None:
    """A real Trainer.fit calls the datamodule's on_after_batch_transfer; decoding, reading the cache and reading
    the files all give identical weights (nothing on the way draws from the global RNG)."""
    from gan_lab.train import train

    converted = []

    def counting(images):
        converted.append(tuple(images.shape))
        return uint8_to_unit_range(images)

    monkeypatch.setattr(data.base, "uint8_to_unit_range", counting)
    base = [o for o in TINY_RUN if not o.startswith("dataset")]
    folder = ["dataset=folder", f"dataset.root={tiny_image_folder}", "dataset.resolution=32"]
    folder += ["dataset.batch_size=4", "dataset.num_workers=0", "dataset.hflip=true", "steps=5"]
    weights = []
    for run, in_memory in enumerate((True, True, False)):  # decodes, reads the cache, reads the files
        converted.clear()
        cfg = compose_config(
            [*base, *folder, f"dataset.in_memory={in_memory}"], output_dir=tmp_path / f"r{run}"
        )
        module = train(cfg)
        assert isinstance(module.trainer.datamodule.train_set, InMemoryImages) == in_memory
        assert len(cached_files(cache_home)) == 1
        weights.append({k: v.clone() for k, v in module.state_dict().items()})
        # 5 training batches converted by the hook (the diversity callback also reads items of train_set)
        assert [shape for shape in converted if len(shape) == 4] == [(4, 3, 32, 32)] * 5 * in_memory
    for other in weights[1:]:
        assert other.keys() == weights[0].keys()
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])
