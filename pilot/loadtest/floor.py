"""The transport floor: a bare grpclib ADS server that replays pre-encoded responses.

During the connect storm against pilot, the first proxy of each group (see fleet.NodeSpec.group) records
the responses pilot sent it up to full config. The floor then serves the same simulated clients: when a
stream first asks for a type, it sends that group's recorded responses of the type, byte for byte, through
a pass-through codec (nothing is encoded per send); every other request (ACKs, subscription changes) is
read and decoded, as pilot must, and needs no answer. So its CPU for a full sync is what the transport
alone costs (grpclib, h2, the event loop, the kernel) for the same clients and bytes, and pilot's CPU is
reported as a ratio to it.

A Delta floor can replay Delta recordings, or SotW recordings re-wrapped once, at start, as
DeltaDiscoveryResponses (each resource named and versioned): that lets a Delta fleet be measured, and its
client tested, before a server speaks Delta.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing.connection
import os
import signal
from dataclasses import dataclass
from typing import Any

import grpclib.const
import grpclib.server
from envoy.service.discovery.v3 import discovery_pb2

from pilot.loadtest.decode import RESOURCE_DECODERS
from pilot.loadtest.wire import DELTA_METHOD, SOTW_METHOD, TYPE_INDEX, RawCodec

Group = tuple[bool, str]  # (router, namespace)
Recording = dict[Group, list[tuple[int, bytes]]]  # responses in arrival order: (type index, payload)
LISTEN_BACKLOG = 4096


class FloorError(RuntimeError):
    pass


@dataclass(frozen=True)
class FloorScript:
    """Per group, per type index: the encoded responses that answer a stream's first request of the type."""

    protocol: str
    groups: dict[Group, tuple[tuple[bytes, ...], ...]]

    def for_node(self, node_id: str) -> tuple[tuple[bytes, ...], ...]:
        group = group_of(node_id)
        found = self.groups.get(group)
        if found is None:  # an unknown namespace: any recording of the same proxy type, else any at all
            same_kind = [v for (router, _), v in sorted(self.groups.items()) if router == group[0]]
            found = same_kind[0] if same_kind else next(iter(self.groups.values()))
        return found


def group_of(node_id: str) -> Group:
    parts = node_id.split("~")
    if len(parts) != 4:
        return False, ""
    return parts[0] == "router", parts[2].partition(".")[2]


def build_script(recording: Recording, recorded_protocol: str, protocol: str) -> FloorScript:
    if not recording:
        raise FloorError("nothing was recorded: no proxy reached full config")
    if recorded_protocol == protocol:
        convert = None
    elif recorded_protocol == "sotw" and protocol == "delta":
        convert = _sotw_to_delta
    else:
        raise FloorError(f"cannot replay {recorded_protocol} recordings to {protocol} clients")
    nonces = itertools.count(1)
    groups = {}
    for group, responses in recording.items():
        per_type: list[list[bytes]] = [[], [], [], []]
        for i, data in responses:
            per_type[i].append(convert(data, next(nonces)) if convert else data)
        groups[group] = tuple(tuple(x) for x in per_type)
    return FloorScript(protocol, groups)


def _sotw_to_delta(data: bytes, nonce: int) -> bytes:
    sotw = discovery_pb2.DiscoveryResponse.FromString(data)
    delta = discovery_pb2.DeltaDiscoveryResponse(
        type_url=sotw.type_url, system_version_info=sotw.version_info, nonce=f"floor-{nonce}"
    )
    decode = RESOURCE_DECODERS[sotw.type_url]
    for any_resource in sotw.resources:
        resource = delta.resources.add(name=decode(any_resource.value)[0], version=sotw.version_info)
        resource.resource.CopyFrom(any_resource)
    return delta.SerializeToString()


class FloorServer:
    """Answers each stream's first request of a type with the script; nothing else.

    ``keep_requests`` > 0 keeps that many decoded requests as (stream number, request), for tests that check
    what clients send.
    """

    def __init__(self, script: FloorScript, keep_requests: int = 0) -> None:
        self.script = script
        self.keep_requests = keep_requests
        self.requests: list[tuple[int, Any]] = []
        self._streams = itertools.count(1)

    async def _serve(self, stream: grpclib.server.Stream, request_type: Any) -> None:
        number = next(self._streams)
        responses: tuple[tuple[bytes, ...], ...] | None = None
        answered = 0
        async for raw in stream:
            request = request_type.FromString(raw)
            if len(self.requests) < self.keep_requests:
                self.requests.append((number, request))
            if responses is None:
                responses = self.script.for_node(request.node.id)
            i = TYPE_INDEX.get(request.type_url)
            if i is None or answered & (1 << i):
                continue
            answered |= 1 << i
            for data in responses[i]:
                await stream.send_message(data)

    async def sotw(self, stream: grpclib.server.Stream) -> None:
        await self._serve(stream, discovery_pb2.DiscoveryRequest)

    async def delta(self, stream: grpclib.server.Stream) -> None:
        await self._serve(stream, discovery_pb2.DeltaDiscoveryRequest)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        stream = grpclib.const.Cardinality.STREAM_STREAM
        return {
            SOTW_METHOD: grpclib.const.Handler(self.sotw, stream, bytes, bytes),
            DELTA_METHOD: grpclib.const.Handler(self.delta, stream, bytes, bytes),
        }


async def start(floor: FloorServer, host: str, port: int = 0) -> tuple[grpclib.server.Server, int]:
    """A started grpclib server for ``floor`` and the port it listens on."""
    server = grpclib.server.Server([floor], codec=RawCodec())
    await server.start(host, port, backlog=LISTEN_BACKLOG)
    sockets = server._server.sockets if server._server else ()
    return server, sockets[0].getsockname()[1] if sockets else port


async def close(server: grpclib.server.Server) -> None:
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), timeout=5)


def floor_process(pipe: multiprocessing.connection.Connection, script: FloorScript, host: str) -> None:
    """Entry point of the spawned floor process: answers ``("listening", port, pid)``, stops on any message."""
    import uvloop

    from pilot.loadtest.client import raise_fd_limit

    raise_fd_limit(65536)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(pipe.fileno(), stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server, port = await start(FloorServer(script), host)
        try:
            pipe.send(("listening", port, os.getpid()))
            await stop.wait()
        finally:
            await close(server)

    uvloop.run(main())
