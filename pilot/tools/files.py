"""The YAML files named on a command line: files as given, directories walked for ``*.yaml`` / ``*.yml``
(hidden names skipped, as the config-directory source skips them), in sorted order."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

SUFFIXES = (".yaml", ".yml")


class MissingPath(Exception):
    pass


def expand(names: Iterable[str]) -> Iterator[Path]:
    """Every file to read; MissingPath for a name that is neither a file nor a directory."""
    for name in names:
        path = Path(name)
        if path.is_dir():
            yield from _walk(path)
        elif path.exists() or name == "-":
            yield path
        else:
            raise MissingPath(f"{name}: no such file or directory")


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.endswith(SUFFIXES) and not filename.startswith("."):
                yield Path(dirpath) / filename
