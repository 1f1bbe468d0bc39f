"""A proxy that stops reading blocks only its own stream, even with a push throttle of one slot."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import grpclib.client
import grpclib.const
import grpclib.exceptions
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2
from grpclib.config import Configuration

from pilot.server import PilotServer, ServerOptions
from pilot.xds.names import CLUSTER_TYPE
from tests.xds.test_ads_protocol import ads_request

SEND_TIMEOUT = 30.0  # far longer than the test waits: the healthy proxy must not depend on it


def service_entries(count: int, prefix: str) -> str:
    return "\n---\n".join(
        f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {prefix}{i}, namespace: default}}
spec:
  hosts: [{prefix}{i}.a-rather-long-domain-name-to-make-clusters-bigger.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 443, name: https, protocol: HTTPS}}]
  resolution: STATIC
  endpoints: [{{address: 10.0.0.{i % 250}}}]"""
        for i in range(count)
    )


def write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


@pytest.fixture
async def pilot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[PilotServer]:
    monkeypatch.setenv("PILOT_PUSH_THROTTLE", "1")
    monkeypatch.setenv("PILOT_XDS_SEND_TIMEOUT", str(SEND_TIMEOUT))
    write(tmp_path / "small.yaml", service_entries(1, "small"))
    server = PilotServer(
        ServerOptions(
            config_dir=tmp_path,
            grpc_addr="127.0.0.1:0",
            monitoring_addr="127.0.0.1:0",
            debounce_after=0.01,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def open_stream(stack: AsyncExitStack, port: int, pod: str, window: int | None = None) -> grpclib.client.Stream:
    # grpclib acknowledges received data only as the application reads it, so with a small window an unread
    # stream stalls the sender as soon as that window is full (its default window is 4 MiB).
    config = Configuration(http2_connection_window_size=window, http2_stream_window_size=window) if window else None
    channel = grpclib.client.Channel("127.0.0.1", port, config=config)
    stack.callback(channel.close)
    stream = await stack.enter_async_context(ads_request(channel))
    request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
    request.node.id = f"sidecar~127.0.0.1~{pod}.default~default.svc.cluster.local"
    await stream.send_message(request)
    first = await asyncio.wait_for(stream.recv_message(), 5)
    assert first is not None and first.type_url == CLUSTER_TYPE
    ack = discovery_pb2.DiscoveryRequest(
        type_url=CLUSTER_TYPE, response_nonce=first.nonce, version_info=first.version_info
    )
    await stream.send_message(ack)
    return stream


async def test_stuck_proxy_does_not_delay_others(pilot: PilotServer) -> None:
    async with AsyncExitStack() as stack:
        # Connected first, so the push queue serves it first; after its first response it never reads again.
        stuck = await open_stream(stack, pilot.grpc_port, "stuck", window=65535)
        healthy = await open_stream(stack, pilot.grpc_port, "healthy")
        assert [c.proxy.pod_name for c in pilot.discovery.connections.values()] == ["stuck", "healthy"]

        # Far more cluster bytes than the stuck proxy's flow-control window: the push to it blocks.
        write(pilot.options.config_dir / "big.yaml", service_entries(600, "big"))
        started = asyncio.get_running_loop().time()
        update = await asyncio.wait_for(healthy.recv_message(), 10)
        elapsed = asyncio.get_running_loop().time() - started
        assert update is not None and update.type_url == CLUSTER_TYPE
        names = set()
        for any_msg in update.resources:
            cluster = cluster_pb2.Cluster()
            any_msg.Unpack(cluster)
            names.add(cluster.name)
        assert len(names) > 1000
        assert update.ByteSize() > 4 * 65536, "the config must overflow the stuck proxy's flow-control window"
        assert elapsed < SEND_TIMEOUT / 3, f"the healthy proxy waited {elapsed:.1f}s behind the stuck one"
        # The stuck proxy's push is still in flight (blocked on its window), not finished.
        stuck_conn = next(c for c in pilot.discovery.connections.values() if c.proxy.pod_name == "stuck")
        assert stuck_conn._sending
        await stuck.cancel()
        await healthy.cancel()


async def test_stuck_proxy_is_disconnected_after_the_send_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOT_XDS_SEND_TIMEOUT", "0.5")
    write(tmp_path / "small.yaml", service_entries(1, "small"))
    server = PilotServer(
        ServerOptions(config_dir=tmp_path, grpc_addr="127.0.0.1:0", monitoring_addr="127.0.0.1:0", debounce_after=0.01)
    )
    await server.start()
    stack = AsyncExitStack()
    try:
        stuck = await open_stream(stack, server.grpc_port, "stuck", window=65535)
        healthy = await open_stream(stack, server.grpc_port, "healthy")
        write(tmp_path / "big.yaml", service_entries(600, "big"))
        update = await asyncio.wait_for(healthy.recv_message(), 10)
        assert update is not None and update.type_url == CLUSTER_TYPE
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while any(c.proxy.pod_name == "stuck" for c in server.discovery.connections.values()):
            assert loop.time() < deadline, "the stuck proxy was never disconnected"
            await asyncio.sleep(0.05)
        assert server.discovery.counters["pilot_xds_write_timeout"] == 1
        assert [c.proxy.pod_name for c in server.discovery.connections.values()] == ["healthy"]
        with pytest.raises(grpclib.exceptions.StreamTerminatedError):
            await stuck.cancel()  # the server ended this stream already
        await healthy.cancel()
    finally:
        with contextlib.suppress(grpclib.exceptions.GRPCError, grpclib.exceptions.ProtocolError):
            await stack.aclose()  # the stuck stream's client reports the server's DEADLINE_EXCEEDED here
        await server.stop()
