"""Per-proxy push queue (istiod's PushQueue): at most one entry and one push in flight per connection.

A request for a connection already waiting merges into its entry (keeping its place in line); a request
for a connection whose push is in flight is held and re-queued at the tail when that push is done. So the
queue never holds more entries than there are connections, and a slow proxy only ever delays itself.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from pilot.push.request import PushRequest

K = TypeVar("K", bound=Hashable)


class PushQueue(Generic[K]):
    def __init__(self) -> None:
        self._pending: OrderedDict[K, PushRequest] = OrderedDict()
        # In flight; the value is a request merged while in flight, or None.
        self._processing: dict[K, PushRequest | None] = {}
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._pending)

    def enqueue(self, key: K, request: PushRequest) -> None:
        if key in self._processing:
            held = self._processing[key]
            # One request object is enqueued for many connections: merge into a copy, never into it.
            self._processing[key] = request if held is None else held.copy_merge(request)
            return
        existing = self._pending.get(key)
        if existing is not None:
            self._pending[key] = existing.copy_merge(request)
            return
        self._pending[key] = request
        self._ready.set()

    async def dequeue(self) -> tuple[K, PushRequest]:
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        key, request = self._pending.popitem(last=False)
        self._processing[key] = None
        return key, request

    def mark_done(self, key: K) -> None:
        held = self._processing.pop(key, None)
        if held is not None:
            self._pending[key] = held
            self._ready.set()

    def has(self, key: K) -> bool:
        """Whether the connection is waiting in the queue or has a push in flight."""
        return key in self._pending or key in self._processing

    def remove(self, key: K) -> None:
        """Forget a connection that went away."""
        self._pending.pop(key, None)
        self._processing.pop(key, None)
