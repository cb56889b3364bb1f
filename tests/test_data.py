"""Tests for gan_lab.data: value ranges, shapes, labels, image modes, errors and the dataset configs."""

from __future__ import annotations

import importlib
import inspect
import io
import logging
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from gan_lab.data import (
    CIFAR10DataModule,
    FakeDataModule,
    FolderDataModule,
    LSUNChurchDataModule,
    StreamSampler,
    image_transform,
    to_rgb,
)
from gan_lab.errors import ConfigError, DataError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "dataset"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def first_batch(dm) -> tuple[torch.Tensor, torch.Tensor]:
    dm.setup("fit")
    return next(iter(batches(dm)))


def batches(dm):
    """The training batches as the model sees them: an in-memory loader's uint8 become floats in the hook."""
    for batch in dm.train_dataloader():
        yield dm.on_after_batch_transfer(batch, 0)


def save(arr: np.ndarray, path: Path, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


# --- fake data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [8, 32, 64])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_fake_batch_shape_range_labels(resolution: int, num_classes: int) -> None:
    dm = FakeDataModule(resolution=resolution, batch_size=16, num_samples=32, num_classes=num_classes)
    x, y = first_batch(dm)
    assert x.shape == (16, 3, resolution, resolution) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    assert dm.num_classes == num_classes
    assert y.dtype == torch.int64 and y.min() >= 0 and y.max() < max(num_classes, 1)


def test_fake_is_deterministic_and_seeded() -> None:
    a, la = FakeDataModule(num_samples=8, num_classes=2).generate()
    b, lb = FakeDataModule(num_samples=8, num_classes=2).generate()
    c, _ = FakeDataModule(num_samples=8, num_classes=2, seed=1).generate()
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.allclose(a, c)


def test_fake_colour_depends_on_class() -> None:
    images, labels = FakeDataModule(num_samples=200, num_classes=4).generate()
    # A nearest-class-mean classifier on the mean colour of each image must recover the label.
    colour = images.mean((2, 3))
    means = torch.stack([colour[labels == k].mean(0) for k in range(4)])
    accuracy = (torch.cdist(colour, means).argmin(1) == labels).float().mean()
    assert accuracy > 0.9


def test_bad_settings_raise_config_error() -> None:
    for kwargs in ({"resolution": 0}, {"resolution": "64"}, {"batch_size": 0}, {"num_workers": -1}):
        with pytest.raises(ConfigError) as excinfo:
            FakeDataModule(**kwargs)
        assert_one_line_error(excinfo, "dataset.")


def test_fake_batch_larger_than_dataset() -> None:
    with pytest.raises(DataError) as excinfo:
        FakeDataModule(num_samples=10, batch_size=64).setup("fit")
    assert_one_line_error(excinfo, "dataset.batch_size=64", "10 images", "lower dataset.batch_size")


def test_dataloader_settings() -> None:
    loader = FakeDataModule(batch_size=5, num_samples=12).train_dataloader()
    assert loader.drop_last and len(loader) == 2
    assert loader.pin_memory == torch.cuda.is_available()


# --- folder data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_folder_batch_shape_and_range(tiny_image_folder: Path, resolution: int) -> None:
    dm = FolderDataModule(str(tiny_image_folder), resolution=resolution, batch_size=12, num_workers=0)
    x, y = first_batch(dm)
    assert x.shape == (12, 3, resolution, resolution) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert sorted(y.tolist()) == [0] * 6 + [1] * 6


def test_folder_loads_with_worker_processes(tiny_image_folder: Path) -> None:
    dm = FolderDataModule(str(tiny_image_folder), resolution=32, batch_size=4, num_workers=1, in_memory=False)
    loader = dm.train_dataloader()
    assert loader.persistent_workers
    assert next(iter(loader))[0].shape == (4, 3, 32, 32)


def test_folder_labels_from_subfolders(tiny_image_folder: Path) -> None:
    dm = FolderDataModule(str(tiny_image_folder), batch_size=1, num_workers=0)
    assert dm.class_names == ["cats", "dogs"] and dm.num_classes == 2
    assert len(dm.files) == 12 and dm.files == sorted(dm.files)
    for path, label in zip(dm.files, dm.labels, strict=True):
        assert dm.class_names[label] == path.parent.name


def test_nested_subfolders_belong_to_their_top_level_class(tmp_path: Path) -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    save(img, tmp_path / "b" / "deep" / "er" / "1.PNG")
    save(img, tmp_path / "a" / "2.jpeg")
    save(img, tmp_path / "a" / ".hidden.jpg")  # e.g. macOS ._ files: ignored
    dm = FolderDataModule(str(tmp_path), batch_size=1, num_workers=0)
    assert dm.class_names == ["a", "b"] and dm.labels == [0, 1] and len(dm.files) == 2


@pytest.mark.parametrize("layout", [["1.png", "2.png"], ["1.png", "sub/2.png"]])
def test_images_in_root_mean_unconditional(tmp_path: Path, layout: list[str]) -> None:
    for name in layout:
        save(np.zeros((32, 32, 3), np.uint8), tmp_path / name)
    dm = FolderDataModule(str(tmp_path), batch_size=2, num_workers=0)
    assert dm.num_classes == 0 and dm.class_names == [] and dm.labels == [0, 0]
    assert first_batch(dm)[1].tolist() == [0, 0]


def test_every_mode_becomes_three_channels(tiny_image_folder: Path) -> None:
    modes = {Image.open(p).mode for p in tiny_image_folder.rglob("*.*")}
    assert {"RGB", "L", "RGBA", "P", "I;16"} <= modes or {"RGB", "L", "RGBA", "P", "I"} <= modes
    dm = FolderDataModule(str(tiny_image_folder), resolution=32, batch_size=1, num_workers=0)
    dm.setup("fit")
    for i, path in enumerate(dm.files):
        x, _ = dm.train_set[i]
        assert x.shape == (3, 32, 32), path
        if path.stem in ("gray", "deep16"):
            assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2]), path


@pytest.mark.parametrize(("value16", "expected"), [(65535, 1.0), (0, -1.0), (128 * 257, 128 / 255 * 2 - 1)])
def test_16bit_png_is_scaled_not_clipped(tmp_path: Path, value16: int, expected: float) -> None:
    save(np.full((32, 32), value16, np.uint16), tmp_path / "x.png")
    dm = FolderDataModule(str(tmp_path), resolution=32, batch_size=1, num_workers=0)
    x, _ = first_batch(dm)
    assert torch.allclose(x, torch.full_like(x, expected), atol=1e-6)


def test_to_rgb_handles_32bit_int_and_palette_with_transparency() -> None:
    img = Image.fromarray(np.full((4, 4), 65535, np.uint16)).convert("I")
    assert img.mode == "I" and np.asarray(to_rgb(img)).min() == 255
    pal = Image.new("P", (4, 4))
    pal.info["transparency"] = 0
    assert to_rgb(pal).mode == "RGB"


def test_upsampling_and_center_crop() -> None:
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, 32:64] = 255  # only the middle third survives the center crop
    x = image_transform(64)(Image.fromarray(wide))
    assert x.shape == (3, 64, 64) and x[:, :, 2:-2].min() > 0.99  # edges blend with the black neighbours
    small = image_transform(64)(Image.new("RGB", (32, 32), (255, 0, 0)))
    assert small.shape == (3, 64, 64) and torch.allclose(small[:, 10, 10], torch.tensor([1.0, -1.0, -1.0]))


def test_hflip_flips_some_draws_only_when_enabled(tmp_path: Path) -> None:
    arr = np.zeros((32, 32), np.uint8)
    arr[:, :8] = 255  # bright left edge: asymmetric
    save(arr, tmp_path / "a.png")
    for hflip in (False, True):
        dm = FolderDataModule(str(tmp_path), resolution=32, batch_size=1, num_workers=0, hflip=hflip)
        draws = []
        for position in range(40):  # pass p of the one-image dataset flips it or not, by (seed, p)
            dm.trained_batches = lambda position=position: position  # type: ignore[method-assign]
            draws += [image for image, _ in batches(dm)]
        left = [bool(d[0, :, :, 0].mean() > 0) for d in draws]
        for d, is_left in zip(draws, left, strict=True):
            expected = torch.from_numpy(arr if is_left else arr[:, ::-1].copy()).float() / 127.5 - 1
            assert torch.allclose(d[0, 0], expected)
        assert all(left) if not hflip else 5 < sum(left) < 35


def test_fake_hflip() -> None:
    dm = FakeDataModule(num_samples=4, batch_size=4, hflip=True)
    originals = dm.generate()[0]
    images = torch.cat([batch for p in range(10) for batch, _ in _loader_at(dm, p)])
    flipped = [not any(torch.equal(img, o) for o in originals) for img in images]
    assert all(
        any(torch.equal(img, o.flip(-1)) for o in originals)
        for img, f in zip(images, flipped, strict=True)
        if f
    )
    assert 0 < sum(flipped) < len(images)


def _loader_at(dm: FakeDataModule, trained_batches: int) -> DataLoader:
    dm.trained_batches = lambda: trained_batches  # type: ignore[method-assign]
    return dm.train_dataloader()


def test_stream_resumes_mid_pass_and_ignores_global_rng() -> None:
    """Batches from position k are the tail of the uninterrupted stream; the global RNG plays no part."""
    dm = FakeDataModule(num_samples=40, batch_size=8, hflip=True, order_seed=3)  # 5 batches per pass
    torch.manual_seed(0)
    stream = [b for p in (0, 5) for b, _ in _loader_at(dm, p)]  # two passes, as an epoch loop reads them
    assert len(stream) == 10
    torch.manual_seed(1)
    for k in (0, 2, 5, 7):
        resumed = [b for b, _ in _loader_at(dm, k)]
        assert all(torch.equal(a, b) for a, b in zip(resumed, stream[k:], strict=False))
        assert len(resumed) == 5 - k % 5  # the rest of the current pass
    assert not torch.equal(stream[0], stream[5])  # each pass has its own order
    other = FakeDataModule(num_samples=40, batch_size=8, hflip=True, order_seed=4)
    assert not torch.equal(next(iter(_loader_at(other, 0)))[0], stream[0])


def test_stream_sampler_shards_ranks() -> None:
    dataset = list(range(20))
    shards = [StreamSampler(dataset, 2, lambda: 0, seed=1, num_replicas=3, rank=r) for r in range(3)]
    indices = [list(s) for s in shards]
    assert all(len(i) == 6 for i in indices) and len(set(sum(indices, []))) == 18  # 20 // 3 * 3, disjoint
    assert shards[0].batches_per_pass == 3


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        FolderDataModule(str(tmp_path / "nope"))
    assert_one_line_error(excinfo, str(tmp_path / "nope"), "dataset.root=")


@pytest.mark.parametrize("files", [[], ["notes.txt", "data.npy", "sub/readme.md"]])
def test_no_images(tmp_path: Path, files: list[str]) -> None:
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("not an image")
    with pytest.raises(DataError) as excinfo:
        FolderDataModule(str(tmp_path))
    assert_one_line_error(excinfo, str(tmp_path), ".jpg", ".png", "dataset.root")


def test_folder_batch_larger_than_dataset(tiny_image_folder: Path) -> None:
    with pytest.raises(DataError) as excinfo:
        FolderDataModule(str(tiny_image_folder), batch_size=64).setup("fit")
    assert_one_line_error(excinfo, "dataset.batch_size=64", "12 images", str(tiny_image_folder))


@pytest.fixture
def folder_with_bad_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    rng = np.random.default_rng(0)
    for i in (0, 1, 3):
        save(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), tmp_path / f"{i}.jpg")
    truncated = tmp_path / "1.jpg"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    fake = tmp_path / "2.png"
    fake.write_text("this is not a png")
    return tmp_path, [truncated, fake]


def test_corrupt_image_raises_naming_file(folder_with_bad_files: tuple[Path, list[Path]]) -> None:
    root, bad = folder_with_bad_files
    dm = FolderDataModule(str(root), resolution=32, batch_size=1, num_workers=0)
    with pytest.raises(DataError) as excinfo:
        dm.setup("fit")  # the header check lists what is no image at all (more in tests/test_bad_input.py)
    assert_one_line_error(excinfo, str(bad[1]), "dataset.skip_corrupt=true")
    dataset = dm.build_dataset(image_transform(32))  # a truncated file passes the header check ...
    dataset[0]  # the intact file loads
    for index in (1, 2):
        with pytest.raises(DataError) as excinfo:
            dataset[index]  # ... and fails when decoded
        assert_one_line_error(excinfo, str(bad[index - 1]), "dataset.skip_corrupt=true")


def test_skip_corrupt_substitutes_and_warns_once(
    folder_with_bad_files: tuple[Path, list[Path]], caplog: pytest.LogCaptureFixture
) -> None:
    root, bad = folder_with_bad_files
    dm = FolderDataModule(str(root), resolution=32, batch_size=4, num_workers=0, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="gan_lab.data"):
        for _ in range(3):
            x, _ = next(iter(dm.train_dataloader()))
            assert x.shape == (4, 3, 32, 32)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and all(any(str(p) in m for m in warned) for p in bad)
    # Substitutes are the next readable image: index 1 -> 3, index 2 -> 3.
    assert torch.equal(dm.train_set[1][0], dm.train_set[3][0])


def test_skip_corrupt_with_nothing_readable(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"junk")
    dm = FolderDataModule(str(tmp_path), batch_size=1, num_workers=0, skip_corrupt=True)
    with pytest.raises(DataError, match="none of the 1 image files"):
        dm.setup("fit")


# --- CIFAR-10 and LSUN ----------------------------------------------------------------------------


def test_cifar_download_failure_explains_local_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    dm = CIFAR10DataModule(str(tmp_path / "cifar10"))
    assert dm.num_classes == 10 and dm.class_names == CIFAR_CLASSES
    with pytest.raises(DataError) as excinfo:
        dm.prepare_data()
    assert_one_line_error(
        excinfo, "CIFAR-10", str(tmp_path / "cifar10"), "URLError", "dataset=folder", "dataset.root="
    )


def test_cifar_missing_without_download(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(str(tmp_path), download=False)
    dm.prepare_data()  # nothing to do
    with pytest.raises(DataError) as excinfo:
        dm.setup("fit")
    assert_one_line_error(excinfo, str(tmp_path), "dataset=folder")


def test_lsun_missing_folder(tmp_path: Path) -> None:
    dm = LSUNChurchDataModule(str(tmp_path))
    assert dm.num_classes == 0
    with pytest.raises(DataError) as excinfo:
        dm.setup("fit")
    assert_one_line_error(excinfo, "church_outdoor_train_lmdb", "download.py -c church_outdoor", "fyu/lsun")


def test_lsun_without_lmdb_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` raise ImportError
    with pytest.raises(DataError) as excinfo:
        LSUNChurchDataModule(str(tmp_path)).setup("fit")
    assert_one_line_error(excinfo, "pip install lmdb")


def test_lsun_reads_lmdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lmdb = pytest.importorskip("lmdb")
    monkeypatch.chdir(tmp_path)  # torchvision's LSUN writes a key cache file into the working directory
    env = lmdb.open(str(tmp_path / "church_outdoor_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(3):
            buf = io.BytesIO()
            Image.new("RGB", (96, 80), (i * 100, 50, 200)).save(buf, format="WEBP")
            txn.put(f"{i:04d}".encode(), buf.getvalue())
    env.close()
    x, y = first_batch(LSUNChurchDataModule(str(tmp_path), resolution=64, batch_size=3, num_workers=0))
    assert x.shape == (3, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert y.tolist() == [0, 0, 0]


@pytest.mark.shared
def test_cifar_jpeg_copy_as_folder(cifar_jpeg_root: Path) -> None:
    dm = FolderDataModule(
        str(cifar_jpeg_root / "train"), resolution=32, batch_size=64, num_workers=0, in_memory=False
    )
    assert len(dm.files) == 50_000
    assert dm.num_classes == 10 and dm.class_names == CIFAR_CLASSES
    assert np.bincount(dm.labels).tolist() == [5000] * 10
    dm.setup("fit")
    x, y = dm.train_set[49_999]
    assert x.shape == (3, 32, 32) and y == 9


# --- configs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_dataset_config_matches_constructor(path: Path, tmp_path: Path, tiny_image_folder: Path) -> None:
    cfg = OmegaConf.merge(
        {"paths": {"data_dir": str(tmp_path)}, "seed": 7}, {"dataset": OmegaConf.load(path)}
    )
    module_name, class_name = cfg.dataset._target_.rsplit(".", 1)
    target = getattr(importlib.import_module(module_name), class_name)
    params = set(inspect.signature(target).parameters)
    assert set(cfg.dataset) - {"_target_"} == params, f"{path.name} keys differ from {class_name} arguments"
    if path.stem == "folder":
        assert OmegaConf.is_missing(cfg.dataset, "root")
        cfg.dataset.root = str(tiny_image_folder)
    dm = instantiate(cfg.dataset)  # constructors do not download: prepare_data does
    assert type(dm) is target and dm.batch_size >= 1 and dm.resolution >= 1 and dm.order_seed == 7
    if path.stem in ("cifar10", "lsun_church"):
        assert dm.root.is_relative_to(tmp_path)


def test_all_dataset_configs_present() -> None:
    assert {p.stem for p in CONF_DIR.glob("*.yaml")} >= {"cifar10", "lsun_church", "folder", "fake"}


def test_folder_crop_takes_the_centre_before_resizing(tmp_path):
    arr = np.zeros((120, 160, 3), dtype=np.uint8)
    arr[30:90, 50:110] = 255  # a white 60x60 centre on black
    (tmp_path / "img").mkdir()
    Image.fromarray(arr).save(tmp_path / "img" / "a.png")
    cropped = FolderDataModule(
        root=str(tmp_path / "img"), resolution=32, batch_size=1, num_workers=0, crop=60
    )
    image = cropped.reference_dataset("train")[0][0]
    assert image.shape == (3, 32, 32) and image.min() == 255
    whole = FolderDataModule(root=str(tmp_path / "img"), resolution=32, batch_size=1, num_workers=0)
    assert whole.reference_dataset("train")[0][0].min() == 0
