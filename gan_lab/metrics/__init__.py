"""Evaluation: metric names and directions (registry), protocols, Inception features and the Evaluator."""

from gan_lab.metrics.evaluator import (
    LOGITS,
    POOL,
    REFERENCE_SEED,
    RNG_SEED,
    WEIGHTS_ENV,
    Evaluator,
    MetricSettings,
    ReferenceFeatures,
    build_inception,
    check_inception_score_possible,
    compute_metrics,
    dataset_identity,
    extract_features,
    generated_batches,
    image_batches,
    metric_names,
    resolve_weights,
    settings_from_config,
)
from gan_lab.metrics.registry import KINDS, better, count_name, higher_is_better, kind_of, metric_name

__all__ = [
    "KINDS", "LOGITS", "POOL", "REFERENCE_SEED", "RNG_SEED", "WEIGHTS_ENV", "Evaluator", "MetricSettings",
    "ReferenceFeatures", "better", "build_inception", "check_inception_score_possible", "compute_metrics",
    "count_name", "dataset_identity", "extract_features", "generated_batches", "higher_is_better",
    "image_batches", "kind_of", "metric_name", "metric_names", "resolve_weights", "settings_from_config",
]  # fmt: skip
