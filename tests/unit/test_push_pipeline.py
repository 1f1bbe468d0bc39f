"""Debounce and push-queue semantics (istiod's debounce() and PushQueue)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from pilot.config.model import ConfigKey
from pilot.push.debounce import Debouncer, parse_duration
from pilot.push.queue import PushQueue
from pilot.push.request import PushRequest


def req(name: str, reason: str = "config", full: bool = True) -> PushRequest:
    return PushRequest(
        full=full, configs_updated=frozenset({ConfigKey("VirtualService", "ns", name)}), reason=Counter({reason: 1})
    )


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


def test_merge_unions_keys_sums_reasons_keeps_oldest_start() -> None:
    a = PushRequest(
        full=False, configs_updated=frozenset({ConfigKey("A", "n", "1")}), reason=Counter(config=1), start=5.0
    )
    b = PushRequest(
        full=True,
        configs_updated=frozenset({ConfigKey("B", "n", "2")}),
        reason=Counter(config=2, endpoint=1),
        start=7.0,
        forced=True,
    )
    merged = a.merge(b)
    assert merged.full and merged.forced
    assert merged.configs_updated == {ConfigKey("A", "n", "1"), ConfigKey("B", "n", "2")}
    assert merged.reason == Counter(config=3, endpoint=1)
    assert merged.start == 5.0
    assert a.reason == Counter(config=1)  # inputs untouched


def test_parse_duration() -> None:
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("10s") == 10
    assert parse_duration("1m") == 60
    assert parse_duration("0.5") == 0.5
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")


async def test_burst_of_events_coalesces_into_one_push() -> None:
    pushed: list[PushRequest] = []

    async def push(r: PushRequest) -> None:
        pushed.append(r)

    debouncer = Debouncer(push, after=0.05, max_delay=5)
    task = asyncio.create_task(debouncer.run())
    try:
        for i in range(20):
            debouncer.update(req(f"vs{i}"))
            await asyncio.sleep(0.002)
        await wait_for(lambda: len(pushed) == 1)
        assert len(pushed[0].configs_updated) == 20
        assert pushed[0].reason["config"] == 20
        # Nothing more arrives: no second push.
        await asyncio.sleep(0.15)
        assert len(pushed) == 1
    finally:
        task.cancel()


async def test_continuous_events_are_forced_out_by_max_delay() -> None:
    pushed: list[float] = []
    loop = asyncio.get_running_loop()

    async def push(r: PushRequest) -> None:
        pushed.append(loop.time())

    debouncer = Debouncer(push, after=0.1, max_delay=0.3)
    task = asyncio.create_task(debouncer.run())
    start = loop.time()
    try:
        # An event every 20 ms never leaves 100 ms of quiet; the 300 ms cap must push anyway.
        while loop.time() - start < 0.5 and not pushed:
            debouncer.update(req("hot"))
            await asyncio.sleep(0.02)
        assert pushed, "max delay did not force a push"
        assert 0.25 <= pushed[0] - start < 0.5
    finally:
        task.cancel()


async def test_events_during_a_push_form_the_next_batch() -> None:
    release = asyncio.Event()
    pushed: list[PushRequest] = []

    async def push(r: PushRequest) -> None:
        pushed.append(r)
        if len(pushed) == 1:
            await release.wait()

    debouncer = Debouncer(push, after=0.01, max_delay=1)
    task = asyncio.create_task(debouncer.run())
    try:
        debouncer.update(req("first"))
        await wait_for(lambda: len(pushed) == 1)
        debouncer.update(req("second"))
        debouncer.update(req("third"))
        await asyncio.sleep(0.05)
        assert len(pushed) == 1  # one push at a time
        release.set()
        await wait_for(lambda: len(pushed) == 2)
        assert {k.name for k in pushed[1].configs_updated} == {"second", "third"}
    finally:
        task.cancel()


async def test_queue_merges_pending_and_keeps_position() -> None:
    queue: PushQueue[str] = PushQueue()
    queue.enqueue("a", req("1"))
    queue.enqueue("b", req("2"))
    queue.enqueue("a", req("3"))
    assert len(queue) == 2
    key, request = await queue.dequeue()
    assert key == "a" and {k.name for k in request.configs_updated} == {"1", "3"}
    key, _ = await queue.dequeue()
    assert key == "b"


async def test_queue_holds_requests_for_in_flight_connections_and_requeues_at_tail() -> None:
    queue: PushQueue[str] = PushQueue()
    queue.enqueue("a", req("1"))
    _key, _ = await queue.dequeue()  # "a" now in flight
    queue.enqueue("a", req("2"))
    queue.enqueue("a", req("3"))
    queue.enqueue("b", req("4"))
    assert len(queue) == 1  # only b waits; a's requests are held, merged
    queue.mark_done("a")
    order = [(await queue.dequeue()) for _ in range(2)]
    assert [k for k, _ in order] == ["b", "a"]
    assert {k.name for k in order[1][1].configs_updated} == {"2", "3"}


async def test_dequeue_waits_for_work() -> None:
    queue: PushQueue[str] = PushQueue()
    getter = asyncio.create_task(queue.dequeue())
    await asyncio.sleep(0.01)
    assert not getter.done()
    queue.enqueue("x", req("1"))
    key, _ = await asyncio.wait_for(getter, 1)
    assert key == "x"


def test_debounce_settings_come_from_istiod_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    from pilot.push.debounce import durations_from_env

    monkeypatch.delenv("PILOT_DEBOUNCE_AFTER", raising=False)
    monkeypatch.delenv("PILOT_DEBOUNCE_MAX", raising=False)
    assert durations_from_env() == (pytest.approx(0.1), 10.0)
    monkeypatch.setenv("PILOT_DEBOUNCE_AFTER", "250ms")
    monkeypatch.setenv("PILOT_DEBOUNCE_MAX", "2s")
    assert durations_from_env() == (pytest.approx(0.25), 2.0)
