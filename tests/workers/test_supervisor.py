"""`pilot serve --workers 2` as real processes on loopback, with simulated proxies on real gRPC streams.

Covers: proxies spread over both workers (seen through the supervisor's merged /debug/adsz), /metrics summed
across workers, one worker SIGKILLed and its proxies resynced by the survivor, the worker restarted and
/ready back to 200, SIGTERM with streams open, the supervisor SIGKILLed (workers must not outlive it), and
start failures that end the server once instead of looping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpclib.const
import grpclib.exceptions
import pytest

from pilot.server import ServerOptions
from pilot.workers.supervisor import Supervisor
from tests.e2e.harness import wait_until
from tests.workers.harness import MonitoringClient, SimulatedProxy, SupervisorProcess, process_alive

PRODUCTPAGE = "outbound|9080||productpage.default.svc.cluster.local"


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[SupervisorProcess]:
    process = SupervisorProcess(tmp_path)
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
async def client(supervisor: SupervisorProcess) -> AsyncIterator[MonitoringClient]:
    async with aiohttp.ClientSession() as session:
        yield MonitoringClient(session, supervisor.url)


async def start(supervisor: SupervisorProcess, client: MonitoringClient) -> tuple[int, dict[int, int]]:
    """Start the supervisor, wait for /ready; return the xDS port and each worker's pid."""
    supervisor.start()

    async def ready() -> bool:
        if supervisor.proc is not None and supervisor.proc.poll() is not None:
            raise RuntimeError(f"supervisor exited with {supervisor.proc.returncode}:\n{supervisor.log()}")
        return await client.is_ready()

    await wait_until(ready, 30, message="supervisor /ready == 200", describe=supervisor.log)
    workerz = await client.json("/debug/workerz")
    port = int(workerz["grpcAddress"].rpartition(":")[2])
    assert port > 0, "port 0 was not resolved to one concrete port"
    return port, {w["worker"]: w["pid"] for w in workerz["workers"]}


async def connect(proxies: list[SimulatedProxy], supervisor: SupervisorProcess) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(proxy.run(), name=f"proxy-{proxy.short_id}") for proxy in proxies]
    await wait_until(
        lambda: all(proxy.synced_on == 1 for proxy in proxies),
        15,
        message="every proxy's first CDS",
        describe=lambda: supervisor.log() + "\n" + "\n".join(f"{p.short_id}: {p.errors[-3:]}" for p in proxies),
    )
    return tasks


async def disconnect(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_proxies_spread_over_workers_survive_a_killed_worker_and_sigterm(
    supervisor: SupervisorProcess, client: MonitoringClient
) -> None:
    port, pids = await start(supervisor, client)
    proxies = [SimulatedProxy(n, port) for n in range(1, 21)]
    tasks = await connect(proxies, supervisor)
    try:
        reference = proxies[0].clusters
        assert PRODUCTPAGE in reference
        assert all(proxy.clusters == reference for proxy in proxies)

        # Spread: the merged adsz names every proxy once, with the worker that holds it.
        adsz = await client.json("/debug/adsz")
        assert adsz["totalClients"] == 20
        holder = {entry["connectionId"].rpartition("-")[0]: entry["worker"] for entry in adsz["clients"]}
        assert sorted(holder) == sorted(proxy.short_id for proxy in proxies)
        per_worker = Counter(holder.values())
        assert set(per_worker) == {0, 1}, f"the proxies are not on both workers: {per_worker}"
        syncz = await client.json("/debug/syncz")
        assert Counter(entry["worker"] for entry in syncz) == per_worker
        assert sorted(entry["proxy"] for entry in syncz) == sorted(holder)

        # Metrics: connections summed; config gauges from one worker (every worker has the same config).
        metrics = await client.metrics()
        assert metrics["pilot_xds"] == 20
        assert metrics["pilot_services"] == len(await client.json("/debug/registryz"))
        assert metrics["pilot_workers"] == 2

        # Whole-config endpoints come from one worker, ?pretty passes through; a cache clear reaches both.
        status, text, headers = await client.get("/debug/configz?pretty")
        assert status == 200 and "\n  " in text
        configz = json.loads(text)
        keys = [(c["kind"], c["metadata"].get("namespace"), c["metadata"]["name"]) for c in configz]
        assert len(keys) == len(set(keys)) > 0, "configz was concatenated across workers"
        assert headers["X-Pilot-Workers"] in ("0", "1")
        async with client.session.post(f"{client.base_url}/debug/config_cache?clear=true") as response:
            assert response.status == 200 and response.headers["X-Pilot-Workers"] == "0,1"
        status, _, _ = await client.get("/debug/config_cache?clear=true")
        assert status == 405, "a mutation over GET must be refused"

        # REST xDS polls reach a worker through the supervisor's port (round robin), 304 when unchanged.
        poll = {"node": {"id": "sidecar~10.0.0.99~rest.default~default.svc.cluster.local"}}
        answered = set()
        for _ in range(2):
            async with client.session.post(f"{client.base_url}/v3/discovery:clusters", json=poll) as response:
                assert response.status == 200
                body = await response.json()
                answered.add(response.headers["X-Pilot-Workers"])
            assert any(PRODUCTPAGE in json.dumps(r) for r in body["resources"])
        assert answered == {"0", "1"}
        async with client.session.post(
            f"{client.base_url}/v3/discovery:clusters", json={**poll, "versionInfo": body["versionInfo"]}
        ) as response:
            assert response.status == 304, "the same clusters on either worker have the same version"

        # SIGKILL worker 0: its proxies reconnect (to the survivor) and get full config again.
        victims = [proxy for proxy in proxies if holder[proxy.short_id] == 0]
        survivors = [proxy for proxy in proxies if holder[proxy.short_id] == 1]
        os.kill(pids[0], signal.SIGKILL)
        await wait_until(
            lambda: all(proxy.synced_since(2, reference) for proxy in victims),
            15,
            message="the killed worker's proxies resynced",
            describe=supervisor.log,
        )
        assert all(proxy.connects == 1 for proxy in survivors), "a proxy of the surviving worker lost its stream"

        # The supervisor restarts worker 0 and /ready returns to 200.
        async def restarted() -> bool:
            worker = (await client.workers())[0]
            return worker["state"] == "ready" and worker["pid"] not in (None, pids[0]) and await client.is_ready()

        await wait_until(restarted, 20, message="worker 0 restarted and ready", describe=supervisor.log)
        assert f"worker 0 (pid {pids[0]}) was killed by SIGKILL; restarting it" in supervisor.log()
        assert not process_alive(pids[0])
        metrics = await client.metrics()
        assert metrics["pilot_xds"] == 20
        assert metrics["pilot_worker_restarts"] == 1
        assert (await client.json("/debug/adsz"))["totalClients"] == 20

        # SIGTERM with 20 streams open: every worker stops and the supervisor exits 0.
        current = [w["pid"] for w in await client.workers()]
        assert supervisor.proc is not None
        supervisor.proc.send_signal(signal.SIGTERM)
        assert await supervisor.wait_exit(10) == 0
        assert not [pid for pid in current if process_alive(pid)]
    finally:
        await disconnect(tasks)


async def test_workers_do_not_outlive_a_killed_supervisor(
    supervisor: SupervisorProcess, client: MonitoringClient
) -> None:
    port, pids = await start(supervisor, client)
    tasks = await connect([SimulatedProxy(n, port) for n in range(1, 5)], supervisor)
    try:
        assert supervisor.proc is not None
        supervisor.proc.send_signal(signal.SIGKILL)
        supervisor.proc.wait(timeout=10)
        await wait_until(
            lambda: not any(process_alive(pid) for pid in pids.values()),
            10,
            message="workers gone after the supervisor was killed",
            describe=supervisor.log,
        )
    finally:
        await disconnect(tasks)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


async def test_xds_port_held_by_another_program_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:  # no SO_REUSEPORT: the workers cannot share this port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        supervisor = SupervisorProcess(tmp_path, grpc_addr=f"127.0.0.1:{port}")
        supervisor.start()
        try:
            assert await supervisor.wait_exit(20) == 1
        finally:
            supervisor.kill()
    log = supervisor.log()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert f"127.0.0.1:{port}" in errors[0] and "in use" in errors[0]
    assert "started (pid" not in log, "workers were started on a port that cannot be shared"


async def test_worker_that_cannot_start_ends_the_server_without_a_restart_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = ServerOptions(config_dir=tmp_path, grpc_addr="127.0.0.1:0", monitoring_addr="127.0.0.1:0")
    failing = [sys.executable, "-c", "import sys; sys.exit('cannot load the config')"]
    supervisor = Supervisor(options, 2, worker_command=lambda worker, grpc_address: failing)
    with caplog.at_level(logging.INFO, logger="pilot.workers.supervisor"):
        assert await asyncio.wait_for(supervisor.run(asyncio.Event()), 20) == 1
    assert [worker.starts for worker in supervisor.workers] == [1, 1]
    assert not any(worker.alive for worker in supervisor.workers)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "exited with status 1 before pilot was ready; giving up" in errors[0], errors


async def test_workers_serve_authenticated_tls_xds_on_one_shared_port(tmp_path: Path) -> None:
    """--workers 2 with --tls-cert/--tls-key/--ca-cert: every worker serves the TLS port (shared), each
    authenticates client certificates; proxies land on both workers."""
    from tests.e2e.harness import free_port
    from tests.security.conftest import ads_first_response, connected_proxy
    from tests.security.pki import Authority, client_context

    authority = Authority()
    ca_file = authority.write(tmp_path / "root.pem")
    cert, key = authority.server().write(tmp_path, "pilot")
    workload = authority.workload("default", "app").write(tmp_path, "workload")
    secure_port = free_port()
    args = ("--secure-grpc-addr", f"127.0.0.1:{secure_port}", "--tls-cert", str(cert), "--tls-key", str(key))
    process = SupervisorProcess(tmp_path, extra_args=(*args, "--ca-cert", str(ca_file)))
    try:
        async with aiohttp.ClientSession() as session:
            client = MonitoringClient(session, process.url)
            await start(process, client)
            async with contextlib.AsyncExitStack() as stack:
                for n in range(12):
                    context = client_context(ca_file, workload)
                    await stack.enter_async_context(
                        connected_proxy(secure_port, "default", pod=f"app-{n}", ssl=context)
                    )
                adsz = await client.json("/debug/adsz")
                assert adsz["totalClients"] == 12
                workers = Counter(entry["worker"] for entry in adsz["clients"])
                assert set(workers) == {0, 1}, f"the TLS connections are not on both workers: {workers}"
            # Without a client certificate (and no token) a proxy is refused by whichever worker it reaches.
            for _ in range(4):
                with pytest.raises(grpclib.exceptions.GRPCError) as refused:
                    await ads_first_response(secure_port, ssl=client_context(ca_file))
                assert refused.value.status is grpclib.const.Status.UNAUTHENTICATED
            process.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            assert await process.wait_exit(15) == 0
    finally:
        process.kill()
