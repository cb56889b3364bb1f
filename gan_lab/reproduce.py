"""`python -m gan_lab.reproduce`: train chosen study arms for a declared budget and score them alike.

Each arm is a study preset run as a user runs it (`experiment=... variant=...`), trained for `--minutes` of
wall time (CPU) or the study's `--epochs` (GPU), then scored by `gan_lab.evaluate` under the standard 32²
protocol (generated images reduced to CIFAR's own 32², real training images) and, when the generator is
larger, also at its own resolution (the way the studies scored). Writes reproduction.md into `--out` (the table
beside what each study and the literature report), reproduction.json, a sample grid per arm and the training
curves of all arms.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Timer

from gan_lab.cli import user_errors_as_one_line
from gan_lab.errors import ConfigError
from gan_lab.run.paths import RunDir
from gan_lab.utils.io import atomic_write_text
from gan_lab.utils.machine import machine, machine_line

log = logging.getLogger("gan_lab.reproduce")


@dataclass(frozen=True)
class Arm:
    """One arm of a study: the overrides that select it, what the study found, and a published anchor."""

    name: str
    overrides: tuple[str, ...]
    study: str  # what the study reported for this arm (its finding and protocol)
    anchor: str = ""  # a published number for the same kind of model, with its protocol


# What each study reported for the arm, with the protocol it states and what it leaves unstated (n/s), as
# docs/studies.md summarises the studies' own reports. Published anchors (with their protocols) come from
# PyTorch-StudioGAN's README tables and Mimicry's.
STUDIOGAN_OLD = "StudioGAN README @8ac1fa1: FID-10k vs the 10k test images, 32²"
CGAN_STUDY = (
    "study: FID and KID on Inception features, CIFAR-10, most models 100 epochs; image counts, split, resolution "
    "(32² presumed), Inception port, KID subset size and scale n/s"
)
# gan_lab's own study (experiment=modern_study): what each arm stands for, and the papers' numbers with their protocols.
R3GAN_PAPER = "R3GAN (Huang et al. 2024): FID 1.96 class-conditional (fid50k_full: 50k generated vs the 50k training images, 32²)"
ADA_PAPER = "StyleGAN2-ADA (Karras et al. 2020): FID 2.42 conditional, 2.92 unconditional (fid50k_full)"
MODERN_STUDY = (
    (
        "sndcgan_bce",
        "the 2018 baseline: SN-DCGAN, BCE (in gan_lab's 8-mode test it collapses onto one mode)",
        "SNGAN (standard CNN, Miyato et al. 2018): FID 29.3 (the paper's own protocol)",
    ),
    (
        "resnet_hinge",
        "ResNet-SNGAN with its own setting (hinge, n_critic 5)",
        "SNGAN (ResNet, Miyato et al. 2018): FID 21.7 (the paper's own protocol)",
    ),
    (
        "dcgan_rpgan",
        "the same DCGAN nets with today's loss: RpGAN + R1 + R2 (R3GAN's claim: keeps every mode)",
        R3GAN_PAPER,
    ),
    (
        "r3gan",
        "R3GAN's nets and setting (no normalization, grouped ResNeXt blocks, RpGAN + R1 + R2)",
        f"{R3GAN_PAPER}; {ADA_PAPER}",
    ),
    ("small_sndcgan", "SN-DCGAN on 2,000 training images, no augmentation: D overfits", ADA_PAPER),
    (
        "small_sndcgan_ada",
        "the same 2,000 images with adaptive augmentation (ADA's claim: it stops D overfitting)",
        ADA_PAPER,
    ),
)
LR_SWEEP = {  # lr: (FID, D accuracy, G loss, D loss) after 100 epochs
    "1e-4": ("41.0076", "0.5971", "3.0062", "0.3962"),
    "1e-5": ("117.2166", "0.7393", "2.8577", "0.2060"),
    "1e-6": ("335.2663", "0.5000", "4.2558", "0.0286"),
}
ARMS: dict[str, Arm] = {
    a.name: a
    for a in (
        Arm(
            "cgan_study/dcgan", ("experiment=cgan_study", "variant=cgan_study/dcgan", "scheduler=exponential"),
            "DCGAN 1–4: FID 53 / 54 / 47 / 62, KID 0.04 / 0.04 / 0.03 / 0.47 (likely a typo); DCGAN 3 + improvements "
            f"(which ones n/s): FID 50, KID 0.02 ({CGAN_STUDY})",
            f"DCGAN: FID 49.03 ({STUDIOGAN_OLD}); 48.29 (StudioGAN now: 50k vs train)",
        ),
        Arm(
            "cgan_study/cgan", ("experiment=cgan_study", "variant=cgan_study/cgan", "scheduler=exponential"),
            "CGAN 1–3: FID 36 / 38 / 36, KID 0.02 / 0.02 / 0.018; CGAN 1 + improvements: FID 31, KID 0.01, the "
            f"study's best ({CGAN_STUDY})",
            f"ACGAN: FID 45.57 ({STUDIOGAN_OLD}); ACGAN-Mod 33.39 (StudioGAN now: 50k vs train)",
        ),
        Arm(
            "cgan_study/wgan", ("experiment=cgan_study", "variant=cgan_study/wgan", "scheduler=exponential"),
            "WGAN 1 / WGAN 2 (SN in D): FID 129 / 182, KID 0.08 / 0.19, the study's worst (critic loss without "
            f"sigmoid or logs; GP, critic steps, optimizer n/s; {CGAN_STUDY})",
            f"WGAN-GP: FID 25.85 ({STUDIOGAN_OLD}); 53.98 (StudioGAN now); 26.08 (Mimicry: 50k vs 50k train)",
        ),
        Arm(
            "sn_study/wgan_clip", ("experiment=sn_study", "variant=sn_study/wgan_clip"),
            "no number: the W-WC-DCGAN IS curve is a figure only (turbulent; unstable to ~epoch 50, stable to ~120, "
            "chaotic after; epochs n/s) (study: IS on 1,024 generated images, 5 splits, CIFAR-10, Inception-v3, "
            "port and resizing n/s; on it real CIFAR-10 scores 9.79 ± 0.36, DCGAN plateaus near 5.8)",
            f"WGAN (clipping): FID 159.09 ({STUDIOGAN_OLD}); 107.68 (StudioGAN now: 50k vs train)",
        ),
        *(
            Arm(
                f"sndcgan_lr_sweep/lr{lr}", ("experiment=sndcgan_lr_sweep", f"optim.lr={lr}"),
                f"FID {fid}, D accuracy {acc} (G loss {g_loss}, D loss {d_loss}) (study: CIFAR-10 upsampled to 64², "
                "batch 128, after 100 epochs; FID image counts, real split, resolution, Inception port and how D "
                "accuracy is computed n/s)",
                "SNGAN (standard CNN, Miyato et al. 2018): FID 29.3 (the paper's own protocol)" * (lr == "1e-4"),
            )
            for lr, (fid, acc, g_loss, d_loss) in LR_SWEEP.items()
        ),
        *(
            Arm(f"modern_study/{variant}", ("experiment=modern_study", f"variant=modern_study/{variant}"), claim, anchor)
            for variant, claim, anchor in MODERN_STUDY
        ),
    )
}  # fmt: skip
CPU_ARMS = tuple(ARMS)


@dataclass
class ReproduceOptions:
    data_root: Path | None = (
        None  # CIFAR-10 as an image folder with train/ and test/, or None: dataset=cifar10
    )
    arms: tuple[str, ...] = CPU_ARMS
    minutes: float | None = 4.0  # wall-clock training budget per arm; None: the epochs budget
    epochs: int | None = None  # the studies' budget (100) for a GPU run
    resolution: int = 32  # training resolution (the lr sweep trained 64²; 32² is what a CPU can afford)
    num_fake: int = 1000
    num_real: int = 1000
    protocol: str | None = None  # a named protocol instead of the counts (fid10k_test, fid50k_train, ...)
    inception_weights: str | None = None  # None: $GAN_LAB_INCEPTION_WEIGHTS, else torch-fidelity's download
    cache_dir: str | None = None
    seed: int = 0
    overrides: tuple[str, ...] = ()


def dataset_overrides(opts: ReproduceOptions) -> list[str]:
    if opts.data_root is None:
        return ["dataset=cifar10", f"dataset.resolution={opts.resolution}"]
    return [
        "dataset=folder", f"dataset.root={opts.data_root / 'train'}", f"dataset.test_root={opts.data_root / 'test'}",
        f"dataset.resolution={opts.resolution}",
    ]  # fmt: skip


def train_arm(arm: Arm, opts: ReproduceOptions, run_dir: Path) -> dict[str, Any]:
    """Train one arm as `python -m gan_lab.train` would, under the declared budget; its training record."""
    from gan_lab.train import train
    from gan_lab.utils.config import compose_config

    if opts.epochs:
        budget = ["steps=null", f"trainer.max_epochs={opts.epochs}"]
    else:  # minutes of training time (gan_lab's `budget`); `steps` only as far off as before (schedules)
        budget = ["steps=1000000000", f"budget={opts.minutes}"]
    overrides = [
        *arm.overrides, *dataset_overrides(opts), "metrics=none", f"seed={opts.seed}",
        "trainer.log_every_n_steps=10", "trainer.enable_model_summary=false", *budget, *opts.overrides,
    ]  # fmt: skip
    module = train(compose_config(overrides, output_dir=run_dir))
    timer = next(c for c in module.trainer.callbacks if isinstance(c, Timer))
    return {
        "overrides": overrides,
        "g_steps": module.g_steps,
        "d_steps": module.d_steps,
        "epochs": round(module.d_steps / max(1, module.trainer.num_training_batches), 2),
        "train_s": round(timer.time_elapsed("train"), 1),
        "model_resolution": opts.resolution,
    }


def score_arm(run_dir: Path, opts: ReproduceOptions, resolution: str) -> dict[str, Any]:
    """gan_lab.evaluate on the arm's last checkpoint at metrics.resolution=`resolution`."""
    from gan_lab.evaluate import evaluate
    from gan_lab.utils.config import compose_config

    metrics = [f"metrics.protocol={opts.protocol}"] if opts.protocol else [
        f"metrics.num_fake={opts.num_fake}", f"metrics.num_real={opts.num_real}",
    ]  # fmt: skip
    weights = opts.inception_weights or os.environ.get("GAN_LAB_INCEPTION_WEIGHTS")
    extra = [f"metrics.inception_weights={weights}"] if weights else []
    extra += [f"metrics.cache_dir={opts.cache_dir}"] if opts.cache_dir else []
    cfg = compose_config(
        [f"ckpt={RunDir(run_dir).last_ckpt}", *metrics, f"metrics.resolution={resolution}", *extra,
         f"out={run_dir / f'evaluation_{resolution}.json'}"],
        config_name="evaluate",
    )  # fmt: skip
    report = evaluate(cfg)
    return {
        key: report[key]
        for key in ("metrics", "names", "protocol", "fid", "kid_mean", "num_fake", "num_real")
    }


def reproduce(opts: ReproduceOptions, out_dir: Path, workdir: Path) -> dict[str, Any]:
    """Train and score every arm; write reproduction.md/.json, grids and curves into out_dir."""
    unknown = [a for a in opts.arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm {unknown[0]}; choose from {', '.join(ARMS)}")
    here = {"machine": machine(), "options": _jsonable(opts)}
    results = merged_with_stored(out_dir / "reproduction.json", here, rerun=opts.arms)
    figures = out_dir / "reproduction"
    figures.mkdir(parents=True, exist_ok=True)
    for name in opts.arms:
        arm, run_dir = ARMS[name], workdir / name.replace("/", "__")
        log.info("arm %s: training", name)
        record = {**asdict(arm), **train_arm(arm, opts, run_dir), **here, "scores": {}}
        resolutions = ["native"] + ["model"] * (opts.resolution > 32)
        for resolution in resolutions:
            log.info("arm %s: scoring at metrics.resolution=%s", name, resolution)
            record["scores"][resolution] = score_arm(run_dir, opts, resolution)
        grids = sorted(RunDir(run_dir).samples.glob("step_*.png"))
        if grids:
            shutil.copyfile(grids[-1], figures / f"{name.replace('/', '__')}.png")
        record["run_dir"] = str(run_dir)
        results["arms"][name] = record
        _write(results, out_dir)  # after every arm: a stopped run keeps what it measured
    studies = sorted({name.split("/")[0] for name in opts.arms})
    this_run = {name: results["arms"][name] for name in opts.arms}
    plot_curves({"arms": this_run}, figures / f"curves{'_' + studies[0] if len(studies) == 1 else ''}.png")
    _write(results, out_dir)
    return results


def merged_with_stored(path: Path, here: dict[str, Any], rerun: tuple[str, ...]) -> dict[str, Any]:
    """The report's results: the stored arms not run again (each keeping the machine and options it was measured
    with), then the arms of this run, which are added as they finish."""
    stored = json.loads(path.read_text()) if path.is_file() else {"arms": {}}
    kept = {}
    for name, record in stored.get("arms", {}).items():
        if name not in rerun:  # records from before arms carried their own machine: the file's
            kept[name] = {"machine": stored.get("machine"), "options": stored.get("options"), **record}
    return {**here, "arms": kept}


def plot_curves(results: dict[str, Any], path: Path) -> Path | None:
    """The training curves of every arm (losses, D accuracy, D logits) in one figure, by report.py's plotter."""
    from gan_lab.report import plot_training_curves
    from gan_lab.run.sweep import Job, read_series

    jobs = [
        Job(name=str(i), overrides={"arm": name}, status="completed", series=read_series(RunDir(r["run_dir"]).metrics))
        for i, (name, r) in enumerate(results["arms"].items())
    ]  # fmt: skip
    return plot_training_curves(jobs, ["arm"], path)


def describe_protocol(p: dict[str, Any]) -> str:
    """A protocol record (Evaluator.protocol) in words."""
    weights = Path(str(p["inception_weights"])).name
    return (
        f"{p['num_fake']} generated vs {p['num_real']} {p['reference_split']} images at {p['resolution']}² "
        f"(metrics.resolution={p['resolution_setting']}; generator {p['model_resolution']}², dataset "
        f"{p['native_resolution']}²), {p['resizer']} resize into Inception, weights {weights}"
    )


def rankings(arms: dict[str, Any]) -> dict[str, list[tuple[str, float]]]:
    """{study: [(arm, FID at the native resolution), ...] best first}."""
    by_study: dict[str, list[tuple[str, float]]] = {}
    for name, record in arms.items():
        study, arm = name.split("/", 1)
        by_study.setdefault(study, []).append((arm, record["scores"]["native"]["fid"]))
    return {study: sorted(ranked, key=lambda item: item[1]) for study, ranked in by_study.items()}


def _jsonable(opts: ReproduceOptions) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}


def _write(results: dict[str, Any], out_dir: Path) -> None:
    atomic_write_text(out_dir / "reproduction.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / "reproduction.md", render(results) + "\n")


def render(results: dict[str, Any]) -> str:
    """The markdown report: per group of arms measured alike (machine, budget), gan_lab's numbers beside the
    study's and the literature's."""
    arms = results["arms"]
    lines = [
        "# Reproduction of the studies' arms",
        "",
        "Measured with `python -m gan_lab.reproduce`, arms grouped by the machine and budget they were "
        "measured with (compare times and numbers only within a group).",
        "",
        "The 'study reported' column gives each study's own numbers for the arm, with the protocol the study "
        "states and what it leaves unstated (n/s); gan_lab's docs/studies.md summarises each study's "
        "settings and reported numbers. No study pins its whole metric protocol, so agreement means the same "
        "ordering and rough size, not the same digits. The published anchors are other frameworks' numbers for "
        "the same kinds of model, each with its protocol.",
        "",
        "At a CPU budget the point is the ordering and the trend, not the level: FID at 1k samples is biased "
        "far above FID at 10k or 50k, so compare gan_lab's numbers with each other, and with the published "
        "ones only under the same protocol.",
    ]
    groups: dict[tuple[str, str], list[str]] = {}
    for name, r in arms.items():
        opts = r.get("options") or results["options"]
        budget = (
            f"{opts['epochs']} epochs"
            if opts.get("epochs")
            else f"{opts['minutes']:g} minutes of training per arm"
        )
        where = machine_line(r.get("machine") or results["machine"])
        groups.setdefault((where, f"{budget} at {opts['resolution']}²"), []).append(name)
    for (where, budget), names in groups.items():
        lines += [
            "",
            f"## {', '.join(sorted({n.split('/')[0] for n in names}))}",
            "",
            f"On {where}. Budget: {budget} (the studies' budgets and resolutions, where they state them, are in "
            "the 'study reported' column).",
            "",
            "| arm | G steps | epochs | train min | gan_lab FID (protocol) | KID | study reported | published anchor (protocol) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [_row(name, arms[name]) for name in names]
        protocol = describe_protocol(arms[names[0]]["scores"]["native"]["protocol"])
        lines += ["", f"gan_lab's numbers: {protocol}."]
    lines += ["", "Ordering by gan_lab's FID within each study (lower is better):", ""]
    for study, ranked in rankings(arms).items():
        lines.append(f"- {study}: " + " < ".join(f"{arm} ({fid:.1f})" for arm, fid in ranked))
    lines += [
        "",
        "Sample grids (the last grid of each run, fixed noise): `reproduction/<arm>.png` beside this file; "
        "training curves of the arms run together: `reproduction/curves*.png`.",
        "",
        "Re-run on a GPU with the studies' budgets and a published protocol (the modern study: its preset's "
        "50,000 generator steps at batch 64 = 64 epochs, scored as R3GAN and StyleGAN2-ADA score, 50k generated "
        "against the 50k training images):",
        "",
        "```bash",
        "python -m gan_lab.reproduce --epochs 100 --resolution 64 --protocol fid10k_test \\",
        "    --arms " + " ".join(name for name in ARMS if not name.startswith("modern_study/")),
        "python -m gan_lab.reproduce --epochs 64 --protocol fid50k_train \\",
        "    --arms " + " ".join(name for name in ARMS if name.startswith("modern_study/")),
        "```",
    ]
    return "\n".join(lines)


def _row(name: str, r: dict[str, Any]) -> str:
    scores = [
        f"{s['fid']:.1f} (`{s['names']['fid']}`{', as the study scored' * (resolution == 'model')})"
        for resolution, s in r["scores"].items()
    ]
    kid = r["scores"]["native"].get("kid_mean")
    minutes = f"{r['train_s'] / 60:.1f}" if r.get("train_s") else "—"
    note = f" ({r['note']})" if r.get("note") else ""
    return (
        f"| `{name}`{note} | {r['g_steps']:,} | {r['epochs']} | {minutes} | {'; '.join(scores)} | "
        f"{kid:.4f} | {r['study']} | {r['anchor'] or '—'} |"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gan_lab.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", help=f"arms to run (default: all): {', '.join(ARMS)}")
    parser.add_argument("--minutes", type=float, default=4.0, help="training time per arm (default 4)")
    parser.add_argument(
        "--epochs", type=int, help="train each arm this many epochs instead (the studies: 100)"
    )
    parser.add_argument("--resolution", type=int, default=32, help="training resolution (the studies: 64)")
    parser.add_argument("--num-fake", type=int, default=1000, help="generated images for FID (default 1000)")
    parser.add_argument(
        "--num-real", type=int, default=1000, help="real training images (default 1000, cached)"
    )
    parser.add_argument("--protocol", help="a named protocol instead of the counts, e.g. fid10k_test")
    parser.add_argument(
        "--data-root", type=Path, help="CIFAR-10 as image folders train/ and test/ (default: dataset=cifar10)"
    )
    parser.add_argument("--inception-weights", help="default: $GAN_LAB_INCEPTION_WEIGHTS, else the download")
    parser.add_argument("--cache-dir", help="real-feature cache (default ~/.cache/gan_lab/metrics)")
    parser.add_argument(
        "--out", type=Path, default=Path("reproduction"), help="report folder (default reproduction/)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the arms' runs here (default: a temporary folder)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a gan_lab override for every arm"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


@user_errors_as_one_line
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    log.setLevel(logging.INFO)
    opts = ReproduceOptions(
        data_root=args.data_root.expanduser().absolute() if args.data_root else None,
        arms=tuple(args.arms or CPU_ARMS), minutes=args.minutes, epochs=args.epochs, resolution=args.resolution,
        num_fake=args.num_fake, num_real=args.num_real, protocol=args.protocol,
        inception_weights=args.inception_weights, cache_dir=args.cache_dir, seed=args.seed,
        overrides=tuple(args.set),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gan_lab_reproduce_") as tmp:
        results = reproduce(opts, args.out, args.workdir or Path(tmp))
    print(render(results))
    print(
        f"wrote {args.out / 'reproduction.md'}, {args.out / 'reproduction.json'} and {args.out / 'reproduction'}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
