"""FID, KID and Inception Score on the standard TF Inception-v3 features, computed by torch-fidelity.

gan_lab only feeds images: torch-fidelity's own `FeatureExtractorInceptionV3` turns uint8 images into pool
features (2048) and unbiased logits (1008) in one pass, and its `*_features_to_metric` functions do the maths,
so numbers equal `torch_fidelity.calculate_metrics` on the same images. Generated images become uint8 once,
through `gan_lab.images.to_uint8` (the bytes gan_lab's PNGs hold).

Real features are cached on disk, keyed by dataset, split, resolution, sample count and weights file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from gan_lab.errors import ConfigError, GanLabError, WeightsUnavailable
from gan_lab.images import to_uint8
from gan_lab.metrics.registry import count_name

log = logging.getLogger(__name__)

WEIGHTS_ENV = "GAN_LAB_INCEPTION_WEIGHTS"
POOL, LOGITS = "2048", "logits_unbiased"
# torch-fidelity's defaults, so gan_lab and `fidelity --kid` agree unless told otherwise.
RNG_SEED = 2020
REFERENCE_SEED = 0  # which real images form the reference set: fixed, so the cache can be reused


@dataclass
class MetricSettings:
    """What to measure and on how many images; mirrors conf/metrics/*.yaml."""

    fid: bool = True
    kid: bool = True
    isc: bool = False
    num_fake: int | None = None  # None: 5000 on a GPU, 500 on CPU (Inception runs ~7 img/s on a 2-core CPU)
    num_real: int | None = (
        None  # None: same as num_fake (FID is biased by sample count: compare equal counts)
    )
    reference_split: str = "train"
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # capped at the number of images
    isc_splits: int = 10
    batch_size: int = 64
    inception_weights: str | None = None  # None: $GAN_LAB_INCEPTION_WEIGHTS, else torch-fidelity's download
    cache_dir: str | None = None  # None: ~/.cache/gan_lab/metrics

    def resolved(self, device: torch.device | str) -> MetricSettings:
        """A copy with the sample counts decided for this device and checked."""
        on_gpu = torch.device(device).type == "cuda"
        num_fake = self.num_fake or (5000 if on_gpu else 500)
        num_real = self.num_real or num_fake
        for key, value in (("num_fake", num_fake), ("num_real", num_real), ("batch_size", self.batch_size)):
            if value < 2:
                raise ConfigError(f"metrics.{key} must be >= 2, got {value}")
        if self.isc and num_fake < self.isc_splits:
            raise ConfigError(
                f"metrics.num_fake={num_fake} is fewer than metrics.isc_splits={self.isc_splits}"
            )
        return MetricSettings(**{**asdict(self), "num_fake": num_fake, "num_real": num_real})


def metric_names(settings: MetricSettings) -> dict[str, str]:
    """Logged names that carry the sample count and the reference, e.g. {'fid': 'fid5k_train'}."""
    n, split = count_name(settings.num_fake), settings.reference_split
    return {"fid": f"fid{n}_{split}", "kid": f"kid{n}_{split}", "isc": f"is{n}"}


def resolve_weights(path: str | None) -> str | None:
    """A local weights file (argument, then $GAN_LAB_INCEPTION_WEIGHTS), or None for the standard download."""
    path = path or os.environ.get(WEIGHTS_ENV) or None
    if path is not None and not Path(path).expanduser().is_file():
        raise ConfigError(
            f"Inception weights file {path} not found; check metrics.inception_weights / ${WEIGHTS_ENV}"
        )
    return str(Path(path).expanduser().resolve()) if path else None


def build_inception(weights: str | None, device: torch.device | str = "cpu") -> torch.nn.Module:
    """torch-fidelity's FID Inception-v3 returning (pool 2048, unbiased logits 1008) for uint8 images."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", [POOL, LOGITS], feature_extractor_weights_path=weights
        )
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as err:
        if weights is not None:  # a damaged or different file
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise GanLabError(
                f"cannot load Inception weights from {weights} ({reason}); pass torch-fidelity's "
                "weights-inception-2015-12-05-6726825d.pth as metrics.inception_weights, or unset it to download"
            ) from err
        if not isinstance(err, OSError | RuntimeError):  # URLError is an OSError
            raise
        raise WeightsUnavailable(
            f"the Inception weights for FID/KID/IS could not be downloaded ({err}); on an offline machine pass "
            f"metrics.inception_weights=/path/to/weights-inception-2015-12-05-6726825d.pth (or set {WEIGHTS_ENV}), "
            "or train without in-loop metrics: metrics=none"
        ) from err
    return extractor.to(device).eval()


def check_inception_score_possible(extractor: torch.nn.Module, weights: str | None) -> None:
    """Stop before any work if the classifier head is unusable (the offline FID-only copy has a NaN head)."""
    if not torch.isfinite(extractor.fc.weight).all():
        raise WeightsUnavailable(
            f"Inception Score needs the classifier head of the standard Inception weights, and {weights} has none "
            "(NaN logits; FID and KID are unaffected); let torch-fidelity download the weights on a machine with "
            "internet (unset metrics.inception_weights), or drop IS: metrics.isc=false"
        )


@torch.no_grad()
def extract_features(
    extractor: torch.nn.Module, batches: Iterable[Tensor], device: torch.device | str
) -> dict[str, Tensor]:
    """{'2048': (N, 2048), 'logits_unbiased': (N, 1008)} float32 on the CPU, from uint8 batches (B, 3, H, W)."""
    pool, logits = [], []
    for batch in batches:
        if batch.dtype != torch.uint8:
            raise TypeError(f"Inception features take uint8 images, got {batch.dtype}; convert with to_uint8")
        features = extractor(batch.to(device))
        pool.append(features[0].float().cpu())
        logits.append(features[1].float().cpu())
    return {POOL: torch.cat(pool), LOGITS: torch.cat(logits)}


def generated_batches(
    generate: Callable[[Tensor, Tensor | None], Tensor],
    num: int,
    z_dim: int,
    num_classes: int,
    batch_size: int,
    device: torch.device | str,
    seed: int = RNG_SEED,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Tensor]:
    """uint8 batches of samples [start, stop) of a seeded stream of `num` samples of generate(z, labels).

    Every sample's noise depends only on the seed and its index, so DDP ranks can each take a slice of the
    stream and, gathered, score exactly the images one process would.
    """
    stop = num if stop is None else stop
    rng = torch.Generator().manual_seed(seed)
    for first in range(0, max(num, stop), batch_size):
        z = torch.randn(batch_size, z_dim, generator=rng)
        labels = torch.randint(0, num_classes, (batch_size,), generator=rng) if num_classes else None
        lo, hi = max(start, first) - first, min(stop, first + batch_size) - first
        if hi <= lo:
            continue
        with torch.no_grad():
            images = generate(z[lo:hi].to(device), None if labels is None else labels[lo:hi].to(device))
        yield to_uint8(images).cpu()


def image_batches(
    dataset: Dataset, num: int, batch_size: int, num_workers: int = 0, what: str = ""
) -> Iterator[Tensor]:
    """uint8 batches of a fixed random subset of `num` items of a dataset of (image, label) or images."""
    if len(dataset) < num:  # type: ignore[arg-type]
        raise ConfigError(
            f"{what or 'the dataset'} has {len(dataset)} images, fewer than the {num} requested; "  # type: ignore[arg-type]
            "lower metrics.num_real / metrics.num_fake"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(REFERENCE_SEED))  # type: ignore[arg-type]
    subset = Subset(dataset, sorted(order[:num].tolist()))
    for batch in DataLoader(subset, batch_size=batch_size, num_workers=num_workers):
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


def compute_metrics(
    fake: dict[str, Tensor], real_pool: Tensor | None, settings: MetricSettings
) -> dict[str, float]:
    """FID / KID (mean, std) / IS (mean, std) from features, by torch-fidelity's functions."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    results: dict[str, float] = {}
    if settings.fid:
        stats_fake, stats_real = fid_features_to_statistics(fake[POOL]), fid_features_to_statistics(real_pool)
        results["fid"] = fid_statistics_to_metric(stats_fake, stats_real, verbose=False)[
            "frechet_inception_distance"
        ]
    if settings.kid:
        subset_size = min(settings.kid_subset_size, len(fake[POOL]), len(real_pool))
        kid = kid_features_to_metric(
            fake[POOL], real_pool, kid_subsets=settings.kid_subsets, kid_subset_size=subset_size,
            rng_seed=RNG_SEED, verbose=False,
        )  # fmt: skip
        results["kid_mean"], results["kid_std"] = (
            kid["kernel_inception_distance_mean"],
            kid["kernel_inception_distance_std"],
        )
        results["kid_subset_size"] = subset_size
    if settings.isc:
        isc = isc_features_to_metric(
            fake[LOGITS], splits=settings.isc_splits, shuffle=True, rng_seed=RNG_SEED
        )
        if not all(map(torch.isfinite, map(torch.tensor, isc.values()))):
            raise GanLabError(
                "Inception Score came out NaN: the Inception weights have no usable classifier head"
            )
        results["isc_mean"], results["isc_std"] = isc["inception_score_mean"], isc["inception_score_std"]
    return results


def _weights_identity(weights: str | None) -> str:
    if weights is None:
        return "torch-fidelity-download:pt_inception-2015-12-05"
    stat = Path(weights).stat()
    return f"{weights}:{stat.st_size}:{int(stat.st_mtime)}"


class ReferenceFeatures:
    """Inception pool features of real images, computed once per (dataset, split, resolution, count, weights)."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        base = (
            cache_dir
            or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gan_lab" / "metrics"
        )
        self.cache_dir = Path(base).expanduser()

    def key(
        self, dataset_id: str, split: str, resolution: int, num: int, weights: str | None
    ) -> dict[str, object]:
        return {
            "dataset": dataset_id,
            "split": split,
            "resolution": resolution,
            "num": num,
            "weights": _weights_identity(weights),
            "format": 1,
        }

    def path(self, key: dict[str, object]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"real_{key['split']}_{key['resolution']}px_{key['num']}_{digest}.pt"

    def get(self, key: dict[str, object], compute: Callable[[], Tensor]) -> Tensor:
        """Cached features for key, or compute() them and store them atomically."""
        path = self.path(key)
        if path.is_file():
            log.info("real-image features: cache hit, %s", path)
            return torch.load(path, weights_only=True)["features"]
        log.info("real-image features: cache miss, computing %s images (%s)", key["num"], key["dataset"])
        features = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"features": features, "key": key}, tmp)
        os.replace(tmp, path)  # atomic: a killed run never leaves a truncated cache file
        log.info("real-image features: cached in %s", path)
        return features


# Dataset settings that do not change which real images the reference holds.
_NOT_IDENTITY = {"batch_size", "num_workers", "hflip", "order_seed", "skip_corrupt", "download", "in_memory"}


def dataset_identity(dataset_cfg: Mapping[str, Any]) -> str:
    """The reference images' identity from the dataset config: class, roots (absolute), resolution, ..."""
    ident = {}
    for key, value in sorted(dataset_cfg.items()):
        if key in _NOT_IDENTITY:
            continue
        if key.endswith("root") and value:
            value = str(Path(value).expanduser().resolve())
        ident[key] = value
    return json.dumps(ident, sort_keys=True, default=str)


class Evaluator:
    """Scores generated images against a dataset's reference split with one Inception pass per image."""

    def __init__(
        self,
        settings: MetricSettings,
        datamodule: Any,
        dataset_cfg: Mapping[str, Any],
        device: torch.device | str,
    ) -> None:
        self.settings = settings.resolved(device)
        self.device = device
        self.datamodule = datamodule
        self.dataset_cfg = dataset_cfg
        self.weights = resolve_weights(settings.inception_weights)
        self.extractor = build_inception(self.weights, device)
        if self.settings.isc:
            check_inception_score_possible(self.extractor, self.weights)
        self.names = metric_names(self.settings)
        self.cache = ReferenceFeatures(self.settings.cache_dir)
        self._reference: Tensor | None = None

    def reference(self) -> Tensor:
        """Pool features (num_real, 2048) of the reference split, from the cache when possible."""
        if self._reference is None:
            s = self.settings
            key = self.cache.key(
                dataset_identity(self.dataset_cfg),
                s.reference_split,
                self.datamodule.resolution,
                s.num_real,
                self.weights,
            )

            def compute() -> Tensor:
                dataset = self.datamodule.reference_dataset(s.reference_split)
                batches = image_batches(
                    dataset,
                    s.num_real,
                    s.batch_size,
                    self.datamodule.num_workers,
                    f"the {s.reference_split} split",
                )
                return extract_features(self.extractor, batches, self.device)[POOL]

            self._reference = self.cache.get(key, compute)
        return self._reference

    def fake_features(self, batches: Iterable[Tensor]) -> dict[str, Tensor]:
        """Inception features of uint8 batches of generated images."""
        return extract_features(self.extractor, batches, self.device)

    def score(self, fake: dict[str, Tensor]) -> dict[str, float]:
        """Metrics of fake features against the reference, plus the settings that make them comparable."""
        s = self.settings
        results = compute_metrics(fake, self.reference() if (s.fid or s.kid) else None, s)
        return {
            **results,
            "num_fake": len(fake[POOL]),
            "num_real": s.num_real,
            "reference_split": s.reference_split,
            "inception_weights": self.weights or "torch-fidelity download",
        }


def settings_from_config(metrics_cfg: Mapping[str, Any]) -> MetricSettings:
    """MetricSettings from conf/metrics (keys that only steer the in-loop schedule are skipped)."""
    fields = MetricSettings.__dataclass_fields__
    return MetricSettings(**{k: v for k, v in metrics_cfg.items() if k in fields})
