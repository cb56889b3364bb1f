"""Evaluation protocols: the metric resolution, named protocols, clean-fid's resizer, precision/recall/density/coverage.

Known answers: a hand-computed 1-d case for precision/recall/density/coverage, mode dropping seen by recall and
coverage, upsampled-then-reduced CIFAR images scoring like the originals, and clean-fid's own calculation.
"""

import json
import logging
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_images
from hydra import compose, initialize_config_dir
from PIL import Image

from gan_lab.data import CIFAR10DataModule, FakeDataModule, FolderDataModule
from gan_lab.errors import ConfigError, GanLabError
from gan_lab.metrics import LOGITS, POOL, PROTOCOLS, Evaluator, MetricSettings, compute_metrics, metric_names
from gan_lab.metrics.features import build_vgg16, inception_on_resized
from gan_lab.metrics.protocols import metric_resolution
from gan_lab.metrics.registry import count_name
from gan_lab.utils.images import generated_to_uint8, to_uint8

CONF = Path(__file__).resolve().parents[1] / "conf"


def evaluate_here(*overrides: str) -> dict:
    """gan_lab.evaluate in this process (no interpreter start-up), as `python -m gan_lab.evaluate overrides`."""
    from gan_lab.evaluate import evaluate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return evaluate(compose("evaluate", list(overrides)))


def write_images(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


# --- the metric resolution -------------------------------------------------------------------------------------
def test_metric_resolution_follows_the_data_and_never_upsamples(caplog):
    assert metric_resolution("native", 64, 32) == 32  # a 64² CIFAR generator is scored at CIFAR's 32²
    assert metric_resolution("native", 32, 32) == 32
    assert metric_resolution("native", 64, None) == 64  # mixed sizes: the training resolution
    assert metric_resolution("native", 64, 256) == 64  # big images trained at 64²: the reals are reduced
    assert metric_resolution(16, 64, 32) == 16 and metric_resolution("16", 64, 32) == 16
    with caplog.at_level(logging.WARNING):
        assert metric_resolution("model", 64, 32) == 64
    assert "not comparable with published ones" in caplog.text
    with pytest.raises(ConfigError, match="above the generator's 32².*metrics.resolution=32 or lower"):
        metric_resolution(64, 32, 256)
    with pytest.raises(ConfigError, match="above the dataset's native 32².*metrics.resolution=native"):
        metric_resolution(64, 64, 32)
    for bad in ("foo", 0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="choose native .*model .*positive integer"):
            metric_resolution(bad, 64, 32)


def test_native_resolution_of_each_dataset(tmp_path):
    assert CIFAR10DataModule(root=str(tmp_path), download=False).native_resolution() == 32
    same = write_images(tmp_path / "same", [(40, 40)] * 4)
    assert FolderDataModule(root=str(same), resolution=32).native_resolution() == 40
    assert FolderDataModule(root=str(same), resolution=32, crop=36).native_resolution() == 36
    assert (
        FolderDataModule(root=str(write_images(tmp_path / "wide", [(48, 40)] * 3))).native_resolution() == 40
    )
    mixed = write_images(tmp_path / "mixed", [(40, 40), (64, 64)])
    assert FolderDataModule(root=str(mixed), resolution=32).native_resolution() is None
    assert FakeDataModule(resolution=32).native_resolution() is None


def test_reference_images_are_the_datasets_own_pixels_at_native_resolution(tmp_path):
    folder = write_images(tmp_path / "imgs", [(32, 32)] * 3)
    dm = FolderDataModule(root=str(folder), resolution=64, num_workers=0)  # training upsamples to 64²
    image, _ = dm.reference_dataset("train", 32)[1]
    assert torch.equal(image, torch.from_numpy(np.array(Image.open(folder / "001.png"))).permute(2, 0, 1))
    assert dm.reference_dataset("train")[1][0].shape == (3, 64, 64)  # default: the training resolution


def test_generated_images_are_box_filtered_in_float_then_quantized_once():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = generated_to_uint8(x, 32)
    assert torch.equal(out, to_uint8(x.view(2, 3, 32, 2, 32, 2).mean((3, 5))))  # a 2x2 mean, one rounding
    twice = to_uint8(x).float().view(2, 3, 32, 2, 32, 2).mean((3, 5)).round().to(torch.uint8)
    assert not torch.equal(out, twice)  # quantizing before the mean would round twice
    assert torch.equal(generated_to_uint8(x, 64), to_uint8(x))
    with pytest.raises(ConfigError, match="without upsampling"):
        generated_to_uint8(x, 128)


# --- named protocols ---------------------------------------------------------------------------------------------
def test_protocols_pin_counts_split_resolution_and_resizer():
    s = MetricSettings(protocol="fid10k_test").resolved("cpu")
    assert (s.num_fake, s.num_real, s.reference_split, s.resolution, s.resizer) == (
        10000,
        10000,
        "test",
        "native",
        "legacy",
    )
    assert metric_names(s, 32)["fid"] == "fid10k_test32"
    s = MetricSettings(protocol="fid50k_train_clean").resolved("cpu")
    assert (s.num_fake, s.num_real, s.reference_split, s.resizer) == (50000, "all", "train", "clean")
    assert metric_names(s, 32)["fid"] == "fid50k_train32_clean"
    for name, protocol in PROTOCOLS.items():  # the name says what it measures, and each has its source
        assert name.startswith(f"fid{count_name(protocol.num_fake)}_{protocol.reference_split}")
        assert len(protocol.source) > 40
    MetricSettings(protocol="fid10k_test", num_fake=10000, reference_split="test").resolved("cpu")  # agreeing


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            dict(protocol="fid10k_test", num_fake=5000),
            "pins metrics.num_fake=10000, but metrics.num_fake=5000",
        ),
        (dict(protocol="fid50k_train", resizer="clean"), "pins metrics.resizer=legacy.*drop metrics.resizer"),
        (
            dict(protocol="fid_foo"),
            "unknown metrics.protocol=fid_foo; choose one of fid10k_test, fid50k_train",
        ),
        (dict(resizer="bicubic"), "unknown metrics.resizer=bicubic; choose one of legacy, clean"),
        (dict(prc_features="clip"), "unknown metrics.prc_features=clip; choose one of vgg16, inception"),
        (dict(resolution="full"), "metrics.resolution='full' is not valid"),
        (dict(num_real="most"), "metrics.num_real must be an integer >= 2 or all"),
        (
            dict(prc=True, num_fake=6),
            "metrics.num_fake=6 is too few for density/coverage with prdc_nearest_k=5",
        ),
    ],
)
def test_bad_metric_settings_are_one_line(settings, message):
    with pytest.raises(ConfigError, match=message):
        MetricSettings(**settings).resolved("cpu")


@pytest.mark.shared
def test_a_protocol_needs_its_reference_split_and_enough_images(tmp_path, inception_weights):
    folder = write_images(tmp_path / "imgs", [(32, 32)] * 20)
    dm = FolderDataModule(root=str(folder), resolution=32, num_workers=0)
    common = dict(inception_weights=str(inception_weights), cache_dir=str(tmp_path / "cache"))
    evaluator = Evaluator(MetricSettings(protocol="fid10k_test", **common), dm, {"root": str(folder)}, "cpu")
    with pytest.raises(
        ConfigError, match="metrics.protocol=fid10k_test compares with the test split: .*test_root"
    ):
        evaluator.reference()
    evaluator = Evaluator(MetricSettings(protocol="fid5k_train", **common), dm, {"root": str(folder)}, "cpu")
    with pytest.raises(
        ConfigError, match="has 20 images, fewer than the 10000 .*fid5k_train needs 10000 train"
    ):
        evaluator.reference()


# --- precision, recall, density, coverage -----------------------------------------------------------------------
def _prc_only(k: int) -> MetricSettings:
    return MetricSettings(
        fid=False, kid=False, prc=True, prc_features="inception", prc_neighborhood=k, prdc_nearest_k=k
    )


def test_precision_recall_density_coverage_known_answer():
    # 1-d by hand, k = 1. Real balls: radius 1 around 0, 1, 2, 3. Fake balls: 9.5 around 0.5, 1 around 10 and 11.
    real, fake = torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([[0.5], [10.0], [11.0]])
    got = compute_metrics({POOL: fake, LOGITS: fake}, {POOL: real}, _prc_only(1))
    assert got["precision"] == pytest.approx(1 / 3)  # 0.5 is in a real ball, 10 and 11 are in none
    assert got["recall"] == 1.0  # every real is within 9.5 of 0.5
    assert got["density"] == pytest.approx(2 / 3)  # 0.5 lies in 2 real balls, 10 and 11 in none: 2 / 3 / k
    assert got["coverage"] == 0.5  # 0 and 1 have a fake closer than 1; 2 and 3 do not


def test_dropped_modes_lower_recall_and_coverage_but_not_precision():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 2, generator=g) * 10

    def sample(modes: int, n: int) -> torch.Tensor:
        return centres[torch.arange(n) % modes] + torch.randn(n, 2, generator=g)

    real = sample(8, 400)
    full = compute_metrics({POOL: sample(8, 400)}, {POOL: real}, _prc_only(3))
    half = compute_metrics({POOL: sample(4, 400)}, {POOL: real}, _prc_only(3))
    assert full["precision"] > 0.9 and full["recall"] > 0.9 and full["coverage"] > 0.8
    assert half["precision"] > 0.9 and half["recall"] < 0.6 and half["coverage"] < 0.6  # (0.94, 0.49, 0.50)


def test_prc_passes_generated_and_real_features_the_way_the_packages_expect():
    from prdc import compute_prdc
    from torch_fidelity.metric_prc import prc_features_to_metric

    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(60, 8, generator=g), torch.randn(40, 8, generator=g) * 0.5 + 0.3  # asymmetric
    ours = compute_metrics({POOL: fake}, {POOL: real}, _prc_only(3))
    theirs = prc_features_to_metric(
        fake, real, prc_neighborhood=3, prc_batch_size=10000, save_cpu_ram=False, verbose=False
    )
    assert (ours["precision"], ours["recall"]) == (theirs["precision"], theirs["recall"])
    assert ours["precision"] != ours["recall"]  # a swapped call would exchange them
    dc = compute_prdc(real_features=real.numpy(), fake_features=fake.numpy(), nearest_k=3)
    assert ours["density"] == pytest.approx(dc["density"]) and ours["coverage"] == pytest.approx(
        dc["coverage"]
    )


def test_vgg16_features_offline_give_one_line_with_the_fix(monkeypatch):
    import torch_fidelity.feature_extractor_vgg16 as vgg_module

    def offline(**kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(vgg_module, "torchvision_load_pretrained_vgg16", offline)
    with pytest.raises(
        GanLabError, match="metrics.vgg16_weights=PATH, or .* metrics.prc_features=inception"
    ) as err:
        build_vgg16(None)
    assert "\n" not in str(err.value)


# --- on real images: round trip, torch-fidelity and clean-fid ----------------------------------------------------
@pytest.fixture(scope="module")
def cifar_sets(cifar_jpeg_root, tmp_path_factory):
    """60 test images as 'generated' (as files at 32², and upsampled to 64² as a 64² run's data is), 60 train."""
    base = tmp_path_factory.mktemp("sets")
    fake32 = copy_images(cifar_jpeg_root / "test", base / "fake32", 60)
    (base / "fake64").mkdir()
    for path in sorted(fake32.iterdir()):  # PIL bilinear, as dataset.resolution=64 upsamples CIFAR
        Image.open(path).convert("RGB").resize((64, 64), Image.BILINEAR).save(
            base / "fake64" / f"{path.stem}.png"
        )
    real = copy_images(cifar_jpeg_root / "train", base / "real", 60)
    return {"fake32": fake32, "fake64": base / "fake64", "real": real, "cache": base / "cache"}


def _evaluate_folder(sets, fake: str, inception_weights, tmp_path, *extra: str) -> dict:
    return evaluate_here(
        f"fake_dir={sets[fake]}", "dataset=folder", f"dataset.root={sets['real']}", "dataset.resolution=32",
        "dataset.num_workers=0", "metrics.num_real=60", "metrics.kid_subset_size=30",
        f"metrics.inception_weights={inception_weights}", f"metrics.cache_dir={sets['cache']}",
        f"out={tmp_path / 'eval.json'}", *extra,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.shared
def test_upsampled_images_scored_at_native_resolution_match_the_originals(
    cifar_sets, inception_weights, tmp_path, capsys
):
    original = _evaluate_folder(cifar_sets, "fake32", inception_weights, tmp_path)
    round_trip = _evaluate_folder(cifar_sets, "fake64", inception_weights, tmp_path)
    protocol = round_trip["protocol"]
    assert (protocol["model_resolution"], protocol["native_resolution"], protocol["resolution"]) == (
        64,
        32,
        32,
    )
    assert round_trip["names"]["fid"] == original["names"]["fid"] == "fid60_train32"
    assert "protocol custom: 60 generated vs 60 train images at 32²" in capsys.readouterr().out
    # 32² -> 64² -> 2x2 mean loses little: the FID moves by a few percent of the gap between the sets, and
    # the round-tripped images are close to the originals themselves.
    assert original["fid"] > 60 and abs(round_trip["fid"] - original["fid"]) < 0.05 * original["fid"]
    sets_as_reference = {**cifar_sets, "real": cifar_sets["fake32"]}
    to_themselves = _evaluate_folder(
        sets_as_reference, "fake64", inception_weights, tmp_path / "self", "metrics.kid=false"
    )
    # Measured: 39 against 204 for the two sets (at 60 images FID is biased high). The box filter loses least of
    # the antialiased filters tried (FID of the round trip to the originals at 120 images: box 36, bicubic 46,
    # bilinear 72).
    assert to_themselves["fid"] < 0.25 * original["fid"], (to_themselves["fid"], original["fid"])
    assert json.loads((tmp_path / "eval.json").read_text())["metrics"]["fid60_train32"] == round_trip["fid"]


@pytest.mark.shared
def test_float_299_input_equals_the_uint8_path(inception):
    x = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = inception(x), inception_on_resized(inception, x.float())
    assert torch.equal(expected[0], got[0])  # (the offline weights have a NaN classifier head: no logits)


@pytest.mark.slow
@pytest.mark.shared
def test_clean_resizer_equals_clean_fids_own_calculation(cifar_sets, inception, inception_weights, tmp_path):
    from cleanfid.fid import compare_folders

    ours = _evaluate_folder(
        cifar_sets, "fake32", inception_weights, tmp_path, "metrics.resizer=clean", "metrics.kid=false"
    )
    assert ours["names"]["fid"] == "fid60_train32_clean" and ours["protocol"]["resizer"] == "clean"
    with torch.no_grad():
        theirs = compare_folders(
            str(cifar_sets["fake32"]), str(cifar_sets["real"]), lambda x: inception_on_resized(inception, x)[0],
            mode="clean", num_workers=0, batch_size=30, device=torch.device("cpu"), verbose=False,
        )  # fmt: skip
    assert ours["fid"] == pytest.approx(theirs, rel=1e-3)
    legacy = _evaluate_folder(cifar_sets, "fake32", inception_weights, tmp_path, "metrics.kid=false")
    assert abs(legacy["fid"] - ours["fid"]) > 0.01  # the resizer changes the number: it is part of the name


def test_reference_cache_keys_separate_what_changes_the_real_images(tmp_path):
    from gan_lab.metrics import ReferenceFeatures, dataset_identity

    cache = ReferenceFeatures(tmp_path)
    fake = {"_target_": "gan_lab.data.FakeDataModule", "resolution": 64, "seed": 0, "batch_size": 8}

    def path(dataset=fake, **key):
        args = {"split": "train", "resolution": 32, "num": 500, "weights": None, **key}
        return cache.path(cache.key(dataset_identity(dataset), **args))

    assert path() == path({**fake, "batch_size": 64, "num_workers": 4})  # how images are loaded: same images
    others = [
        path({**fake, "seed": 1}),  # other images of the same size and resolution
        path({**fake, "resolution": 32}),  # drawn at another training resolution, then scored at 32²
        path(resolution=16), path(network="vgg16"), path(resizer="clean"), path(num="all"), path(split="test"),
    ]  # fmt: skip
    assert len({path(), *others}) == 1 + len(others)


@pytest.mark.slow
@pytest.mark.shared
def test_the_test_split_is_the_reference_when_asked(cifar_sets, inception_weights, tmp_path):
    # The 'generated' images are the test folder itself: against it FID is ~0, against the train folder it is not.
    test = f"dataset.test_root={cifar_sets['fake32']}"
    on_test = _evaluate_folder(
        cifar_sets, "fake32", inception_weights, tmp_path, test, "metrics.reference_split=test"
    )
    assert on_test["names"]["fid"] == "fid60_test32" and on_test["fid"] == pytest.approx(0, abs=1.0)
    on_train = _evaluate_folder(cifar_sets, "fake32", inception_weights, tmp_path, test)
    assert on_train["fid"] > 60
