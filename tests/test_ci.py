"""CI cannot go green by skipping: under GAN_LAB_REQUIRE_SHARED=1 a test that needs ../shared fails without it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDS_WEIGHTS = "tests/test_protocols.py::test_float_299_input_equals_the_uint8_path"


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NEEDS_WEIGHTS],
        cwd=ROOT,
        env={**os.environ, "GAN_LAB_SHARED": str(tmp_path / "no_shared_here"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # ~15 s on 2 cores (subprocesses, training): make test-slow, which CI runs
def test_a_missing_shared_folder_skips_locally_and_fails_in_ci(tmp_path):
    local = _pytest(tmp_path, GAN_LAB_REQUIRE_SHARED="0")
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
    ci = _pytest(tmp_path, GAN_LAB_REQUIRE_SHARED="1")
    assert ci.returncode == 1 and "GAN_LAB_REQUIRE_SHARED=1 says it must be there" in ci.stdout, ci.stdout[
        -2000:
    ]
    assert "export GAN_LAB_REQUIRE_SHARED=1" in (ROOT / ".ci" / "run").read_text()
