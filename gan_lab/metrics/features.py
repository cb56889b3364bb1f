"""The feature networks of the metrics (torch-fidelity's FID Inception-v3 and VGG16) and how images reach them.

Images arrive as uint8 (N, 3, R, R) at the metric resolution. With the `legacy` resizer they enter
torch-fidelity's Inception as they are (it resizes to 299² itself, bilinearly as TF-FID did); with `clean`,
clean-fid's own resize function turns them into float 299² images first, which enter unquantized.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gan_lab.errors import ConfigError, GanLabError, WeightsUnavailable
from gan_lab.utils import compat

WEIGHTS_ENV = "GAN_LAB_INCEPTION_WEIGHTS"
POOL, LOGITS = "2048", "logits_unbiased"  # Inception outputs: pool features and the classifier's logits
VGG = "fc2_relu"  # VGG16's 4096-d fc2 after ReLU: torch-fidelity's features for precision/recall
PRC_FEATURES = {"vgg16": VGG, "inception": POOL}  # metrics.prc_features -> the feature key


def resolve_weights(
    path: str | None, env: str = WEIGHTS_ENV, key: str = "metrics.inception_weights"
) -> str | None:
    """A local weights file (argument, then $env), or None for the standard download."""
    path = path or os.environ.get(env) or None
    if path is not None and not Path(path).expanduser().is_file():
        raise ConfigError(f"weights file {path} not found; check {key} / ${env}")
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


def build_vgg16(weights: str | None, device: torch.device | str = "cpu") -> torch.nn.Module:
    """torch-fidelity's VGG16 (torchvision's ImageNet weights) returning fc2 after ReLU (4096) for uint8 images."""
    from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the download progress of a failed attempt
            extractor = FeatureExtractorVGG16("vgg16", [VGG], feature_extractor_weights_path=weights)
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as err:
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        where = f"from {weights}" if weights else "(download failed)"
        raise GanLabError(
            f"precision/recall need VGG16 weights, which could not be loaded {where}: {reason}; pass "
            "torchvision's vgg16-397923af.pth as metrics.vgg16_weights=PATH, or measure in Inception's "
            "feature space with metrics.prc_features=inception"
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


def clean_resize(images: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) -> float32 (N, 3, 299, 299) in [0, 255] by clean-fid's own `clean` resize function."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")  # PIL bicubic per channel on float32, no quantization after
    arrays = [resize(image) for image in images.permute(0, 2, 3, 1).cpu().numpy()]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def inception_on_resized(extractor: torch.nn.Module, images: Tensor) -> tuple[Tensor, ...]:
    """torch-fidelity's Inception on float images already at 299² (clean-fid's resize), not quantized again.

    Its forward takes uint8 only and starts with its own resize; for this call that resize returns the float
    batch (compat: torch-fidelity 0.3-0.4 looks the function up in its module at call time; a test checks
    that integer-valued input gives exactly the uint8 path's features).
    """
    placeholder = torch.zeros((len(images), 3, 1, 1), dtype=torch.uint8, device=images.device)
    with compat.inception_resize_returning(images):
        return extractor(placeholder)


@torch.no_grad()
def extract_features(
    extractor: torch.nn.Module,
    batches: Iterable[Tensor],
    device: torch.device | str,
    resizer: str = "legacy",
    vgg: torch.nn.Module | None = None,
) -> dict[str, Tensor]:
    """{'2048': (N, 2048), 'logits_unbiased': (N, 1008)[, 'fc2_relu': (N, 4096)]} float32 on the CPU.

    From uint8 batches (B, 3, H, W); one pass over the batches feeds Inception (through the resizer) and,
    when given, VGG16 (its own resize).
    """
    out: dict[str, list[Tensor]] = {POOL: [], LOGITS: []}
    if vgg is not None:
        out[VGG] = []
    for batch in batches:
        if batch.dtype != torch.uint8:
            raise TypeError(f"Inception features take uint8 images, got {batch.dtype}; convert with to_uint8")
        if resizer == "clean":
            pool, logits = inception_on_resized(extractor, clean_resize(batch).to(device))
        else:
            pool, logits = extractor(batch.to(device))
        out[POOL].append(pool.float().cpu())
        out[LOGITS].append(logits.float().cpu())
        if vgg is not None:
            out[VGG].append(vgg(batch.to(device))[0].float().cpu())
    return {key: torch.cat(parts) for key, parts in out.items()}
