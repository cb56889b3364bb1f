"""Atomic file writes: a file is either its old or its new complete content, never half-written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

TMP_MARK = ".tmp-"  # .<name>.tmp-<pid>: atomic_path's temporary file


def remove_temporaries(folder: str | os.PathLike[str]) -> int:
    """Delete the temporary files atomic_path left in folder when its writer was killed mid-write (call only
    where no writer can be at work, e.g. holding the run's lock); returns how many."""
    stale = [p for p in Path(folder).glob(f".*{TMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


@contextmanager
def atomic_path(path: str | os.PathLike[str], durable: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed over `path` when the block ends without an error.

    A rename within one directory is atomic, so `path` always holds either the old or the new complete file:
    a kill -9 mid-write leaves only a stray temporary file, and an error (ENOSPC) removes it and re-raises.
    durable=True also fsyncs the file and the directory, so the new file survives a power cut.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        yield tmp
        if durable:
            _fsync(tmp, os.O_RDWR)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after the rename
    if durable:
        try:  # makes the rename itself durable
            _fsync(path.parent, os.O_RDONLY)
        except OSError:  # e.g. platforms without directory file descriptors
            pass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, durable: bool = False) -> None:
    """Write `data` to `path` atomically (see atomic_path)."""
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, durable: bool = False) -> None:
    """Write `text` to `path` atomically (see atomic_path)."""
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], durable: bool = False) -> None:
    """torch.save `obj` to `path` atomically (see atomic_path)."""
    with atomic_path(path, durable) as tmp, open(tmp, "wb") as file:
        torch.save(obj, file)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
