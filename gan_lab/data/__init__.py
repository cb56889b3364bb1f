"""Lightning data modules that yield ``(image, label)`` with images as RGB float tensors CHW in [-1, 1].

- ``ImageDataModule``: shared settings, validation, the training dataloader and the in-memory mode
  (``dataset.in_memory``): images decoded once into a uint8 tensor, cached on disk, served as uint8 batches
  that ``on_after_batch_transfer`` turns into the very floats the file pipeline gives, on the device.
  With ``dataset.on_device``, the images themselves are held on the device and the loader yields only indices.
- ``CIFAR10DataModule``: torchvision CIFAR-10 (train split, 10 classes), downloaded by ``prepare_data``.
- ``LSUNChurchDataModule``: LSUN church_outdoor from its lmdb folder (unconditional).
- ``FolderDataModule``: any folder of images; top-level subfolders become class labels.
- ``FakeDataModule``: small deterministic synthetic images generated in memory, for tests.

Modules, one concept each: ``transforms`` (PIL -> RGB -> square crop, uint8 -> [-1, 1]), ``folder`` (image
files: scanning, header checks, unreadable files), ``memory`` (decoded images in memory and their cache file),
``sampler`` (StreamSampler, Mirrored), ``device`` (``dataset.on_device``: the in-memory images on the training
device, batches gathered there from the loader's indices), ``base`` (ImageDataModule), ``datamodules`` (the four
datamodules).
"""

from gan_lab.data.base import DECODE_BATCH, IN_MEMORY_MAX_BYTES, MIN_CACHED_IMAGES, ImageDataModule
from gan_lab.data.datamodules import CIFAR10DataModule, FakeDataModule, FolderDataModule, LSUNChurchDataModule
from gan_lab.data.folder import (
    HEADER_SAMPLE,
    IMAGE_EXTENSIONS,
    ImageFileDataset,
    read_headers,
    scan_image_folder,
)
from gan_lab.data.memory import DECODED_FORMAT, InMemoryImages
from gan_lab.data.sampler import Mirrored, StreamSampler
from gan_lab.data.transforms import image_transform, reference_transform, to_rgb, uint8_to_unit_range

__all__ = [
    "DECODED_FORMAT", "DECODE_BATCH", "HEADER_SAMPLE", "IMAGE_EXTENSIONS", "IN_MEMORY_MAX_BYTES",
    "MIN_CACHED_IMAGES", "CIFAR10DataModule", "FakeDataModule", "FolderDataModule", "ImageDataModule",
    "ImageFileDataset", "InMemoryImages", "LSUNChurchDataModule", "Mirrored", "StreamSampler",
    "image_transform", "read_headers", "reference_transform", "scan_image_folder",
    "to_rgb", "uint8_to_unit_range",
]  # fmt: skip
