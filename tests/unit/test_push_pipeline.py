"""Push-queue semantics (istiod's PushQueue) and the debounce settings; the debouncer's timing is tested
on a manual clock in test_debounce.py, PushRequest merging in test_push_request.py."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from pilot.model.config import ConfigKey
from pilot.push.debounce import eds_debounce_from_env, parse_duration
from pilot.push.queue import PushQueue
from pilot.push.request import PushRequest


def req(name: str, reason: str = "config", full: bool = True) -> PushRequest:
    return PushRequest(
        full=full, configs_updated={ConfigKey("VirtualService", "ns", name)}, reason=Counter({reason: 1})
    )


def test_parse_duration() -> None:
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("10s") == 10
    assert parse_duration("1m") == 60
    assert parse_duration("0.5") == 0.5
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")


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
    for _ in range(10):
        await asyncio.sleep(0)  # let the getter run until it parks on the empty queue
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


def test_eds_debounce_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PILOT_ENABLE_EDS_DEBOUNCE", raising=False)
    assert eds_debounce_from_env() is True
    monkeypatch.setenv("PILOT_ENABLE_EDS_DEBOUNCE", "false")
    assert eds_debounce_from_env() is False
    monkeypatch.setenv("PILOT_ENABLE_EDS_DEBOUNCE", "maybe")
    with pytest.raises(ValueError, match="PILOT_ENABLE_EDS_DEBOUNCE"):
        eds_debounce_from_env()
