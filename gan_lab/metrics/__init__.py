"""Evaluation: metric names and directions (registry), protocols, feature networks and the Evaluator."""

from gan_lab.metrics.evaluator import (
    Evaluator,
    MetricSettings,
    generated_batches,
    metric_names,
    settings_from_config,
)
from gan_lab.metrics.features import (
    LOGITS,
    POOL,
    VGG,
    WEIGHTS_ENV,
    build_inception,
    check_inception_score_possible,
    extract_features,
    resolve_weights,
)
from gan_lab.metrics.protocols import PROTOCOLS, Protocol
from gan_lab.metrics.reference import REFERENCE_SEED, ReferenceFeatures, dataset_identity, image_batches
from gan_lab.metrics.registry import (
    KINDS,
    MetricKind,
    better,
    count_name,
    higher_is_better,
    kind_of,
    metric_name,
    register,
    register_extra,
    unregister,
)
from gan_lab.metrics.scores import RNG_SEED, compute_metrics

__all__ = [
    "KINDS", "LOGITS", "POOL", "PROTOCOLS", "REFERENCE_SEED", "RNG_SEED", "VGG", "WEIGHTS_ENV", "Evaluator",
    "MetricKind", "MetricSettings", "Protocol", "ReferenceFeatures", "better", "build_inception",
    "check_inception_score_possible", "compute_metrics", "count_name", "dataset_identity", "extract_features",
    "generated_batches", "higher_is_better", "image_batches", "kind_of", "metric_name", "metric_names",
    "register", "register_extra", "resolve_weights", "settings_from_config", "unregister",
]  # fmt: skip
