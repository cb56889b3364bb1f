"""Metric values from features: torch-fidelity's FID/KID/IS/precision/recall, prdc's density/coverage, and the
metric kinds of metrics.extra by their own `compute`."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from gan_lab.errors import GanLabError
from gan_lab.metrics.features import LOGITS, POOL, PRC_FEATURES

if TYPE_CHECKING:
    from gan_lab.metrics.evaluator import MetricSettings
    from gan_lab.metrics.registry import MetricKind

# torch-fidelity's defaults, so gan_lab and `fidelity --kid` agree unless told otherwise.
RNG_SEED = 2020
PRDC_MAX = 10_000  # density/coverage hold three N x N distance matrices in memory: at most this many per side


def compute_metrics(
    fake: dict[str, Tensor], real: dict[str, Tensor] | Tensor | None, settings: MetricSettings
) -> dict[str, float]:
    """FID / KID (mean, std) / IS (mean, std) / precision, recall, density, coverage from features, and
    every kind of settings.extra under its name (NAME, and NAME_std for a spread).

    `real` holds the reference features by key (POOL, and VGG for VGG16 precision/recall); a tensor is POOL.
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    real = {POOL: real} if isinstance(real, Tensor) else (real or {})
    results: dict[str, float] = {}
    if settings.fid:
        stats_fake, stats_real = (
            fid_features_to_statistics(fake[POOL]),
            fid_features_to_statistics(real[POOL]),
        )
        results["fid"] = fid_statistics_to_metric(stats_fake, stats_real, verbose=False)[
            "frechet_inception_distance"
        ]
    if settings.kid:
        subset_size = min(settings.kid_subset_size, len(fake[POOL]), len(real[POOL]))
        kid = kid_features_to_metric(
            fake[POOL], real[POOL], kid_subsets=settings.kid_subsets, kid_subset_size=subset_size,
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
    if settings.prc:
        key = PRC_FEATURES[settings.prc_features]
        results.update(precision_recall(fake[key], real[key], settings.prc_neighborhood))
        results.update(density_coverage(fake[key], real[key], settings.prdc_nearest_k))
    results.update(extra_metrics(fake, real, settings.extra))
    return results


def extra_metrics(
    fake: dict[str, Tensor], real: dict[str, Tensor], kinds: Mapping[str, MetricKind]
) -> dict[str, float]:
    """{name: value[, name_std: spread]} of metric kinds of one's own, each from its own feature key."""
    results: dict[str, float] = {}
    for name, kind in kinds.items():
        value = kind.compute(fake[kind.features], real[kind.features] if kind.has_reference else None)
        if isinstance(value, Mapping):
            if "value" not in value:
                raise GanLabError(
                    f"{type(kind).__name__}.compute returned {sorted(value)}; return a float or "
                    "{'value': v, 'std': s}"
                )
            if "std" in value:
                results[f"{name}_std"] = float(value["std"])
            value = value["value"]
        results[name] = float(value)
    return results


def precision_recall(fake: Tensor, real: Tensor, neighborhood: int) -> dict[str, float]:
    """Improved precision and recall (k-NN manifolds), by torch-fidelity's prc."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    big = max(len(fake), len(real)) > 10_000  # its full distance matrix would take N² floats: go in parts
    out = prc_features_to_metric(
        fake, real, prc_neighborhood=neighborhood, prc_batch_size=10_000, save_cpu_ram=big, verbose=False
    )
    return {"precision": out["precision"], "recall": out["recall"]}


def density_coverage(fake: Tensor, real: Tensor, nearest_k: int) -> dict[str, float]:
    """Density and coverage by the prdc package, on the first PRDC_MAX samples of each side."""
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the sample counts
        out = compute_prdc(
            real_features=real[:PRDC_MAX].numpy(), fake_features=fake[:PRDC_MAX].numpy(), nearest_k=nearest_k
        )
    return {"density": float(out["density"]), "coverage": float(out["coverage"])}
