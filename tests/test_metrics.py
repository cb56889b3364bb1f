"""Metrics agree with torch-fidelity, measure known answers, cache reference features, and fail clearly."""

import json
import logging
import math
import os
import subprocess
import sys
import urllib.error

import pytest
import torch
from conftest import copy_images
from PIL import Image
from torchvision.utils import save_image

from gan_lab import metrics
from gan_lab.data import FolderDataModule, reference_transform
from gan_lab.errors import GanLabError
from gan_lab.metrics import (
    LOGITS,
    POOL,
    MetricSettings,
    ReferenceFeatures,
    compute_metrics,
    count_name,
    extract_features,
    image_batches,
    metric_names,
)
from gan_lab.utils.images import to_uint8

WEIGHTS_SET = {"inception_weights": None}


# --- the uint8 boundary ----------------------------------------------------------------------------------
def test_to_uint8_known_bytes():
    x = torch.tensor([-3.0, -1.0, -0.999, -0.5, 0.0, 0.5, 0.999, 1.0, 2.0]).view(1, 1, 3, 3)
    # (x + 1) / 2 * 255 + 0.5, truncated; clamped to [-1, 1] first
    assert to_uint8(x).flatten().tolist() == [0, 0, 0, 64, 128, 191, 255, 255, 255]


def test_to_uint8_matches_the_png_bytes_gan_lab_writes(tmp_path):
    images = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2.2 - 1.1
    save_image(images, tmp_path / "x.png", normalize=True, value_range=(-1, 1))
    written = torch.from_numpy(__import__("numpy").array(Image.open(tmp_path / "x.png"))).permute(2, 0, 1)
    assert torch.equal(written, to_uint8(images)[0])


# --- Inception Score on known logits ------------------------------------------------------------------------
def isc(logits: torch.Tensor, splits: int) -> dict[str, float]:
    settings = MetricSettings(fid=False, kid=False, isc=True, isc_splits=splits)
    return compute_metrics({LOGITS: logits, POOL: torch.zeros(len(logits), 2)}, None, settings)


def test_inception_score_of_uniform_predictions_is_one():
    assert isc(torch.zeros(100, 1008), splits=5)["isc_mean"] == pytest.approx(1.0)


@pytest.mark.parametrize("classes", [2, 10])
def test_inception_score_of_equiprobable_confident_classes_is_their_number(classes):
    logits = torch.full((1000, 1008), -50.0)
    logits[torch.arange(1000), torch.arange(1000) % classes] = 0.0  # one-hot predictions, balanced classes
    one_split = isc(logits, splits=1)
    assert one_split["isc_mean"] == pytest.approx(classes, rel=1e-6) and one_split["isc_std"] == 0.0
    # Splits are shuffled subsets (torch-fidelity's rule): each is a little unbalanced, so IS is a bit below n
    ten = isc(logits, splits=10)
    assert classes * 0.9 < ten["isc_mean"] < classes and ten["isc_std"] > 0


def test_nan_classifier_head_stops_inception_score(inception, inception_weights):
    with pytest.raises(GanLabError, match="Inception Score needs the classifier head"):
        metrics.check_inception_score_possible(inception, str(inception_weights))
    nan_logits = torch.full((20, 1008), math.nan)
    with pytest.raises(GanLabError, match="NaN"):
        isc(nan_logits, splits=2)


# --- names and settings --------------------------------------------------------------------------------------
def test_metric_names_carry_count_and_reference():
    assert [count_name(n) for n in (500, 5000, 50000, 2500)] == ["500", "5k", "50k", "2500"]
    settings = MetricSettings(num_fake=5000, reference_split="test").resolved("cpu")
    names = metric_names(settings, 32)
    assert (names["fid"], names["kid"], names["isc"]) == ("fid5k_test32", "kid5k_test32", "is5k_32")
    assert names["precision"] == "precision5k_test32_vgg16" and names["density"] == "density5k_test32_vgg16"
    clean = MetricSettings(num_fake=50000, resizer="clean", prc_features="inception").resolved("cpu")
    names = metric_names(clean, 64)
    assert (
        names["fid"] == "fid50k_train64_clean" and names["coverage"] == "coverage10k_train64_inception_clean"
    )
    cpu = MetricSettings().resolved("cpu")
    assert (cpu.num_fake, cpu.num_real) == (500, 500)  # few samples on CPU, equal counts by default


# --- agreement with torch-fidelity (real Inception weights) ----------------------------------------------------
@pytest.fixture(scope="module")
def cifar_pair(cifar_jpeg_root, tmp_path_factory):
    """120 test images as 'generated' and 120 train images as the reference, flat folders."""
    base = tmp_path_factory.mktemp("pair")
    fake = copy_images(cifar_jpeg_root / "test", base / "fake", 120)
    real = copy_images(cifar_jpeg_root / "train", base / "real", 120)
    return fake, real


@pytest.mark.slow
@pytest.mark.shared
def test_evaluate_cli_matches_torch_fidelity(cifar_pair, inception_weights, tmp_path):
    import torch_fidelity

    fake, real = cifar_pair
    out = tmp_path / "eval.json"
    args = [
        f"fake_dir={fake}",
        "dataset=folder",
        f"dataset.root={real}",
        "dataset.resolution=32",
        "dataset.num_workers=0",
        "metrics.num_real=120",
        "metrics.kid_subset_size=60",
        "metrics.prc=true",
        "metrics.prc_features=inception",
        f"metrics.inception_weights={inception_weights}",
        f"metrics.cache_dir={tmp_path / 'cache'}",
        f"out={out}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "gan_lab.evaluate", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours = json.loads(out.read_text())
    theirs = torch_fidelity.calculate_metrics(
        input1=str(fake), input2=str(real), fid=True, kid=True, kid_subset_size=60, cuda=False,
        feature_extractor_weights_path=str(inception_weights), verbose=False, save_cpu_ram=True,
        prc=True, feature_extractor="inception-v3-compat", feature_layer_prc="2048",
    )  # fmt: skip
    assert ours["num_fake"] == ours["num_real"] == 120 and ours["names"]["fid"] == "fid120_train32"
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-4)
    assert (ours["precision"], ours["recall"]) == pytest.approx((theirs["precision"], theirs["recall"]))
    assert ours["names"]["precision"] == "precision120_train32_inception"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "eval.json"]  # nothing else in cwd


@pytest.mark.shared
def test_fid_is_independent_of_batch_size_and_zero_against_itself(cifar_pair, inception):
    fake, real = cifar_pair
    dataset = FolderDataModule(root=str(fake), resolution=32, batch_size=1, num_workers=0).reference_dataset(
        "train"
    )
    by_7 = extract_features(inception, image_batches(dataset, 24, batch_size=7), "cpu")
    by_24 = extract_features(inception, image_batches(dataset, 24, batch_size=24), "cpu")
    torch.testing.assert_close(by_7[POOL], by_24[POOL], rtol=1e-4, atol=1e-4)
    reals = FolderDataModule(root=str(real), resolution=32, batch_size=1, num_workers=0).reference_dataset(
        "train"
    )
    real_pool = extract_features(inception, image_batches(reals, 24, batch_size=24), "cpu")[POOL]
    settings = MetricSettings(kid_subset_size=12)
    a, b = compute_metrics(by_7, real_pool, settings), compute_metrics(by_24, real_pool, settings)
    assert a["fid"] == pytest.approx(b["fid"], rel=1e-4) and a["kid_mean"] == pytest.approx(
        b["kid_mean"], rel=1e-3
    )
    assert a["fid"] > 50  # test vs train CIFAR images at 24 samples: far from zero
    assert compute_metrics(by_7, by_7[POOL], settings)["fid"] == pytest.approx(0.0, abs=1e-2)


# --- the reference-feature cache ----------------------------------------------------------------------------
def test_reference_cache_hits_and_misses(tmp_path, caplog):
    cache = ReferenceFeatures(tmp_path)
    weights_a, weights_b = tmp_path / "a.pth", tmp_path / "b.pth"
    weights_a.write_bytes(b"a"), weights_b.write_bytes(b"bb")
    calls = []

    def compute():
        calls.append(1)
        return torch.randn(4, 3)

    caplog.set_level(logging.INFO, logger="gan_lab.metrics")
    key = cache.key("cifar", "train", 32, 500, str(weights_a))
    first = cache.get(key, compute)
    second = cache.get(key, compute)
    assert len(calls) == 1 and torch.equal(first, second) and "cache hit" in caplog.text
    cache.get(cache.key("cifar", "train", 32, 1000, str(weights_a)), compute)  # another sample count
    cache.get(cache.key("cifar", "train", 32, 500, str(weights_b)), compute)  # other weights
    cache.get(cache.key("cifar", "test", 32, 500, str(weights_a)), compute)  # other split
    cache.get(cache.key("cifar", "train", 64, 500, str(weights_a)), compute)  # other resolution
    assert len(calls) == 5
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_reference_images_are_a_fixed_random_subset(tiny_image_folder):
    dataset = FolderDataModule(root=str(tiny_image_folder), resolution=32, batch_size=1, num_workers=0)
    reference = dataset.reference_dataset("train")
    first = torch.cat(list(image_batches(reference, 6, batch_size=4)))
    again = torch.cat(list(image_batches(reference, 6, batch_size=3)))
    assert first.dtype == torch.uint8 and first.shape == (6, 3, 32, 32) and torch.equal(first, again)
    # not just the first files of the sorted list (which would be one class only)
    in_order = torch.stack([reference[i][0] for i in range(6)])
    assert not torch.equal(first, in_order)
    with pytest.raises(GanLabError, match="fewer than the 50 requested"):
        next(image_batches(reference, 50, batch_size=4))
    assert reference_transform(32) is not None


# --- weights -----------------------------------------------------------------------------------------------------
def test_offline_download_failure_says_how_to_pass_local_weights(monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", offline)
    monkeypatch.delenv(metrics.WEIGHTS_ENV, raising=False)
    with pytest.raises(GanLabError, match="metrics.inception_weights=") as err:
        metrics.build_inception(metrics.resolve_weights(None))
    assert "GAN_LAB_INCEPTION_WEIGHTS" in str(err.value) and "metrics=none" in str(err.value)


def test_weights_from_environment(monkeypatch, tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"x")
    monkeypatch.setenv(metrics.WEIGHTS_ENV, str(path))
    assert metrics.resolve_weights(None) == str(path.resolve())
    with pytest.raises(GanLabError, match="not found"):
        metrics.resolve_weights(str(tmp_path / "missing.pth"))


# --- in-loop evaluation and the evaluate command on a checkpoint made here -------------------------------------
@pytest.mark.shared
@pytest.mark.slow  # ~23 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_in_loop_fid_logs_keeps_best_checkpoint_and_plots(tiny_config, inception_weights, tmp_path):
    from gan_lab.train import train

    cache = tmp_path / "cache"
    in_loop = [
        "metrics=fid",
        "metrics.num_fake=16",
        "metrics.kid_subset_size=8",
        "metrics.every=2",
        "metrics.every_unit=step",
        f"metrics.inception_weights={inception_weights}",
        f"metrics.cache_dir={cache}",
    ]
    train(tiny_config("steps=4", *in_loop))
    run = tmp_path / "run"
    with open(run / "metrics.csv") as f:
        rows = [row for row in __import__("csv").DictReader(f) if row.get("val/fid16_train32")]
    fids = [float(row["val/fid16_train32"]) for row in rows]
    assert len(fids) == 2 and all(math.isfinite(v) and v > 0 for v in fids)
    assert all(row.get("val/kid16_train32") for row in rows)
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    (state,) = [v for k, v in best["callbacks"].items() if k.startswith("InLoopMetrics")]
    assert state["best_fid"] == pytest.approx(min(fids), rel=1e-5)
    assert best["gan_lab"]["g_steps"] == 2 * (1 + fids.index(min(fids)))  # saved at the step of the best FID
    assert (run / "fid_curve.png").stat().st_size > 1000

    # The evaluate command scores the checkpoint against the same data, reusing the cached reference.
    args = [f"ckpt={run / 'checkpoints' / 'last.ckpt'}", *in_loop[1:3], *in_loop[5:]]
    done = subprocess.run(
        [sys.executable, "-m", "gan_lab.evaluate", *args], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cache hit" in done.stdout + done.stderr
    report = json.loads((run / "evaluation_fid16_train32_last.json").read_text())
    assert report["g_steps"] == 4 and report["num_fake"] == 16 and report["names"]["kid"] == "kid16_train32"
    assert math.isfinite(report["fid"]) and report["kid_std"] >= 0


def test_evaluate_needs_exactly_one_source(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "gan_lab.evaluate"], capture_output=True, text=True, cwd=tmp_path
    )
    assert (
        done.returncode == 1 and "exactly one of ckpt=PATH" in done.stderr and "Traceback" not in done.stderr
    )


def test_default_metrics_warn_and_train_on_when_weights_are_unavailable(
    tiny_config, tmp_path, monkeypatch, caplog
):
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    from gan_lab.errors import WeightsUnavailable
    from gan_lab.train import train

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", offline)
    monkeypatch.delenv(metrics.WEIGHTS_ENV, raising=False)
    caplog.set_level(logging.WARNING)
    module = train(tiny_config("metrics=default", "steps=2"))  # the default of `python -m gan_lab.train`
    assert module.g_steps == 2 and "in-loop metrics are OFF" in caplog.text
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    with pytest.raises(WeightsUnavailable, match="metrics.inception_weights="):
        train(tiny_config("metrics=fid", "steps=2"))  # asked for explicitly: required


@pytest.mark.shared
def test_in_loop_metrics_every_n_epochs_and_at_the_last(tiny_config, inception_weights, tmp_path):
    from gan_lab.callbacks import InLoopMetrics
    from gan_lab.train import train

    overrides = [
        "trainer.max_epochs=3", "metrics=fid", "metrics.every=2", "metrics.every_unit=epoch", "metrics.num_fake=8",
        "metrics.kid=false", f"metrics.inception_weights={inception_weights}", f"metrics.cache_dir={tmp_path / 'c'}",
    ]  # fmt: skip
    module = train(tiny_config(*overrides))  # fake data: 32 images, batch 8 = 4 generator steps per epoch
    (metrics,) = [c for c in module.trainer.callbacks if isinstance(c, InLoopMetrics)]
    assert [(h["epoch"], h["g_step"]) for h in metrics.history] == [(1, 8), (2, 12)]


def test_reading_the_reference_leaves_the_global_rng_alone() -> None:
    """A run trains the same whether its reference features are computed or read from the cache."""
    reference = [(torch.zeros(3, 8, 8, dtype=torch.uint8), 0)] * 10
    torch.manual_seed(0)
    for _ in image_batches(reference, 6, batch_size=4):
        pass
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))
