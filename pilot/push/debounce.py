"""Coalescing debounce between config events and pushes (istiod's ``debounce()``).

Events merge into one pending PushRequest, so memory stays bounded however fast events arrive. A push
fires once no event has arrived for ``after`` seconds, or ``max_delay`` seconds after the first event of
the batch. Only one push runs at a time; events arriving meanwhile form the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from pilot import settings
from pilot.metrics import tracing
from pilot.metrics.registry import Metrics
from pilot.push.clock import Clock, MonotonicClock
from pilot.push.request import REASON_SERVICE, REASON_UNKNOWN, PushRequest
from pilot.settings import parse_go_duration

log = logging.getLogger(__name__)

DEFAULT_AFTER = 0.1
DEFAULT_MAX = 10.0
_EPSILON = 1e-6


def parse_duration(text: str) -> float:
    """Go-style durations as istiod's env vars take them ("100ms", "1m30s"; bare numbers are seconds)."""
    return parse_go_duration(text)


def durations_from_env() -> tuple[float, float]:
    after = parse_duration(os.environ.get("PILOT_DEBOUNCE_AFTER", "100ms"))
    max_delay = parse_duration(os.environ.get("PILOT_DEBOUNCE_MAX", "10s"))
    return after, max_delay


def parse_bool(text: str, name: str) -> bool:
    """istiod's boolean env values (strconv.ParseBool); the error names the variable."""
    try:
        return settings.parse_bool(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected true or false") from None


def eds_debounce_from_env() -> bool:
    """PILOT_ENABLE_EDS_DEBOUNCE (default true): whether endpoint-only pushes wait for the debounce too."""
    return parse_bool(os.environ.get("PILOT_ENABLE_EDS_DEBOUNCE", "true"), "PILOT_ENABLE_EDS_DEBOUNCE")


class Debouncer:
    """Merges PushRequests and hands them to ``push`` once quiet, one push at a time.

    With ``eds_debounce`` off (istiod's PILOT_ENABLE_EDS_DEBOUNCE=false), endpoint-only requests skip the
    wait and go straight to ``push_now`` without merging.
    """

    def __init__(
        self,
        push: Callable[[PushRequest], Awaitable[None]],
        *,
        after: float = DEFAULT_AFTER,
        max_delay: float = DEFAULT_MAX,
        clock: Clock | None = None,
        eds_debounce: bool = True,
        push_now: Callable[[PushRequest], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._push = push
        self._push_now = push_now
        self.after = after
        self.max_delay = max_delay
        self.eds_debounce = eds_debounce
        self._clock = clock or MonotonicClock()
        self._pending: PushRequest | None = None
        self._first_event = 0.0
        self._last_event = 0.0
        self._events_in_batch = 0
        self._wakeup = asyncio.Event()
        self.pushes = 0  # completed pushes, for tests and debug
        self.last_debounce_time = 0.0  # first event of the last batch -> its push handed over
        self._counters = metrics.counters if metrics is not None else None
        self._debounce_time = metrics.histogram("pilot_debounce_time") if metrics is not None else None
        self._trace: tracing.ChangeTrace | None = None  # the batch's spans, while tracing is on

    def update(self, request: PushRequest) -> None:
        """Record an event; never blocks (called synchronously by config stores and registries).

        The debouncer owns ``request`` from now on: it may be merged into in place.
        """
        if not request.reason:
            request.reason[REASON_UNKNOWN] += 1
        if self._counters is not None:
            self._count_inbound(request)
        if not request.full and not self.eds_debounce and self._push_now is not None:
            self._push_now(request)
            return
        now = self._clock.now()
        if self._pending is None:
            self._pending = request
            self._first_event = now
            self._events_in_batch = 0
            if tracing.TRACER is not None:
                self._trace = tracing.start_change()
        else:
            self._pending.merge(request)
        if self._trace is not None:
            self._trace.event(request)
        self._last_event = now
        self._events_in_batch += 1
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            if self._pending is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = self._clock.now()
            quiet = now - self._last_event
            waited = now - self._first_event
            # Within a microsecond counts as elapsed: float clock arithmetic must not miss a boundary.
            if quiet >= self.after - _EPSILON or waited >= self.max_delay - _EPSILON:
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
                trace, self._trace = self._trace, None
                if trace is None:
                    await self._push(request)
                else:
                    with trace.pushing(request):
                        await self._push(request)
                self.last_debounce_time = self._clock.now() - self._first_event
                if self._debounce_time is not None:
                    self._debounce_time.observe(self.last_debounce_time)
                self.pushes += 1
                continue
            delay = min(self.after - quiet, self.max_delay - waited)
            self._wakeup.clear()
            await self._clock.wait(self._wakeup, delay)

    def _count_inbound(self, request: PushRequest) -> None:
        """istiod's pilot_inbound_updates: every update is a config update (ConfigUpdate), endpoint-only ones
        are also eds (EDSUpdate), service changes also svc (SvcUpdate)."""
        assert self._counters is not None
        self._counters["pilot_inbound_updates{type=config}"] += 1
        if not request.full:
            self._counters["pilot_inbound_updates{type=eds}"] += 1
        services = request.reason.get(REASON_SERVICE, 0)
        if services:
            self._counters["pilot_inbound_updates{type=svc}"] += services
