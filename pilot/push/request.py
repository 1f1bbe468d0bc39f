"""PushRequest: what changed and why, merged as events coalesce (istiod's PushRequest and Merge).

Two kinds of push, as in istiod up to 1.30:

* ``full=True``: config or services changed; a new PushContext is built and every type a change can affect
  is regenerated for the proxies whose scope can see it.
* ``full=False``: only endpoints changed (keys of kind ``Endpoints``); the PushContext is reused and only the
  changed ClusterLoadAssignments go to the proxies that watch them.

``configs_updated`` names the changed configs. ``None`` (or an empty set, which is normalised to ``None``)
means "everything may have changed", and merging keeps it so: a request for everything absorbs any other.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from pilot.model.config import ConfigKey

# Trigger reasons, as istiod names them (label values of pilot_push_triggers).
REASON_CONFIG = "config"
REASON_SERVICE = "service"
REASON_ENDPOINT = "endpoint"
REASON_SECRET = "secret"
REASON_PROXY_REQUEST = "proxyrequest"
REASON_DEBUG = "debug"
REASON_GLOBAL = "global"
REASON_UNKNOWN = "unknown"


@dataclass(eq=False)
class PushRequest:
    full: bool = True
    configs_updated: set[ConfigKey] | None = None  # None = everything may have changed
    reason: Counter[str] = field(default_factory=Counter)
    start: float = field(default_factory=time.monotonic)
    forced: bool = False  # clear every cache and push every proxy (debug, global changes)

    def __post_init__(self) -> None:
        if self.configs_updated is not None:
            # Owned by this request from now on, so in-place merges never touch a caller's set.
            self.configs_updated = set(self.configs_updated) or None

    @property
    def everything(self) -> bool:
        return self.configs_updated is None

    def merge(self, other: PushRequest) -> PushRequest:
        """Fold ``other`` into this request (in place) and return it: istiod's ``Merge``.

        Reasons add up, full/forced are or-ed, the older start wins, and the changed configs are the union,
        except that "everything" on either side stays "everything".
        """
        self.full = self.full or other.full
        self.forced = self.forced or other.forced
        self.start = min(self.start, other.start)
        self.reason.update(other.reason)
        if self.configs_updated is None or other.configs_updated is None:
            self.configs_updated = None
        else:
            self.configs_updated.update(other.configs_updated)
        return self

    def copy_merge(self, other: PushRequest) -> PushRequest:
        """A new request equal to ``self.merge(other)``, leaving both inputs untouched (istiod's CopyMerge).

        The push queue uses it: one request object is enqueued for many connections.
        """
        merged = PushRequest(
            full=self.full,
            configs_updated=None if self.configs_updated is None else set(self.configs_updated),
            reason=Counter(self.reason),
            start=self.start,
            forced=self.forced,
        )
        return merged.merge(other)

    def kinds(self) -> frozenset[str] | None:
        """The kinds of the changed configs, or None for everything."""
        if self.configs_updated is None:
            return None
        return frozenset(key.kind for key in self.configs_updated)

    def describe(self) -> str:
        if self.configs_updated is None:
            return "all configs"
        keys = sorted(self.configs_updated)
        first = str(keys[0])
        return first if len(keys) == 1 else f"{first} and {len(keys) - 1} more configs"
