"""PushRequest: what changed and why, merged as events coalesce (istiod's PushRequest.Merge)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pilot.config.model import ConfigKey

if TYPE_CHECKING:
    from pilot.push.context import PushContext

# Trigger reasons, as istiod names them (label values of pilot_push_triggers).
REASON_CONFIG = "config"
REASON_SERVICE = "service"
REASON_ENDPOINT = "endpoint"
REASON_PROXY_REQUEST = "proxyrequest"
REASON_DEBUG = "debug"
REASON_GLOBAL = "global"
REASON_UNKNOWN = "unknown"


@dataclass
class PushRequest:
    full: bool = True
    configs_updated: frozenset[ConfigKey] = frozenset()  # empty = everything may have changed
    reason: Counter[str] = field(default_factory=Counter)
    start: float = field(default_factory=time.monotonic)
    push: PushContext | None = None
    forced: bool = False

    def merge(self, other: PushRequest) -> PushRequest:
        """Combine two requests; neither input is modified. The older start and newer push win."""
        return PushRequest(
            full=self.full or other.full,
            configs_updated=self.configs_updated | other.configs_updated,
            reason=self.reason + other.reason,
            start=min(self.start, other.start),
            push=other.push if other.push is not None else self.push,
            forced=self.forced or other.forced,
        )

    def describe(self) -> str:
        keys = sorted(self.configs_updated)
        if not keys:
            return "all configs"
        first = str(keys[0])
        return first if len(keys) == 1 else f"{first} and {len(keys) - 1} more configs"
