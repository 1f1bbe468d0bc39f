"""Snapshots: what one class of proxies should hold of one type, shared by every proxy of that class.

A ``Snapshot`` maps resource names to encoded ``Resource``s. The server keeps one per (type, proxy view,
subscription) and per push, so 2,000 identical sidecars share one object, and each stream only remembers
*which* name→version map it last sent (``holds``), usually the ``versions`` of an earlier snapshot.

Everything a stream needs from a snapshot is memoized on it, because every proxy of a class asks the same
question in the same push:

* ``diff(holds)``: what changed against what a stream holds, O(changed) when the snapshot was derived from
  the one the stream holds (an endpoint-only push touches a few names), else one O(n) comparison per
  distinct ``holds``;
* the encoded bytes of the full set and of each diff (see ``pilot.xds.resource``).

``NameSet`` interns subscription name sets, so identical subscriptions are one object with one host index.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pilot.xds.names import parse_cluster_name
from pilot.xds.resource import Resource, digest

Versions = Mapping[str, str]  # resource name -> version, as a stream holds them
Encoded = tuple[str, str, bytes]  # (nonce, version, body) of a response built once and sent to many streams
EMPTY_VERSIONS: Versions = MappingProxyType({})

_MEMO_SLOTS = 8  # distinct `holds` remembered per snapshot; proxies of one class usually share one


@dataclass(eq=False)
class Diff:
    changed: tuple[Resource, ...]  # in the snapshot, new or with another version than held
    removed: tuple[str, ...]  # held, but no longer in the snapshot
    # Encoded responses built from this diff, by protocol: (nonce, version, body).
    encoded: dict[str, Encoded] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)


class Snapshot:
    __slots__ = ("_diffs", "_full", "base", "resources", "touched", "versions")

    def __init__(
        self, resources: Iterable[Resource], *, base: Snapshot | None = None, touched: frozenset[str] = frozenset()
    ) -> None:
        ordered = sorted(resources, key=lambda r: r.name)
        self.resources: dict[str, Resource] = {r.name: r for r in ordered}
        self.versions: dict[str, str] = {r.name: r.version for r in ordered}
        # Derived from `base` by regenerating only the names in `touched` (endpoint-only pushes).
        self.base = base
        self.touched = touched
        self._diffs: dict[int, tuple[Versions, Diff]] = {}
        self._full: dict[str, Encoded] = {}  # encoded full-set responses by protocol

    def __len__(self) -> int:
        return len(self.resources)

    def derive(self, regenerated: Mapping[str, Resource | None]) -> Snapshot:
        """A snapshot equal to this one except the given names (None = no longer exists)."""
        merged = dict(self.resources)
        for name, resource in regenerated.items():
            if resource is None:
                merged.pop(name, None)
            else:
                merged[name] = resource
        # Drop the link to our own base: only the previous step is ever diffed cheaply.
        self.base = None
        return Snapshot(merged.values(), base=self, touched=frozenset(regenerated))

    def extended(self, extra: Iterable[Resource]) -> Snapshot:
        """This snapshot plus ``extra`` (which win on equal names); this very object when there is none."""
        extra = list(extra)
        if not extra:
            return self
        return Snapshot([*self.resources.values(), *extra])

    def diff(self, holds: Versions) -> Diff:
        memo = self._diffs.get(id(holds))
        if memo is not None and memo[0] is holds:
            return memo[1]
        if holds is self.versions or (len(holds) == len(self.versions) and holds == self.versions):
            changed: tuple[Resource, ...] = ()
            removed: tuple[str, ...] = ()
        elif self.base is not None and holds is self.base.versions:
            changed = tuple(
                self.resources[n]
                for n in sorted(self.touched)
                if n in self.resources and holds.get(n) != self.resources[n].version
            )
            removed = tuple(n for n in sorted(self.touched) if n not in self.resources and n in holds)
        else:
            changed = tuple(r for n, r in self.resources.items() if holds.get(n) != r.version)
            removed = tuple(n for n in holds if n not in self.resources)
        result = Diff(changed, removed)
        if len(self._diffs) >= _MEMO_SLOTS:
            self._diffs.pop(next(iter(self._diffs)))
        self._diffs[id(holds)] = (holds, result)
        return result

    def full_encoded(self, protocol: str) -> Encoded | None:
        return self._full.get(protocol)

    def remember_full(self, protocol: str, encoded: Encoded) -> None:
        self._full[protocol] = encoded

    def blob(self) -> bytes:
        """Every resource as SotW ``resources`` fields, in name order."""
        return b"".join(r.sotw_field for r in self.resources.values())

    def digest(self) -> str:
        """A version for the whole set (REST's version_info)."""
        return digest("\n".join(f"{n} {v}" for n, v in self.versions.items()).encode())


class NameSet:
    """An interned, immutable set of subscribed names, with cluster names grouped by host (for EDS)."""

    __slots__ = ("__weakref__", "_by_host", "_restricted", "names")

    _interned: weakref.WeakValueDictionary[frozenset[str], NameSet] = weakref.WeakValueDictionary()

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names
        self._by_host: dict[str, tuple[str, ...]] | None = None
        self._restricted: dict[int, tuple[Versions, Versions]] = {}

    @classmethod
    def of(cls, names: Iterable[str]) -> NameSet:
        key = names if isinstance(names, frozenset) else frozenset(names)
        found = cls._interned.get(key)
        if found is None:
            found = cls(key)
            cls._interned[key] = found
        return found

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.names)

    def by_host(self, host: str) -> tuple[str, ...]:
        """The subscribed cluster names (``outbound|port|subset|host``) of one host."""
        if self._by_host is None:
            index: dict[str, list[str]] = {}
            for name in self.names:
                parsed = parse_cluster_name(name)
                if parsed is not None:
                    index.setdefault(parsed.host, []).append(name)
            self._by_host = {h: tuple(sorted(v)) for h, v in index.items()}
        return self._by_host.get(host, ())

    def restrict(self, holds: Versions) -> Versions:
        """``holds`` without the names outside this set (memoized: streams of one class share the answer)."""
        memo = self._restricted.get(id(holds))
        if memo is not None and memo[0] is holds:
            return memo[1]
        kept = {n: v for n, v in holds.items() if n in self.names}
        result: Versions = holds if len(kept) == len(holds) else kept
        if len(self._restricted) >= _MEMO_SLOTS:
            self._restricted.pop(next(iter(self._restricted)))
        self._restricted[id(holds)] = (holds, result)
        return result


EMPTY_NAMES = NameSet.of(frozenset())
