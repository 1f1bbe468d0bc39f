"""XdsCache: generated resources by the exact inputs that shape them, cleared by the configs they depend on.

As istiod's XdsCache: an entry is one resource (a cluster, a ClusterLoadAssignment, a RouteConfiguration;
the listener set of a proxy class) under a key made of everything its generator reads, and declares the
config keys it depends on (``ServiceEntry/<ns>/<host>``, ``Endpoints/<ns>/<host>``, a DestinationRule,
a VirtualService, ...). ``clear(keys)`` drops exactly the entries depending on those keys.

Stale writes: a push in flight must not store an entry that a newer change already cleared. Writes carry
a token (the number of the PushContext they were generated from); ``clear`` raises the cache's token to the
clearing push's number, and a write with an older token, or older than the entry it would replace, is
dropped (istiod's token check).

Bounded by ``max_entries`` (PILOT_XDS_CACHE_SIZE) with LRU eviction; hits, misses and evictions are counted
per type.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass

from pilot.model.config import ConfigKey
from pilot.xds.resource import Resource

DEFAULT_MAX_ENTRIES = 60_000  # istiod's PILOT_XDS_CACHE_SIZE default

Value = tuple[Resource, ...]


@dataclass(slots=True)
class _Entry:
    value: Value
    deps: Collection[ConfigKey]
    token: int


def max_entries_from_env() -> int:
    raw = os.environ.get("PILOT_XDS_CACHE_SIZE", "")
    try:
        value = int(raw) if raw.strip() else DEFAULT_MAX_ENTRIES
    except ValueError:
        raise ValueError(f"PILOT_XDS_CACHE_SIZE={raw!r}: expected an integer") from None
    return value if value > 0 else 20_000  # istiod: a non-positive size means its fallback of 20000


class XdsCache:
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._dependents: dict[ConfigKey, set[Hashable]] = {}
        self.token = 0
        self.hits: Counter[str] = Counter()  # by type (the first element of every key)
        self.misses: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()  # "clear" | "size"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Value | None:
        entry = self._entries.get(key)
        kind = _kind(key)
        if entry is None:
            self.misses[kind] += 1
            return None
        self._entries.move_to_end(key)
        self.hits[kind] += 1
        return entry.value

    def add(self, key: Hashable, value: Value, deps: Collection[ConfigKey], token: int) -> bool:
        """Store an entry unless it is stale; returns whether it was stored."""
        if token < self.token:
            return False
        existing = self._entries.get(key)
        if existing is not None:
            if existing.token > token:
                return False
            self._unindex(key, existing.deps)
        self._entries[key] = _Entry(value, deps, token)
        self._entries.move_to_end(key)
        for dep in deps:
            self._dependents.setdefault(dep, set()).add(key)
        while len(self._entries) > self.max_entries:
            old_key, old = self._entries.popitem(last=False)
            self._unindex(old_key, old.deps)
            self.evictions["size"] += 1
        return True

    def clear(self, configs: Iterable[ConfigKey], token: int | None = None) -> int:
        """Drop every entry depending on any of ``configs``; later writes need ``token`` or newer."""
        if token is not None:
            self.token = max(self.token, token)
        removed = 0
        for config in configs:
            keys = self._dependents.pop(config, None)
            if not keys:
                continue
            for key in keys:
                entry = self._entries.pop(key, None)
                if entry is None:
                    continue
                removed += 1
                self._unindex(key, entry.deps, skip=config)
        self.evictions["clear"] += removed
        return removed

    def clear_all(self, token: int | None = None) -> None:
        if token is not None:
            self.token = max(self.token, token)
        self.evictions["clear"] += len(self._entries)
        self._entries.clear()
        self._dependents.clear()

    def _unindex(self, key: Hashable, deps: Iterable[ConfigKey], skip: ConfigKey | None = None) -> None:
        for dep in deps:
            if dep == skip:
                continue
            keys = self._dependents.get(dep)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._dependents[dep]

    # ----- introspection (debug endpoints, tests) -----

    def dependents(self, config: ConfigKey) -> frozenset[Hashable]:
        return frozenset(self._dependents.get(config, ()))

    def keys(self) -> list[Hashable]:
        return list(self._entries)

    def entries(self) -> dict[str, list[str]]:
        """{typeUrl: [resource names]} over every entry (for /debug/config_cache)."""
        out: dict[str, set[str]] = {}
        for key, entry in self._entries.items():
            out.setdefault(_kind(key), set()).update(r.name for r in entry.value)
        return {t: sorted(names) for t, names in sorted(out.items())}

    def size_bytes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, entry in self._entries.items():
            kind = _kind(key)
            out[kind] = out.get(kind, 0) + sum(len(r.value) for r in entry.value)
        return out

    @property
    def dependent_config_size(self) -> int:
        return len(self._dependents)


def _kind(key: Hashable) -> str:
    return str(key[0]) if isinstance(key, tuple) and key else "unknown"
