"""One owner per concept (issue 13): run file names, atomic writes and module names each live in one place."""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gan_lab"


def sources() -> dict[str, str]:
    """{path relative to gan_lab/: text} of every module of the package."""
    return {p.relative_to(PACKAGE).as_posix(): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def holders(text: str, files: dict[str, str]) -> set[str]:
    return {path for path, source in files.items() if text in source}


def outside(allowed: set[str], found: set[str]) -> list[str]:
    """The files of `found` that are not in `allowed` nor under an allowed folder ('data/')."""
    return sorted(
        f for f in found if f not in allowed and not any(f.startswith(a) for a in allowed if a.endswith("/"))
    )


@pytest.mark.parametrize("name", ["last.ckpt", "best.ckpt", "status.json", "multirun.yaml"])
def test_run_file_names_are_only_spelt_in_run_paths(name: str) -> None:
    found = holders(name, sources())
    assert "run/paths.py" in found, f"gan_lab/run/paths.py no longer names {name}"
    assert outside({"run/paths.py"}, found) == [], f"use gan_lab.run.paths instead of spelling {name}"


def test_conf_names_run_folders_through_run_dir() -> None:
    """conf/ asks RunDir for a run's folders (`${run_dir:checkpoints}`) instead of spelling them after output_dir."""
    conf = PACKAGE.parent / "conf"
    spelt = [
        f"{p.relative_to(conf)}: {line.strip()}"
        for p in sorted(conf.rglob("*.yaml"))
        for line in p.read_text().splitlines()
        if re.search(r"\$\{paths\.output_dir\}/", line)
    ]
    assert spelt == []


def test_run_dir_resolver_gives_run_dir_paths(tmp_path: Path) -> None:
    from gan_lab.run.paths import RunDir
    from gan_lab.utils.config import compose_config

    cfg = compose_config([], output_dir=tmp_path)
    run = RunDir(tmp_path)
    assert cfg.callbacks.last.dirpath == str(run.checkpoints) == cfg.callbacks.checkpoint.dirpath
    assert cfg.callbacks.samples.dirpath == str(run.samples)


OS_REPLACE_ALLOWED = {
    "utils/io.py",  # the one atomic write helper
}


def test_os_replace_is_only_called_by_the_atomic_write_helper() -> None:
    found = holders("os.replace", sources())
    assert "utils/io.py" in found
    assert outside(OS_REPLACE_ALLOWED, found) == [], "write files with gan_lab.utils.io.atomic_path & co"


def _stem(name: str) -> str:
    """A module name without a trailing 'ing' or 's': checkpointing, checkpoints -> checkpoint."""
    return re.sub(r"(ing|s)$", "", name)


# Module names (dotted, under gan_lab) that may differ from another only by a suffix, with the reason.
SUFFIX_PAIRS_ALLOWED: set[frozenset[str]] = set()


def module_names() -> list[str]:
    """Dotted names under gan_lab of every module and package ('run.paths', 'run', 'metrics', ...)."""
    names = set()
    for path in sources():
        parts = path.removesuffix(".py").split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and parts[-1] != "__main__":
            names.add(".".join(parts))
    return sorted(names)


def test_no_two_module_names_differ_only_by_a_suffix() -> None:
    names = module_names()
    clashes = [
        (a, b)
        for a, b in combinations(names, 2)
        if a.rsplit(".", 1)[-1] != b.rsplit(".", 1)[-1]
        and _stem(a.rsplit(".", 1)[-1]) == _stem(b.rsplit(".", 1)[-1])
        and frozenset({a, b}) not in SUFFIX_PAIRS_ALLOWED
    ]
    assert clashes == [], f"modules whose names differ only by a suffix: {clashes}; name each by what it owns"


def test_the_stem_comparison_catches_the_old_pair() -> None:
    assert _stem("checkpointing") == _stem("checkpoints") == "checkpoint"
    assert _stem("report") == "report"


# Where torch.randn may be called: outputs draw their noise through gan_lab.latents, so grids, interpolations,
# diversity checks, metrics and the sample CLI draw the same z for the same seed.
RANDN_ALLOWED = {
    "latents.py",  # every output's noise
    "core/module.py",  # the training step's own noise (GANModule.sample_noise)
    "core/ada.py",  # an augmentation's per-image draws (ADA's scale factors), not an output's noise
    "bench/",  # benchmarks' synthetic inputs
}


def test_noise_for_outputs_is_only_drawn_in_latents() -> None:
    found = holders("torch.randn(", sources())
    assert "latents.py" in found, "gan_lab/latents.py no longer draws z with torch.randn"
    assert outside(RANDN_ALLOWED, found) == [], "draw output noise with gan_lab.latents.latents & co"


def test_the_randn_check_catches_a_stray_draw() -> None:
    files = {**sources(), "callbacks/sample_grid.py": "z = torch.randn(4, 8, generator=gen)\n"}
    assert outside(RANDN_ALLOWED, holders("torch.randn(", files)) == ["callbacks/sample_grid.py"]


def _meaningful_lines(text: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of the code lines that carry logic: no blanks, comments, docstring quotes,
    lone brackets, imports, decorators or typed parameters of a signature (`width: int = 256,`: classes that
    take the same settings repeat them)."""
    skip = re.compile(r"^(#|\"\"\"|'''|[)\]}],?$|from |import |@|\w+: [^=]+(= .+)?,$)")
    return [
        (i, s) for i, line in enumerate(text.splitlines(), 1) if (s := line.strip()) and not skip.match(s)
    ]


def test_no_block_of_logic_is_written_twice() -> None:
    """No run of 6 identical code lines stands in two places of gan_lab/ (write it once and call it)."""
    size, seen, twice, lines_of = 6, {}, [], {}
    for path, text in sources().items():
        lines = lines_of[path] = _meaningful_lines(text)
        for k in range(len(lines) - size + 1):
            window = tuple(s for _, s in lines[k : k + size])
            if sum(len(s) for s in window) < 120:  # thin runs (keyword arguments, returns) are not logic
                continue
            if window in seen:
                first_path, first_k = seen[window]
                if first_path != path or k - first_k >= size:  # not the same lines seen again
                    twice.append(f"{first_path}:{lines_of[first_path][first_k][0]} ~ {path}:{lines[k][0]}")
            seen.setdefault(window, (path, k))
    assert twice == []
