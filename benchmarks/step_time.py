"""Steady-state milliseconds per training batch of a gan_lab run, for comparing two versions of gan_lab.

Run it from each checkout in turn (A B A B ...: the machine's speed drifts), with the same overrides:
    cd OLD && python /path/to/step_time.py --label old --out /tmp/step_times.jsonl [OVERRIDE ...]
    cd NEW && python /path/to/step_time.py --label new --out /tmp/step_times.jsonl [OVERRIDE ...]
The gan_lab imported is the one of the working directory (put first on sys.path; the row says which). Each run
appends one JSON line: the median and mean time between the ends of consecutive training batches after
`--warmup` batches (set-up, imports and the first batches excluded). Needs only `gan_lab.train.train` and
`gan_lab.utils.config.compose_config`, so it runs against versions older than the bench.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import lightning.pytorch as pl
from omegaconf import open_dict


class BatchEnds(pl.Callback):
    """perf_counter at the end of every training batch."""

    times: list[float] = []

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        BatchEnds.times.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="what this checkout is, e.g. its commit")
    parser.add_argument("--out", required=True, help="JSON-lines file to append to")
    parser.add_argument("--steps", type=int, default=130, help="generator steps of the run")
    parser.add_argument("--warmup", type=int, default=30, help="batches left out at the start")
    parser.add_argument("overrides", nargs="*", help="gan_lab config overrides, e.g. dataset=folder")
    args = parser.parse_args()

    sys.path.insert(0, os.getcwd())  # this checkout's gan_lab, not the installed one
    import gan_lab
    from gan_lab.train import train
    from gan_lab.utils.config import compose_config

    cfg = compose_config([*args.overrides, f"steps={args.steps}"], output_dir=tempfile.mkdtemp())
    with open_dict(cfg):
        cfg.callbacks.batch_ends = {"_target_": f"{__name__}.BatchEnds"}
    train(cfg)
    ends = BatchEnds.times[args.warmup :]
    gaps_ms = [(later - earlier) * 1e3 for earlier, later in zip(ends, ends[1:], strict=False)]
    row = {
        "label": args.label,
        "gan_lab": os.path.dirname(gan_lab.__file__),
        "overrides": args.overrides,
        "batches": len(gaps_ms),
        "median_ms": statistics.median(gaps_ms),
        "mean_ms": statistics.fmean(gaps_ms),
    }
    with open(args.out, "a") as out:
        out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
