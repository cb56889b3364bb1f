"""`python -m benchmarks [throughput]`, `... quality --minutes 20` and `... gpu`, run from a gan_lab checkout.

Throughput (~9 minutes on a 2-core CPU with the defaults): framework overhead against a plain loop, end to end
against the classic DCGAN design, FID features against torch-fidelity. Quality (1-1.5 hours: 2 x 20 minutes
of training, then Inception on 5k + 5k generated and 10k real images, the real ones cached after the first
run): FID-5k of gan_lab's SN-DCGAN preset against the classic design after the same training time. Both write
benchmarks/results.json and benchmarks/results.md. `--quick` runs tiny settings in seconds (for tests), writing
to benchmarks/quick/. `gpu` (under 6 minutes on an H100; benchmarks/gpu.py) writes benchmarks/gpu/results.json
and results.md. The studies' reproduction is a gan_lab command: `python -m gan_lab.reproduce`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks import suite
from benchmarks.report import write_results

# Tiny settings for --quick: seconds in all, every code path exercised.
QUICK_THROUGHPUT = dict(
    repeats=3, warmup=1, steps=2, classic_warmup=1, classic_steps=2, batch_size=8, width=8,
    fid_images=4, fid_batch=2, fid_repeats=3, matmul_sizes=(128, 256), matmul_time_s=0.05,
)  # fmt: skip
QUICK_QUALITY = dict(minutes=0.03, batch_size=8, width=8, num_fake=8, num_real=8, fid_batch=4)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny settings that run in seconds (tests)")
    parser.add_argument(
        "--data-root",
        type=Path,
        help="training images (ImageFolder); default: the shared CIFAR-10 copy's train/",
    )
    parser.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/, --quick: benchmarks/quick/)"
    )
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--width", type=int, help="model.width, and the classic nets' ngf/ndf (default 64)")
    parser.add_argument(
        "--inception-weights", help="default: $GAN_LAB_INCEPTION_WEIGHTS, else ../shared's copy"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a gan_lab config override for its runs (repeatable), e.g. --set speed.compile=true",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int,
        help="torch threads (default: one per core; --quick: 1, which tiny nets on a busy machine need)",
    )  # fmt: skip
    parser.add_argument(
        "--workdir", type=Path, help="scratch folder for run directories (default: a temp dir)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Lightning's and gan_lab's logs")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    tp = sub.add_parser("throughput", help="training and FID-feature throughput (the default)")
    _common(tp)
    tp.add_argument("--repeats", type=int)
    tp.add_argument("--warmup", type=int, help="warm-up generator steps of gan_lab and the plain loop")
    tp.add_argument("--steps", type=int, help="timed generator steps of gan_lab and the plain loop")
    tp.add_argument("--classic-warmup", type=int)
    tp.add_argument("--classic-steps", type=int, help="timed steps of the classic design (it is ~4x slower)")
    tp.add_argument(
        "--model", help="gan_lab model preset (default dcgan: the classic example's architecture)"
    )
    tp.add_argument(
        "--fid-images",
        type=int,
        help="images per FID-feature repeat (default 128; Inception: 7-14 img/s on 2 cores)",
    )
    tp.add_argument("--fid-repeats", type=int)
    tp.add_argument("--no-fid", action="store_true", help="skip the FID-feature comparison")
    qp = sub.add_parser(
        "quality", help="FID after a fixed training time, gan_lab preset vs the classic design"
    )
    _common(qp)
    qp.add_argument("--minutes", type=float, help="training time of each contender (default 20)")
    qp.add_argument("--model", help="gan_lab model preset (default sndcgan)")
    qp.add_argument("--num-fake", type=int, help="generated images for FID (default 5000)")
    qp.add_argument("--num-real", type=int, help="real training images for FID (default 10000, cached)")
    qp.add_argument("--cache-dir", help="real-feature cache (default ~/.cache/gan_lab/metrics)")
    gp = sub.add_parser("gpu", help="speed on one CUDA GPU: settings, preset, jobs sharing it (< 6 min)")
    gp.add_argument("--quick", action="store_true", help="every part on the CPU, tiny sizes (tests; ~1 min)")
    gp.add_argument("--data-root", type=Path, help="training images (default: the shared CIFAR-10's train/)")
    gp.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/gpu/, --quick: benchmarks/quick/gpu/)"
    )
    gp.add_argument("--time-limit", type=float, help="seconds for the whole command (default 330)")
    gp.add_argument("--repeats", type=int)
    gp.add_argument(
        "--skip", action="append", default=[], metavar="CONTENDER",
        help="leave a DCGAN contender of part a out (repeatable), e.g. --skip gan_lab_capture_on_device",
    )  # fmt: skip
    gp.add_argument("--batch-size", type=int)
    gp.add_argument("--width", type=int, help="model.width, and the classic nets' ngf/ndf (default 64)")
    gp.add_argument(
        "--examples-script", type=Path, metavar="PATH",
        help="pytorch/examples' dcgan/main.py, unmodified: part b's yardstick (benchmarks/gpu_prepare.sh copies it)",
    )  # fmt: skip
    gp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a gan_lab override (repeatable)"
    )
    gp.add_argument("--threads", type=int, help="torch threads of this process (default: one per core)")
    gp.add_argument("--workdir", type=Path, help="scratch folder for runs and sweeps (default: a temp dir)")
    gp.add_argument("-v", "--verbose", action="store_true", help="show Lightning's and gan_lab's logs")
    argv = list(argv)
    if not argv or argv[0] not in ("throughput", "quality", "gpu", "-h", "--help"):
        argv = ["throughput", *argv]
    return parser.parse_args(argv)


def _data_root(args: argparse.Namespace) -> Path:
    if args.data_root is not None:
        return args.data_root.expanduser().absolute()
    from benchmarks.shared import cifar_jpeg_root

    root = cifar_jpeg_root()
    if root is None:
        raise SystemExit("benchmarks: error: no ../shared/data/cifar10-jpeg.tar.gz; pass --data-root=FOLDER")
    return root / "train"


def _options(args: argparse.Namespace, names: Sequence[str], quick: dict) -> dict:
    """Options given on the command line, over the quick settings with --quick, over the defaults."""
    chosen = dict(quick) if args.quick else {}
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            chosen[name] = value
    return chosen


def _quiet(verbose: bool) -> None:
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        return
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    # gan_lab's data warnings (CIFAR's 32² upscaled to 64² is intended) and Lightning's set-up chatter.
    names = [n for n in logging.root.manager.loggerDict if n.startswith("lightning")]
    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "gan_lab.train",
        "gan_lab.data",
        *names,
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    # torch-fidelity's default DataLoader starts 4 workers on 2 cores; that is its design, measured as is.
    warnings.filterwarnings("ignore", message="This DataLoader will create")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _quiet(args.verbose)
    threads = args.threads or (1 if args.quick else None)
    if threads:
        # Tiny tensors on cores shared with other work: more threads than free cores stall at every barrier.
        torch.set_num_threads(threads)
    data_root = _data_root(args)
    if args.command == "gpu":
        return _gpu(args, data_root)
    # Paths are relative to where the command runs (the repository root, like `python -m gan_lab.train`).
    out = args.out or Path("benchmarks", "quick" if args.quick else "")
    with tempfile.TemporaryDirectory(prefix="gan_lab_bench_") as tmp:
        workdir = args.workdir or Path(tmp)
        if args.command == "quality":
            names = ("minutes", "model", "batch_size", "width", "num_fake", "num_real", "inception_weights",
                     "cache_dir")  # fmt: skip
            opts = suite.QualityOptions(data_root, overrides=args.set, **_options(args, names, QUICK_QUALITY))
            results = {"quality": suite.quality(opts, workdir)}
        else:
            names = ("repeats", "warmup", "steps", "classic_warmup", "classic_steps", "model", "batch_size",
                     "width", "fid_images", "fid_repeats", "inception_weights")  # fmt: skip
            opts = suite.ThroughputOptions(
                data_root, overrides=args.set, **_options(args, names, QUICK_THROUGHPUT)
            )
            opts.fid = not args.no_fid
            results = suite.throughput(opts, workdir)
    results["quick"] = bool(args.quick)
    write_results(results, out)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


def _gpu(args: argparse.Namespace, data_root: Path) -> int:
    from benchmarks.gpu import QUICK, GPUOptions, gpu_bench

    out = args.out or Path("benchmarks", "quick" if args.quick else "", "gpu")
    chosen = _options(args, ("repeats", "batch_size", "width"), QUICK)
    if args.time_limit is not None:
        chosen["time_limit_s"] = args.time_limit
    chosen["skip"] = tuple(args.skip)
    if args.examples_script is not None:
        if not args.examples_script.is_file():
            raise SystemExit(f"benchmarks gpu: error: --examples-script {args.examples_script}: no such file")
        chosen["examples_script"] = args.examples_script.resolve()
    with tempfile.TemporaryDirectory(prefix="gan_lab_bench_gpu_") as tmp:
        gpu_bench(GPUOptions(data_root, overrides=args.set, **chosen), args.workdir or Path(tmp), out)
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
