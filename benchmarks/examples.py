"""pytorch/examples' `dcgan/main.py`, unmodified: the yardstick issue 14 names for the study preset's speed.

gan_lab neither ships nor downloads the script: `benchmarks/gpu_prepare.sh` copies it, with its commit, from a
local snapshot of pytorch/examples into `.device/`, and `python -m benchmarks gpu --examples-script PATH`
runs it as the issue did (`--accel --workers N`, a folder dataset, fp32, its own loader and loop). Each of its
training iterations prints one line `[epoch/niter][i/len] Loss_D: ...` after reading the losses back from the
device, so a line means that iteration's work is done: the bench time-stamps the lines as they arrive.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from benchmarks.measure import summarize

ITERATION = re.compile(r"^\[(\d+)/(\d+)\]\[(\d+)/(\d+)\] Loss_D")


def examples_dcgan(
    script: Path,
    data_root: Path,
    workdir: Path,
    batch_size: int,
    image_size: int,
    workers: int,
    warmup: int,
    timeout_s: float,
) -> dict[str, Any]:
    """One epoch of the script on the image folder `data_root`; its steady images/s after `warmup` iterations
    (the epoch's last, partial batch left out) and the whole command's wall time."""
    commit_file, loader = script.with_suffix(".commit"), f"{workers} loader worker{'s' * (workers != 1)}"
    result: dict[str, Any] = {
        "description": f"pytorch/examples dcgan/main.py, unmodified: fp32, ImageFolder, {loader}",
        "script": str(script),
        "commit": commit_file.read_text().strip() if commit_file.is_file() else None,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(script), "--dataset", "folder", "--dataroot", str(data_root), "--accel",
               "--workers", str(workers), "--batchSize", str(batch_size), "--imageSize", str(image_size),
               "--niter", "1", "--manualSeed", "0", "--outf", str(workdir)]  # fmt: skip
    times, last_line = [], deque(maxlen=15)
    began = time.perf_counter()
    proc = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)  # fmt: skip
    timer = threading.Timer(timeout_s, os.killpg, (proc.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            now = time.perf_counter()
            last_line.append(line.rstrip())
            match = ITERATION.match(line)
            if match and int(match[3]) < int(match[4]) - 1:  # the last batch of an epoch may be short
                times.append(now)
        returncode = proc.wait()
    finally:
        timer.cancel()
    result.update(
        command_s=round(time.perf_counter() - began, 2), returncode=returncode, iterations=len(times)
    )
    if len(times) > warmup + 1:
        rate = (len(times) - warmup) / (times[-1] - times[warmup - 1])
        result.update(iterations_per_s=rate, images_per_s=summarize([rate * batch_size]))
    elif returncode:
        result["error"] = f"exit {returncode}" if returncode > 0 else f"stopped after {timeout_s:.0f} s"
        result["log_tail"] = "\n".join(last_line)
    else:
        result["error"] = f"only {len(times)} full iterations, fewer than warm-up {warmup} + 2"
    return result
