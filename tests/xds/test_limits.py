"""What one client may cost the server (pilot.xds.limits, pilot.httpserve): bounded nodes and messages, stream
admission, keepalive on silent connections, a capped monitoring port, debug requests within their share,
repeated errors logged once. Real grpclib and aiohttp servers on loopback; a manual clock for the timing logic.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpclib.client
import grpclib.const
import grpclib.exceptions
import grpclib.server
import pytest
from aiohttp import web
from envoy.service.discovery.v3 import discovery_pb2

from pilot import httpserve
from pilot.push.clock import ManualClock
from pilot.ratelog import LogLimiter
from pilot.server import PilotServer, ServerOptions
from pilot.xds import limits
from pilot.xds.names import CLUSTER_TYPE
from tests.xds.test_ads_protocol import NODE_ID, SERVICE_ENTRY, ads_request, write

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[PilotServer]:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write(config_dir / "a.yaml", SERVICE_ENTRY.format(name="a", host="a.example.com"))
    server = PilotServer(ServerOptions(config_dir=config_dir, grpc_addr="127.0.0.1:0", monitoring_addr="127.0.0.1:0"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def first_answer(port: int, request: discovery_pb2.DiscoveryRequest) -> discovery_pb2.DiscoveryResponse:
    channel = grpclib.client.Channel("127.0.0.1", port)
    try:
        async with ads_request(channel) as stream:
            try:
                await stream.send_message(request)
                response = await asyncio.wait_for(stream.recv_message(), 5)
            except grpclib.exceptions.GRPCError:
                await stream.cancel()
                raise
            assert response is not None
            await stream.cancel()
            return response
    finally:
        channel.close()


def cds_request(node_id: str = NODE_ID) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
    request.node.id = node_id
    return request


# ----- nodes and messages -----


def test_node_bounds() -> None:
    limits.check_node(NODE_ID, "app.default", 1000)
    with pytest.raises(limits.NodeError, match=r"node\.id is 2000 characters"):
        limits.check_node("x" * 2000, "", 0)
    with pytest.raises(limits.NodeError, match=r"node\.metadata is"):
        limits.check_node(NODE_ID, "", limits.MAX_NODE_METADATA + 1)
    with pytest.raises(limits.NodeError, match="'not-an-ip' is not an IP address"):
        limits.check_node("sidecar~not-an-ip~a.default~default.svc.cluster.local", "", 0)
    limits.check_node("sidecar~10.0.0.1,fd00::1~a.default~default.svc.cluster.local", "", 0)


async def test_bad_nodes_and_huge_messages_are_refused_fast_and_others_are_served(pilot: PilotServer) -> None:
    started = time.monotonic()
    for node_id in ("x" * 1_000_000, "sidecar~garbage~a.default~default.svc.cluster.local"):
        with pytest.raises(grpclib.exceptions.GRPCError) as failure:
            await first_answer(pilot.grpc_port, cds_request(node_id))
        assert failure.value.status is grpclib.const.Status.INVALID_ARGUMENT, failure.value
    big = cds_request()
    big.node.metadata.update({"blob": "y" * (5 * 1024 * 1024)})  # a 5 MB request: over the 4 MiB bound
    with pytest.raises(grpclib.exceptions.GRPCError) as failure:
        await first_answer(pilot.grpc_port, big)
    assert failure.value.status is grpclib.const.Status.RESOURCE_EXHAUSTED
    assert "larger than max" in (failure.value.message or "")
    assert time.monotonic() - started < 5  # refused before any parsing, not after seconds of work
    response = await first_answer(pilot.grpc_port, cds_request())  # a well-behaved proxy is still served
    assert response.type_url == CLUSTER_TYPE and response.resources
    assert pilot.discovery.counters["pilot_xds_refused_streams"] == 2


# ----- admission of new streams -----


def test_stream_admission_waits_in_a_bounded_line() -> None:
    clock = ManualClock()
    admission = limits.StreamAdmission(10, max_wait=1.0, clock=clock.now)
    assert [admission.reserve() for _ in range(10)] == [0.0] * 10  # the burst
    waits = [admission.reserve() for _ in range(10)]
    assert waits == pytest.approx([0.1 * i for i in range(1, 11)])  # one token every 0.1 s
    assert admission.reserve() is None and admission.refused == 1  # beyond a second of waiting: refused
    clock.advance(2.0)  # refilled (up to the burst)
    assert admission.reserve() == 0.0


async def test_a_refused_stream_gets_resource_exhausted(pilot: PilotServer) -> None:
    pilot.discovery.admission = limits.StreamAdmission(1, max_wait=0.0)
    await first_answer(pilot.grpc_port, cds_request())  # the one token
    with pytest.raises(grpclib.exceptions.GRPCError) as failure:
        await first_answer(pilot.grpc_port, cds_request())
    assert failure.value.status is grpclib.const.Status.RESOURCE_EXHAUSTED


# ----- keepalive -----


async def test_a_silent_connection_is_closed_by_keepalive() -> None:
    """A client that connects and never answers HTTP/2 pings (half-open) is closed after time + timeout."""
    config = limits.grpc_configuration()
    config = type(config)(
        _keepalive_time=0.2,
        _keepalive_timeout=0.2,
        _keepalive_permit_without_calls=True,
        _http2_max_pings_without_data=0,
        _http2_min_sent_ping_interval_without_data=0.2,
    )
    server = grpclib.server.Server([], config=config)
    await server.start("127.0.0.1", 0)
    try:
        port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        async with asyncio.timeout(5):
            while await reader.read(65536):  # the server's SETTINGS, then a PING we never answer
                pass
        assert time.monotonic() - started < 3
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


# ----- the monitoring port -----


async def test_monitoring_connections_are_capped_and_slow_headers_time_out(monkeypatch: pytest.MonkeyPatch) -> None:
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.3)
    await runner.setup()
    listener, factory = await httpserve.serve_tcp(runner, "127.0.0.1", 0, max_connections=3)
    port = listener.sockets[0].getsockname()[1]
    idle = []
    try:
        for _ in range(3):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        extra_reader, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(extra_reader.read(), 2) == b""  # over the cap: closed at once
        assert factory.refused >= 1
        for reader, _ in idle:  # idle ones (no request headers) are closed by the header timeout
            assert await asyncio.wait_for(reader.read(), 3) == b""
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/hello") as resp:
            assert resp.status == 200 and await resp.text() == "ok"
    finally:
        for _, writer in idle:
            writer.close()
        listener.close()
        await runner.cleanup()


async def test_debug_requests_run_one_at_a_time_within_their_share() -> None:
    clock = ManualClock()
    budget = httpserve.DebugBudget(share=0.25, clock=clock.now)

    async def dump(request: web.Request) -> web.Response:
        clock.advance(0.02)  # as if the dump took 20 ms of the loop
        return web.Response(text="{}")

    app = web.Application(middlewares=[budget.middleware()])
    app.router.add_get("/debug/configz", dump)
    app.router.add_get("/ready", dump)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/debug/configz") as resp:
                assert resp.status == 200
            assert budget.paused == pytest.approx(0.06)  # 20 ms used at a 25% share: 60 ms before the next
            async with session.get(f"http://127.0.0.1:{port}/ready") as resp:  # not a debug path: no budget
                assert resp.status == 200
            assert budget.paused == pytest.approx(0.06)
            async with session.get(f"http://127.0.0.1:{port}/debug/configz") as resp:
                assert resp.status == 200
            assert budget.paused == pytest.approx(0.12)
    finally:
        await runner.cleanup()


# ----- logging -----


def test_repeated_errors_are_logged_once_per_interval_with_a_count() -> None:
    clock = ManualClock()
    limiter = LogLimiter(interval=60, burst=1, clock=clock.now)
    assert limiter.allow("nack") == (True, 0)
    assert [limiter.allow("nack") for _ in range(3)] == [(False, 0)] * 3
    assert limiter.allow("other") == (True, 0)
    clock.advance(61)
    assert limiter.allow("nack") == (True, 3)


def test_the_fd_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = limits.raise_fd_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft
    assert soft == min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)


async def test_a_request_for_a_type_pilot_does_not_serve_is_not_answered(pilot: PilotServer) -> None:
    """Found by tests/fuzz/test_xds_fuzz.py: an empty or unknown type_url used to fail the stream with an
    internal error. It is not answered (as istiod); the next request of a known type is."""
    channel = grpclib.client.Channel("127.0.0.1", pilot.grpc_port)
    try:
        async with ads_request(channel) as stream:
            first = discovery_pb2.DiscoveryRequest(type_url="")
            first.node.id = NODE_ID
            await stream.send_message(first)
            await stream.send_message(discovery_pb2.DiscoveryRequest(type_url="type.googleapis.com/no.Such"))
            await stream.send_message(discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE))
            response = await asyncio.wait_for(stream.recv_message(), 5)
            assert response is not None and response.type_url == CLUSTER_TYPE  # the first answer is CDS's
            await stream.cancel()
    finally:
        channel.close()
    assert pilot.discovery.counters["pilot_total_xds_internal_errors"] == 0
