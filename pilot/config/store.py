"""The config store: the merged view of every source (file), with last-good semantics.

Each source (a file path) contributes a set of objects. When a source is re-read:

- objects that loaded fine replace what the source had;
- an object that is present but invalid (``LoadResult.rejected``) keeps its last good version from the same
  source, so a typo never deletes live config;
- when the text had problems that cannot be tied to an object (a YAML syntax error, a document without
  ``metadata.name``), every object the source had and that is not in the new result is kept as well — the
  file is mid-edit and we cannot tell what it meant to drop;
- anything else the source no longer defines is removed.

If two sources define the same key, the first source in sorted path order wins and the conflict is logged;
when the winner stops defining it, the next source's version takes over.

Not thread-safe: call it from one thread (the event loop). Subscribers run synchronously after each change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType

from pilot.config.loader import LoadResult
from pilot.model.config import Config, ConfigKey

log = logging.getLogger(__name__)

Handler = Callable[[set[ConfigKey]], None]


class ConfigStore:
    def __init__(self) -> None:
        self._sources: dict[str, dict[ConfigKey, Config]] = {}
        # key -> the sources defining it, kept sorted; the first is the winner.
        self._definers: dict[ConfigKey, list[str]] = {}
        self._merged: dict[ConfigKey, Config] = {}
        self._snapshot: Mapping[ConfigKey, Config] = MappingProxyType({})
        self._by_kind: dict[str, list[Config]] | None = None
        self._handlers: list[Handler] = []
        self.revision = 0

    # ----- writes -----

    def replace_source(self, source: str, result: LoadResult) -> set[ConfigKey]:
        """Set the objects ``source`` defines now; returns the keys whose content changed."""
        old = self._sources.get(source, {})
        new: dict[ConfigKey, Config] = {c.key: c for c in result.configs}
        keep_all = any(e.key is None for e in result.errors)
        for key, cfg in old.items():
            if key in new:
                continue
            if keep_all or key in result.rejected:
                new[key] = cfg
        # Identical content re-read: keep the object we already have (stable identity for consumers).
        for key, cfg in list(new.items()):
            prev = old.get(key)
            if prev is not None and prev is not cfg and prev.content_hash == cfg.content_hash:
                new[key] = prev
        return self._apply(source, old, new)

    def remove_source(self, source: str) -> set[ConfigKey]:
        old = self._sources.get(source)
        if old is None:
            return set()
        return self._apply(source, old, {})

    def subscribe(self, handler: Handler) -> None:
        """Call ``handler(changed_keys)`` synchronously after every change."""
        self._handlers.append(handler)

    # ----- reads -----

    def snapshot(self) -> Mapping[ConfigKey, Config]:
        """An immutable view of all objects; a new one is built only when something changes."""
        return self._snapshot

    def get(self, key: ConfigKey) -> Config | None:
        return self._merged.get(key)

    def list(self, kind: str) -> list[Config]:
        """Objects of one kind, sorted by key."""
        if self._by_kind is None:
            by_kind: dict[str, list[Config]] = {}
            for key in sorted(self._merged):
                by_kind.setdefault(key.kind, []).append(self._merged[key])
            self._by_kind = by_kind
        return list(self._by_kind.get(kind, ()))

    def sources(self) -> list[str]:
        """The sources currently contributing objects, sorted."""
        return sorted(s for s, objs in self._sources.items() if objs)

    def __len__(self) -> int:
        return len(self._merged)

    # ----- internals -----

    def _apply(self, source: str, old: Mapping[ConfigKey, Config], new: dict[ConfigKey, Config]) -> set[ConfigKey]:
        if new:
            self._sources[source] = new
        else:
            self._sources.pop(source, None)
        changed: set[ConfigKey] = set()
        replaced = False
        for key in old.keys() | new.keys():
            definers = self._definers.setdefault(key, [])
            previous_winner = definers[0] if definers else None
            if key in new and source not in definers:
                definers.append(source)
                definers.sort()
            elif key not in new and source in definers:
                definers.remove(source)
            before = self._merged.get(key)
            if definers:
                winner = definers[0]
                after = self._sources[winner][key]
                if key in new and len(definers) > 1:
                    if winner != source:
                        log.warning("config: %s defined in both %s and %s; using %s", key, winner, source, winner)
                    elif previous_winner is not None and previous_winner != source:
                        log.warning(
                            "config: %s defined in both %s and %s; using %s", key, source, previous_winner, source
                        )
            else:
                del self._definers[key]
                after = None
            if before is after:
                continue
            if after is None:
                del self._merged[key]
                changed.add(key)
                continue
            self._merged[key] = after
            replaced = True
            if before is None or before.content_hash != after.content_hash:
                changed.add(key)
        if changed or replaced:
            self._snapshot = MappingProxyType(dict(self._merged))
            self._by_kind = None
        if changed:
            self.revision += 1
            for handler in list(self._handlers):
                try:
                    handler(set(changed))
                except Exception:
                    log.exception("config: store subscriber %r failed", handler)
        return changed
