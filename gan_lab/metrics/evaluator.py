"""FID, KID, IS, precision/recall and density/coverage of generated images against a dataset's reference split,
and the metric kinds of one's own that metrics.extra names (gan_lab.metrics.registry).

gan_lab only feeds images: torch-fidelity's feature extractors and its `*_features_to_metric` functions do
FID/KID/IS/precision/recall, and the `prdc` package density/coverage, so numbers equal those packages' own on
the same images; a kind of one's own computes its value from the same features (its `features` key). Generated
images become uint8 once, after being reduced to the metric resolution (`gan_lab.metrics.protocols`). Real
features are cached on disk, keyed by everything they depend on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gan_lab.errors import ConfigError
from gan_lab.latents import latents, seeded, uniform_labels
from gan_lab.metrics import protocols
from gan_lab.metrics.features import (
    LOGITS,
    POOL,
    PRC_FEATURES,
    VGG,
    build_inception,
    build_vgg16,
    check_inception_score_possible,
    extract_features,
    resolve_weights,
)
from gan_lab.metrics.reference import ReferenceFeatures, dataset_identity, image_batches
from gan_lab.metrics.registry import FEATURE_KEYS, MetricKind, metric_name, register_extra
from gan_lab.metrics.scores import PRDC_MAX, RNG_SEED, compute_metrics
from gan_lab.utils.images import generated_to_uint8

log = logging.getLogger("gan_lab.metrics")

# Keys Evaluator.score puts beside the metric values: no kind of metrics.extra may be named so.
SCORE_FIELDS = (
    "num_fake", "num_real", "reference_split", "resolution", "inception_weights", "kid_subset_size",
)  # fmt: skip


@dataclass
class MetricSettings:
    """What to measure and on how many images; mirrors conf/metrics/*.yaml."""

    fid: bool = True
    kid: bool = True
    isc: bool = False
    prc: bool = False  # precision/recall (torch-fidelity) and density/coverage (prdc)
    protocol: str | None = None  # a named protocol pins counts, split, resolution and resizer
    num_fake: int | None = None  # None: 5000 on a GPU, 500 on CPU (Inception runs ~7 img/s on a 2-core CPU)
    num_real: int | str | None = None  # None: same as num_fake; "all": the whole split
    reference_split: str = "train"
    resolution: str | int = "native"  # native | model | an integer (protocols.metric_resolution)
    resizer: str = "legacy"  # legacy | clean (protocols.RESIZERS)
    kid_subsets: int = 100
    kid_subset_size: int = 1000  # capped at the number of images
    isc_splits: int = 10
    prc_features: str = "vgg16"  # vgg16 (torch-fidelity's default) | inception (the pool features)
    prc_neighborhood: int = 3  # k of precision/recall (Kynkäänniemi et al.)
    prdc_nearest_k: int = 5  # k of density/coverage (Naeem et al.)
    batch_size: int = 64
    inception_weights: str | None = None  # None: $GAN_LAB_INCEPTION_WEIGHTS, else torch-fidelity's download
    vgg16_weights: str | None = None  # None: torchvision's download
    cache_dir: str | None = None  # None: ~/.cache/gan_lab/metrics
    extra: dict[str, MetricKind] = field(default_factory=dict)  # kinds of one's own (registry.register_extra)

    def resolved(self, device: torch.device | str) -> MetricSettings:
        """A copy with the protocol applied, the sample counts decided for this device, and every value checked."""
        chosen = {f.name: getattr(self, f.name) for f in fields(self)}  # shallow: `extra` holds objects
        chosen["extra"] = register_extra(self.extra, reserved=SCORE_FIELDS)
        if self.protocol:
            chosen.update(protocols.pinned_values(self.protocol, chosen))
        on_gpu = torch.device(device).type == "cuda"
        chosen["num_fake"] = chosen["num_fake"] or (5000 if on_gpu else 500)
        chosen["num_real"] = chosen["num_real"] or chosen["num_fake"]
        protocols.check_resolution_setting(chosen["resolution"])
        protocols.check_resizer(chosen["resizer"])
        if chosen["prc_features"] not in PRC_FEATURES:
            raise ConfigError(
                f"unknown metrics.prc_features={chosen['prc_features']}; choose one of {', '.join(PRC_FEATURES)}"
            )
        if chosen["reference_split"] not in ("train", "test"):
            raise ConfigError(
                f"metrics.reference_split must be 'train' or 'test', got '{chosen['reference_split']}'"
            )
        counts = [("num_fake", chosen["num_fake"]), ("batch_size", chosen["batch_size"])]
        if chosen["num_real"] != protocols.ALL:
            counts.append(("num_real", chosen["num_real"]))
        for key, value in counts:
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(
                    f"metrics.{key} must be an integer >= 2{' or all' * (key == 'num_real')}, got {value}"
                )
        if (
            chosen["prc"]
            and min(chosen["num_fake"], chosen["num_real"], PRDC_MAX) <= chosen["prdc_nearest_k"] + 1
        ):
            raise ConfigError(
                f"metrics.num_fake={chosen['num_fake']} is too few for density/coverage with prdc_nearest_k="
                f"{chosen['prdc_nearest_k']}; use at least {chosen['prdc_nearest_k'] + 2} samples"
            )
        if chosen["isc"] and chosen["num_fake"] < chosen["isc_splits"]:
            raise ConfigError(
                f"metrics.num_fake={chosen['num_fake']} is fewer than metrics.isc_splits={chosen['isc_splits']}"
            )
        return MetricSettings(**chosen)


def metric_names(settings: MetricSettings, resolution: int) -> dict[str, str]:
    """Logged names, e.g. {'fid': 'fid5k_train32', 'precision': 'precision5k_train32_vgg16', ...}."""
    s, n = settings, settings.num_fake
    names = {
        kind: metric_name(kind, n, s.reference_split, resolution, s.resizer) for kind in ("fid", "kid", "isc")
    }
    features = s.prc_features
    resizer = s.resizer if features == "inception" else "legacy"  # VGG16 always takes torch-fidelity's resize
    for kind, count in (
        ("precision", n),
        ("recall", n),
        ("density", min(n, PRDC_MAX)),
        ("coverage", min(n, PRDC_MAX)),
    ):
        names[kind] = metric_name(kind, count, s.reference_split, resolution, resizer, features)
    for kind, k in s.extra.items():
        resizer = "legacy" if k.features == VGG else s.resizer  # as for precision/recall above
        names[kind] = metric_name(kind, n, s.reference_split, resolution, resizer, FEATURE_KEYS[k.features])
    return names


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
    resolution: int | None = None,
) -> Iterator[Tensor]:
    """uint8 batches of samples [start, stop) of a seeded stream of `num` samples of generate(z, labels).

    Every sample's noise depends only on the seed and its index, so DDP ranks can each take a slice of the
    stream and, gathered, score exactly the images one process would. Images are reduced to `resolution`
    (default: as generated) before they are quantized.
    """
    stop = num if stop is None else stop
    rng = seeded(seed)
    for first in range(0, max(num, stop), batch_size):
        z = latents(batch_size, z_dim, rng)
        labels = uniform_labels(batch_size, num_classes, rng)
        lo, hi = max(start, first) - first, min(stop, first + batch_size) - first
        if hi <= lo:
            continue
        with torch.no_grad():
            images = generate(z[lo:hi].to(device), None if labels is None else labels[lo:hi].to(device))
        yield generated_to_uint8(images, resolution or images.shape[-1]).cpu()


class Evaluator:
    """Scores generated images against a dataset's reference split: one pass per image through each network.

    `model_resolution` is the generated images' size (default: the datamodule's training resolution).
    """

    def __init__(
        self,
        settings: MetricSettings,
        datamodule: Any,
        dataset_cfg: Mapping[str, Any],
        device: torch.device | str,
        model_resolution: int | None = None,
    ) -> None:
        self.settings = s = settings.resolved(device)
        self.device = device
        self.datamodule = datamodule
        self.dataset_cfg = dataset_cfg
        self.model_resolution = model_resolution or datamodule.resolution
        self.native_resolution = datamodule.native_resolution() if datamodule is not None else None
        self.resolution = protocols.metric_resolution(
            s.resolution, self.model_resolution, self.native_resolution
        )
        self.weights = resolve_weights(s.inception_weights)
        self.extractor = build_inception(self.weights, device)
        if s.isc:
            check_inception_score_possible(self.extractor, self.weights)
        needs_vgg = (s.prc and s.prc_features == "vgg16") or any(k.features == VGG for k in s.extra.values())
        self.vgg_weights = (
            resolve_weights(s.vgg16_weights, "GAN_LAB_VGG16_WEIGHTS", "metrics.vgg16_weights")
            if needs_vgg
            else None
        )
        self.vgg = build_vgg16(self.vgg_weights, device) if needs_vgg else None
        self.names = metric_names(s, self.resolution)
        self.cache = ReferenceFeatures(s.cache_dir)
        self._reference: dict[str, Tensor] | None = None

    def protocol(self) -> dict[str, Any]:
        """Everything that makes a number comparable, for evaluate's JSON and the logs."""
        s = self.settings
        reduced = self.model_resolution != self.resolution
        described = {
            "name": s.protocol or "custom",
            "num_fake": s.num_fake,
            "num_real": s.num_real,
            "reference_split": s.reference_split,
            "resolution": self.resolution,
            "resolution_setting": s.resolution,
            "model_resolution": self.model_resolution,
            "native_resolution": self.native_resolution,
            "downsampling": "box filter (area mean) in float, then quantized once" if reduced else "none",
            "resizer": s.resizer,
            "resizer_detail": protocols.RESIZERS[s.resizer],
            "inception_weights": self.weights or "torch-fidelity download (pt_inception-2015-12-05)",
            "kid": {"subsets": s.kid_subsets, "subset_size": s.kid_subset_size},
        }
        if s.prc:
            described["prc"] = {
                "features": s.prc_features, "precision_recall_k": s.prc_neighborhood,
                "density_coverage_k": s.prdc_nearest_k, "density_coverage_max_samples": PRDC_MAX,
            }  # fmt: skip
        if s.extra:
            described["extra"] = {
                name: {
                    "class": f"{type(k).__module__}.{type(k).__qualname__}", "description": k.description,
                    "features": FEATURE_KEYS[k.features], "higher_is_better": k.higher_is_better,
                }
                for name, k in s.extra.items()
            }  # fmt: skip
        if s.protocol:
            described["source"] = protocols.PROTOCOLS[s.protocol].source
        return described

    def describe(self) -> str:
        """One line: the protocol in words, e.g. for the log of a training run."""
        p = self.protocol()
        real = "all" if p["num_real"] == protocols.ALL else p["num_real"]
        return (
            f"{p['name']}: {p['num_fake']} generated vs {real} {p['reference_split']} images at "
            f"{p['resolution']}² (generator {p['model_resolution']}², dataset native "
            f"{p['native_resolution'] or 'mixed/unknown'}), {p['resizer']} resize into Inception"
        )

    def _reference_dataset(self) -> Dataset:
        s = self.settings
        try:
            return self.datamodule.reference_dataset(s.reference_split, self.resolution)
        except ConfigError as err:
            if not s.protocol:
                raise
            raise ConfigError(
                f"metrics.protocol={s.protocol} compares with the {s.reference_split} split: {err}"
            ) from err

    def needs_reference(self) -> bool:
        """Whether any metric asked for is measured against real images."""
        s = self.settings
        return s.fid or s.kid or s.prc or any(k.has_reference for k in s.extra.values())

    def reference(self) -> dict[str, Tensor]:
        """Features of the reference split ({POOL: (num_real, 2048)[, LOGITS: (num_real, 1008)][, VGG:
        (num_real, 4096)]}), cached; the logits only when a kind of metrics.extra compares them."""
        if self._reference is not None:
            return self._reference
        s = self.settings
        num = None if s.num_real == protocols.ALL else s.num_real
        ident = dataset_identity(self.dataset_cfg)
        fix = (
            f"metrics.protocol={s.protocol} needs {num} {s.reference_split} images: choose a protocol your data has "
            "enough images for, or drop it and set metrics.num_real"
            if s.protocol
            else ""
        )

        def batches() -> Iterator[Tensor]:
            return image_batches(
                self._reference_dataset(), num, s.batch_size, getattr(self.datamodule, "num_workers", 0),
                f"the {s.reference_split} split", fix,
            )  # fmt: skip

        extracted: dict[str, Tensor] = {}

        def inception(which: str) -> Callable[[], Tensor]:
            def features() -> Tensor:  # one pass gives both outputs, whichever the cache misses
                if not extracted:
                    extracted.update(extract_features(self.extractor, batches(), self.device, s.resizer))
                return extracted[which]

            return features

        images = (ident, s.reference_split, self.resolution, s.num_real)
        key = self.cache.key(*images, self.weights, "inception", s.resizer)
        self._reference = {POOL: self.cache.get(key, inception(POOL))}
        if any(k.has_reference and k.features == LOGITS for k in s.extra.values()):
            key = self.cache.key(*images, self.weights, "inception-logits", s.resizer)
            self._reference[LOGITS] = self.cache.get(key, inception(LOGITS))
        if self.vgg is not None:

            def vgg() -> Tensor:
                return torch.cat([self.vgg(b.to(self.device))[0].float().cpu() for b in batches()])

            key = self.cache.key(
                ident, s.reference_split, self.resolution, s.num_real, self.vgg_weights, "vgg16"
            )
            self._reference[VGG] = self.cache.get(key, torch.no_grad()(vgg))
        return self._reference

    def generated(
        self,
        generate: Callable[[Tensor, Tensor | None], Tensor],
        z_dim: int,
        num_classes: int,
        seed: int = RNG_SEED,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[Tensor]:
        """uint8 batches of the generator's samples at the metric resolution (see generated_batches)."""
        s = self.settings
        return generated_batches(
            generate,
            s.num_fake,
            z_dim,
            num_classes,
            s.batch_size,
            self.device,
            seed,
            start,
            stop,
            self.resolution,
        )

    def fake_features(self, batches: Iterable[Tensor]) -> dict[str, Tensor]:
        """Features of uint8 batches of generated images (at the metric resolution)."""
        return extract_features(self.extractor, batches, self.device, self.settings.resizer, self.vgg)

    def score(self, fake: dict[str, Tensor]) -> dict[str, Any]:
        """Metrics of fake features against the reference, plus the settings that make them comparable."""
        s = self.settings
        needs_reference = self.needs_reference()
        results = compute_metrics(fake, self.reference() if needs_reference else None, s)
        return {
            **results,
            "num_fake": len(fake[POOL]),
            "num_real": len(self._reference[POOL]) if needs_reference else s.num_real,
            "reference_split": s.reference_split,
            "resolution": self.resolution,
            "inception_weights": self.weights or "torch-fidelity download",
        }

    def named(self, results: Mapping[str, Any]) -> dict[str, float]:
        """{logged name: value}, e.g. {'fid5k_train32': 31.2, 'kid5k_train32': 0.01, 'kid5k_train32_std': ...}."""
        out = {}
        for kind in self.names:
            for key, suffix in ((kind, ""), (f"{kind}_mean", ""), (f"{kind}_std", "_std")):
                if key in results:
                    out[self.names[kind] + suffix] = float(results[key])
        return out


def settings_from_config(metrics_cfg: Mapping[str, Any]) -> MetricSettings:
    """MetricSettings from conf/metrics (keys that only steer the in-loop schedule are skipped); the kinds of
    metrics.extra are built and registered for this process (registry.register_extra)."""
    known = MetricSettings.__dataclass_fields__
    chosen = {k: v for k, v in metrics_cfg.items() if k in known and k != "extra"}
    return MetricSettings(**chosen, extra=register_extra(metrics_cfg.get("extra"), reserved=SCORE_FIELDS))
