"""`python -m gan_lab.evaluate ckpt=PATH | fake_dir=DIR [dataset=...] [metrics.num_fake=N ...]`: JSON metrics.

Metrics of one's own come from metrics.extra of this command's config (never of the checkpoint it scores).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torchvision import transforms

from gan_lab.cli import config_errors_as_one_line, resolve_device, user_errors_as_one_line
from gan_lab.data import ImageFileDataset, scan_image_folder, to_rgb
from gan_lab.errors import ConfigError
from gan_lab.metrics import Evaluator, image_batches, settings_from_config
from gan_lab.run.checkpoint_io import load_generator, trusted_packages
from gan_lab.run.paths import RunDir, evaluation_name
from gan_lab.utils.images import uint8_at_resolution

log = logging.getLogger("gan_lab.evaluate")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score cfg.ckpt's generator or the images in cfg.fake_dir; writes the JSON file and returns the results."""
    if bool(cfg.ckpt) == bool(cfg.fake_dir):
        raise ConfigError(
            "pass exactly one of ckpt=PATH (a gan_lab checkpoint or export) or fake_dir=DIR (generated images)"
        )
    device = resolve_device(cfg.device)
    settings = settings_from_config(cfg.metrics)
    loaded = load_generator(cfg.ckpt, device, trusted_packages(cfg)) if cfg.ckpt else None
    if cfg.get("dataset"):
        dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    elif loaded is not None:
        dataset_cfg = OmegaConf.to_container(loaded.config.dataset, resolve=True)
    else:
        raise ConfigError(
            "fake_dir needs the reference data: add dataset=folder dataset.root=/path/to/real/images"
        )
    datamodule = instantiate(dataset_cfg)

    if loaded is not None:
        source: dict[str, Any] = {"ckpt": str(Path(cfg.ckpt).resolve()), "g_steps": loaded.g_steps}
        model_resolution = loaded.config.dataset.resolution
        evaluator = Evaluator(settings, datamodule, dataset_cfg, device, model_resolution)
        batches = evaluator.generated(loaded.generator, loaded.z_dim, loaded.num_classes, cfg.seed)
        default_out = RunDir.of(cfg.ckpt).evaluation(evaluator.names["fid"], Path(cfg.ckpt).stem)
    else:
        fake_dir = Path(cfg.fake_dir).expanduser()
        files, labels, _ = scan_image_folder(fake_dir, key="fake_dir")
        settings.num_fake = settings.num_fake or len(files)  # a folder is scored whole unless told otherwise
        with Image.open(files[0]) as first:  # the generator's resolution is the files' size
            model_resolution = min(first.size)
        evaluator = Evaluator(settings, datamodule, dataset_cfg, device, model_resolution)
        s = evaluator.settings
        # Decoded as torch-fidelity decodes files (RGB uint8), then reduced to the metric resolution if larger.
        to_metric = functools.partial(uint8_at_resolution, resolution=evaluator.resolution)
        # An unreadable generated image stops the evaluation: skipping it would score other images than asked.
        decode = transforms.Compose([to_rgb, transforms.PILToTensor(), to_metric])
        images = ImageFileDataset(files, labels, decode, skip_setting=None)
        batches = image_batches(images, s.num_fake, s.batch_size, what=f"fake_dir {fake_dir}")
        source = {"fake_dir": str(fake_dir.resolve())}
        default_out = fake_dir.parent / evaluation_name(evaluator.names["fid"], fake_dir.name)

    print(f"protocol {evaluator.describe()}", flush=True)
    results = evaluator.score(evaluator.fake_features(batches))
    report = {
        **source,
        "metrics": evaluator.named(results),
        "names": evaluator.names,
        "protocol": evaluator.protocol(),
        **results,
        "dataset": dataset_cfg,
    }
    out = Path(cfg.out).expanduser() if cfg.out else default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    log.info("wrote %s", out)
    return report


@config_errors_as_one_line
@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@user_errors_as_one_line
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
