"""The benchmark's two commands: throughput (training and FID features) and quality at a fixed time budget.

Every figure is a ratio of contenders measured in the same process, one after the other in each repeat
(A B C, A B C, ...), so a slow spell of the machine hits all of them; repeats give median and min-max.
The contenders themselves (gan_lab's run, the baselines' inputs) are defined in `contenders`.
"""

from __future__ import annotations

import gc
import logging
import shutil
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from benchmarks.contenders import (
    CLASSIC_NZ,
    PlainBatches,
    UInt8Images,
    check_overrides,
    gan_lab_overrides,
    load_images,
    run_gan_lab,
    speed_text,
)
from benchmarks.loops import (
    RunSpeed,
    StepClock,
    build_plain,
    classic_dataset,
    classic_loader,
    classic_loop,
    classic_nets,
    plain_loop,
)
from benchmarks.measure import (
    count_flops,
    matmul_flops_per_s,
    overheads,
    paired_ratios,
    steady_rate,
    step_intervals,
    summarize,
)
from gan_lab.utils.config import compose_config
from gan_lab.utils.machine import machine

log = logging.getLogger("benchmarks")

# --- throughput ---------------------------------------------------------------------------------------------


@dataclass
class ThroughputOptions:
    """What the throughput command measures and how long; defaults take ~8 minutes on a 2-core CPU."""

    data_root: Path
    repeats: int = 5
    warmup: int = 5
    steps: int = 30
    classic_warmup: int = 2
    classic_steps: int = 12
    batch_size: int = 128
    resolution: int = 64
    model: str = "dcgan"
    width: int | None = None
    overrides: list[str] = field(default_factory=list)
    classic_workers: int = 1
    fid: bool = True
    fid_images: int = 128
    fid_batch: int = 64
    fid_repeats: int = 3
    inception_weights: str | None = None
    matmul_sizes: tuple[int, ...] = (1024, 2048, 4096)
    matmul_time_s: float = 1.0
    seed: int = 0


def throughput(opts: ThroughputOptions, workdir: Path) -> dict[str, Any]:
    """Training throughput of gan_lab, the plain loop and the classic design, then FID feature throughput."""
    started = time.perf_counter()
    host = machine()  # before anything runs: the load average says whether the machine was idle
    base = gan_lab_overrides(opts.data_root, opts.model, opts.resolution, opts.batch_size, opts.width, ())
    extra, notes = check_overrides(opts.overrides, base)
    overrides = base + extra
    log.info("gan_lab overrides: %s", " ".join(overrides))

    log.info("matmul FLOP/s (n = %s)", ", ".join(map(str, opts.matmul_sizes)))
    by_size = {
        str(n): {
            "bf16": matmul_flops_per_s(torch.bfloat16, n, opts.matmul_time_s),
            "fp32": matmul_flops_per_s(torch.float32, n, opts.matmul_time_s),
        }
        for n in opts.matmul_sizes
    }
    # The limit is the best any size reached: the fastest this machine multiplies in that precision.
    matmul = {
        "sizes": by_size,
        "bf16_flops_per_s": max(v["bf16"] for v in by_size.values()),
        "fp32_flops_per_s": max(v["fp32"] for v in by_size.values()),
    }

    training = _training_throughput(opts, overrides, workdir)
    flops = _step_flops(opts, overrides, workdir, training["gan_lab_speed"])
    contenders = training["contenders"]
    for name, contender in contenders.items():
        contender["flops_per_step"] = flops[name]
        contender["bf16_limit_fraction"] = summarize(
            [flops[name] * rate / matmul["bf16_flops_per_s"] for rate in contender["g_steps_per_s"]["values"]]
        )
    gan, plain, classic = (contenders[k]["images_per_s"]["values"] for k in ("gan_lab", "plain", "classic"))
    results: dict[str, Any] = {}
    results["training"] = {
        "machine": host,
        "notes": notes,
        "settings": {
            **{k: v for k, v in asdict(opts).items() if not k.startswith(("fid", "matmul", "inception"))},
            "data_root": str(opts.data_root),
            "gan_lab_overrides": overrides,
            "gan_lab_speed": training["gan_lab_speed"],
        },
        "contenders": contenders,
        "ratios": {
            "framework_overhead": summarize(overheads(gan, plain)),
            "end_to_end_speedup": summarize(paired_ratios(gan, classic)),
        },
        "matmul": matmul,
        "targets": {"framework_overhead_max": 0.03, "end_to_end_speedup_min": 2.5},
    }
    results["training"]["duration_s"] = round(time.perf_counter() - started, 1)
    if opts.fid:
        results["fid_features"] = {"machine": host, **fid_throughput(opts)}
    log.info("throughput done in %.0f s", time.perf_counter() - started)
    return results


def _training_throughput(opts: ThroughputOptions, overrides: list[str], workdir: Path) -> dict[str, Any]:
    """Each repeat runs gan_lab, the plain loop and the classic design once, in that order."""
    times: dict[str, list[list[float]]] = {"gan_lab": [], "plain": [], "classic": []}
    speed: RunSpeed | None = None
    plain_batches = None
    classic_data = classic_dataset(opts.data_root, opts.resolution)
    total = opts.warmup + opts.steps + 1  # one step past the window: end-of-run work stays outside it
    windows = {"gan_lab": (opts.warmup, opts.steps), "plain": (opts.warmup, opts.steps)}
    windows["classic"] = (opts.classic_warmup, opts.classic_steps)

    walls: dict[str, list[float]] = {name: [] for name in times}
    began = time.perf_counter()

    def done(name: str, repeat: int, stamps: list[float]) -> None:
        nonlocal began
        times[name].append(stamps)
        walls[name].append(round(time.perf_counter() - began, 1))
        began = time.perf_counter()
        rate = steady_rate(stamps, *windows[name])
        log.info(
            "repeat %d %s: %.1f images/s (%.0f s with set-up)",
            repeat,
            name,
            rate * opts.batch_size,
            walls[name][-1],
        )

    for repeat in range(opts.repeats):
        # gan_lab, as `python -m gan_lab.train` runs it.
        run_dir = workdir / f"gan_lab_{repeat}"
        module, timer = run_gan_lab(overrides, run_dir, total)
        speed = speed or timer.speed or RunSpeed()
        device = speed.device  # the baselines run where gan_lab ran
        del module
        shutil.rmtree(run_dir, ignore_errors=True)
        gc.collect()
        done("gan_lab", repeat, timer.clock.times)  # type: ignore[union-attr]

        # The plain loop: same config, gan_lab's resolved speed settings, gan_lab's batches.
        cfg = compose_config([*overrides, f"steps={total}"], run_dir)
        plain_batches = plain_batches or PlainBatches(instantiate(cfg.dataset), device)
        torch.manual_seed(opts.seed + repeat)
        gan = build_plain(cfg, speed)
        clock = StepClock(max_steps=total, device=device)
        plain_loop(gan, plain_batches, clock)
        del gan
        gc.collect()
        done("plain", repeat, clock.times)

        # The classic example's design.
        torch.manual_seed(opts.seed + repeat)
        net_g, net_d = (net.to(device) for net in classic_nets(CLASSIC_NZ, opts.width or 64))
        loader = classic_loader(classic_data, opts.batch_size, opts.classic_workers)
        clock = StepClock(max_steps=opts.classic_warmup + opts.classic_steps + 1, device=device)
        classic_loop(net_g, net_d, loader, clock, CLASSIC_NZ)
        del net_g, net_d, loader
        gc.collect()
        done("classic", repeat, clock.times)

    speed = speed or RunSpeed()
    descriptions = {
        "gan_lab": f"gan_lab `train()`, model={opts.model}, {speed_text(speed)}",
        "plain": f"plain PyTorch loop, same nets, loss, optimizers and batches, {speed_text(speed)}",
        "classic": f"classic DCGAN example design: fp32, ImageFolder, {opts.classic_workers} worker",
    }
    contenders = {}
    for name, runs in times.items():
        warmup, steps = windows[name]
        rates = [steady_rate(stamps, warmup, steps) for stamps in runs]
        contenders[name] = {
            "description": descriptions[name],
            "g_steps_per_s": summarize(rates),
            "images_per_s": summarize([rate * opts.batch_size for rate in rates]),
            # Seconds of each timed step, per repeat: a spike here is the machine, not the contender.
            "step_s": [[round(s, 4) for s in step_intervals(stamps, warmup, steps)] for stamps in runs],
            "wall_s": walls[name],  # each run with its set-up, for planning the benchmark's duration
        }
    return {"contenders": contenders, "gan_lab_speed": speed.as_dict()}


def _step_flops(
    opts: ThroughputOptions, overrides: list[str], workdir: Path, speed: dict[str, Any]
) -> dict[str, int]:
    """Model FLOPs of one D + G step of each contender."""
    plain = step_flops(overrides, opts.batch_size, opts.resolution, workdir, speed.get("fused"))
    classic = classic_step_flops(opts.batch_size, opts.resolution, opts.width or 64)
    # gan_lab runs the plain loop's computation (tests/test_bench.py checks equal weights after training).
    return {"gan_lab": plain, "plain": plain, "classic": classic}


def step_flops(
    overrides: list[str], batch_size: int, resolution: int, workdir: Path, fused: bool | None = None
) -> int:
    """Model FLOPs of one D + G step of a gan_lab config, as the plain loop runs it (fp32 on the CPU,
    uncompiled: the count is the same in bf16)."""
    cfg = compose_config([*overrides, "steps=1"], workdir / "flops")
    real = torch.randn(batch_size, 3, resolution, resolution)
    batches = [(real, torch.zeros(batch_size, dtype=torch.long))]
    gan = build_plain(cfg, RunSpeed(fused=fused))
    return count_flops(lambda: plain_loop(gan, batches, StepClock(max_steps=1)))


def classic_step_flops(batch_size: int, resolution: int, width: int = 64) -> int:
    """Model FLOPs of one D + G step of the classic DCGAN design."""
    net_g, net_d = classic_nets(CLASSIC_NZ, width)
    real = torch.randn(batch_size, 3, resolution, resolution)
    batches = [(real, torch.zeros(batch_size, dtype=torch.long))]
    return count_flops(lambda: classic_loop(net_g, net_d, batches, StepClock(max_steps=1)))  # type: ignore


# --- FID features -------------------------------------------------------------------------------------------


def fid_throughput(opts: ThroughputOptions) -> dict[str, Any]:
    """Inception feature images/s: gan_lab's Evaluator against torch-fidelity's own pipeline, same images."""
    from benchmarks.shared import inception_weights

    weights = opts.inception_weights or inception_weights()
    if weights is None:
        return {"skipped": "no Inception weights (set GAN_LAB_INCEPTION_WEIGHTS or --inception-weights)"}
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    from gan_lab.metrics import LOGITS, POOL, Evaluator, MetricSettings

    images = load_images(opts.data_root, opts.fid_images, opts.resolution)
    settings = MetricSettings(fid=True, kid=False, inception_weights=weights, batch_size=opts.fid_batch)
    evaluator = Evaluator(settings, None, {}, "cpu", model_resolution=opts.resolution)
    extractor = create_feature_extractor(
        "inception-v3-compat",
        [POOL, LOGITS],
        cuda=False,
        feature_extractor_weights_path=weights,
        verbose=False,
    )

    def gan_lab_features(x: Tensor) -> Tensor:
        return evaluator.fake_features(x.split(opts.fid_batch))[POOL]

    def fidelity_features(x: Tensor) -> Tensor:
        # The path torch_fidelity.calculate_metrics takes for a Dataset input, with its defaults.
        out = get_featuresdict_from_dataset(UInt8Images(x), extractor, opts.fid_batch, False, False, False)
        return out[POOL]

    contenders = {"gan_lab": gan_lab_features, "torch_fidelity": fidelity_features}
    for extract in contenders.values():
        extract(images[:2])  # warm-up: first-call kernel selection
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    features: dict[str, Tensor] = {}
    for repeat in range(opts.fid_repeats):
        for name, extract in contenders.items():
            start = time.perf_counter()
            features[name] = extract(images)
            rates[name].append(len(images) / (time.perf_counter() - start))
            log.info("FID features repeat %d %s: %.2f images/s", repeat, name, rates[name][-1])
    return {
        "images": len(images),
        "batch_size": opts.fid_batch,
        "resolution": opts.resolution,
        "weights": weights,
        "gan_lab": summarize(rates["gan_lab"]),
        "torch_fidelity": summarize(rates["torch_fidelity"]),
        "speedup": summarize(paired_ratios(rates["gan_lab"], rates["torch_fidelity"])),
        "max_abs_feature_difference": float((features["gan_lab"] - features["torch_fidelity"]).abs().max()),
    }


# --- quality at a fixed time budget -------------------------------------------------------------------------


@dataclass
class QualityOptions:
    """FID-5k against 10k train images after `minutes` of training each: gan_lab preset vs classic design."""

    data_root: Path
    minutes: float = 20.0
    model: str = "sndcgan"
    batch_size: int = 128
    resolution: int = 64
    width: int | None = None
    overrides: list[str] = field(default_factory=list)
    num_fake: int = 5000
    num_real: int = 10000
    fid_batch: int = 64
    classic_workers: int = 1
    inception_weights: str | None = None
    cache_dir: str | None = None
    seed: int = 0


def quality(opts: QualityOptions, workdir: Path) -> dict[str, Any]:
    """Train gan_lab's preset and the classic design for the same wall time, then FID both the same way."""
    from benchmarks.shared import inception_weights
    from gan_lab.metrics import Evaluator, MetricSettings

    started = time.perf_counter()
    weights = opts.inception_weights or inception_weights()
    if weights is None:
        raise RuntimeError(
            "FID needs the Inception weights: set GAN_LAB_INCEPTION_WEIGHTS or --inception-weights"
        )
    host = machine()
    budget_s = opts.minutes * 60
    base = gan_lab_overrides(opts.data_root, opts.model, opts.resolution, opts.batch_size, opts.width, ())
    extra, notes = check_overrides(opts.overrides, base)
    overrides = base + extra
    # A budget in steps that time always ends first.
    module, timer = run_gan_lab(overrides, workdir / "gan_lab", steps=10**9, budget_s=budget_s)
    cfg = compose_config([*overrides, "steps=1"], workdir / "gan_lab")
    gan_train = _trained(timer.clock, opts.batch_size)  # type: ignore[arg-type]
    log.info("gan_lab trained %d G steps in %.0f s", gan_train["g_steps"], gan_train["train_s"])

    torch.manual_seed(opts.seed)
    device = module.device  # the classic design runs where gan_lab ran
    net_g, net_d = (net.to(device) for net in classic_nets(CLASSIC_NZ, opts.width or 64))
    clock = StepClock(budget_s=budget_s, device=str(device))
    loader = classic_loader(
        classic_dataset(opts.data_root, opts.resolution), opts.batch_size, opts.classic_workers
    )
    classic_loop(net_g, net_d, loader, clock, CLASSIC_NZ)
    del loader
    classic_train = _trained(clock, opts.batch_size)
    log.info("classic trained %d G steps in %.0f s", classic_train["g_steps"], classic_train["train_s"])

    settings = MetricSettings(
        fid=True,
        kid=False,
        num_fake=opts.num_fake,
        num_real=opts.num_real,
        batch_size=opts.fid_batch,
        inception_weights=weights,
        cache_dir=opts.cache_dir,
    )
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    evaluator = Evaluator(settings, instantiate(cfg.dataset), dataset_cfg, device)

    def classic_generate(z: Tensor, labels: Tensor | None) -> Tensor:
        return net_g(z.view(z.shape[0], CLASSIC_NZ, 1, 1))

    fids = {}
    # Both generators sample the same noise in eval mode (BN running statistics), as gan_lab's evaluate does.
    net_g.eval()
    for name, generate, z_dim in (
        ("gan_lab", module.generate, module.z_dim),
        ("classic", classic_generate, CLASSIC_NZ),
    ):
        batches = evaluator.generated(generate, z_dim, 0)
        fids[name] = evaluator.score(evaluator.fake_features(batches))["fid"]
        log.info("%s FID: %.2f", name, fids[name])
    return {
        "machine": host,
        "notes": notes,
        "settings": {
            **{k: v for k, v in asdict(opts).items() if k != "overrides"},
            "data_root": str(opts.data_root),
            "gan_lab_overrides": overrides,
            "gan_lab_speed": timer.speed.as_dict() if timer.speed else None,
        },
        "metric": (
            f"FID-{_count(opts.num_fake)} against {_count(opts.num_real)} train images at {evaluator.resolution}² "
            f"(`{evaluator.names['fid']}`)"
        ),
        "gan_lab": {**gan_train, "fid": fids["gan_lab"], "description": f"gan_lab model={opts.model}"},
        "classic": {**classic_train, "fid": fids["classic"], "description": "classic DCGAN example design"},
        "duration_s": round(time.perf_counter() - started, 1),
    }


def _count(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _trained(clock: StepClock, batch_size: int) -> dict[str, Any]:
    steps = len(clock.times)
    intervals = [b - a for a, b in zip(clock.times, clock.times[1:], strict=False)]
    return {
        "g_steps": steps,
        "images_seen": steps * batch_size,
        "train_s": round(clock.elapsed_s, 1),
        "images_per_s": steps * batch_size / clock.elapsed_s if clock.elapsed_s else None,
        "median_step_s": statistics.median(intervals) if intervals else None,
    }
