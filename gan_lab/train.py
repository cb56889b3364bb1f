"""`python -m gan_lab.train [group=option ...] [key=value ...]`: compose the config, build, and fit."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gan_lab.errors import one_line, user_error
from gan_lab.module import GANModule

log = logging.getLogger("gan_lab.train")
# The run directory already holds config.yaml when the CSV logger starts; its "not empty" warning is noise.
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")


def build_module(cfg: DictConfig) -> GANModule:
    """The GANModule described by cfg (model, loss, regularizer, optim, scheduler, n_critic, steps)."""
    return GANModule(
        generator=instantiate(cfg.model.generator),
        discriminator=instantiate(cfg.model.discriminator),
        loss=instantiate(cfg.loss),
        regularizer=instantiate(cfg.regularizer),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler else None,
        n_critic=cfg.n_critic,
        max_g_steps=cfg.steps,
        z_dim=cfg.model.z_dim,
        num_classes=cfg.model.num_classes,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def _instantiate_named(group: DictConfig | None) -> list[Any]:
    """Instantiate every non-null entry of a {name: config} group such as callbacks or logger."""
    return [instantiate(entry) for entry in (group or {}).values() if entry is not None]


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """The Lightning Trainer; a `steps` budget replaces trainer.max_epochs (GANModule stops the run)."""
    overrides = {"max_epochs": -1} if cfg.steps else {}
    return instantiate(
        cfg.trainer,
        callbacks=_instantiate_named(cfg.callbacks),
        logger=_instantiate_named(cfg.logger),
        **overrides,
    )


def train(cfg: DictConfig) -> GANModule:
    """Build data, module and trainer from cfg and fit; returns the trained module."""
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    datamodule = instantiate(cfg.dataset)
    module = build_module(cfg)
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    log.info("finished after %d generator steps; outputs in %s", module.g_steps, output_dir)
    return module


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except Exception as exc:
        err = user_error(exc)
        if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"gan_lab: error: {one_line(err)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
