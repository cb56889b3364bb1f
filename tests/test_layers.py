"""The package's layers (issue 25): core/ (the GAN algorithm) imports nothing from run/, callbacks/ or the
benchmarks, and utils/ (helpers that own no concept) nothing of gan_lab beyond utils/ and errors."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gan_lab"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names, also from imports inside functions and TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import ({'.' * node.level}{node.module or ''})"
            found |= {node.module or ""} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def forbidden_imports(
    folder: str,
    refused: tuple[str, ...] = (),
    allowed: tuple[str, ...] | None = None,
    package: Path = PACKAGE,
) -> list[str]:
    """`file: module` for each import of <package>/<folder>/*.py that is in `refused`, or (`allowed` given) a
    gan_lab module not in `allowed`."""
    bad = []
    for path in sorted((package / folder).glob("*.py")):
        for name in sorted(imported_modules(path)):
            outside = allowed is not None and _under(name, ("gan_lab",)) and not _under(name, allowed)
            if _under(name, refused) or outside:
                bad.append(f"{path.relative_to(package)}: {name}")
    return bad


def test_imported_modules_sees_every_kind_of_import(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "import gan_lab.run.paths\nfrom gan_lab.callbacks import base\n"
        "def f():\n    from gan_lab.run.checkpoint_io import load_checkpoint\n"
    )
    assert imported_modules(source) == {
        "gan_lab.run.paths",
        "gan_lab.callbacks",
        "gan_lab.callbacks.base",
        "gan_lab.run.checkpoint_io",
        "gan_lab.run.checkpoint_io.load_checkpoint",
    }


def test_core_imports_nothing_from_run_callbacks_or_benchmarks() -> None:
    refused = ("gan_lab.run", "gan_lab.callbacks", "gan_lab.bench", "benchmarks")
    assert forbidden_imports("core", refused=refused) == []


def test_utils_import_only_utils_and_errors() -> None:
    assert forbidden_imports("utils", allowed=("gan_lab.utils", "gan_lab.errors")) == []


def test_nothing_in_the_package_imports_or_names_the_benchmark() -> None:
    """The benchmark lives in the repository's benchmarks/, run from a checkout: the installed package neither
    imports it nor points into it."""
    files = sorted(PACKAGE.rglob("*.py"))
    imports = [
        f"{p.relative_to(PACKAGE)}: {n}"
        for p in files
        for n in imported_modules(p)
        if _under(n, ("benchmarks",))
    ]
    named = [str(p.relative_to(PACKAGE)) for p in files if "bench" in p.read_text().lower()]
    assert imports == [] and named == []
