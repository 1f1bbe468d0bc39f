"""Config pilot refused, kept for /debug/push_status: which file, which object, which field, and why.

The config store keeps only what it serves. ``RecordingConfigStore`` is the store plus, per source, the
load errors of that source's latest version: replaced when the source is re-read, dropped when it goes away,
so push_status shows exactly the problems of the config on disk now, next to whether the object's last good
version is still being served.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pilot.config.loader import LoadError, LoadResult
from pilot.config.store import ConfigStore
from pilot.model.config import ConfigKey

STATUS_KEY = "pilot_rejected_configs"  # the push_status entry these are listed under


class RecordingConfigStore(ConfigStore):
    def __init__(self) -> None:
        super().__init__()
        self._errors: dict[str, tuple[LoadError, ...]] = {}

    def replace_source(self, source: str, result: LoadResult) -> set[ConfigKey]:
        self.record(source, result.errors)
        return super().replace_source(source, result)

    def remove_source(self, source: str) -> set[ConfigKey]:
        self._errors.pop(source, None)
        return super().remove_source(source)

    def record(self, source: str, errors: Iterable[LoadError]) -> None:
        """Set the problems of ``source``'s latest version (none: it loaded cleanly)."""
        kept = tuple(errors)
        if kept:
            self._errors[source] = kept
        else:
            self._errors.pop(source, None)

    def rejections(self) -> dict[str, dict[str, Any]]:
        """push_status entries: ``{"<file>[doc N] Kind ns/name": {file, document, kind, namespace, name, field,
        message, serving}}`` in source order."""
        out: dict[str, dict[str, Any]] = {}
        for source in sorted(self._errors):
            for error in self._errors[source]:
                out[_entry_key(error)] = describe(error, self.get(error.key) if error.key is not None else None)
        return out


def _entry_key(error: LoadError) -> str:
    where = f"{error.source}[doc {error.doc_index}]"
    if error.key is None:
        return where
    name = f"{error.key.namespace}/{error.key.name}" if error.key.namespace else error.key.name
    return f"{where} {error.key.kind} {name}"


def describe(error: LoadError, served: Any) -> dict[str, Any]:
    field, sep, why = error.message.partition(": ")
    if not sep or " " in field:  # not "path: message" (e.g. a YAML syntax error)
        field, why = "", error.message
    entry: dict[str, Any] = {"file": error.source, "document": error.doc_index}
    if error.key is not None:
        entry.update(kind=error.key.kind, namespace=error.key.namespace, name=error.key.name)
    entry.update(field=field, message=why)
    if error.key is not None:
        same_source = served is not None and getattr(served, "source", None) == error.source
        entry["serving"] = "last good version" if same_source else ("another source's version" if served else "none")
    return entry
