"""Keeping the pipeline's work going when a piece of it fails.

- ``Supervisor`` owns named long-running tasks (config source, debounce, push sender, …). A task that raises
  or returns is logged with its name and traceback, counted (``pilot_task_failures{task}``), reported by
  ``problems()`` (which /ready answers 503 with) and restarted after a backoff (0.1 s doubling to 30 s; back
  to 0.1 s once a run lasted a minute). Nothing a task does can end the process or go unnoticed.
- ``isolating(handler)`` wraps a store subscriber: a failure for a batch of changed keys is retried key by
  key, so one bad object fails alone, named in the log, and the rest of the batch still gets through.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from pilot.model.config import ConfigKey
from pilot.push.clock import Clock, MonotonicClock

log = logging.getLogger(__name__)

INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0  # a run this long resets the backoff
INTERNAL_ERRORS = "pilot_total_xds_internal_errors"


def task_failures(name: str) -> str:
    return f"pilot_task_failures{{task={name}}}"


class Backoff:
    """Exponential delays: ``initial``, doubling up to ``maximum``; ``reset()`` starts over."""

    def __init__(self, initial: float = INITIAL_BACKOFF, maximum: float = MAX_BACKOFF) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self.initial


@dataclass
class _Supervised:
    name: str
    factory: Callable[[], Awaitable[None]]
    backoff: Backoff
    runner: asyncio.Task[None] | None = None
    failures: int = 0
    down: str | None = None  # why the task is not running now (it failed and waits to restart)
    owned: bool = True  # False: adopted, only reported on


class Supervisor:
    def __init__(
        self,
        counters: Counter[str] | None = None,
        *,
        clock: Clock | None = None,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        healthy_after: float = HEALTHY_AFTER,
    ) -> None:
        self.counters: Counter[str] = counters if counters is not None else Counter()
        self._clock = clock or MonotonicClock()
        self._initial = initial_backoff
        self._max = max_backoff
        self._healthy_after = healthy_after
        self._tasks: dict[str, _Supervised] = {}
        self._never = asyncio.Event()  # waited on with a timeout: a sleep on the supervisor's clock

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``factory()`` as task ``name`` until ``stop()``, restarting it whenever it fails or returns."""
        if name in self._tasks:
            raise ValueError(f"task {name} is already supervised")
        entry = _Supervised(name, factory, Backoff(self._initial, self._max))
        self.counters[task_failures(name)] += 0  # present from start, so rate() sees the first failure
        entry.runner = asyncio.create_task(self._run(entry), name=name)
        entry.runner.add_done_callback(lambda task, entry=entry: self._runner_done(entry, task))
        self._tasks[name] = entry
        return entry.runner

    def adopt(self, name: str, task: asyncio.Task[None]) -> None:
        """Report ``task`` (started and owned elsewhere, not restartable here) in ``problems()`` if it fails."""
        entry = _Supervised(name, lambda: task, Backoff(self._initial, self._max), runner=task, owned=False)
        self.counters[task_failures(name)] += 0
        self._tasks[name] = entry

        def done(finished: asyncio.Task[None]) -> None:
            if finished.cancelled():
                return
            exc = finished.exception()
            entry.failures += 1
            self.counters[task_failures(name)] += 1
            entry.down = f"task {name} {'failed (' + type(exc).__name__ + ': ' + str(exc) + ')' if exc else 'returned'}"
            log.error("%s; not restarted", entry.down, exc_info=exc)

        task.add_done_callback(done)

    def problems(self) -> list[str]:
        """One line per task that is not running now, e.g. 'task debounce failed (ValueError: x); restarting'."""
        return [entry.down for entry in self._tasks.values() if entry.down is not None]

    def failures(self, name: str) -> int:
        return self._tasks[name].failures

    async def stop(self) -> None:
        """Cancel every supervised task (adopted ones are stopped by their owners)."""
        runners = [e.runner for e in self._tasks.values() if e.runner is not None and e.owned]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        self._tasks.clear()

    async def _run(self, entry: _Supervised) -> None:
        while True:
            started = self._clock.now()
            try:
                await entry.factory()
                reason = "returned"
                exc: BaseException | None = None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                reason = f"failed ({type(error).__name__}: {error})"[:300]
                exc = error
            if self._clock.now() - started >= self._healthy_after:
                entry.backoff.reset()
            delay = entry.backoff.next()
            entry.failures += 1
            self.counters[task_failures(entry.name)] += 1
            entry.down = f"task {entry.name} {reason}; restarting"
            log.error("task %s %s; restarting in %.1fs", entry.name, reason, delay, exc_info=exc)
            await self._clock.wait(self._never, delay)
            entry.down = None
            log.info("task %s restarted (failure %d)", entry.name, entry.failures)

    def _runner_done(self, entry: _Supervised, task: asyncio.Task[None]) -> None:
        # Only stop() cancels a runner; anything else ending it is a bug in the supervisor: stay visible.
        if task.cancelled():
            return
        exc = task.exception()
        entry.down = f"task {entry.name} stopped ({type(exc).__name__ if exc else 'returned'}); not restarted"
        log.error("task %s supervisor ended", entry.name, exc_info=exc)


def isolating(
    handler: Callable[[set[ConfigKey]], None], name: str, counters: Counter[str] | None = None
) -> Callable[[set[ConfigKey]], None]:
    """A store subscriber that never raises: when ``handler`` fails for a batch, each key is retried alone,
    and each key that still fails is logged by kind/namespace/name and counted as an internal error."""

    def call(keys: set[ConfigKey]) -> None:
        try:
            handler(keys)
            return
        except Exception:
            if len(keys) == 1:
                _report(name, keys, counters)
                return
        for key in sorted(keys):
            try:
                handler({key})
            except Exception:
                _report(name, (key,), counters)

    return call


def _report(name: str, keys: Iterable[ConfigKey], counters: Counter[str] | None) -> None:
    if counters is not None:
        counters[INTERNAL_ERRORS] += 1
    described = ", ".join(f"{k.kind} {k.namespace}/{k.name}" if k.namespace else f"{k.kind} {k.name}" for k in keys)
    log.exception("%s failed for %s; the change is skipped, the rest goes on", name, described)
