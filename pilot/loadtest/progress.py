"""The live progress display: a rich progress bar per phase when stdout is a terminal, nothing otherwise."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


class Progress:
    """``with progress.phase("connect storm", 2000) as update: update(done)``."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stdout.isatty() if enabled is None else enabled
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[note]}"),
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    @contextlib.contextmanager
    def phase(self, description: str, total: int) -> Iterator[Any]:
        """Yields ``update(done, note="")``; the bar completes when the phase ends."""
        if self._bar is None:
            yield lambda done, note="": None
            return
        task = self._bar.add_task(description, total=max(total, 1), note="")

        def update(done: int, note: str = "") -> None:
            self._bar.update(task, completed=done, note=note)

        try:
            yield update
        finally:
            self._bar.stop_task(task)

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message)
