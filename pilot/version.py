"""pilot's version, as /version, ``pilot version`` and ``pilot --version`` show it."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path


@functools.cache
def version() -> str:
    try:
        return metadata.version("pilot")
    except metadata.PackageNotFoundError:
        return "0.0.0-dev"


@functools.cache
def git_revision() -> tuple[str, str]:
    """(revision, build status) when running from a git checkout: ("629547c1a2b3", "Clean" or "Modified");
    ("unknown", "unknown") for an installed package."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return "unknown", "unknown"

    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *argv], capture_output=True, text=True, timeout=2, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "--short=12", "HEAD")
    if not revision:
        return "unknown", "unknown"
    changes = git("status", "--porcelain", "--untracked-files=no")
    return revision, ("Clean" if changes == "" else "Modified")


def version_string() -> str:
    """istiod's /version form: ``<version>-<git revision>-<build status>``."""
    revision, status = git_revision()
    return f"{version()}-{revision}-{status}"
