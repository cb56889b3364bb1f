"""dataset.on_device: the in-memory images on the training device give the in-memory loader's batches bit for bit."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_RUN

from gan_lab import data
from gan_lab.data import FakeDataModule, FolderDataModule, InMemoryImages
from gan_lab.data.device import DeviceImages, IndexBatches, choose_device_images
from gan_lab.errors import ConfigError
from gan_lab.utils.config import compose_config

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded-image caches go to tmp_path (these tiny sets are below MIN_CACHED_IMAGES: none is written)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "gan_lab" / "datasets"


def attach(dm, position: int, world: int = 1, rank: int = 0, device: str = "cpu") -> None:
    """A stand-in for the Trainer: DDP world and rank, the root device and the batches trained so far."""
    dm.trainer = SimpleNamespace(
        world_size=world,
        global_rank=rank,
        strategy=SimpleNamespace(root_device=torch.device(device)),
        lightning_module=SimpleNamespace(d_steps=position),
    )


def to(batch: object, device: str) -> object:
    """Lightning's batch_to_device."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    return [t.to(device) for t in batch]  # type: ignore[attr-defined]


def stream(dm, positions, world: int = 1, rank: int = 0, device: str = "cpu") -> list[list[torch.Tensor]]:
    """The batches the model sees, from each resume position to the end of its pass (as Lightning gets them)."""
    out = []
    for position in positions:
        attach(dm, position, world, rank, device)
        for batch in dm.train_dataloader():
            out.append(dm.on_after_batch_transfer(to(batch, device), 0))
    return out


def assert_same_stream(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.dtype == xb.dtype == torch.float32 and ya.dtype == yb.dtype == torch.long
        assert xa.device == xb.device and ya.device == yb.device
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def folder(root: Path, **kwargs) -> FolderDataModule:
    settings = {"resolution": 32, "batch_size": 2, "num_workers": 0, "in_memory": True, **kwargs}
    return FolderDataModule(str(root), **settings)


def fake(**kwargs) -> FakeDataModule:
    return FakeDataModule(num_samples=12, batch_size=2, num_classes=3, resolution=16, **kwargs)


# --- the batches: the in-memory loader's, bit for bit ---------------------------------------------------------


@pytest.mark.parametrize("hflip", [False, True])
@pytest.mark.parametrize(("world", "rank"), [(1, 0), (2, 0), (2, 1)])
@pytest.mark.parametrize("make", ["folder", "fake"])
def test_on_device_gives_the_in_memory_batches(tiny_image_folder, make, world, rank, hflip) -> None:
    """12 images in batches of 2: 6 batches a pass (3 a pass per rank of 2); from the start, mid-pass resumes
    (d_steps > 0) and later passes, whose order and flips are drawn anew."""
    build = (lambda **kw: folder(tiny_image_folder, **kw)) if make == "folder" else fake
    memory, held = build(hflip=hflip, on_device=False), build(hflip=hflip, on_device=True)
    positions = (0, 1, 4, 6, 9, 13) if world == 1 else (0, 1, 3, 5, 7)
    expected = stream(memory, positions, world, rank)
    assert_same_stream(stream(held, positions, world, rank), expected)
    assert memory.device_images is None and isinstance(held.device_images, DeviceImages)
    # On the CPU the images stay where they are: no copy.
    assert held.device_images.images.data_ptr() == held.train_set.images.data_ptr()
    loader = held.train_dataloader()
    assert isinstance(loader.dataset, IndexBatches) and loader.num_workers == 0 and not loader.pin_memory
    indices = next(iter(loader))
    assert indices.dtype == torch.long and indices.shape == (2,)  # only the sampler's indices
    if make == "folder":
        assert isinstance(memory.train_set, InMemoryImages)
        assert next(iter(memory.train_dataloader()))[0].dtype == torch.uint8  # the path it replaces


def test_flips_are_whole_mirrored_images(tiny_image_folder) -> None:
    dm = folder(tiny_image_folder, hflip=True, on_device=True)
    attach(dm, 0)
    dm.train_dataloader()
    n = len(dm.train_set)
    index = torch.tensor([0, n, 5, n + 5, 2 * n - 1])
    images, labels = dm.device_images.batch(index)
    assert torch.equal(images[1], images[0].flip(-1)) and torch.equal(images[3], images[2].flip(-1))
    assert torch.equal(images[0], dm.train_set.images[0])
    assert torch.equal(images[4], dm.train_set.images[-1].flip(-1))
    assert labels.tolist() == dm.train_set.labels[[0, 0, 5, 5, n - 1]].tolist()


# --- the setting --------------------------------------------------------------------------------------------


def test_auto_stays_off_on_the_cpu(tiny_image_folder, caplog) -> None:
    for dm in (folder(tiny_image_folder), fake()):  # auto is the default
        assert dm.on_device == "auto"
        with caplog.at_level(logging.INFO, logger="gan_lab.data"):
            attach(dm, 0)
            batch = next(iter(dm.train_dataloader()))
        assert dm.device_images is None and isinstance(batch, list)
    assert not [m for m in caplog.messages if "on_device" in m]


def test_true_logs_one_line(tiny_image_folder, caplog) -> None:
    dm = folder(tiny_image_folder, on_device=True)
    with caplog.at_level(logging.INFO, logger="gan_lab.data"):
        attach(dm, 0)
        dm.train_dataloader()
        dm.train_dataloader()  # resolved once per device
    [line] = [m for m in caplog.messages if "on_device" in m]
    assert line == (
        "training images: held on cpu, each batch gathered there from the loader's indices "
        "(12 uint8 images, 0.00 GiB, dataset.on_device=true)"
    )


def test_true_without_the_images_in_memory_is_one_line_error(tiny_image_folder, monkeypatch) -> None:
    dm = folder(tiny_image_folder, on_device=True, in_memory=False)
    with pytest.raises(ConfigError) as raised:
        dm.train_dataloader()
    assert str(raised.value) == (
        "dataset.on_device=true needs the training images in memory, but they are decoded from their files "
        "every step (dataset.in_memory=false); set dataset.in_memory=true"
    )
    monkeypatch.setattr(data.base, "IN_MEMORY_MAX_BYTES", 1)  # auto streams the files
    dm = FolderDataModule(str(tiny_image_folder), resolution=32, batch_size=2, num_workers=0, on_device=True)
    with pytest.raises(ConfigError, match=r"\(dataset.in_memory=auto\); set dataset.in_memory=true$"):
        dm.train_dataloader()
    with pytest.raises(ConfigError) as raised:
        FakeDataModule(on_device="yes")
    assert (
        str(raised.value) == "dataset.on_device='yes' must be auto, true or false; set dataset.on_device=auto"
    )
    with pytest.raises(ConfigError, match=r"^dataset.on_device=None must be auto, true or false"):
        FakeDataModule(on_device=None)


class _Placed:
    """DeviceImages without a GPU: records the device it was asked for."""

    def __init__(self, images, labels, device, flip) -> None:
        self.device = device


def test_auto_on_cuda_takes_a_share_of_the_free_memory(tiny_image_folder, monkeypatch) -> None:
    """auto's rule without a GPU: CUDA, a decoded in-memory set, at most 1/4 of the free memory."""
    monkeypatch.setattr(data.device, "DeviceImages", _Placed)
    cuda = torch.device("cuda", 0)
    dm = folder(tiny_image_folder)
    dm.setup("fit")
    size = 12 * 3 * 32 * 32  # uint8 images; + 12 int64 labels
    needed = size + 12 * 8
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * needed, 8 * needed))
    images, line = choose_device_images("auto", dm.train_set, True, cuda, False)
    assert isinstance(images, _Placed) and images.device == cuda
    assert "held on cuda:0" in line and "<= 0.25 of the" in line and "dataset.on_device=auto" in line
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * needed - 4, 8 * needed))
    images, line = choose_device_images("auto", dm.train_set, True, cuda, False)
    assert images is None and line.startswith("training images: kept in host memory (12 uint8 images")
    # Neither files nor generated data go to the GPU by themselves; true takes generated data there.
    generated = fake()
    generated.setup("fit")
    assert choose_device_images("auto", generated.train_set, None, cuda, False) == (None, None)
    assert isinstance(choose_device_images(True, generated.train_set, None, cuda, False)[0], _Placed)
    for setting in ("auto", False):
        assert choose_device_images(setting, dm.train_set, True, torch.device("cpu"), False) == (None, None)


# --- training -------------------------------------------------------------------------------------------------


def _train(overrides: list[str], output_dir: Path) -> dict[str, torch.Tensor]:
    from gan_lab.train import train

    module = train(compose_config(overrides, output_dir=output_dir))
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _recording_indices(monkeypatch) -> list[tuple[torch.dtype, tuple[int, ...], str]]:
    """Patch DeviceImages.batch to record the (dtype, shape, device type) of every index batch it gathers."""
    seen = []
    gather = DeviceImages.batch

    def recording(self, indices):
        seen.append((indices.dtype, tuple(indices.shape), indices.device.type))
        images, labels = gather(self, indices)
        assert images.device == labels.device == indices.device  # gathered where the indices are
        return [images, labels]

    monkeypatch.setattr(DeviceImages, "batch", recording)
    return seen


def _runs(tiny_image_folder, make: str) -> tuple[list[str], int, int]:
    """(overrides, steps, batch size) of a tiny run whose steps cross a pass (order and flips drawn anew)."""
    if make == "fake":  # 32 images in batches of 8: 4 a pass
        return [*TINY_RUN, "dataset.hflip=true", "steps=6"], 6, 8
    base = [o for o in TINY_RUN if not o.startswith("dataset")]
    dataset = ["dataset=folder", f"dataset.root={tiny_image_folder}", "dataset.resolution=32"]
    dataset += [
        "dataset.batch_size=4",
        "dataset.num_workers=0",
        "dataset.hflip=true",
        "dataset.in_memory=true",
    ]
    return [*base, *dataset, "steps=4"], 4, 4  # 12 images in batches of 4: 3 a pass


@pytest.mark.parametrize("make", ["fake", "folder"])
def test_training_on_device_gives_the_same_weights(tiny_image_folder, tmp_path, make, monkeypatch) -> None:
    overrides, steps, batch = _runs(tiny_image_folder, make)
    seen = _recording_indices(monkeypatch)
    off = _train([*overrides, "dataset.on_device=false"], tmp_path / "off")
    assert not seen
    on = _train([*overrides, "dataset.on_device=true"], tmp_path / "on")
    assert seen == [(torch.long, (batch,), "cpu")] * steps  # every training batch came as indices
    assert on.keys() == off.keys()
    assert all(torch.equal(on[k], off[k]) for k in off)


# --- on a GPU ---------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("make", ["folder", "fake"])
def test_gpu_batches_are_gathered_on_the_gpu_without_host_sync(tiny_image_folder, make) -> None:
    """The images live on the GPU; each batch is gathered and converted there, bit-identical to the in-memory
    loader's batch copied to the GPU and converted, with no host sync; auto picks the GPU for a decoded set."""
    on_device = "auto" if make == "folder" else True
    build = (lambda **kw: folder(tiny_image_folder, **kw)) if make == "folder" else fake
    memory, held = build(hflip=True, on_device=False), build(hflip=True, on_device=on_device)
    positions = (0, 1, 4, 6, 9, 13)
    assert_same_stream(stream(held, positions, device="cuda"), stream(memory, positions, device="cuda"))
    assert held.device_images.images.device.type == "cuda"
    assert held.device_images.images.dtype == (torch.uint8 if make == "folder" else torch.float32)
    attach(held, 3, device="cuda")
    loader = held.train_dataloader()
    assert isinstance(loader.dataset, IndexBatches) and loader.num_workers == 0 and not loader.pin_memory
    indices = next(iter(loader))
    assert indices.dtype == torch.long and indices.shape == (2,) and indices.device.type == "cpu"
    indices = indices.cuda()
    held.on_after_batch_transfer(indices, 0)  # warm up: the first call may load kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        images, labels = held.on_after_batch_transfer(indices, 0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert images.device.type == labels.device.type == "cuda" and images.dtype == torch.float32


@needs_cuda
@pytest.mark.parametrize("make", ["folder", "fake"])
def test_gpu_training_on_device_gives_the_same_weights(
    tiny_image_folder, tmp_path, make, monkeypatch
) -> None:
    """Real training on the GPU: the same real batches reach training_step, and the same weights result.

    Compared with torch.equal: with cuDNN held to its deterministic algorithms (and no benchmark autotuning,
    whose choice can differ between runs) every op of these nets gives the same bits run to run, and the
    batches are the same bits, so any difference would be the data path's.
    """
    from gan_lab.data.base import ImageDataModule

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    overrides, steps, batch = _runs(tiny_image_folder, make)
    seen = _recording_indices(monkeypatch)
    hook = ImageDataModule.on_after_batch_transfer
    real: dict[str, list[list[torch.Tensor]]] = {"off": [], "on": []}
    run = "off"

    def recording(self, batch_in, dataloader_idx):
        out = hook(self, batch_in, dataloader_idx)
        assert out[0].device.type == "cuda" and out[0].dtype == torch.float32
        real[run].append([t.cpu() for t in out])  # a host sync, in the test only
        return out

    monkeypatch.setattr(ImageDataModule, "on_after_batch_transfer", recording)
    off = _train([*overrides, "dataset.on_device=false"], tmp_path / "off")
    run = "on"
    on = _train([*overrides, "dataset.on_device=true"], tmp_path / "on")
    assert (
        seen == [(torch.long, (batch,), "cuda")] * steps
    )  # indices came to the GPU, images were gathered there
    assert len(real["on"]) == len(real["off"]) == steps
    for (xa, ya), (xb, yb) in zip(real["on"], real["off"], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert on.keys() == off.keys()
    different = [k for k in off if not torch.equal(on[k], off[k])]
    assert not different, f"weights differ after {steps} steps on the GPU: {different}"
