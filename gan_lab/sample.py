"""`python -m gan_lab.sample ckpt=PATH [key=value ...]`: images from a trained generator (conf/sample.yaml).

Writes into out_dir: grid.png, images/NNNNNN.png (one PNG per sample, for torch-fidelity and similar tools),
interpolation.png (one latent walk per row) and, for conditional models, classes.png (one row per class).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch import Tensor
from torchvision.utils import save_image

from gan_lab.cli import config_errors_as_one_line, resolve_device, user_errors_as_one_line
from gan_lab.errors import ConfigError
from gan_lab.latents import (
    check_mode,
    check_truncation,
    class_grid_latents,
    cycled_labels,
    grid_columns,
    interpolation_latents,
    latents,
    seeded,
)
from gan_lab.run.checkpoint_io import LoadedGenerator, load_generator, trusted_packages
from gan_lab.run.paths import LAST_CKPT_EXAMPLE, RunDir
from gan_lab.utils.images import to_uint8

log = logging.getLogger("gan_lab.sample")
# (key, smallest valid value) of the integer settings.
_INT_KEYS = (("seed", 0), ("num_images", 0), ("grid_size", 1), ("batch_size", 1), ("per_class", 1))
_INT_KEYS += (("interpolation.rows", 1), ("interpolation.steps", 2))


def save_each(images: Tensor, directory: Path, start: int = 0) -> None:
    """Write images (N, C, H, W) in [-1, 1] as directory/<start + i>.png (6 digits), the bytes save_image writes."""
    pixels = to_uint8(images)
    if pixels.shape[1] == 1:  # save_image writes grayscale as RGB
        pixels = pixels.expand(-1, 3, -1, -1)
    for i, array in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(array).save(directory / f"{start + i:06d}.png")


def default_out_dir(ckpt: Path, seed: int) -> Path:
    """<run dir>/generated/seed<seed> (an export directory not inside a run: <export dir>/generated/...)."""
    return RunDir.of(ckpt).generated(seed)


def check_config(cfg: DictConfig) -> None:
    """Refuse bad settings before loading anything, so a typo never costs a long generation run."""
    if OmegaConf.is_missing(cfg, "ckpt"):
        raise ConfigError(
            f"ckpt is required: python -m gan_lab.sample ckpt={LAST_CKPT_EXAMPLE} (or an export dir)"
        )
    for key, low in _INT_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")
    check_truncation(cfg.truncation)
    check_mode(cfg.interpolation.mode)


@torch.no_grad()
def write_samples(
    loaded: LoadedGenerator, cfg: DictConfig, out_dir: Path, device: torch.device
) -> dict[str, Path]:
    """Write grid.png, images/, interpolation.png and (conditional models) classes.png; returns their paths."""
    gen, z_dim, k, bs = loaded.generator, loaded.z_dim, loaded.num_classes, cfg.batch_size

    # A fresh seeded generator per output: num_images does not change grid.png.
    def fresh() -> torch.Generator:
        return seeded(cfg.seed)

    def noise(n: int) -> Tensor:
        return latents(n, z_dim, fresh(), cfg.truncation)

    def batches(z: Tensor, labels: Tensor | None):  # noise is drawn on the CPU: same images on any device
        for i in range(0, len(z), bs):
            y = None if labels is None else labels[i : i + bs].to(device)
            yield gen(z[i : i + bs].to(device), y).float().cpu()

    def save_grid(name: str, z: Tensor, labels: Tensor | None, nrow: int) -> None:
        paths[name] = out_dir / f"{name}.png"
        save_image(
            torch.cat(list(batches(z, labels))), paths[name], nrow=nrow, normalize=True, value_range=(-1, 1)
        )

    paths: dict[str, Path] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    save_grid("grid", noise(cfg.grid_size), cycled_labels(cfg.grid_size, k), nrow=grid_columns(cfg.grid_size))

    paths["images"] = out_dir / "images"
    paths["images"].mkdir(exist_ok=True)
    for stale in paths["images"].glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
        stale.unlink()  # a previous, larger num_images must not leave extra files for FID tools to count
    for b, images in enumerate(batches(noise(cfg.num_images), cycled_labels(cfg.num_images, k))):
        save_each(images, paths["images"], start=b * bs)  # streamed: 50000 images never sit in memory

    rows, steps = cfg.interpolation.rows, cfg.interpolation.steps
    z, labels = interpolation_latents(rows, steps, z_dim, k, fresh(), cfg.interpolation.mode, cfg.truncation)
    save_grid("interpolation", z, labels, nrow=steps)

    if k:  # class-major rows; column j uses the same z in every row, so only the class changes down a column
        z, labels = class_grid_latents(cfg.per_class, k, z_dim, fresh(), cfg.truncation)
        save_grid("classes", z, labels, nrow=cfg.per_class)
    else:
        log.info("no classes.png: the generator is unconditional (model.num_classes=0)")
    return paths


def sample(cfg: DictConfig) -> dict[str, Path]:
    """Load cfg.ckpt, write every output into out_dir and print their paths."""
    check_config(cfg)
    device = resolve_device(cfg.device)
    ckpt = Path(cfg.ckpt).expanduser().absolute()
    loaded = load_generator(ckpt, device, trusted_packages(cfg))
    out_dir = Path(cfg.out_dir).expanduser().absolute() if cfg.out_dir else default_out_dir(ckpt, cfg.seed)
    log.info("generator of %s (%d generator steps) on %s", ckpt, loaded.g_steps, device)
    paths = write_samples(loaded, cfg, out_dir, device)
    for name, path in paths.items():
        print(f"{name + ':':<15}{path}" + (f"  ({cfg.num_images} PNGs)" if name == "images" else ""))
    return paths


@config_errors_as_one_line
@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
