"""NACK quarantine: one resource a proxy rejects must not freeze everything else it should get.

In state-of-the-world xDS a NACK rejects the whole response: Envoy keeps what it had, and every later
response of that type carries the rejected resource again (LDS and CDS are always the complete set), so no
later change of that type ever reaches the proxy. istiod lives with that; pilot does not:

1. When a stream NACKs, the resources that the rejected response brought (new, or at another version than
   the client held) are the candidates. Those the client's ``error_detail`` names (Envoy names the listener,
   cluster or route configuration it refused) are the culprits; when it names none, all the candidates are.
2. The stream keeps serving each culprit at the version the client holds (or not at all when it held none),
   and sends the rest of the update again at once. Each further NACK can only add candidates of the response
   it rejects, so the exchange ends after at most a few rounds, never loops.
3. A culprit is retried as soon as its generated version changes, that is when the Istio object behind it
   changes (or anything else that shapes it); a resource that disappears leaves quarantine.
4. The server reports every quarantined resource with the Istio objects that produced it and changed in the
   push that made the rejected version (``/debug/push_status``, ``pilot_xds_nack_quarantined``, one log line
   per resource version), see ``QuarantineReport``.

Delta xDS rejects a response as a whole as well (Envoy applies none of it), so it goes through the same path.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pilot.model.config import ConfigKey
from pilot.xds.snapshot import Snapshot, Versions

# Characters that continue a resource name: a match must not be part of a longer name ("80" in "8080").
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-|*/~")
MAX_MESSAGE = 512  # characters of a NACK message kept for the report


def mentions(message: str, name: str) -> bool:
    """Whether ``message`` names ``name`` as a whole (not as part of a longer name)."""
    if not name:
        return False
    start = message.find(name)
    while start >= 0:
        end = start + len(name)
        before = message[start - 1] if start else " "
        after = message[end] if end < len(message) else " "
        if before not in _NAME_CHARS and after not in _NAME_CHARS:
            return True
        start = message.find(name, start + 1)
    return False


def culprits(
    message: str, sent: Versions, held: Versions, quarantined: Collection[str] = ()
) -> tuple[tuple[str, ...], bool]:
    """The resources to hold back after a NACK of a response that brought the client from ``held`` to
    ``sent``: those it names among the ones the response changed, else all of them (in name order); and
    whether that response carried other changes (which are then owed to the client again)."""
    candidates = sorted(n for n, v in sent.items() if held.get(n) != v and n not in quarantined)
    named = [n for n in candidates if mentions(message, n)]
    chosen = tuple(named or candidates)
    others = len(chosen) < len(candidates) or any(n not in sent for n in held)
    return chosen, others


def patched(
    snapshot: Snapshot,
    quarantined: dict[str, str],
    holds: Versions,
    sources: tuple[Snapshot | None, ...],
    memo: dict[str, Any],
) -> Snapshot:
    """``snapshot`` with a stream's ``quarantined`` resources (name -> rejected version) at the version the
    client ``holds``, taken from ``sources`` (what the stream last sent and last had accepted).

    Entries whose resource changed (or vanished) since it was rejected leave quarantine: they are retried.
    Memoized in ``memo`` per (snapshot, quarantine, held versions): a stream asks once per type per push.
    """
    lifted = [n for n, bad in quarantined.items() if snapshot.versions.get(n) != bad]
    for name in lifted:
        del quarantined[name]
    if not quarantined:
        return snapshot
    held = {n: holds.get(n) for n in quarantined}
    key = (frozenset(quarantined.items()), frozenset(held.items()))
    found = memo.get("quarantine_patched")
    if isinstance(found, tuple) and found[0] is snapshot and found[1] == key:
        return found[2]  # type: ignore[no-any-return]
    resources = dict(snapshot.resources)
    for name, version in held.items():
        good = None
        if version is not None:
            for source in sources:
                candidate = source.resources.get(name) if source is not None else None
                if candidate is not None and candidate.version == version:
                    good = candidate
                    break
        if good is None:
            resources.pop(name, None)  # the client holds none (or one we no longer have): send none
        else:
            resources[name] = good
    result = Snapshot(resources.values())
    memo["quarantine_patched"] = (snapshot, key, result)
    return result


# ----- reporting (server side) -----


@dataclass(frozen=True)
class Quarantined:
    proxy: str  # connection id
    type_url: str
    resource: str
    version: str  # the version the proxy rejected
    objects: tuple[ConfigKey, ...]  # the Istio objects behind it that changed lately (all of them if unknown)
    message: str
    since: float


class RecentChanges:
    """The config keys of the last pushes, by push number, to tell which objects a rejected response brought."""

    def __init__(self, size: int = 64) -> None:
        self._log: deque[tuple[int, frozenset[ConfigKey] | None]] = deque(maxlen=size)

    def record(self, number: int, keys: Iterable[ConfigKey] | None) -> None:
        """A push: its PushContext number (an endpoint-only push keeps the number of the one before it)."""
        self._log.append((number, frozenset(keys) if keys is not None else None))

    def at(self, number: int) -> frozenset[ConfigKey] | None:
        """Keys changed by the pushes numbered ``number`` (a full push and the endpoint-only pushes on top of
        it); None if one of them changed everything or none is remembered."""
        out: set[ConfigKey] = set()
        found = False
        for pushed, keys in self._log:
            if pushed != number:
                continue
            if keys is None:
                return None
            found = True
            out |= keys
        return frozenset(out) if found else None


def offending(
    origins: Collection[ConfigKey], changed: frozenset[ConfigKey] | None, limit: int = 8
) -> tuple[ConfigKey, ...]:
    """The objects to blame for a rejected resource: those behind it that changed lately, else (when that
    is unknown or empty) all of them if they are few; none when they are many (a whole listener set)."""
    if changed is not None:
        recent = sorted(k for k in origins if k in changed)
        if recent:
            return tuple(recent[:limit])
    return tuple(sorted(origins)) if len(origins) <= limit else ()


class QuarantineReport:
    """What the server says about quarantined resources: a bounded log of them, one log line per rejected
    resource version (a NACK flood logs nothing new), and the JSON for /debug/push_status."""

    MAX_ENTRIES = 1024

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple[str, str, str], Quarantined] = OrderedDict()
        self._logged: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def add(self, entry: Quarantined) -> bool:
        """Record an entry; returns whether this resource version is new to the log (worth a log line)."""
        key = (entry.proxy, entry.type_url, entry.resource)
        self.entries[key] = entry
        self.entries.move_to_end(key)
        while len(self.entries) > self.MAX_ENTRIES:
            self.entries.popitem(last=False)
        seen = (entry.type_url, entry.resource, entry.version)
        if seen in self._logged:
            return False
        self._logged[seen] = None
        while len(self._logged) > self.MAX_ENTRIES:
            self._logged.popitem(last=False)
        return True

    def current(self, live: Mapping[str, Mapping[str, Mapping[str, str]]]) -> list[Quarantined]:
        """Entries still in force: ``live`` is connection id -> type -> the stream's quarantine."""
        return [
            e for e in self.entries.values() if live.get(e.proxy, {}).get(e.type_url, {}).get(e.resource) == e.version
        ]

    @staticmethod
    def status(entries: Iterable[Quarantined]) -> dict[str, dict[str, object]]:
        """push_status shape: {"pilot_xds_nack_quarantine": {object or resource: {proxy: detail}}}."""
        out: dict[str, object] = {}
        for e in entries:
            subjects = [str(k) for k in e.objects] or [e.resource]
            for subject in subjects:
                per_proxy = out.setdefault(subject, {})
                assert isinstance(per_proxy, dict)
                per_proxy[e.proxy] = {
                    "type": e.type_url.rsplit(".", 1)[-1],
                    "resource": e.resource,
                    "message": e.message,
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.since)),
                }
        return {"pilot_xds_nack_quarantine": out} if out else {}
