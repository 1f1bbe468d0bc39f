"""The ADS gRPC server: connections, the push sender loop and the grpclib handler.

Data flow: ``DiscoveryServer.push(request)`` (called by the debouncer) builds a new PushContext and
enqueues every connection in the PushQueue; the sender loop takes connections off the queue, at most
``throttle`` at a time, and hands each its request; each connection's own loop generates and sends.
Protocol decisions (what to answer, what changed) come from the I/O-free StreamState.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import grpclib.const
import grpclib.exceptions
import grpclib.server
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from pilot.config.model import Config, ConfigKey
from pilot.proxy import Proxy, ProxyIdError, parse_proxy
from pilot.push.context import PushContext
from pilot.push.queue import PushQueue
from pilot.push.request import PushRequest
from pilot.xds.generate import XdsCache, generate
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, PUSH_ORDER, SHORT_TYPE, UNAFFECTED_BY, WILDCARD_TYPES
from pilot.xds.stream import Decision, RequestKind, StreamState

log = logging.getLogger(__name__)

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


def default_throttle() -> int:
    """istiod's PILOT_PUSH_THROTTLE auto value: min(15 + 5 * cores, 100)."""
    configured = int(os.environ.get("PILOT_PUSH_THROTTLE", "0") or 0)
    if configured > 0:
        return configured
    return min(15 + 5 * (os.cpu_count() or 1), 100)


class PushTicket:
    """A push handed to a connection by the sender loop.

    It holds a throttle slot only while the connection generates (CPU and memory are what the throttle
    bounds) and the connection's place in the push queue until everything is sent. So a proxy that stops
    reading blocks only its own stream: its slot is back before the send that blocks.
    """

    __slots__ = ("_mark_done", "_release", "_released")

    def __init__(self, release_slot: Callable[[], None], mark_done: Callable[[], None]) -> None:
        self._release = release_slot
        self._mark_done = mark_done
        self._released = False

    def release_slot(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    def finish(self) -> None:
        self.release_slot()
        self._mark_done()


class Connection:
    """One ADS stream. Its loop handles requests first, then at most one pending push."""

    REQUEST_BUFFER = 32

    def __init__(self, server: DiscoveryServer, stream: grpclib.server.Stream, conn_number: int) -> None:
        self.server = server
        self.stream = stream
        self.number = conn_number
        self.proxy: Proxy | None = None
        self.id = ""
        self.state = StreamState(nonce_prefix="")
        self.connected_at = datetime.now(UTC)
        peer = stream.peer.addr() if stream.peer else None
        self.address = f"{peer[0]}:{peer[1]}" if peer else ""
        self.metadata: dict[str, object] = {}
        self._requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue(self.REQUEST_BUFFER)
        self._push: PushRequest | None = None
        self._ticket: PushTicket | None = None
        self._sending = False
        self._wakeup = asyncio.Event()

    # Called by the sender loop; never blocks.
    def deliver(self, request: PushRequest, ticket: PushTicket) -> None:
        self._push = request
        self._ticket = ticket
        if self._sending:
            # Blocked writing to a slow proxy: it will not generate soon, so it must not hold a slot.
            ticket.release_slot()
        self._wakeup.set()

    async def _read(self) -> None:
        try:
            async for request in self.stream:
                await self._requests.put(request)
                self._wakeup.set()
        finally:
            await self._requests.put(None)
            self._wakeup.set()

    async def serve(self) -> None:
        reader = asyncio.create_task(self._read(), name=f"xds-read-{self.number}")
        try:
            while True:
                if not self._requests.empty():
                    request = self._requests.get_nowait()
                    if request is None:
                        if reader.done() and reader.exception() is not None:
                            raise reader.exception()  # type: ignore[misc]
                        return
                    await self._handle_request(request)
                    continue
                if self._push is not None and self._ticket is not None:
                    push_request, ticket = self._push, self._ticket
                    self._push, self._ticket = None, None
                    try:
                        await self._handle_push(push_request, ticket)
                    finally:
                        ticket.finish()
                    continue
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            reader.cancel()
            if self._ticket is not None:
                self._ticket.finish()
                self._ticket = None
                self._push = None

    async def _handle_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        if self.proxy is None:
            self._initialize(request)
        decision = self.state.on_request(request)
        self.server.on_request_decision(self, decision, request)
        if not decision.respond:
            return
        push = self.server.current
        if push is None:
            return
        only = decision.added if decision.type_url not in WILDCARD_TYPES else frozenset()
        response = self._prepare(decision.type_url, push, only=only)
        if response is None:
            return
        await self._send(response)
        if decision.type_url == CLUSTER_TYPE and self.state.watched(ENDPOINT_TYPE):
            endpoints = self._prepare(ENDPOINT_TYPE, push, force=True)
            if endpoints is not None:
                await self._send(endpoints)

    def _initialize(self, request: discovery_pb2.DiscoveryRequest) -> None:
        if not request.HasField("node") or not request.node.id:
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT, "first request on the stream must carry node.id"
            )
        metadata = json_format.MessageToDict(request.node.metadata) if request.node.HasField("metadata") else {}
        try:
            self.proxy = parse_proxy(request.node.id, metadata, request.node.cluster)
        except ProxyIdError as exc:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, str(exc)) from None
        self.metadata = metadata
        self.id = f"{self.proxy.short_id}-{self.number}"
        self.server.register(self)
        log.info("ADS: new connection for node %s (%s)", self.proxy.id, self.id)

    async def _handle_push(self, request: PushRequest, ticket: PushTicket) -> None:
        if self.proxy is None:
            return
        push = request.push or self.server.current
        if push is None:
            return
        # Generate every type first (holding the throttle slot), then send in push order without it.
        responses = []
        cds_changed = False
        for type_url in PUSH_ORDER:
            if not self.state.watched(type_url):
                continue
            force = type_url == ENDPOINT_TYPE and cds_changed
            if not force and _unaffected(type_url, request):
                continue
            response = self._prepare(type_url, push, force=force)
            if type_url == CLUSTER_TYPE:
                cds_changed = response is not None
            if response is not None:
                responses.append(response)
            # Generation is CPU on the shared loop (~0.1 s per type at 1000 services when not cached):
            # let other streams' requests and sends run between types.
            await asyncio.sleep(0)
        ticket.release_slot()
        for response in responses:
            await self._send(response)
        self.server.record_convergence(request)

    def _prepare(
        self,
        type_url: str,
        push: PushContext,
        *,
        only: frozenset[str] | None = None,
        force: bool = False,
    ) -> discovery_pb2.DiscoveryResponse | None:
        """Generate one type and ask the stream state what to send (None: the proxy already has it)."""
        assert self.proxy is not None
        wildcard, names = self.state.subscription(type_url)
        resources = generate(self.server.cache, type_url, self.proxy, push, () if wildcard else names)
        return self.state.prepare_response(type_url, resources, push.version, only=only, force=force, now=time.time())

    async def _send(self, response: discovery_pb2.DiscoveryResponse) -> None:
        short = SHORT_TYPE.get(response.type_url, response.type_url)
        started = time.monotonic()
        self._sending = True
        try:
            await asyncio.wait_for(self.stream.send_message(response), timeout=self.server.send_timeout)
        except TimeoutError:
            self.server.counters["pilot_xds_write_timeout"] += 1
            log.warning("ADS: %s send of %s timed out; closing the stream", self.id, short)
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.DEADLINE_EXCEEDED, "send timed out") from None
        finally:
            self._sending = False
        self.server.counters[f"pilot_xds_pushes{{type={short}}}"] += 1
        log.debug(
            "ADS: %s pushed %s %d resources version %s in %.1fms",
            self.id,
            short,
            len(response.resources),
            response.version_info,
            (time.monotonic() - started) * 1e3,
        )


def _unaffected(type_url: str, request: PushRequest) -> bool:
    """True when every changed config is of a kind that cannot change this type (empty = anything changed)."""
    skip = UNAFFECTED_BY.get(type_url, frozenset())
    return bool(request.configs_updated) and all(key.kind in skip for key in request.configs_updated)


class DiscoveryServer:
    def __init__(
        self,
        snapshot: Callable[[], Mapping[ConfigKey, Config]],
        domain_suffix: str = "cluster.local",
        *,
        throttle: int | None = None,
        send_timeout: float | None = None,
    ) -> None:
        self._snapshot = snapshot
        self.domain_suffix = domain_suffix
        self.current: PushContext | None = None
        self.connections: dict[str, Connection] = {}
        self.queue: PushQueue[Connection] = PushQueue()
        self.throttle = throttle or default_throttle()
        self.send_timeout = send_timeout or float(os.environ.get("PILOT_XDS_SEND_TIMEOUT", "10") or 10)
        self.cache = XdsCache(int(os.environ.get("PILOT_XDS_CACHE_SIZE", "4096") or 4096))
        self.counters: Counter[str] = Counter()
        self._versions = itertools.count(1)
        self._conn_numbers = itertools.count(1)

    # ----- push side -----

    def next_version(self) -> str:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{stamp}/{next(self._versions)}"

    def rebuild(self) -> PushContext:
        """Build a new PushContext from the current config snapshot and make it current."""
        started = time.monotonic()
        push = PushContext.build(self.next_version(), self._snapshot(), self.domain_suffix)
        self.current = push
        self.cache.clear()  # entries are keyed by version; clearing just frees memory early
        self.counters["pilot_pushcontext_init"] += 1
        log.debug("PushContext %s built in %.1fms", push.version, (time.monotonic() - started) * 1e3)
        return push

    async def push(self, request: PushRequest) -> None:
        """Debouncer callback: new snapshot, then every connection gets the request."""
        push = self.rebuild()
        request.push = push
        for reason, count in request.reason.items():
            self.counters[f"pilot_push_triggers{{type={reason}}}"] += count
        for conn in list(self.connections.values()):
            self.queue.enqueue(conn, request)

    async def send_loop(self) -> None:
        slots = asyncio.Semaphore(self.throttle)
        while True:
            await slots.acquire()
            try:
                conn, request = await self.queue.dequeue()
            except BaseException:
                slots.release()
                raise
            if conn.id not in self.connections:
                self.queue.remove(conn)
                slots.release()
                continue
            conn.deliver(request, PushTicket(slots.release, lambda conn=conn: self.queue.mark_done(conn)))

    def record_convergence(self, request: PushRequest) -> None:
        self.counters["pilot_proxy_convergence"] += 1

    # ----- connection side -----

    def register(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def unregister(self, conn: Connection) -> None:
        if self.connections.get(conn.id) is conn:
            del self.connections[conn.id]
        self.queue.remove(conn)

    def on_request_decision(
        self, conn: Connection, decision: Decision, request: discovery_pb2.DiscoveryRequest
    ) -> None:
        short = SHORT_TYPE.get(decision.type_url, decision.type_url)
        if decision.kind is RequestKind.NACK:
            self.counters[f"pilot_total_xds_rejects{{type={short}}}"] += 1
            log.warning(
                "ADS:%s: ACK ERROR %s %s", short.upper(), conn.id, request.error_detail.message.replace("\n", " ")
            )
        elif decision.kind is RequestKind.STALE:
            self.counters[f"pilot_xds_expired_nonce{{type={short}}}"] += 1
            log.debug("ADS:%s: %s stale nonce %s ignored", short.upper(), conn.id, request.response_nonce)

    async def stream_aggregated_resources(self, stream: grpclib.server.Stream) -> None:
        conn = Connection(self, stream, next(self._conn_numbers))
        try:
            await conn.serve()
        except (ConnectionError, grpclib.exceptions.StreamTerminatedError):
            pass  # the proxy went away; cancellation (grpclib's signal for the same) must propagate
        finally:
            self.unregister(conn)
            if conn.id:
                log.info("ADS: connection %s closed", conn.id)

    async def delta_aggregated_resources(self, stream: grpclib.server.Stream) -> None:
        raise grpclib.exceptions.GRPCError(grpclib.const.Status.UNIMPLEMENTED, "delta xDS is not supported yet")

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            ADS_METHOD: grpclib.const.Handler(
                self.stream_aggregated_resources,
                grpclib.const.Cardinality.STREAM_STREAM,
                discovery_pb2.DiscoveryRequest,
                discovery_pb2.DiscoveryResponse,
            ),
            DELTA_ADS_METHOD: grpclib.const.Handler(
                self.delta_aggregated_resources,
                grpclib.const.Cardinality.STREAM_STREAM,
                discovery_pb2.DeltaDiscoveryRequest,
                discovery_pb2.DeltaDiscoveryResponse,
            ),
        }
