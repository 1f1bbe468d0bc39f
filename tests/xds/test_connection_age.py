"""PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE (pilot.xds.connage): an xDS connection is ended at its age with
GOAWAY, its stream cleaned up as after a disconnect, and the client can reconnect and get its config again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpclib.client
import grpclib.exceptions
import pytest
from envoy.service.discovery.v3 import discovery_pb2

from pilot.server import PilotServer, ServerOptions
from pilot.xds.connage import ConnectionAge
from pilot.xds.names import CLUSTER_TYPE
from tests.hardening.waiting import wait_for
from tests.xds.test_ads_protocol import NODE_ID, SERVICE_ENTRY, ads_request, write

AGE = 0.5
DEADLINE = 10.0


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[PilotServer]:
    write(tmp_path / "a.yaml", SERVICE_ENTRY.format(name="a", host="a.example.com"))
    server = PilotServer(
        ServerOptions(
            config_dir=tmp_path,
            grpc_addr="127.0.0.1:0",
            monitoring_addr="127.0.0.1:0",
            debounce_after=0.01,
            max_connection_age=AGE,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def _cds_until_closed(port: int) -> tuple[list[str], float]:
    """Open a connection, ask for CDS, then read until the server ends the connection: (cluster names seen in
    the first response, seconds from connecting to the end)."""
    channel = grpclib.client.Channel("127.0.0.1", port)
    started = time.monotonic()
    try:
        async with ads_request(channel) as stream:
            request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER_TYPE)
            request.node.id = NODE_ID
            await stream.send_message(request)
            first = await asyncio.wait_for(stream.recv_message(), DEADLINE)
            assert first is not None
            names = [r.type_url for r in first.resources]
            ended = False
            try:
                while not ended:  # nothing more is sent: the next event is the end of the connection
                    ended = await asyncio.wait_for(stream.recv_message(), DEADLINE) is None
            except (grpclib.exceptions.StreamTerminatedError, grpclib.exceptions.GRPCError, ConnectionError):
                ended = True
    finally:
        channel.close()
    return names, time.monotonic() - started


async def test_an_aged_connection_is_ended_and_the_proxy_reconnects(pilot: PilotServer) -> None:
    names, lasted = await _cds_until_closed(pilot.grpc_port)
    assert names, "the first connection got its clusters"
    assert AGE * 0.85 <= lasted < DEADLINE, lasted
    assert pilot.connection_age is not None and pilot.connection_age.closed == 1
    # The ended stream was cleaned up as after a disconnect.
    await wait_for(lambda: not pilot.discovery.connections, "stream cleaned up", DEADLINE)
    names, _ = await _cds_until_closed(pilot.grpc_port)  # a new connection is served as any other
    assert names
    assert pilot.connection_age.closed == 2


def test_ages_are_spread_by_ten_percent() -> None:
    lowest = ConnectionAge(100.0, rng=lambda: 0.0).age_for_new_connection()
    highest = ConnectionAge(100.0, rng=lambda: 1.0).age_for_new_connection()
    assert (lowest, highest) == pytest.approx((90.0, 110.0))
    with pytest.raises(ValueError):
        ConnectionAge(0)
