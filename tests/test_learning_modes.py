"""Each GAN family and each loss learns a dataset whose answer is known: 8 colour modes at 32x32.

The data: 8 classes (folders), each a solid colour with pixel noise (std 8); the colours are the corners of the
cube {64, 192}^3, 128 apart, inside tanh's range so that G need not saturate to reach them. A generated image
belongs to the mode whose colour is nearest its mean colour, and is "on a mode" when that distance is < 40.

What is asserted (measured on CPU: AMD EPYC with AVX-512-bf16, seed 42):
- Unconditional coverage, for the families dcgan, sagan and resnet with WGAN-GP: at least 7 of the 8 modes, each
  covered mode with 1/32 to 1/4 of the on-mode samples (uniform is 1/8), and at least 30 % of samples on a mode.
  Measured: 8 modes each time, shares 0.06-0.20, on-mode 0.74 (dcgan), 0.45 (sagan), 0.84 (resnet).
- Conditional models (cgan, cgan_projection) with every loss (bce, hinge, lsgan, wasserstein + GP): at least 90 %
  of the samples asked for label k are in mode k. Measured: 100 % for each after 400 steps.
- The unconditional bce, hinge and lsgan runs produce samples on the modes (>= 90 %; measured 100 %) but, at these
  budgets, on a single mode: SN-DCGAN with those losses collapsed onto one colour at 600 and 1,500 steps
  (also with TTUR, n_critic 5 and R1), while WGAN-GP covered all eight. Their coverage is therefore not asserted.
- Today's recipe (issue 23): the DCGAN nets (no normalization in D, as R3GAN) with RpGAN + R1 + R2 (gamma 10 each,
  the r1/r2 defaults), Adam(5e-4, 0, 0.9), n_critic 1, 800 steps, cover the modes as WGAN-GP does, where BCE with
  the same nets and optimizer collapses onto one. Measured on an AMX Xeon (seed 42 / seed 1): RpGAN 8 modes,
  shares 0.06-0.20 / 0.05-0.24, 74 % / 66 % on a mode; BCE 1 mode. The same objective with gamma 1: 8 modes at
  seed 42 but 4 at seed 1; SN-DCGAN's D (spectral norm) with gamma 1: 3 modes.
- model=r3gan, small (width 16, one block per stage), with the same objective (RpGAN + R1 + R2, gamma 10 each)
  and Adam(1e-3, 0, 0.9), n_critic 1, 800 steps, covers the modes too. Measured on an AVX2-only AMD EPYC
  (seed 42 / 1): 8 modes, shares 0.09-0.17 / 0.10-0.15, 75 % / 76 % on a mode (its EMA's samples); at seeds 7
  and 3 also 8 modes, but one share under 1/32 (0.024, 0.026), so the bounds hold at 2 of the 4 seeds. With
  lr 5e-4 it covered 4 of 8 (seed 42; 6 at 2,000 steps); with lr 5e-4 and beta2 0.99, 8 at seed 42 but 6 at
  seed 1 and 4 at seed 7; with gamma 1, 3. Its nets start as the identity (fix-up init) and have no
  normalization (the DCGAN G keeps batch norm), so at this budget they need the larger step.
"""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from gan_lab.train import train
from gan_lab.utils.config import compose_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # resnet + WGAN-GP: 616 s alone on an AVX2 EPYC

COLOURS = torch.tensor(list(itertools.product([64, 192], repeat=3)), dtype=torch.float32)
ON_MODE = 40.0  # half the distance between neighbouring modes is 64
WGAN_GP = [
    "loss=wasserstein",
    "regularizer=gradient_penalty",
    "normalization=none",
    "n_critic=3",
    "optim.betas=[0.0,0.9]",
    "optim.lr=5e-4",
    "scheduler=none",
]


@pytest.fixture(scope="module")
def modes_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    rng = np.random.default_rng(0)
    for mode, colour in enumerate(COLOURS.numpy()):
        folder = root / f"mode{mode}"
        folder.mkdir()
        for i in range(64):
            image = np.clip(colour + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


def trained(tmp_path, modes_folder, *overrides):
    quiet = [
        "callbacks.progress_bar=null",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    data = [
        "dataset=folder",
        f"dataset.root={modes_folder}",
        "dataset.resolution=32",
        "dataset.batch_size=32",
    ]
    cfg = compose_config([*data, *quiet, "metrics=none", "model.width=32", *overrides], output_dir=tmp_path)
    return train(cfg)


def modes_of(module, labels=None, n=256):
    """(nearest mode per sample, whether it is on that mode) for n samples of the trained generator."""
    z = torch.randn(n, module.z_dim, generator=torch.Generator().manual_seed(0))
    images = module.generate(z, labels).float()
    mean_colours = (images + 1).mul(127.5).mean(dim=(2, 3))
    distances = torch.cdist(mean_colours, COLOURS)
    return distances.argmin(dim=1), distances.min(dim=1).values < ON_MODE


@pytest.mark.parametrize(
    ("model", "steps", "extra"),
    [("dcgan", 800, []), ("sagan", 800, []), ("resnet", 800, ["model.width=16"])],
)
def test_unconditional_families_cover_the_modes_at_their_frequencies(
    tmp_path, modes_folder, model, steps, extra
):
    assert_covers_the_modes(
        trained(tmp_path, modes_folder, f"model={model}", f"steps={steps}", *WGAN_GP, *extra)
    )


@pytest.mark.parametrize(
    ("model", "loss"),
    [
        ("cgan", ["loss=bce"]),
        ("cgan_projection", ["loss=bce"]),
        ("cgan_projection", ["loss=hinge"]),
        ("cgan_projection", ["loss=lsgan"]),
        ("cgan_projection", WGAN_GP),
    ],
    ids=[
        "cgan-bce",
        "cgan_projection-bce",
        "cgan_projection-hinge",
        "cgan_projection-lsgan",
        "cgan_projection-wgan_gp",
    ],
)
def test_conditional_models_draw_the_requested_mode(tmp_path, modes_folder, model, loss):
    module = trained(tmp_path, modes_folder, f"model={model}", "steps=400", *loss)
    labels = torch.arange(256) % 8
    nearest, on_mode = modes_of(module, labels)
    match = ((nearest == labels) & on_mode).float().mean()
    assert match >= 0.9, f"only {match:.0%} of samples are the mode of their label"


@pytest.mark.parametrize("loss", ["bce", "hinge", "lsgan"])
def test_unconditional_losses_draw_samples_on_the_modes(tmp_path, modes_folder, loss):
    module = trained(tmp_path, modes_folder, "model=sndcgan", f"loss={loss}", "steps=600")
    _, on_mode = modes_of(module)
    assert on_mode.float().mean() >= 0.9, f"only {on_mode.float().mean():.0%} of samples on a mode"


RPGAN_R1_R2 = ["loss=rpgan", "regularizer=[r1,r2]"]
MODERN = ["model=dcgan", "normalization=none", "optim.betas=[0.0,0.9]", "optim.lr=5e-4", "steps=800"]
# model=r3gan at a test's size; its preset's cosine lr schedule off (scheduler.eta_min is that schedule's)
SMALL_R3GAN = [
    "model=r3gan",
    "model.width=16",
    "model.blocks_per_stage=1",
    "scheduler=none",
    "~scheduler.eta_min",
    "optim.betas=[0.0,0.9]",
    "optim.lr=1e-3",
    "steps=800",
]


def assert_covers_the_modes(module):
    # Shares near 1/32 need more than 256 samples to be told apart.
    nearest, on_mode = modes_of(module, n=2048)
    shares = torch.bincount(nearest[on_mode], minlength=8) / on_mode.sum()
    covered = shares > 0
    assert on_mode.float().mean() >= 0.3, f"only {on_mode.float().mean():.0%} of samples on a mode"
    assert covered.sum() >= 7, f"modes covered: {covered.sum()} of 8 (shares {shares.tolist()})"
    assert ((shares[covered] >= 1 / 32) & (shares[covered] <= 1 / 4)).all(), f"shares {shares.tolist()}"


def test_relativistic_pairing_with_r1_r2_keeps_every_mode_where_bce_collapses(tmp_path, modes_folder, capsys):
    """R3GAN's claim on known modes: the same nets, optimizer and budget, only the objective differs."""
    bce = trained(tmp_path / "bce", modes_folder, *MODERN, "loss=bce")
    nearest, on_mode = modes_of(bce)
    bce_modes = int((torch.bincount(nearest[on_mode], minlength=8) > 0).sum())
    with capsys.disabled():
        print(f"\nmodes covered at 800 steps: bce {bce_modes} of 8 (measured 1)")
    assert_covers_the_modes(trained(tmp_path / "rpgan", modes_folder, *MODERN, *RPGAN_R1_R2))


def test_r3gan_keeps_every_mode(tmp_path, modes_folder):  # 230 s on an AVX2-only EPYC
    """model=r3gan's nets with R3GAN's objective (RpGAN + R1 + R2) on the known modes."""
    assert_covers_the_modes(trained(tmp_path, modes_folder, *SMALL_R3GAN, *RPGAN_R1_R2))
