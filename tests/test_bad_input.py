"""Bad input: one `gan_lab: error:` line naming the problem and the fix, exit 1, and nothing on disk lost.

Most cases run in-process through the same wrapper the CLI uses (`user_errors_as_one_line(train)`); a few go
through `python -m gan_lab.train` for what only the command line does (Hydra's composition, its run directory,
HYDRA_FULL_ERROR=1, DataLoader worker processes).

Covered elsewhere, not repeated here:
- dataset root missing: test_data.py::test_missing_root, test_train_cli.py::test_missing_dataset_is_one_clear_line
  (CLI), test_train_cli.py::test_folder_without_root_names_the_missing_key (dataset.root unset)
- a truncated file (its header reads, its pixels do not) fails naming it when loaded, or is skipped with
  dataset.skip_corrupt=true and warned about once: test_data.py::test_corrupt_image_raises_naming_file,
  ::test_skip_corrupt_substitutes_and_warns_once (a CLI run with DataLoader workers is below)
- grayscale, RGBA, palette, 16-bit (and 1-bit, 32-bit int, palette with transparency) images become RGB:
  test_data.py::test_every_mode_becomes_three_channels, ::test_16bit_png_is_scaled_not_clipped,
  ::test_to_rgb_handles_32bit_int_and_palette_with_transparency; the CLI trains on such a folder in
  test_train_cli.py::test_folder_run_writes_checkpoint_grids_and_metrics
- batch size larger than the dataset (the exception): test_data.py::test_fake_batch_larger_than_dataset,
  ::test_folder_batch_larger_than_dataset
- lr <= 0, n_critic < 1 (the exception): test_module.py::test_bad_settings_are_clear_errors
- unbuildable resolutions (the exception): test_nets.py::test_unbuildable_resolution_is_a_clear_error (DCGAN),
  test_sagan_resnet.py::test_unsupported_resolution_is_a_config_error (SAGAN, ResNet)
- weight clipping with a non-Wasserstein loss warns: test_module.py::test_weight_clip_with_non_wasserstein_loss_warns
- resuming from a checkpoint of a different architecture: test_resume.py::test_resume_keeps_the_checkpoint_config_and_refuses_changes
- Inception weights offline (the exception): test_metrics.py::test_offline_download_failure_says_how_to_pass_local_weights;
  metrics=default warns and trains on: test_metrics.py::test_default_metrics_warn_and_train_on_when_weights_are_unavailable
"""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLI, TINY_RUN, run_module
from hydra.errors import ConfigCompositionException, OverrideParseException
from PIL import Image

from gan_lab import data
from gan_lab.cli import config_error_line, user_errors_as_one_line
from gan_lab.data import FolderDataModule
from gan_lab.errors import GanLabError
from gan_lab.train import train
from gan_lab.utils.config import compose_config, config_choices

# Files an earlier run left in the run directory: a failing run must leave them as they are.
EARLIER_RUN = {
    "notes.txt": b"my notes",
    "checkpoints/last.ckpt": b"an earlier run's checkpoint",
    "checkpoints/best.ckpt": b"an earlier run's best checkpoint",
    "samples/step_0000100.png": b"an earlier sample grid",
    "metrics.csv": b"step,train/d_loss\n100,0.5\n",
    "config.yaml": b"model:\n  name: an earlier run's\n",
    "status.json": b'{"status": "completed", "g_steps": 100}\n',
}


def earlier_run(run: Path) -> Path:
    for name, content in EARLIER_RUN.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(content)
    return run


def assert_earlier_run_kept(run: Path) -> None:
    for name, content in EARLIER_RUN.items():
        assert (run / name).read_bytes() == content, f"{name} was changed"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_0000100.png"]


def error_line(stderr: str) -> str:
    """The one `gan_lab: error:` line of stderr, which holds no traceback."""
    lines = [line for line in stderr.splitlines() if line.startswith("gan_lab: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def fail_in_process(cfg, capsys: pytest.CaptureFixture) -> str:
    """Run train(cfg) as the CLI does: the error line, after checking the exit status is 1."""
    with pytest.raises(SystemExit) as exited:
        user_errors_as_one_line(train)(cfg)
    assert exited.value.code == 1
    return error_line(capsys.readouterr().err)


def save_images(folder: Path, count: int, size: tuple[int, int] = (40, 40), ext: str = "png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.{ext}"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def folder_config(root: Path, run: Path, *overrides: str):
    """TINY_RUN on a folder dataset (TINY_RUN's dataset keys are the fake dataset's)."""
    base = [o for o in TINY_RUN if not o.startswith("dataset")]
    folder = ["dataset=folder", f"dataset.root={root}", "dataset.resolution=32", "dataset.batch_size=2"]
    return compose_config([*base, *folder, "dataset.num_workers=0", "steps=1", *overrides], output_dir=run)


# --- unknown names and keys: Hydra's composition errors ------------------------------------------------------
@pytest.mark.parametrize(
    "group", ["model", "loss", "normalization", "dataset", "regularizer", "optim", "experiment"]
)
def test_unknown_option_lists_the_options(group):
    with pytest.raises(ConfigCompositionException) as composed:
        compose_config([f"{group}=nope"])
    assert config_error_line(composed.value) == (
        f"unknown {group} 'nope'; choose one of: {', '.join(config_choices(group))}"
    )


def test_unknown_variant_lists_the_options_in_subfolders():
    with pytest.raises(ConfigCompositionException) as composed:
        compose_config(["variant=sn_study/nope"])
    line = config_error_line(composed.value)
    assert (
        line.startswith("unknown variant 'sn_study/nope'; choose one of: ") and "sn_study/wgan_clip" in line
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "optim.lrr=1",
            "unknown config key 'optim.lrr'; did you mean 'optim.lr'? (or add a new key with +optim.lrr=1)",
        ),
        (
            "modle=dcgan",
            "unknown config key 'modle'; did you mean 'model'? (or add a new key with +modle=dcgan)",
        ),
        (
            "optim.xyzzy=3",
            "unknown config key 'optim.xyzzy' (optim has: _target_, lr, lr_g, lr_d, betas, fused); fix the name, "
            "or add a new key with +optim.xyzzy=3",
        ),
    ],
)
def test_unknown_key_suggests_the_closest(override, expected):
    with pytest.raises(ConfigCompositionException) as composed:
        compose_config([override])
    assert config_error_line(composed.value) == expected


@pytest.mark.parametrize("overrides", [["augment.hflip.p=0.3"], ["augment=hflip", "augment.hflip.p=0.3"]])
def test_a_flip_probability_names_dataset_hflip(overrides):
    """augment=hflip is dataset.hflip now (p = 1/2, drawn by the sampler): asking for p says so."""
    from gan_lab.legacy import HFLIP_REPLACED

    with pytest.raises(ConfigCompositionException) as composed:
        compose_config(overrides)
    assert config_error_line(composed.value) == HFLIP_REPLACED


def test_unparsable_override_names_it():
    with pytest.raises(OverrideParseException) as composed:
        compose_config(["model=[dcgan"])
    line = config_error_line(composed.value)
    assert line.startswith("cannot parse the override 'model=[dcgan' (") and "override_grammar" in line
    assert "\n" not in line


def test_cli_unknown_option_is_one_line_and_touches_nothing(tmp_path):
    run = earlier_run(tmp_path / "run")
    result = run_module("gan_lab.train", *TINY_CLI, "model=nope", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gan_lab: error: unknown model 'nope'; choose one of: cgan, cgan_projection, dcgan, r3gan, resnet, sagan, sndcgan"
    ]
    assert_earlier_run_kept(run)
    assert not (run / ".hydra").exists()


def test_unwritable_output_directory(tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    cfg = compose_config([*TINY_RUN, "steps=1"], output_dir=tmp_path / "a_file" / "run")
    assert fail_in_process(cfg, capsys) == (
        f"gan_lab: error: cannot write to the output directory {tmp_path / 'a_file' / 'run'} (Not a directory); "
        "choose a writable one with hydra.run.dir=PATH (or paths.output_dir=PATH), or fix its permissions"
    )
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_cli_unwritable_run_directory(tmp_path):
    """Hydra creates hydra.run.dir before gan_lab runs: its failure is one line too."""
    (tmp_path / "a_file").write_text("not a folder")
    result = run_module(
        "gan_lab.train", *TINY_CLI, f"hydra.run.dir={tmp_path / 'a_file' / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 1
    assert error_line(result.stderr) == (
        f"gan_lab: error: cannot write the run directory {tmp_path / 'a_file' / 'run'} (Not a directory); "
        "choose a writable one with hydra.run.dir=PATH, or fix its permissions"
    )


def test_cli_full_error_shows_the_traceback(tmp_path):
    result = run_module(
        "gan_lab.train",
        *TINY_CLI,
        "optim.lr=0",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
        HYDRA_FULL_ERROR="1",
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ConfigError: optim.lr must be a number > 0" in result.stderr
    assert "gan_lab: error:" not in result.stderr


# --- bad values: one line from the same wrapper as the CLI, and the earlier run's files kept -----------------
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lr=0"], "optim.lr must be a number > 0, got 0; e.g. optim.lr=2e-4"),
        (["optim.lr_d=-1e-4"], "optim.lr_d must be a number > 0, got -0.0001; e.g. optim.lr_d=2e-4"),
        (["optim.lr_g=0"], "optim.lr_g must be a number > 0, got 0; e.g. optim.lr_g=2e-4"),
        (["optim.lr=abc"], "optim.lr must be a number > 0, got 'abc'; e.g. optim.lr=2e-4"),
        (
            ["n_critic=0"],
            "n_critic must be an integer >= 1 (D steps per G step), got 0; e.g. n_critic=5 for WGAN",
        ),
        (
            ["n_critic=x"],
            "n_critic must be an integer >= 1 (D steps per G step), got 'x'; e.g. n_critic=5 for WGAN",
        ),
        (
            ["dataset.num_samples=4"],
            "dataset.batch_size=8 is larger than the 4 images in FakeDataModule; lower dataset.batch_size",
        ),
        (
            ["dataset.resolution=48"],
            "dataset.resolution=48 cannot be built: this architecture needs a power of two >= 32 (e.g. 32, 64, 128, 256)",
        ),
        (
            ["model=sagan", "dataset.resolution=16"],
            "dataset.resolution=16 cannot be built: this architecture needs a power of two >= 32 (e.g. 32, 64, 128, 256)",
        ),
        (
            ["model=resnet", "dataset.resolution=256"],
            "dataset.resolution=256 cannot be built: model=resnet supports 32, 48, 64, 128",
        ),
        (
            ["regularizer=weight_clip", "loss=wasserstein", "regularizer.weight_clip.clip=0"],
            "regularizer.weight_clip.clip must be > 0, got 0; e.g. regularizer.weight_clip.clip=0.01 (WGAN's)",
        ),
        (
            ["regularizer=r1", "regularizer.interval=0"],
            "regularizer.interval must be an integer >= 1 (penalty every k D steps), got 0; "
            "e.g. regularizer.interval=16 (StyleGAN2's lazy R1)",
        ),
        (
            ["model=r3gan", "model.channels_per_group=4", "scheduler=none"],
            "scheduler sets eta_min but names no class (a preset's setting for an option the command line "
            "dropped?); drop it with ~scheduler.eta_min, or choose one: scheduler=cosine",
        ),
        (
            ["regularizer=r1", "+regularizer.r2.gamma=1"],
            "regularizer.r2 sets gamma but names no class (a preset's setting for an option the command line "
            "dropped?); drop it with ~regularizer.r2.gamma, or choose one: regularizer=[...,r2]",
        ),
        (
            ["model=r3gan", "model.channels_per_group=4", "normalization=spectral"],
            "model=r3gan has no normalization layers (R3GAN's design); drop normalization=spectral (the preset sets none)",
        ),
        (
            ["augment=ada", "augment.ada.target=1.5"],
            "augment.ada.target must be in (0, 1) (ADA uses 0.6), got 1.5",
        ),
    ],
)
def test_bad_value_is_one_line_and_keeps_files(tiny_config, tmp_path, capsys, overrides, expected):
    run = earlier_run(tmp_path / "run")
    assert fail_in_process(tiny_config("steps=1", *overrides), capsys) == f"gan_lab: error: {expected}"
    assert_earlier_run_kept(run)


def test_inception_weights_unavailable_offline_say_how_to_pass_a_file(
    tiny_config, tmp_path, capsys, monkeypatch
):
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", offline)
    monkeypatch.delenv("GAN_LAB_INCEPTION_WEIGHTS", raising=False)
    run = earlier_run(tmp_path / "run")
    line = fail_in_process(tiny_config("steps=1", "metrics=fid"), capsys)
    assert line.startswith("gan_lab: error: the Inception weights for FID/KID/IS could not be downloaded (")
    assert line.endswith(
        "on an offline machine pass metrics.inception_weights=/path/to/weights-inception-2015-12-05-6726825d.pth "
        "(or set GAN_LAB_INCEPTION_WEIGHTS), or train without in-loop metrics: metrics=none"
    )
    assert_earlier_run_kept(run)


def test_damaged_inception_weights_file_is_one_line(tiny_config, tmp_path, capsys):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"<html>a login page saved as weights</html>")
    run = earlier_run(tmp_path / "run")
    line = fail_in_process(
        tiny_config("steps=1", "metrics=fid", f"metrics.inception_weights={weights}"), capsys
    )
    assert line.startswith(f"gan_lab: error: cannot load Inception weights from {weights} (UnpicklingError: ")
    assert line.endswith(
        "pass torch-fidelity's weights-inception-2015-12-05-6726825d.pth as metrics.inception_weights, "
        "or unset it to download"
    )
    assert_earlier_run_kept(run)


# --- folder datasets -------------------------------------------------------------------------------------------
def test_root_that_is_a_file(tmp_path, capsys):
    archive = tmp_path / "faces.zip"
    archive.write_bytes(b"PK")
    run = earlier_run(tmp_path / "run")
    assert fail_in_process(folder_config(archive, run), capsys) == (
        f"gan_lab: error: image folder {archive} is a file, not a folder (extract the archive first); "
        "set dataset.root=/path/to/images"
    )
    assert_earlier_run_kept(run)


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ([], "it is empty"),
        (["notes.txt"], "only 1 other file (e.g. notes.txt)"),
        (["a/data.npy", "b.zip", "c.txt"], "only 3 other files (e.g. b.zip)"),
    ],
)
def test_folder_without_images_says_what_it_holds(tmp_path, capsys, files, found):
    root = tmp_path / "images"
    root.mkdir()
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("not an image")
    run = earlier_run(tmp_path / "run")
    assert fail_in_process(folder_config(root, run), capsys) == (
        f"gan_lab: error: no image files (.jpg .jpeg .png .bmp .webp .gif .tif .tiff, any case) under {root}, "
        f"{found}; set dataset.root to a folder of images"
    )
    assert_earlier_run_kept(run)


@pytest.fixture
def folder_with_unreadable_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    """4 good images, an empty .jpg and a text file named .png."""
    root = tmp_path / "images"
    save_images(root, 4)
    empty, text = root / "empty.jpg", root / "notes.png"
    empty.write_bytes(b"")
    text.write_text("not a png")
    return root, [empty, text]


def test_unreadable_files_are_listed_before_training(folder_with_unreadable_files, tmp_path, capsys):
    root, (empty, text) = folder_with_unreadable_files
    run = earlier_run(tmp_path / "run")
    assert fail_in_process(folder_config(root, run), capsys) == (
        f"gan_lab: error: 2 of the 6 image files under {root} cannot be read: {empty} (empty file), "
        f"{text} (not an image); delete or replace them, or set dataset.skip_corrupt=true to skip them"
    )
    assert_earlier_run_kept(run)


def test_skip_corrupt_skips_the_listed_files_with_one_warning(folder_with_unreadable_files, caplog):
    root, (empty, text) = folder_with_unreadable_files
    dm = FolderDataModule(str(root), resolution=32, batch_size=2, num_workers=0, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="gan_lab.data"):
        dm.setup("fit")
        images = [dm.train_set[i][0] for i in range(len(dm.train_set))]  # the unreadable ones are substituted
    assert all(image.shape == (3, 32, 32) for image in images)
    assert caplog.messages == [
        f"skipping 2 unreadable image files under {root}: {empty} (empty file), {text} (not an image)"
    ]


def test_nothing_readable(tmp_path, capsys):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"")
    run = earlier_run(tmp_path / "run")
    line = fail_in_process(folder_config(root, run, "dataset.skip_corrupt=true"), capsys)
    assert line == (
        f"gan_lab: error: none of the 1 image files under {root} can be read, e.g. {root / 'a.jpg'} (empty file); "
        "set dataset.root to a folder of images"
    )
    assert_earlier_run_kept(run)


def test_large_folder_checks_a_sample_of_headers(tmp_path, monkeypatch):
    root = tmp_path / "images"
    save_images(root, 10, size=(33, 33), ext="jpg")
    (root / "008.jpg").write_bytes(b"")  # index 8 = 4 * 10 // 5 is sampled
    monkeypatch.setattr(data.datamodules, "HEADER_SAMPLE", 5)
    with pytest.raises(GanLabError) as raised:
        FolderDataModule(str(root), resolution=32, batch_size=2, num_workers=0).setup("fit")
    assert str(raised.value).startswith(f"1 of 5 sampled image files under {root} cannot be read: ")


def test_cli_truncated_file_in_a_worker_is_one_line_and_keeps_files(tmp_path):
    root = tmp_path / "images"
    paths = save_images(root, 4, size=(64, 64), ext="jpg")
    paths[1].write_bytes(
        paths[1].read_bytes()[: paths[1].stat().st_size // 2]
    )  # the header reads, pixels not
    run = earlier_run(tmp_path / "run")
    result = run_module(
        "gan_lab.train",
        *[o for o in TINY_CLI if not o.startswith("dataset")],
        "dataset=folder",
        f"dataset.root={root}",
        "dataset.resolution=32",
        "dataset.batch_size=4",
        "dataset.num_workers=1",
        "steps=2",
        f"hydra.run.dir={run}",
        "overwrite=true",  # the earlier run is put back when this one fails before a step
        cwd=tmp_path,
    )
    assert result.returncode == 1
    line = error_line(result.stderr)
    assert line.startswith(f"gan_lab: error: cannot read image {paths[1]} (")
    assert line.endswith("; delete or replace it, or set dataset.skip_corrupt=true")
    assert_earlier_run_kept(run)


@pytest.mark.shared
def test_evaluate_unreadable_generated_image_is_one_line_without_skipping(
    tmp_path, inception_weights, tiny_image_folder
):
    """An unreadable file in fake_dir stops the evaluation with one line that offers no skipping: the dataset's
    skip_corrupt does not apply to generated images, and skipping would score other images than asked."""
    fake = tmp_path / "fake"
    paths = save_images(fake, 4, size=(32, 32), ext="jpg")
    paths[2].write_bytes(
        paths[2].read_bytes()[: paths[2].stat().st_size // 2]
    )  # the header reads, pixels not
    done = run_module(
        "gan_lab.evaluate", f"fake_dir={fake}", "dataset=folder", f"dataset.root={tiny_image_folder}",
        "dataset.resolution=32", "dataset.num_workers=0", "metrics.kid=false", "metrics.num_real=12",
        f"metrics.inception_weights={inception_weights}", f"metrics.cache_dir={tmp_path / 'cache'}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    line = error_line(done.stderr)
    assert line.startswith(f"gan_lab: error: cannot read image {paths[2]} (")
    assert line.endswith("); delete or replace it")


# --- images smaller than the resolution: a warning, once, not an error ------------------------------------------
def test_small_images_are_upscaled_with_one_warning(tmp_path, caplog):
    root = tmp_path / "cifar_like"
    paths = save_images(root, 6, size=(32, 32))
    save_images(root / "big", 2, size=(80, 64))
    dm = FolderDataModule(str(root), resolution=64, batch_size=4, num_workers=0)
    with caplog.at_level(logging.WARNING, logger="gan_lab.data"):
        dm.setup("fit")
        dm.setup("fit")
        x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 64, 64)
    assert caplog.messages == [
        f"6 of the 8 images under {root} are smaller than dataset.resolution=64 (e.g. {paths[0]} is 32x32) and are "
        "upscaled, which blurs them; lower dataset.resolution (e.g. dataset.resolution=32), or ignore this if "
        "upscaling is intended"
    ]


def test_images_at_least_the_resolution_give_no_warning(tmp_path, caplog):
    save_images(tmp_path, 4, size=(32, 48))
    with caplog.at_level(logging.WARNING, logger="gan_lab.data"):
        FolderDataModule(str(tmp_path), resolution=32, batch_size=4, num_workers=0).setup("fit")
    assert caplog.messages == []


def test_crop_larger_than_the_images_warns_of_black_borders(tmp_path, caplog):
    paths = save_images(tmp_path, 4, size=(50, 40))
    with caplog.at_level(logging.WARNING, logger="gan_lab.data"):
        FolderDataModule(str(tmp_path), resolution=32, crop=48, batch_size=4, num_workers=0).setup("fit")
        FolderDataModule(str(tmp_path), resolution=64, crop=40, batch_size=4, num_workers=0).setup("fit")
    assert caplog.messages == [
        f"4 of the 4 images under {tmp_path} are smaller than dataset.crop=48 (e.g. {paths[0]} is 50x40) and get "
        "black borders; lower dataset.crop (e.g. dataset.crop=40), or set dataset.crop=null",
        "dataset.crop=40 is smaller than dataset.resolution=64, so every crop is upscaled, which blurs it; set "
        "dataset.crop to at least 64, or lower dataset.resolution",
    ]


# --- architectures ---------------------------------------------------------------------------------------------
def test_sagan_attention_over_large_maps_warns(caplog):
    from gan_lab.nets.sagan import SAGANDiscriminator, SAGANGenerator

    with caplog.at_level(logging.WARNING, logger="gan_lab.nets.sagan"):
        SAGANGenerator(z_dim=8, resolution=64, width=2)
        SAGANDiscriminator(resolution=256, width=2)  # attends at 64x64 and 32x32: fine
        assert caplog.messages == []
        SAGANGenerator(z_dim=8, resolution=256, width=2)
    assert caplog.messages == [
        "model.generator.attention_resolutions=[64, 128]: self-attention over a 128x128 map stores 1 GiB per image "
        "(float32, before gradients), so a training batch rarely fits in memory; attend to smaller maps, e.g. "
        "model.generator.attention_resolutions=[32,64]"
    ]


def test_a_run_that_trains_replaces_the_earlier_metrics(tiny_config, tmp_path):
    # The other side of keeping metrics.csv when a run fails before training: a run that logs replaces it.
    run = earlier_run(tmp_path / "run")
    train(tiny_config("steps=2", "trainer.log_every_n_steps=1"))
    metrics = (run / "metrics.csv").read_text()
    assert "train/d_loss" in metrics.splitlines()[0] and "100,0.5" not in metrics


# --- errors raised while building the Trainer or the networks ----------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.z_dim=0", "model.z_dim=0 must be a positive integer"),
        ("model.width=-8", "model.width=-8 must be a positive integer"),
        pytest.param(
            "trainer.accelerator=gpu",
            "trainer.accelerator asks for a GPU, but none is usable here",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
)
def test_errors_building_the_trainer_or_networks_are_one_line(tmp_path, capsys, override, expected):
    line = fail_in_process(
        compose_config([*TINY_RUN, "steps=1", override], output_dir=tmp_path / "run"), capsys
    )
    assert expected in line and ("trainer.accelerator=auto" in line or "e.g. model." in line)
