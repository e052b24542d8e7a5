"""Writing files so that no reader ever sees half of one: write beside it, then rename over it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename a finished temp file over ``path`` with the permissions a plain ``open`` would give
    (``mkstemp`` makes files readable by their owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """A temp file name beside ``path``; it replaces ``path`` if the block succeeds and is
    deleted if it fails, so ``path`` is always either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
