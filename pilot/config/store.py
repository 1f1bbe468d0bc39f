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
        self._kinds: dict[str, dict[ConfigKey, Config]] = {}  # the merged objects by kind
        self._sorted: dict[str, list[Config]] = {}  # list(kind) answers, until that kind changes
        self._snapshot: Mapping[ConfigKey, Config] | None = None
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
        changed = {key for key in old.keys() | new.keys() if self._set(source, key, new.get(key))}
        return self._notify(changed)

    def remove_source(self, source: str) -> set[ConfigKey]:
        old = self._sources.get(source)
        if old is None:
            return set()
        changed = {key for key in list(old) if self._set(source, key, None)}
        return self._notify(changed)

    def upsert(self, source: str, cfg: Config) -> set[ConfigKey]:
        """Add or replace one object of ``source`` (a watch event); O(1) however large the store is."""
        return self._notify({cfg.key} if self._set(source, cfg.key, cfg) else set())

    def delete(self, source: str, key: ConfigKey) -> set[ConfigKey]:
        """Remove one object of ``source``; another source's version of it, if any, takes over."""
        return self._notify({key} if self._set(source, key, None) else set())

    def subscribe(self, handler: Handler) -> None:
        """Call ``handler(changed_keys)`` synchronously after every change."""
        self._handlers.append(handler)

    # ----- reads -----

    def snapshot(self) -> Mapping[ConfigKey, Config]:
        """An immutable view of all objects, built on first use after a change."""
        if self._snapshot is None:
            self._snapshot = MappingProxyType(dict(self._merged))
        return self._snapshot

    def get(self, key: ConfigKey) -> Config | None:
        return self._merged.get(key)

    def list(self, kind: str) -> list[Config]:
        """Objects of one kind, sorted by key."""
        found = self._sorted.get(kind)
        if found is None:
            of_kind = self._kinds.get(kind, {})
            found = self._sorted[kind] = [of_kind[key] for key in sorted(of_kind)]
        return list(found)

    def source_keys(self, source: str) -> set[ConfigKey]:
        """The keys ``source`` defines now (whether or not its version wins)."""
        return set(self._sources.get(source, ()))

    def sources(self) -> list[str]:
        """The sources currently contributing objects, sorted."""
        return sorted(s for s, objs in self._sources.items() if objs)

    def __len__(self) -> int:
        return len(self._merged)

    # ----- internals -----

    def _set(self, source: str, key: ConfigKey, cfg: Config | None) -> bool:
        """Record ``source``'s version of ``key`` (None: it no longer defines it); whether the winner's content
        changed."""
        objects = self._sources.get(source)
        if cfg is None:
            if objects is None or objects.pop(key, None) is None:
                return False
            if not objects:
                del self._sources[source]
        else:
            if objects is None:
                objects = self._sources[source] = {}
            objects[key] = cfg
        definers = self._definers.setdefault(key, [])
        previous_winner = definers[0] if definers else None
        if cfg is not None and source not in definers:
            definers.append(source)
            definers.sort()
        elif cfg is None and source in definers:
            definers.remove(source)
        before = self._merged.get(key)
        if definers:
            winner = definers[0]
            after: Config | None = self._sources[winner][key]
            if cfg is not None and len(definers) > 1:
                if winner != source:
                    log.warning("config: %s defined in both %s and %s; using %s", key, winner, source, winner)
                elif previous_winner is not None and previous_winner != source:
                    log.warning("config: %s defined in both %s and %s; using %s", key, source, previous_winner, source)
        else:
            del self._definers[key]
            after = None
        if before is after:
            return False
        of_kind = self._kinds.setdefault(key.kind, {})
        if after is None:
            del self._merged[key]
            del of_kind[key]
        else:
            self._merged[key] = after
            of_kind[key] = after
        # Even a content-identical replacement changes what list() and snapshot() return.
        self._sorted.pop(key.kind, None)
        self._snapshot = None
        return before is None or after is None or before.content_hash != after.content_hash

    def _notify(self, changed: set[ConfigKey]) -> set[ConfigKey]:
        if changed:
            self.revision += 1
            for handler in list(self._handlers):
                try:
                    handler(set(changed))
                except Exception:
                    log.exception("config: store subscriber %r failed", handler)
        return changed
