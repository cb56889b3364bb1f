"""The docs stay true: README.md and docs/*.md link only to files and headings that exist, name only repository
files that exist, every `python -m gan_lab.train ...` line of their code blocks composes a valid config, and the
README stays a front door of at most 200 lines.

How a documented command line becomes a composed config (`command_overrides`):
- `$ ` before the command and `NAME=value` environment assignments are dropped; `PYTHONPATH=` is put on sys.path
  for the `_target_` check (relative to the repository root, where the docs' commands run from);
- `-m` / `--multirun`: each sweep value becomes its first choice (`a,b,c` -> `a`, `range(1,5)` -> `1`,
  `interval(x, y)` and `tag(log, interval(x, y))` -> `x`): one job of the sweep is composed. Without `-m` a
  sweep value is left as written, so composing fails, as the real command line would;
- `--cfg X`, `--package X`, `--resolve` only change what is printed and are dropped; any other flag fails the test
  (the parser here would not know what it means);
- `hydra.*` overrides and `hydra/<group>=...` choices (launchers, sweepers, search paths) are composed as written:
  Hydra checks them against its own config;
- values that name files or run directories (`resume=`, `dataset.root=`, `ckpt=`) are composed as written and not
  looked up: they are the reader's paths, and composing does not read them (training would).
Then every `_target_` of the composed config must be importable.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from gan_lab.utils.config import compose_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target "title")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# A code span that names a repository file or folder: these top-level folders, no placeholders or wildcards.
REPO_PATH = re.compile(r"^(?:\.ci|benchmarks|conf|docs|gan_lab|tests)/[\w./-]*$")
TRAIN = ("python", "-m", "gan_lab.train")
DROPPED_FLAGS = {"--resolve"}  # flags without a value that only change what is printed
DROPPED_WITH_VALUE = {"--cfg", "-c", "--package", "-p"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def rel(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root).as_posix()


def split_code(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(prose lines, code-block lines) of a markdown text, each with its 1-based line number."""
    prose: list[tuple[int, str]] = []
    code: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append((number, line))
    return prose, code


def slugs(heading: str) -> set[str]:
    """The anchors a heading gets: mkdocs' (python-markdown toc) and GitHub's."""
    text = re.sub(r"[`*]", "", heading).strip()
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    mkdocs = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower())
    github = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
    return {mkdocs, github}


def anchors(path: Path) -> set[str]:
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            found |= slugs(match.group(1))
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of a page whose file, or whose #anchor in that file, does not exist."""
    prose, _ = split_code(page.read_text(encoding="utf-8"))
    problems = []
    for number, line in prose:
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not checked (no network)
                continue
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            where = f"{rel(page, root)}:{number}: {target}"
            if not linked.exists():
                problems.append(f"{where}: no such file")
            elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
                problems.append(f"{where}: no heading with the anchor #{anchor} in {rel(linked, root)}")
    return problems


def missing_repo_paths(page: Path, root: Path = ROOT) -> list[str]:
    """Code spans such as `benchmarks/results.md` or `tests/test_resume.py` that name no file or folder of the repo."""
    prose, _ = split_code(page.read_text(encoding="utf-8"))
    return [
        f"{rel(page, root)}:{number}: `{span}`"
        for number, line in prose
        for span in CODE_SPAN.findall(line)
        if REPO_PATH.match(span) and not (root / span).exists()
    ]


def train_lines(page: Path) -> list[tuple[int, str]]:
    """The `python -m gan_lab.train ...` command lines in a page's code blocks, continuation lines joined."""
    _, code = split_code(page.read_text(encoding="utf-8"))
    commands: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in code:
        if pending is not None:
            start, text = pending
            pending = None
            line, number = text + " " + line.strip(), start
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1])
            continue
        command = line.strip().removeprefix("$ ")
        words = command.split()
        while words and ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if tuple(words[:3]) == TRAIN:
            commands.append((number, command))
    return commands


def first_sweep_value(override: str) -> str:
    """One job of a swept override: `key=a,b` -> `key=a`; `key=interval(x, y)` -> `key=x`."""
    (parsed,) = OverridesParser.create().parse_overrides([override])
    if not parsed.is_sweep_override():
        return override
    key = parsed.get_key_element()
    if parsed.is_interval_sweep():
        return f"{key}={parsed.value().start}"
    return f"{key}={next(iter(parsed.sweep_string_iterator()))}"


def command_overrides(command: str) -> tuple[list[str], list[str]]:
    """(overrides to compose, PYTHONPATH entries) of a documented command line; see the module docstring."""
    words = shlex.split(command, comments=True)
    python_path: list[str] = []
    while words and ENV_ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        if name == "PYTHONPATH":
            python_path += [entry for entry in value.split(":") if entry]
    assert tuple(words[:3]) == TRAIN, command
    words = words[3:]
    multirun = False
    overrides: list[str] = []
    while words:
        word = words.pop(0)
        if word in ("-m", "--multirun"):
            multirun = True
        elif word in DROPPED_WITH_VALUE:
            words.pop(0)
        elif word in DROPPED_FLAGS:
            continue
        elif word.startswith("-"):
            raise AssertionError(
                f"{command!r}: the flag {word} is unknown to tests/test_docs.py; teach it there"
            )
        else:
            overrides.append(word)
    if multirun:
        overrides = [first_sweep_value(override) for override in overrides]
    return overrides, python_path


def targets(node: object) -> list[str]:
    """Every `_target_` string in a plain config."""
    if isinstance(node, dict):
        own = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return own + [target for value in node.values() for target in targets(value)]
    if isinstance(node, list):
        return [target for value in node for target in targets(value)]
    return []


def compose_command(command: str, monkeypatch: pytest.MonkeyPatch) -> DictConfig:
    """The config a documented train command line runs, with every `_target_` in it imported."""
    overrides, python_path = command_overrides(command)
    monkeypatch.chdir(ROOT)  # relative paths (file:// search paths) are read from the repository root
    for entry in python_path:
        monkeypatch.syspath_prepend(str(ROOT / entry))
    cfg = compose_config(overrides)
    assert isinstance(cfg, DictConfig)
    for target in targets(OmegaConf.to_container(cfg, resolve=False)):
        assert get_object(target) is not None, target
    return cfg


TRAIN_LINES = [(page, number, command) for page in PAGES for number, command in train_lines(page)]


def test_the_pages_exist_and_hold_train_commands() -> None:
    """The checks below would pass on no input: the pages and their commands are found."""
    names = {path.name for path in DOCS}
    for page in ("index", "configs", "metrics", "reliability", "performance", "studies", "extending"):
        assert f"{page}.md" in names, f"docs/{page}.md is missing"
    assert any(page == README for page, _, _ in TRAIN_LINES), (
        "README.md shows no python -m gan_lab.train line"
    )
    assert len(TRAIN_LINES) >= 20, f"only {len(TRAIN_LINES)} train lines found in README.md and docs/"


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    _, code = split_code("\n".join(lines[:10]))
    commands = [line.split()[:2] for _, line in code]
    assert ["make", "train"] in commands and ["make", "test"] in commands, (
        "the README must open with the two commands"
    )
    assert "bench:start" not in "\n".join(lines), (
        "measurements go to benchmarks/ and docs/, not into the README"
    )


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_named_repository_file_exists(page: Path) -> None:
    assert missing_repo_paths(page) == []


@pytest.mark.parametrize(
    "page, number, command", TRAIN_LINES, ids=[f"{rel(page)}:{number}" for page, number, _ in TRAIN_LINES]
)
def test_every_train_line_composes(
    page: Path, number: int, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose_command(command, monkeypatch)


# --- the checks themselves fail on bad input ------------------------------------------------------------------


def test_the_checks_catch_broken_links_missing_files_and_bad_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_there.py").touch()
    page.write_text(
        "# A heading: with `code`\n"
        "[fine](#a-heading-with-code) [no file](missing.md) [no anchor](#nowhere) [web](https://example.org)\n"
        "`tests/test_there.py` and `tests/test_gone.py`, `conf/loss/<name>.yaml` (a placeholder)\n"
        "```bash\n[in code](ignored.md) `tests/also_ignored.py`\n"
        "python -m gan_lab.train -m loss=hinge,bce \\\n    optim.lr=1e-4  # a comment\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "docs/page.md:2: missing.md: no such file",
        "docs/page.md:2: #nowhere: no heading with the anchor #nowhere in docs/page.md",
    ]
    assert missing_repo_paths(page, tmp_path) == ["docs/page.md:3: `tests/test_gone.py`"]
    assert train_lines(page) == [(6, "python -m gan_lab.train -m loss=hinge,bce  optim.lr=1e-4  # a comment")]
    assert command_overrides(train_lines(page)[0][1]) == (["loss=hinge", "optim.lr=1e-4"], [])

    with pytest.raises(Exception, match="model/no_such_model"):
        compose_command("python -m gan_lab.train model=no_such_model", monkeypatch)
    with pytest.raises(Exception, match="optim.no_such_key"):
        compose_command("python -m gan_lab.train optim.no_such_key=1", monkeypatch)
    with pytest.raises(
        Exception, match="Ambiguous value"
    ):  # a sweep without -m fails, as on the command line
        compose_command("python -m gan_lab.train optim.lr=1e-4,1e-5", monkeypatch)
    with pytest.raises(AssertionError, match="--no-such-flag"):
        command_overrides("python -m gan_lab.train --no-such-flag")


def test_sweep_values_become_their_first_job() -> None:
    overrides, path = command_overrides(
        "PYTHONPATH=tests/fixtures python -m gan_lab.train -m --cfg job model=dcgan,sndcgan "
        "'optim.lr=tag(log, interval(1e-6, 1e-3))' seed=range(1,4) hydra/launcher=joblib"
    )
    assert overrides == ["model=dcgan", "optim.lr=1e-06", "seed=1", "hydra/launcher=joblib"]
    assert path == ["tests/fixtures"]
