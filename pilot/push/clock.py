"""Time for the push pipeline's timing logic, replaceable so tests can drive it without wall-clock waits."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        """Return once ``event`` is set or ``timeout`` seconds of this clock have passed."""
        ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        if event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout, 0.0)):
                await event.wait()


class ManualClock:
    """A clock that moves only when ``advance`` is called; waiters whose deadline passes are woken."""

    def __init__(self, start: float = 1000.0) -> None:
        self._ns = round(start * 1e9)  # integer nanoseconds: repeated advances add up exactly
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._ns / 1e9

    async def wait(self, event: asyncio.Event, timeout: float) -> None:
        if event.is_set():
            return
        if timeout <= 0:
            return
        timer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._ns + round(timeout * 1e9), next(self._order), timer))
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not timer.done():
                timer.cancel()

    def advance(self, seconds: float) -> None:
        self._ns += round(seconds * 1e9)
        while self._sleepers and self._sleepers[0][0] <= self._ns:
            _, _, timer = heapq.heappop(self._sleepers)
            if not timer.done():
                timer.set_result(None)

    @property
    def waiting(self) -> int:
        """Timers still pending (for tests to know the debouncer is parked)."""
        return sum(1 for _, _, t in self._sleepers if not t.done())
