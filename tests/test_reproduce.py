"""`python -m gan_lab.reproduce`: study arms trained under a budget, scored alike, and the report."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module
from PIL import Image

# Seconds in all: tiny nets, a few seconds of training per arm, FID on 8 against 8 images.
QUICK = [
    "--minutes=0.05",
    "--num-fake=8",
    "--num-real=8",
    "--set=model.width=4",
    "--set=dataset.batch_size=8",
]


def _cifar_like(root: Path) -> Path:
    """train/ and test/ image folders of 2 classes, 12 random 32² JPEGs each."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(root / "train" / cls / f"{i:03d}.jpg", quality=90)
    shutil.copytree(root / "train", root / "test")
    return root


@pytest.mark.slow  # ~24 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_reproduce_trains_scores_and_writes_the_report(tmp_path: Path, inception_weights: Path) -> None:
    data = _cifar_like(tmp_path / "cifar_like")
    out = tmp_path / "out"
    args = [*QUICK, f"--data-root={data}", f"--out={out}", f"--inception-weights={inception_weights}"]
    args += [f"--cache-dir={tmp_path / 'cache'}", "--arms", "cgan_study/cgan", "sndcgan_lr_sweep/lr1e-6"]
    proc = run_module("gan_lab.reproduce", *args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "reproduction.json").read_text())
    assert list(results["arms"]) == ["cgan_study/cgan", "sndcgan_lr_sweep/lr1e-6"]
    for name, arm in results["arms"].items():
        native = arm["scores"]["native"]
        assert (
            arm["g_steps"] >= 1 and math.isfinite(native["fid"]) and native["names"]["fid"] == "fid8_train32"
        )
        assert native["protocol"]["resolution"] == 32
        assert (out / "reproduction" / f"{name.replace('/', '__')}.png").stat().st_size > 500
    assert "optim.lr=1e-6" in results["arms"]["sndcgan_lr_sweep/lr1e-6"]["overrides"]
    assert (out / "reproduction" / "curves.png").stat().st_size > 5000
    report = (out / "reproduction.md").read_text()
    assert "`cgan_study/cgan`" in report and "`fid8_train32`" in report and "CGAN 1 + improvements" in report
    assert "--epochs 100" in report  # the GPU command with the studies' budget


def test_reproduce_keeps_the_stored_arms_it_does_not_run_again_with_their_machine(tmp_path: Path) -> None:
    from gan_lab.reproduce import merged_with_stored

    stored = {
        "machine": {"cpu": "EPYC"},
        "options": {"minutes": 4},
        "arms": {"a/x": {"g_steps": 1}, "a/y": {}},
    }
    (tmp_path / "reproduction.json").write_text(json.dumps(stored))
    here = {"machine": {"cpu": "Xeon"}, "options": {"minutes": 3}}
    merged = merged_with_stored(tmp_path / "reproduction.json", here, rerun=("a/y", "b/z"))
    assert merged["machine"] == {"cpu": "Xeon"} and list(merged["arms"]) == ["a/x"]  # a/y is measured again
    assert merged["arms"]["a/x"] == {"machine": {"cpu": "EPYC"}, "options": {"minutes": 4}, "g_steps": 1}
    assert merged_with_stored(tmp_path / "none.json", here, rerun=())["arms"] == {}


def test_an_unknown_arm_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    proc = run_module("gan_lab.reproduce", "--arms", "cgan_study/nope", f"--out={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("gan_lab: error: unknown arm cgan_study/nope; choose from")
    )
    assert "Traceback" not in proc.stderr
