"""The package's test fixtures (tests/conftest.py: tiny configs, the shared CIFAR copy and weights) serve the
benchmark's tests too; loaded under its own name, so it never shadows tests/' `conftest` module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "tests" / "conftest.py"
_spec = importlib.util.spec_from_file_location("gan_lab_tests_conftest", _PATH)
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
globals().update({name: value for name, value in vars(_fixtures).items() if not name.startswith("__")})

REPOSITORY = _PATH.parents[1]
