"""The debouncer (istiod's debounce()) driven by a manual clock: no wall-clock windows."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from pilot.model.config import ConfigKey
from pilot.push.clock import ManualClock
from pilot.push.debounce import Debouncer
from pilot.push.request import PushRequest


def req(name: str, full: bool = True) -> PushRequest:
    kind = "VirtualService" if full else "Endpoints"
    return PushRequest(full=full, configs_updated={ConfigKey(kind, "ns", name)}, reason=Counter(config=1))


async def settle(condition: Callable[[], bool] = lambda: False, turns: int = 50) -> None:
    """Let the debouncer task run until it parks (or ``condition`` holds); bounded by loop turns."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)


class Harness:
    def __init__(self, after: float = 0.1, max_delay: float = 10.0, eds_debounce: bool = True) -> None:
        self.clock = ManualClock()
        self.pushed: list[PushRequest] = []
        self.immediate: list[PushRequest] = []
        self.release: asyncio.Event | None = None

        async def push(request: PushRequest) -> None:
            self.pushed.append(request)
            if self.release is not None:
                await self.release.wait()

        self.debouncer = Debouncer(
            push,
            after=after,
            max_delay=max_delay,
            clock=self.clock,
            eds_debounce=eds_debounce,
            push_now=self.immediate.append,
        )

    async def __aenter__(self) -> Harness:
        self.task = asyncio.create_task(self.debouncer.run())
        await settle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await settle()


async def test_push_fires_after_quiet_period_not_before() -> None:
    async with Harness(after=0.1) as h:
        h.debouncer.update(req("a"))
        await settle()
        await h.advance(0.099)
        assert h.pushed == []
        await h.advance(0.001)
        assert len(h.pushed) == 1


async def test_burst_coalesces_into_one_push_with_every_key_and_reason() -> None:
    async with Harness(after=0.1) as h:
        for i in range(20):
            h.debouncer.update(req(f"vs{i}"))
            await h.advance(0.01)  # never 100 ms of quiet during the burst
        assert h.pushed == []
        await h.advance(0.1)
        assert len(h.pushed) == 1
        assert len(h.pushed[0].configs_updated or ()) == 20
        assert h.pushed[0].reason["config"] == 20
        await h.advance(5)
        assert len(h.pushed) == 1, "nothing more arrived: no second push"


async def test_each_event_restarts_the_quiet_period() -> None:
    async with Harness(after=0.1) as h:
        h.debouncer.update(req("a"))
        await h.advance(0.08)
        h.debouncer.update(req("b"))
        await h.advance(0.08)
        assert h.pushed == [], "160 ms after the first event, but only 80 ms after the last"
        await h.advance(0.02)
        assert len(h.pushed) == 1


async def test_continuous_events_are_forced_out_by_max_delay() -> None:
    async with Harness(after=0.1, max_delay=0.3) as h:
        for _ in range(25):  # an event every 20 ms: never 100 ms of quiet
            h.debouncer.update(req("hot"))
            await h.advance(0.02)
            if h.pushed:
                break
        assert len(h.pushed) == 1
        assert h.clock.now() - 1000.0 == pytest.approx(0.3), "forced out 300 ms after the first event"


async def test_events_during_a_push_form_the_next_batch() -> None:
    async with Harness(after=0.01) as h:
        h.release = asyncio.Event()
        h.debouncer.update(req("first"))
        await h.advance(0.01)
        assert len(h.pushed) == 1
        h.debouncer.update(req("second"))
        h.debouncer.update(req("third"))
        await h.advance(1.0)
        assert len(h.pushed) == 1, "one push at a time"
        h.release.set()
        await settle(lambda: len(h.pushed) == 2)
        assert {k.name for k in h.pushed[1].configs_updated or ()} == {"second", "third"}


async def test_eds_debounce_off_pushes_endpoint_changes_at_once_without_merging() -> None:
    async with Harness(after=0.1, eds_debounce=False) as h:
        h.debouncer.update(req("svc-a", full=False))
        h.debouncer.update(req("svc-b", full=False))
        assert [sorted(k.name for k in r.configs_updated or ()) for r in h.immediate] == [["svc-a"], ["svc-b"]]
        h.debouncer.update(req("vs"))  # config changes still wait
        assert len(h.immediate) == 2
        await h.advance(0.1)
        assert len(h.pushed) == 1


async def test_eds_debounce_on_endpoint_changes_wait_and_merge() -> None:
    async with Harness(after=0.1, eds_debounce=True) as h:
        h.debouncer.update(req("svc-a", full=False))
        h.debouncer.update(req("svc-b", full=False))
        assert h.immediate == []
        await h.advance(0.1)
        assert len(h.pushed) == 1 and not h.pushed[0].full


async def test_a_request_without_reason_counts_as_unknown() -> None:
    async with Harness() as h:
        h.debouncer.update(PushRequest(configs_updated={ConfigKey("VirtualService", "ns", "x")}))
        await h.advance(0.1)
        assert h.pushed[0].reason == Counter(unknown=1)
