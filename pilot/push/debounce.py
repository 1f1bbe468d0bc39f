"""Coalescing debounce between config events and pushes (istiod's ``debounce()``).

Events merge into one pending PushRequest, so memory stays bounded however fast events arrive. A push
fires once no event has arrived for ``after`` seconds, or ``max_delay`` seconds after the first event of
the batch. Only one push runs at a time; events arriving meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable

from pilot.push.request import PushRequest

log = logging.getLogger(__name__)

DEFAULT_AFTER = 0.1
DEFAULT_MAX = 10.0


def parse_duration(text: str) -> float:
    """Go-style durations as istiod's env vars take them: "100ms", "10s", "1m", "1.5s"; bare numbers are seconds."""
    text = text.strip()
    units = (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            try:
                return float(number) * scale
            except ValueError:
                break
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"invalid duration {text!r} (expected e.g. 100ms, 10s)") from None


def durations_from_env() -> tuple[float, float]:
    after = parse_duration(os.environ.get("PILOT_DEBOUNCE_AFTER", "100ms"))
    max_delay = parse_duration(os.environ.get("PILOT_DEBOUNCE_MAX", "10s"))
    return after, max_delay


class Debouncer:
    def __init__(
        self,
        push: Callable[[PushRequest], Awaitable[None]],
        *,
        after: float = DEFAULT_AFTER,
        max_delay: float = DEFAULT_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._push = push
        self.after = after
        self.max_delay = max_delay
        self._clock = clock
        self._pending: PushRequest | None = None
        self._first_event = 0.0
        self._last_event = 0.0
        self._events_in_batch = 0
        self._wakeup = asyncio.Event()
        self.pushes = 0  # completed pushes, for tests and debug

    def update(self, request: PushRequest) -> None:
        """Record an event; never blocks (called synchronously by config stores)."""
        now = self._clock()
        if self._pending is None:
            self._pending = request
            self._first_event = now
            self._events_in_batch = 0
        else:
            self._pending = self._pending.merge(request)
        self._last_event = now
        self._events_in_batch += 1
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            if self._pending is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = self._clock()
            quiet = now - self._last_event
            waited = now - self._first_event
            if quiet >= self.after or waited >= self.max_delay:
                request, self._pending = self._pending, None
                log.info(
                    "Push debounce stable[%d] %d events for config %s: %.3fs since last change, "
                    "%.3fs since first change, forced=%s",
                    self.pushes + 1,
                    self._events_in_batch,
                    request.describe(),
                    quiet,
                    waited,
                    waited >= self.max_delay and quiet < self.after,
                )
                # One push at a time: events during the push accumulate into the next batch.
                await self._push(request)
                self.pushes += 1
                continue
            delay = min(self.after - quiet, self.max_delay - waited)
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(delay, 0.0))
            except TimeoutError:
                pass
