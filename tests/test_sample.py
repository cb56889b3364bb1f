"""`python -m gan_lab.sample`: outputs of a really trained checkpoint, seeding, latent maths, PNG conversion."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, run_module
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor, nn
from torchvision.utils import save_image

from gan_lab.errors import ConfigError
from gan_lab.latents import interpolate, latents
from gan_lab.run.checkpoint_io import LoadedGenerator
from gan_lab.sample import default_out_dir, sample, save_each, write_samples
from gan_lab.train import train
from gan_lab.utils.config import CONF_DIR, compose_config
from gan_lab.utils.images import to_uint8

REPO = Path(__file__).resolve().parents[1]
RES = 32  # dataset=fake trains at 32x32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """last.ckpt of a real two-step training run (unconditional SN-DCGAN at 32x32)."""
    run = tmp_path_factory.mktemp("train") / "run"
    train(compose_config([*TINY_RUN, "steps=2"], output_dir=run))
    return run / "checkpoints" / "last.ckpt"


def sample_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="sample", overrides=list(overrides))


def small(ckpt: Path, out_dir: Path | None, *overrides: str):
    out = f"out_dir={out_dir}" if out_dir else "out_dir=null"
    return sample_config(
        f"ckpt={ckpt}", out, "num_images=3", "grid_size=4", "interpolation.rows=2", *overrides
    )


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_module("gan_lab.sample", *args, cwd=cwd, timeout=120)


def grid_size(n_wide: int, n_high: int) -> tuple[int, int]:
    """(width, height) of a save_image grid of RES-pixel tiles with its 2-pixel padding."""
    return n_wide * (RES + 2) + 2, n_high * (RES + 2) + 2


def test_cli_writes_every_output_and_leaves_cwd_clean(ckpt, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["num_images=5", "grid_size=9", "batch_size=2", "interpolation.rows=2", "interpolation.steps=3"]
    result = run_cli(f"ckpt={ckpt}", "out_dir=out", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    out = cwd / "out"
    assert [p.name for p in cwd.iterdir()] == ["out"]  # no outputs/, .hydra/ or sample.log
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "images", "interpolation.png"]
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == [f"{i:06d}.png" for i in range(5)]  # 5 across batches of 2
    assert all(Image.open(out / "images" / name).size == (RES, RES) for name in images)
    assert Image.open(out / "grid.png").size == grid_size(3, 3)
    assert Image.open(out / "interpolation.png").size == grid_size(3, 2)  # steps wide, rows high
    assert "unconditional" in result.stdout and str(out / "grid.png") in result.stdout


def test_missing_checkpoint_is_one_error_line(tmp_path):
    result = run_cli(f"ckpt={tmp_path}/nowhere.ckpt", cwd=tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("gan_lab: error:")]
    assert len(lines) == 1 and "nowhere.ckpt" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_same_seed_same_bytes_other_seed_other_images(ckpt, tmp_path):
    a = sample(small(ckpt, tmp_path / "a", "seed=3"))
    b = sample(small(ckpt, tmp_path / "b", "seed=3"))
    c = sample(small(ckpt, tmp_path / "c", "seed=4"))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 5
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
        assert (tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes(), f
    assert a["grid"].parent == tmp_path / "a" and set(a) == set(b) == set(c)


def test_default_out_dir_is_in_the_run_and_stale_images_go(ckpt, tmp_path):
    cfg = small(ckpt, None, "seed=7", "num_images=4")
    expected = ckpt.parent.parent / "generated" / "seed7"
    assert sample(cfg)["grid"] == expected / "grid.png"
    sample(small(ckpt, None, "seed=7", "num_images=2"))
    assert sorted(p.name for p in (expected / "images").iterdir()) == ["000000.png", "000001.png"]
    assert default_out_dir(tmp_path / "ckpts" / "g.ckpt", 0) == tmp_path / "ckpts" / "generated" / "seed0"


def test_truncation_moves_the_images(ckpt, tmp_path):
    plain = sample(small(ckpt, tmp_path / "plain"))["grid"].read_bytes()
    assert sample(small(ckpt, tmp_path / "t", "truncation=0.5"))["grid"].read_bytes() != plain


@pytest.mark.parametrize(
    "override, words",
    [
        ("interpolation.mode=cubic", ["slerp", "lerp", "cubic"]),
        ("truncation=0", ["truncation", "> 0"]),
        ("truncation=-1.5", ["truncation", "> 0"]),
        ("interpolation.steps=1", ["interpolation.steps", ">= 2"]),
        ("num_images=-1", ["num_images"]),
    ],
)
def test_bad_settings_are_config_errors(override, words, tmp_path):
    # The checkpoint does not exist: settings are checked before anything is loaded.
    with pytest.raises(ConfigError) as err:
        sample(sample_config(f"ckpt={tmp_path}/x.ckpt", override))
    assert all(word in str(err.value) for word in words), str(err.value)


def test_ckpt_is_required():
    with pytest.raises(ConfigError, match="ckpt is required"):
        sample(sample_config())


def test_interpolate_endpoints_norms_and_midpoint():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 100, generator=g)
    for mode in ("slerp", "lerp"):
        path = interpolate(z0, z1, 7, mode)
        assert path.shape == (7, 100)
        torch.testing.assert_close(path[0], z0)
        torch.testing.assert_close(path[-1], z1)
    assert torch.allclose(interpolate(z0, z1, 3, "lerp")[1], (z0 + z1) / 2)
    # Equal norms: every slerp point stays on that sphere; lerp cuts inside it.
    u1 = z1 * z0.norm() / z1.norm()
    norms = interpolate(z0, u1, 9, "slerp").norm(dim=1)
    torch.testing.assert_close(norms, torch.full((9,), z0.norm().item()))
    assert interpolate(z0, u1, 3, "lerp")[1].norm() < 0.9 * z0.norm()
    # Different norms: the slerp norms stay between the endpoints' norms.
    norms = interpolate(z0, 2 * z1, 9, "slerp").norm(dim=1)
    low, high = sorted([z0.norm().item(), 2 * z1.norm().item()])
    assert (norms >= low * 0.99).all() and (norms <= high * 1.01).all()
    # A parallel pair has no great circle: slerp falls back to the straight line instead of dividing by 0.
    assert torch.isfinite(interpolate(z0, 2 * z0, 5, "slerp")).all()


def test_interpolate_refuses_unknown_modes():
    with pytest.raises(ConfigError, match="slerp, lerp"):
        interpolate(torch.zeros(4), torch.ones(4), 5, "cubic")


def test_truncated_noise_stays_in_bounds():
    g = torch.Generator().manual_seed(0)
    z = latents(20000, 8, g, truncation=0.5)
    assert z.shape == (20000, 8) and z.abs().max() <= 0.5
    assert z.std() > 0.25 and z.max() > 0.49 and z.min() < -0.49  # fills [-t, t], not a point mass
    assert (latents(20000, 8, g).abs() > 2).any()
    same = latents(5, 8, torch.Generator().manual_seed(1), 1.0)
    assert torch.equal(same, latents(5, 8, torch.Generator().manual_seed(1), 1.0))
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match="truncation"):
            latents(5, 8, g, truncation=bad)


@pytest.mark.parametrize("channels", [3, 1])
def test_individual_pngs_match_save_image_bytes(channels, tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, channels, 8, 8, generator=g) * 0.8  # some values beyond [-1, 1]
    images[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 0.0, 1 / 255])  # range ends and rounding edges
    save_each(images, tmp_path, start=10)
    for i, image in enumerate(images):
        save_image(image, tmp_path / "ref.png", normalize=True, value_range=(-1, 1))
        ours = tmp_path / f"{10 + i:06d}.png"
        assert ours.read_bytes() == (tmp_path / "ref.png").read_bytes()
        expected = to_uint8(image[None])[0].expand(3, -1, -1).permute(1, 2, 0)
        assert np.array_equal(np.asarray(Image.open(ours)), expected.numpy())


class ColourByClass(nn.Module):
    """A stand-in conditional generator: a flat image in the colour of its label."""

    PALETTE = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Tensor, Tensor]] = []

    def forward(self, z: Tensor, labels: Tensor | None) -> Tensor:
        assert labels is not None and labels.shape == (z.shape[0],)
        self.calls.append((z, labels))
        return self.PALETTE[labels][:, :, None, None].expand(-1, 3, RES, RES)


def test_classes_png_has_one_row_per_class(tmp_path):
    gen = ColourByClass()
    loaded = LoadedGenerator(gen, OmegaConf.create({"model": {"z_dim": 5, "num_classes": 3}}), g_steps=0)
    cfg = sample_config("ckpt=unused", "per_class=4", "num_images=2", "grid_size=4", "batch_size=100")
    paths = write_samples(loaded, cfg, tmp_path, torch.device("cpu"))
    assert sorted(paths) == ["classes", "grid", "images", "interpolation"]
    z, labels = gen.calls[-1]  # the classes batch: class-major, each column one z for every class
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(z[:4], z[4:8]) and torch.equal(z[:4], z[8:]) and not torch.equal(z[0], z[1])
    grid = np.asarray(Image.open(paths["classes"]))
    assert grid.shape[:2] == grid_size(4, 3)[::-1]
    for row, colour in enumerate(to_uint8(ColourByClass.PALETTE[:, :, None, None]).reshape(3, 3).numpy()):
        for col in range(4):
            y, x = 2 + row * (RES + 2), 2 + col * (RES + 2)
            assert (grid[y : y + RES, x : x + RES] == colour).all(), (row, col)
    assert gen.calls[0][1].tolist() == [0, 1, 2, 0]  # grid.png: balanced cycling classes
