"""The task supervisor and the isolating store subscriber, on a controllable clock."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from pilot.model.config import ConfigKey
from pilot.push.clock import ManualClock
from pilot.tasks import INTERNAL_ERRORS, Backoff, Supervisor, isolating, task_failures
from tests.hardening.waiting import TIMEOUT, wait_for


def test_backoff_doubles_to_a_ceiling_and_resets() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1


async def test_a_failing_task_is_reported_counted_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    counters: Counter[str] = Counter()
    supervisor = Supervisor(counters, clock=clock, initial_backoff=1.0, max_backoff=4.0)
    runs = 0
    release = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError(f"boom {runs}")
        await release.wait()  # the fourth run stays up

    caplog.set_level(logging.INFO, logger="pilot.tasks")
    supervisor.spawn("source", flaky)
    await wait_for(lambda: supervisor.problems() == ["task source failed (RuntimeError: boom 1); restarting"], "down")
    assert counters[task_failures("source")] == 1
    assert "task source failed (RuntimeError: boom 1); restarting in 1.0s" in caplog.messages
    clock.advance(0.9)
    await asyncio.sleep(0)
    assert runs == 1  # still waiting out the backoff
    clock.advance(0.1)
    await wait_for(lambda: runs == 2 and clock.waiting == 1, "second run failed, waiting 2s")
    clock.advance(2.0)
    await wait_for(lambda: runs == 3 and clock.waiting == 1, "third run failed, waiting 4s")
    clock.advance(4.0)
    await wait_for(lambda: runs == 4 and not supervisor.problems(), "fourth run up")
    assert counters[task_failures("source")] == 3
    await supervisor.stop()


async def test_a_task_that_returns_is_restarted_too() -> None:
    clock = ManualClock()
    supervisor = Supervisor(clock=clock)
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1

    supervisor.spawn("quitter", quits)
    await wait_for(lambda: supervisor.problems() == ["task quitter returned; restarting"], "reported")
    clock.advance(0.1)
    await wait_for(lambda: runs == 2, "restarted")
    await supervisor.stop()


async def test_a_long_healthy_run_resets_the_backoff() -> None:
    clock = ManualClock()
    supervisor = Supervisor(clock=clock, initial_backoff=1.0, max_backoff=8.0, healthy_after=60.0)
    failures = asyncio.Queue[None]()

    async def fails_when_told() -> None:
        await failures.get()
        raise ValueError("x")

    supervisor.spawn("t", fails_when_told)
    for delay in (1.0, 2.0):  # two quick failures: backoff grows
        failures.put_nowait(None)
        await wait_for(lambda: bool(supervisor.problems()), "failed")
        clock.advance(delay)
        await wait_for(lambda: not supervisor.problems(), "restarted")
    clock.advance(61.0)  # a healthy minute
    failures.put_nowait(None)
    await wait_for(lambda: bool(supervisor.problems()), "failed again")
    clock.advance(1.0)  # back to the initial delay, not 4 s
    await wait_for(lambda: not supervisor.problems(), "restarted after the initial delay")
    await supervisor.stop()


async def test_stop_cancels_every_task() -> None:
    supervisor = Supervisor()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor.spawn("forever", forever)
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await asyncio.wait_for(supervisor.stop(), TIMEOUT)
    assert cancelled.is_set() and not supervisor.problems()


def test_isolating_retries_key_by_key_and_names_the_bad_one(caplog: pytest.LogCaptureFixture) -> None:
    good, bad = ConfigKey("Service", "default", "good"), ConfigKey("Service", "default", "bad")
    applied: list[set[ConfigKey]] = []

    def handler(keys: set[ConfigKey]) -> None:
        if bad in keys:
            raise KeyError("broken object")
        applied.append(keys)

    counters: Counter[str] = Counter()
    caplog.set_level(logging.ERROR, logger="pilot.tasks")
    isolating(handler, "config change handler", counters)({good, bad})
    assert applied == [{good}]
    assert counters[INTERNAL_ERRORS] == 1
    assert "config change handler failed for Service default/bad; the change is skipped" in caplog.text


async def test_an_adopted_task_that_dies_is_reported_not_restarted() -> None:
    counters: Counter[str] = Counter()
    supervisor = Supervisor(counters)

    async def dies() -> None:
        raise ConnectionError("API server gone")

    task = asyncio.create_task(dies())
    supervisor.adopt("kubernetes-source", task)
    await asyncio.gather(task, return_exceptions=True)
    await wait_for(lambda: supervisor.problems(), "reported")
    assert supervisor.problems() == ["task kubernetes-source failed (ConnectionError: API server gone)"]
    assert counters[task_failures("kubernetes-source")] == 1
    await supervisor.stop()
