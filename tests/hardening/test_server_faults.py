"""A running pilot survives its own pipeline failing: what /ready, the metrics and the log say meanwhile.

A real PilotServer on loopback (monitoring over real HTTP); failures are injected into one pipeline step at a
time: the config source task dying, a push failing, the change handler failing for one object, the config
directory disappearing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from pilot.model.config import ConfigKey
from pilot.push.clock import ManualClock
from pilot.push.request import PushRequest
from pilot.server import PilotServer, ServerOptions
from pilot.tasks import INTERNAL_ERRORS, Supervisor, task_failures
from tests.hardening.waiting import wait_for


def se(name: str, port: int = 80) -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: default}}\n"
        f"spec: {{hosts: [{name}.example.com], ports: [{{number: {port}, name: http}}], resolution: DNS}}\n"
    )


class Running:
    def __init__(self, server: PilotServer, http: aiohttp.ClientSession, clock: ManualClock) -> None:
        self.server = server
        self.http = http
        self.clock = clock  # the task supervisor's

    async def ready(self) -> tuple[int, str]:
        async with self.http.get(f"http://127.0.0.1:{self.server.monitoring_port}/ready") as response:
            return response.status, await response.text()

    async def wait_ready(self, status: int, contains: str = "") -> str:
        seen: list[tuple[int, str]] = []

        async def check() -> bool:
            seen[:] = [await self.ready()]
            return seen[0][0] == status and contains in seen[0][1]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not await check():
            assert loop.time() < deadline, f"/ready never {status} with {contains!r}; last {seen}"
            await asyncio.sleep(0.01)
        return seen[0][1]


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    servers: list[PilotServer] = []

    async def starter(prepare: Callable[[PilotServer], None] = lambda _server: None) -> Running:
        config = tmp_path / "config"
        config.mkdir(exist_ok=True)
        (config / "a.yaml").write_text(se("a"))
        server = PilotServer(
            ServerOptions(
                config_dir=config, grpc_addr="127.0.0.1:0", monitoring_addr="127.0.0.1:0", debounce_after=0.01
            )
        )
        clock = ManualClock()
        server.tasks = Supervisor(server.discovery.counters, clock=clock)
        prepare(server)
        servers.append(server)
        await asyncio.wait_for(server.start(), 10)
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Running(server, http, clock)

    sessions: list[aiohttp.ClientSession] = []
    yield starter
    for http in sessions:
        await http.close()
    for server in servers:
        await asyncio.wait_for(server.stop(), 10)


async def test_a_dead_pipeline_task_fails_ready_by_name_until_restarted(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="pilot.tasks")
    runs = 0

    def prepare(server: PilotServer) -> None:
        assert server.source is not None
        real_run = server.source.run

        async def run() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise RuntimeError("watcher exploded")
            await real_run()

        server.source.run = run  # type: ignore[method-assign]

    pilot = await start(prepare)
    body = await pilot.wait_ready(503, "task config-source failed (RuntimeError: watcher exploded); restarting")
    assert body.startswith("not ready: ")
    assert pilot.server.discovery.counters[task_failures("config-source")] == 1
    assert "task config-source failed (RuntimeError: watcher exploded); restarting in 0.1s" in caplog.text
    pilot.clock.advance(0.1)
    await pilot.wait_ready(200)
    assert runs == 2
    # And the restarted source works.
    assert pilot.server.source is not None
    await wait_for(lambda: pilot.server.source.watching, "watching")  # type: ignore[union-attr]
    await asyncio.to_thread(Path(pilot.server.source.root, "b.yaml").write_text, se("b"))
    await wait_for(lambda: pilot.server.store.get(ConfigKey("ServiceEntry", "default", "b")), "b loaded")


async def test_a_failed_push_keeps_serving_and_its_changes_go_with_the_next(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    pilot = await start()
    discovery = pilot.server.discovery
    real_push = discovery.push
    failures = 0

    async def push(request: PushRequest) -> None:
        nonlocal failures
        if any(key.name == "b.example.com" for key in request.configs_updated or ()) and failures == 0:
            failures += 1
            raise RuntimeError("generation bug")
        await real_push(request)

    discovery.push = push  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="pilot.server")
    root = Path(pilot.server.source.root)  # type: ignore[union-attr]
    (root / "b.yaml").write_text(se("b"))
    await wait_for(lambda: discovery.counters[INTERNAL_ERRORS] == 1, "failure counted")
    assert "push for" in caplog.text and "failed; proxies keep the config they have" in caplog.text
    assert "b.example.com" not in discovery.current.services  # type: ignore[union-attr]
    (root / "c.yaml").write_text(se("c"))  # the next change carries b along
    await wait_for(lambda: "c.example.com" in discovery.current.services, "next push")  # type: ignore[union-attr]
    assert "b.example.com" in discovery.current.services  # type: ignore[union-attr]
    status, _ = await pilot.ready()
    assert status == 200 and not pilot.server.tasks.problems()


async def test_a_change_handler_failure_costs_one_object(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    pilot = await start()
    registry = pilot.server.registry
    real_apply = registry.apply

    def apply(changes):  # type: ignore[no-untyped-def]
        if ConfigKey("ServiceEntry", "default", "bad") in changes:
            raise ValueError("registry bug")
        return real_apply(changes)

    registry.apply = apply  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="pilot.tasks")
    root = Path(pilot.server.source.root)  # type: ignore[union-attr]
    (root / "two.yaml").write_text(se("bad") + "---\n" + se("good"))
    discovery = pilot.server.discovery
    await wait_for(lambda: "good.example.com" in discovery.current.services, "good pushed")  # type: ignore[union-attr]
    assert "config change handler failed for ServiceEntry default/bad" in caplog.text
    assert discovery.counters[INTERNAL_ERRORS] == 1


async def test_an_unreadable_config_dir_keeps_serving_and_says_so(start: Start) -> None:
    pilot = await start()
    root = Path(pilot.server.source.root)  # type: ignore[union-attr]
    await wait_for(lambda: pilot.server.source.watching, "watching")  # type: ignore[union-attr]
    shutil.rmtree(root)
    body = await pilot.wait_ready(200, "warning: config dir")
    assert body == f"ready\nwarning: config dir {root} does not exist; keeping the 1 files' objects it had\n"
    assert pilot.server.store.get(ConfigKey("ServiceEntry", "default", "a")) is not None
    async with pilot.http.get(f"http://127.0.0.1:{pilot.server.monitoring_port}/metrics") as response:
        metrics = await response.text()
    assert 'pilot_config_source_errors{reason="root",source="files"}' in metrics or (
        'pilot_config_source_errors{source="files",reason="root"}' in metrics
    )
