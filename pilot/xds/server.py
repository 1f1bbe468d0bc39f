"""The xDS gRPC server: connections, the push sender loop and the grpclib handlers.

Services: ADS (``StreamAggregatedResources`` SotW and ``DeltaAggregatedResources``) and the per-type
services Envoy uses without ADS (Cluster/Listener/Route/EndpointDiscoveryService ``Stream*``, ``Delta*`` and
unary ``Fetch*``). Every stream is a ``Connection`` around an I/O-free protocol machine (``SotwStream`` or
``DeltaStream``); responses are pre-encoded bytes that a pass-through codec writes as they are.

Push data flow: ``DiscoveryServer.push(request)`` (called by the debouncer) builds a new PushContext for a
full push (reusing what did not change) or, for an endpoint-only push, only updates the EDS snapshots; it
then enqueues just the connections the change can reach (their scope depends on a changed config, or they
watch a changed cluster); the sender loop takes connections off the queue, at most ``throttle`` at a time,
and each connection's own loop generates and sends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpclib.const
import grpclib.exceptions
import grpclib.server
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from grpclib.encoding.proto import ProtoCodec

from pilot.metrics import tracing
from pilot.metrics.definitions import PUSH_STATUS_GAUGES
from pilot.metrics.registry import Metrics
from pilot.model.config import ENDPOINTS_KIND, SECRET, ConfigKey
from pilot.model.environment import Environment
from pilot.model.proxy import Proxy, ProxyIdError, parse_proxy
from pilot.push.context import PushContext, View
from pilot.push.queue import PushQueue
from pilot.push.request import PushRequest
from pilot.push.scope import ProxyScope, scope_for
from pilot.ratelog import LogLimiter
from pilot.security import xdsauth
from pilot.xds import fastwrite, h2tuning, limits, quarantine
from pilot.xds.cache import XdsCache, max_entries_from_env
from pilot.xds.delta import DeltaStream
from pilot.xds.generate import Generator
from pilot.xds.names import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    PUSH_ORDER,
    ROUTE_TYPE,
    SECRET_TYPE,
    SHORT_TYPE,
    WILDCARD_TYPES,
    affected_types,
    parse_cluster_name,
)
from pilot.xds.protocol import Decision, Outgoing, RequestKind
from pilot.xds.sotw import SotwStream

log = logging.getLogger(__name__)
SERVED_TYPES = frozenset(PUSH_ORDER)  # the types pilot generates; requests for others are not answered
h2tuning.install()

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
ADS_METHOD = f"/{ADS_SERVICE}/StreamAggregatedResources"
DELTA_ADS_METHOD = f"/{ADS_SERVICE}/DeltaAggregatedResources"
# Per-type services (non-aggregated xDS): service path and method suffix for each type.
TYPE_SERVICES = {
    CLUSTER_TYPE: ("envoy.service.cluster.v3.ClusterDiscoveryService", "Clusters"),
    LISTENER_TYPE: ("envoy.service.listener.v3.ListenerDiscoveryService", "Listeners"),
    ROUTE_TYPE: ("envoy.service.route.v3.RouteDiscoveryService", "Routes"),
    ENDPOINT_TYPE: ("envoy.service.endpoint.v3.EndpointDiscoveryService", "Endpoints"),
    SECRET_TYPE: ("envoy.service.secret.v3.SecretDiscoveryService", "Secrets"),
}


def default_throttle() -> int:
    """istiod's PILOT_PUSH_THROTTLE auto value: min(15 + 5 * cores, 100)."""
    configured = int(os.environ.get("PILOT_PUSH_THROTTLE", "0") or 0)
    if configured > 0:
        return configured
    return min(15 + 5 * (os.cpu_count() or 1), 100)


class RawCodec(ProtoCodec):
    """grpclib's protobuf codec, except that bytes are sent as they are (responses are pre-encoded)."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, bytes):
            return message
        return super().encode(message, message_type)

    def decode(self, data: bytes, message_type: Any) -> Any:
        """A request that is not the protobuf it should be ends its stream with INVALID_ARGUMENT: the client's
        fault, not an internal error of pilot."""
        try:
            return super().decode(data, message_type)
        except DecodeError as exc:
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT, f"cannot decode the request: {exc}"
            ) from None


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
    """One xDS stream. Its loop handles requests first, then at most one pending push."""

    REQUEST_BUFFER = 32

    def __init__(
        self,
        server: DiscoveryServer,
        stream: grpclib.server.Stream,
        conn_number: int,
        protocol: SotwStream | DeltaStream,
        only_type: str = "",
    ) -> None:
        self.server = server
        self.stream = stream
        self.number = conn_number
        self.protocol = protocol
        self.only_type = only_type  # per-type services: the one type this stream carries
        self.proxy: Proxy | None = None
        self.id = ""
        self.connected_at = datetime.now(UTC)
        peer = stream.peer.addr() if stream.peer else None
        self.address = f"{peer[0]}:{peer[1]}" if peer else ""
        self.metadata: dict[str, object] = {}
        # The proxy's class in the push it last saw, and its scope then and the time before.
        self.push_number = -1
        self.view: View = View()
        self.scope: ProxyScope | None = None
        self.previous_scope: ProxyScope | None = None
        self._answers: asyncio.Queue[Decision | None] = asyncio.Queue(self.REQUEST_BUFFER)
        self._task: asyncio.Task[Any] | None = None
        self.send_started = 0.0  # monotonic time the current send began, 0 when not sending
        self._send_timed_out = False
        self._push: PushRequest | None = None
        self._ticket: PushTicket | None = None
        self._sending = False
        self._busy = False  # handling an answer or a push (possibly awaiting a send)
        self._outbox: list[Outgoing] = []  # computed by the server's fast path, to send before anything else
        self._wakeup = asyncio.Event()
        self._generated: dict[str, float] = {}  # type -> seconds its pending response took to generate
        self.trace: tracing.ProxyTrace | None = None  # the last push's spans, while ACKs are owed (tracing on)

    @property
    def state(self) -> SotwStream | DeltaStream:
        return self.protocol

    # ----- push side (called by the server; never blocks) -----

    def refresh(self, push: PushContext) -> None:
        """Bring the proxy's view and scope up to ``push`` (once per push context)."""
        if self.proxy is None or self.push_number == push.number:
            return
        self.push_number = push.number
        self.view = push.view_of(self.proxy)
        self.previous_scope = self.scope
        self.scope = scope_for(push, self.proxy, self.view)

    def needs_push(self, request: PushRequest, push: PushContext) -> bool:
        """Whether a change can reach this proxy (istiod's ProxyNeedsPush)."""
        if self.proxy is None:
            return False
        if request.forced or request.configs_updated is None:
            return True
        if not request.full:
            names = self.protocol.subscription(ENDPOINT_TYPE)
            if names is None or not self.protocol.watched(ENDPOINT_TYPE):
                return False
            return any(names.by_host(key.name) for key in request.configs_updated if key.kind == ENDPOINTS_KIND)
        if (
            not self.proxy.is_router
            and not push.sidecars_read_secrets
            and all(key.kind == SECRET for key in request.configs_updated)
        ):
            return False  # only gateways read Secrets here: no need to work out a sidecar's scope
        self.refresh(push)
        scopes = [s for s in (self.scope, self.previous_scope) if s is not None]
        return any(scope.depends_on(key) for key in request.configs_updated for scope in scopes)

    def push_endpoints_now(self, push: PushContext, request: PushRequest) -> bool:
        """Endpoint-only fast path: when the stream is idle, generate and write the EDS update right away,
        skipping the queue, the throttle and the task wake-up (an EDS update is one shared, cached message).

        False when the connection is busy (it then goes through the queue, keeping its order).
        """
        if self._busy or self._outbox or not self._answers.empty() or self.server.queue.has(self):
            return False
        traced_from = time.time_ns() if tracing.TRACER is not None else 0
        outgoing = self._respond(ENDPOINT_TYPE, push)
        if outgoing is not None:
            started = time.perf_counter()
            if fastwrite.try_send(self.stream, outgoing.body):
                self.server.sent(outgoing, self._generated.pop(ENDPOINT_TYPE, 0.0), time.perf_counter() - started)
                if traced_from:
                    self._trace_push(request, [outgoing], traced_from, [time.time_ns()])
            else:
                self._outbox.append(outgoing)  # flow control or a paused transport: the loop awaits the send
                self._wakeup.set()
        self.server.record_convergence(request)
        return True

    def deliver(self, request: PushRequest, ticket: PushTicket) -> None:
        self._push = request
        self._ticket = ticket
        if self._sending:
            # Blocked writing to a slow proxy: it will not generate soon, so it must not hold a slot.
            ticket.release_slot()
        self._wakeup.set()

    # ----- the connection's own loop -----

    async def _read(self) -> None:
        """Apply every request to the protocol state as it arrives; queue only those that need an answer.

        Most requests are ACKs that need nothing more, so they never wake the connection's loop.
        """
        try:
            async for request in self.stream:
                decision = self._on_request(request)
                if decision.respond:
                    await self._answers.put(decision)
                    self._wakeup.set()
        finally:
            await self._answers.put(None)
            self._wakeup.set()

    async def serve(self) -> None:
        self._task = asyncio.current_task()
        reader = asyncio.create_task(self._read(), name=f"xds-read-{self.number}")
        try:
            while True:
                self._busy = True
                if self._outbox:
                    await self._send(self._outbox.pop(0))
                    continue
                if not self._answers.empty():
                    decision = self._answers.get_nowait()
                    if decision is None:
                        if reader.done() and not reader.cancelled() and reader.exception() is not None:
                            raise reader.exception()  # type: ignore[misc]
                        return
                    await self._answer(decision)
                    continue
                if self._push is not None and self._ticket is not None:
                    push_request, ticket = self._push, self._ticket
                    self._push, self._ticket = None, None
                    try:
                        await self._handle_push(push_request, ticket)
                    finally:
                        ticket.finish()
                    continue
                self._busy = False
                self._wakeup.clear()
                await self._wakeup.wait()
        finally:
            reader.cancel()
            if self._ticket is not None:
                self._ticket.finish()
                self._ticket = None
                self._push = None

    def _on_request(self, request: Any) -> Decision:
        if self.only_type and not request.type_url:
            request.type_url = self.only_type
        if self.proxy is None:
            self._initialize(request)
        if self.only_type and request.type_url != self.only_type:
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT,
                f"this stream carries {self.only_type}, not {request.type_url}",
            )
        decision = self.protocol.on_request(request)
        self.server.on_request_decision(self, decision)
        return decision

    async def _answer(self, decision: Decision) -> None:
        """Send what a request asked for (a new subscription, a first request of a type)."""
        push = self.server.current
        if push is None:
            return
        type_url = decision.type_url
        if type_url not in SERVED_TYPES:  # a type pilot does not generate (or none at all): nothing to send
            self.server.unknown_type(self, type_url)
            return
        self.refresh(push)
        force = decision.kind is RequestKind.INITIAL and type_url in WILDCARD_TYPES
        outgoing = self._respond(type_url, push, force=force)
        if outgoing is None:
            return
        await self._send(outgoing)
        if type_url == CLUSTER_TYPE and outgoing.changed and self.protocol.watched(ENDPOINT_TYPE):
            endpoints = self._respond(ENDPOINT_TYPE, push, force_names=outgoing.changed)
            if endpoints is not None:
                await self._send(endpoints)

    def _initialize(self, request: Any) -> None:
        if not request.HasField("node") or not request.node.id:
            reason = "first request on the stream must carry node.id"
            self.server.refuse(self, reason)
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, reason)
        node = request.node
        try:  # bounded before anything parses it (pilot.xds.limits)
            limits.check_node(node.id, node.cluster, node.metadata.ByteSize() if node.HasField("metadata") else 0)
        except limits.NodeError as exc:
            self.server.refuse(self, str(exc))
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, str(exc)) from None
        metadata = json_format.MessageToDict(request.node.metadata) if request.node.HasField("metadata") else {}
        try:
            self.proxy = parse_proxy(request.node.id, metadata, request.node.cluster, request.node.locality)
        except ProxyIdError as exc:
            self.server.refuse(self, str(exc))
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, str(exc)) from None
        if self.only_type:
            api = "delta-grpc" if isinstance(self.protocol, DeltaStream) else "grpc"
            self.proxy = dataclasses.replace(self.proxy, xds_api=api)
        xdsauth.authorize(self.proxy)  # an authenticated proxy acts only as its identity (PERMISSION_DENIED)
        self.metadata = metadata
        self.id = f"{self.proxy.short_id}-{self.number}"
        self.server.register(self)
        log.info("ADS: new %s connection for node %s (%s)", self.protocol.protocol, self.proxy.id, self.id)

    async def _handle_push(self, request: PushRequest, ticket: PushTicket) -> None:
        push = self.server.current
        if self.proxy is None or push is None:
            return
        traced_from = time.time_ns() if tracing.TRACER is not None else 0
        self.refresh(push)
        types = (
            PUSH_ORDER
            if request.forced
            else affected_types(request.kinds() if request.full else None, router=self.proxy.is_router)
        )
        if not request.full:
            types = (ENDPOINT_TYPE,)
        # Generate every type first (holding the throttle slot), then send in push order without it.
        responses: list[Outgoing] = []
        changed_clusters: tuple[str, ...] = ()
        for type_url in types:
            if not self.protocol.watched(type_url):
                continue
            force_names = changed_clusters if type_url == ENDPOINT_TYPE else ()
            outgoing = self._respond(type_url, push, force_names=force_names)
            if outgoing is None:
                continue
            if type_url == CLUSTER_TYPE:
                changed_clusters = outgoing.changed
            responses.append(outgoing)
        if changed_clusters and ENDPOINT_TYPE not in types and self.protocol.watched(ENDPOINT_TYPE):
            outgoing = self._respond(ENDPOINT_TYPE, push, force_names=changed_clusters)
            if outgoing is not None:
                responses.insert(1, outgoing)
        ticket.release_slot()
        sent_at: list[int] = []
        for outgoing in responses:
            await self._send(outgoing)
            if traced_from:
                sent_at.append(time.time_ns())
        self.server.record_convergence(request)
        if traced_from:
            self._trace_push(request, responses, traced_from, sent_at)

    def _trace_push(self, request: PushRequest, sent: list[Outgoing], started: int, sent_at: list[int]) -> None:
        """Tracing on: this proxy's push span, and one span per response from its send until the proxy ACKs it
        (the spans are made afterwards, with the times taken on the way)."""
        if self.trace is not None:
            self.trace.closed()
        self.trace = trace = tracing.start_proxy(request, self.id, started)
        if trace is None or tracing.TRACER is None:
            return
        for outgoing, at in zip(sent, sent_at, strict=True):
            short = SHORT_TYPE.get(outgoing.type_url, outgoing.type_url)
            trace.sent(tracing.TRACER, outgoing.type_url, short, outgoing.nonce, len(outgoing.body), at)
        trace.done([SHORT_TYPE.get(o.type_url, o.type_url) for o in sent], sent_at[-1] if sent_at else None)

    def _respond(
        self, type_url: str, push: PushContext, *, force: bool = False, force_names: tuple[str, ...] = ()
    ) -> Outgoing | None:
        """What to send for one type now (None: the proxy already has it)."""
        assert self.proxy is not None
        names = self.protocol.subscription(type_url)
        if names is None and type_url not in WILDCARD_TYPES:
            return None
        started = time.perf_counter()
        snapshot = self.server.generator.snapshot(type_url, self.proxy, push, self.view, names)
        if force_names and type_url == ENDPOINT_TYPE:
            force_names = tuple(n for n in force_names if parse_cluster_name(n) is not None)
        outgoing = self.protocol.respond(
            type_url, snapshot, push.version, force=force, force_names=force_names, now=time.time()
        )
        if outgoing is not None:
            self._generated[type_url] = time.perf_counter() - started
        return outgoing

    async def _send(self, outgoing: Outgoing) -> None:
        short = SHORT_TYPE.get(outgoing.type_url, outgoing.type_url)
        self._sending = True
        self.send_started = started = time.monotonic()
        try:
            await self.stream.send_message(outgoing.body)
        except asyncio.CancelledError:
            if not self._send_timed_out:
                raise
            # The server's watchdog cancelled a send the proxy did not read: end the stream with a status.
            if self._task is not None:
                self._task.uncancel()
            self.server.counters["pilot_xds_write_timeout"] += 1
            self.server.counters[f"pilot_xds_pushes{{type={short}_senderr}}"] += 1  # istiod: DeadlineExceeded
            log.warning("ADS: %s send of %s timed out; closing the stream", self.id, short)
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.DEADLINE_EXCEEDED, "send timed out") from None
        except (ConnectionError, grpclib.exceptions.StreamTerminatedError):
            raise  # the proxy went away (istiod's Unavailable / Canceled): not a send error
        except Exception:
            self.server.counters[f"pilot_xds_pushes{{type={short}_senderr}}"] += 1
            raise
        finally:
            self._sending = False
            self.send_started = 0.0
        self.server.sent(outgoing, self._generated.pop(outgoing.type_url, 0.0), time.monotonic() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "ADS: %s pushed %s %d resources (%d removed) version %s, %d bytes in %.1fms",
                self.id,
                short,
                len(outgoing.resources),
                len(outgoing.removed),
                outgoing.version,
                len(outgoing.body),
                (time.monotonic() - started) * 1e3,
            )

    def abort_send(self) -> None:
        """Called by the watchdog when a send has waited longer than the send timeout."""
        if self.send_started and self._task is not None and not self._send_timed_out:
            self._send_timed_out = True
            self._task.cancel("xDS send timed out")


class DiscoveryServer:
    def __init__(
        self,
        env: Environment,
        *,
        throttle: int | None = None,
        send_timeout: float | None = None,
        cache_size: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.env = env
        self.current: PushContext | None = None
        self.connections: dict[str, Connection] = {}
        self.queue: PushQueue[Connection] = PushQueue()
        self.throttle = throttle or default_throttle()
        self.send_timeout = send_timeout or float(os.environ.get("PILOT_XDS_SEND_TIMEOUT", "10") or 10)
        self.cache = XdsCache(cache_size or max_entries_from_env())
        self.generator = Generator(self.cache)
        self.metrics = metrics or Metrics()
        self.counters: Counter[str] = self.metrics.counters
        self.metrics.add_gauges(self._gauges)
        self._pushcontext_init = self.metrics.histogram("pilot_pushcontext_init_seconds")
        self._queue_time = self.metrics.histogram("pilot_proxy_queue_time")
        self._convergence_time = self.metrics.histogram("pilot_proxy_convergence_time")
        self._send_time = self.metrics.histogram("pilot_xds_send_time")
        self._push_time = {t: self.metrics.histogram("pilot_xds_push_time", s) for t, s in SHORT_TYPE.items()}
        self._config_size = {t: self.metrics.histogram("pilot_xds_config_size_bytes", t) for t in SHORT_TYPE}
        self._pushes = {t: f"pilot_xds_pushes{{type={s}}}" for t, s in SHORT_TYPE.items()}
        self._rejections_counted = -1  # the PushContext whose rejected Gateway servers were counted
        self._numbers = itertools.count(1)
        self._conn_numbers = itertools.count(1)
        self.last_push_reach = (0, 0)  # (connections the last push was queued for, connections then)
        self.recent_changes = quarantine.RecentChanges()  # what the last pushes changed (NACK reports)
        self.admission = limits.StreamAdmission(limits.default_stream_rate())
        self.log_limiter = LogLimiter(interval=60.0, burst=1)  # one line per key a minute, then a count
        self.quarantine_report = quarantine.QuarantineReport()

    # ----- push side -----

    def _next_version(self, number: int) -> str:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{stamp}/{number}"

    def rebuild(self, request: PushRequest | None = None) -> PushContext:
        """Build the next PushContext and make it current, dropping exactly what the change invalidates."""
        started = time.monotonic()
        number = next(self._numbers)
        everything = request is None or request.forced or request.configs_updated is None
        kinds = None if everything else request.kinds()  # type: ignore[union-attr]
        with tracing.init_span():
            push = PushContext.build(self.env, self._next_version(number), number, self.current, kinds)
        if everything:
            self.cache.clear_all(token=number)
            self.generator.invalidate(PUSH_ORDER)
        else:
            assert request is not None and request.configs_updated is not None and kinds is not None
            self.cache.clear(request.configs_updated, token=number)
            other_kinds = kinds - {ENDPOINTS_KIND}
            types = set(affected_types(frozenset(other_kinds))) if other_kinds else set()
            self.generator.invalidate(types)
            if ENDPOINT_TYPE not in types and ENDPOINTS_KIND in kinds:
                self.generator.endpoints_changed(self._endpoint_hosts(request))
        self.current = push
        self.counters["pilot_pushcontext_init"] += 1
        self._pushcontext_init.observe(time.monotonic() - started)
        log.debug("PushContext %s built in %.1fms", push.version, (time.monotonic() - started) * 1e3)
        return push

    @staticmethod
    def _endpoint_hosts(request: PushRequest) -> set[str]:
        return {key.name for key in request.configs_updated or () if key.kind == ENDPOINTS_KIND}

    async def push(self, request: PushRequest) -> None:
        """Debouncer callback: update what the change touches, then enqueue the connections it reaches."""
        self.push_now(request)

    def push_now(self, request: PushRequest) -> None:
        if tracing.TRACER is None:
            self._push_now(request)
            return
        with tracing.push_span(request):
            self._push_now(request)

    def _push_now(self, request: PushRequest) -> None:
        if request.full or self.current is None:
            push = self.rebuild(request)
        else:
            push = self.current
            hosts = self._endpoint_hosts(request)
            self.cache.clear(request.configs_updated or ())
            self.generator.endpoints_changed(hosts)
        self.recent_changes.record(push.number, None if request.forced else request.configs_updated)
        request.start = time.monotonic()  # istiod's StartPush: queue and convergence times count from here
        triggers = self._trigger_keys(request)
        enqueued = 0
        fast = not request.full and not request.forced
        for conn in list(self.connections.values()):
            if conn.needs_push(request, push):
                enqueued += 1
                if fast and conn.push_endpoints_now(push, request):
                    self._queue_time.observe(time.monotonic() - request.start)
                    self._count_triggers(triggers)
                    continue
                self.queue.enqueue(conn, request)
        self.last_push_reach = (enqueued, len(self.connections))
        log.debug(
            "push %s (%s): %d of %d connections", push.version, request.describe(), enqueued, len(self.connections)
        )

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
            # istiod's doSendPushes: per proxy push, its reasons and its time in the queue.
            self._queue_time.observe(time.monotonic() - request.start)
            self._count_triggers(self._trigger_keys(request))
            conn.deliver(request, PushTicket(slots.release, lambda conn=conn: self.queue.mark_done(conn)))

    async def watchdog(self) -> None:
        """Close streams whose send has waited longer than ``send_timeout`` (a proxy that stopped reading).

        One periodic scan instead of a timer around every send: sends are many and almost always immediate.
        """
        interval = max(0.05, min(1.0, self.send_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                if conn.send_started and now - conn.send_started > self.send_timeout:
                    conn.abort_send()

    def record_convergence(self, request: PushRequest) -> None:
        """A proxy has been sent everything a push had for it (istiod's pilot_proxy_convergence_time)."""
        self.counters["pilot_proxy_convergence"] += 1
        self._convergence_time.observe(time.monotonic() - request.start)

    @staticmethod
    def _trigger_keys(request: PushRequest) -> list[tuple[str, int]]:
        return [(f"pilot_push_triggers{{type={reason}}}", count) for reason, count in request.reason.items()]

    def _count_triggers(self, keys: list[tuple[str, int]]) -> None:
        for key, count in keys:
            self.counters[key] += count

    def sent(self, outgoing: Outgoing, generated: float, send_seconds: float) -> None:
        """One response written: istiod's pushes count, push time (generate + send), send time, size."""
        type_url = outgoing.type_url
        key = self._pushes.get(type_url)
        if key is None:  # a type without preset series
            short = SHORT_TYPE.get(type_url, type_url)
            key = f"pilot_xds_pushes{{type={short}}}"
            self._push_time[type_url] = self.metrics.histogram("pilot_xds_push_time", short)
            self._config_size[type_url] = self.metrics.histogram("pilot_xds_config_size_bytes", type_url)
            self._pushes[type_url] = key
        self.counters[key] += 1
        self._send_time.observe(send_seconds)
        self._push_time[type_url].observe(generated + send_seconds)
        self._config_size[type_url].observe(len(outgoing.body))

    def _gauges(self) -> dict[str, dict[tuple[str, ...], float]]:
        """Gauges read at each scrape: connected proxies by Istio version, config sizes, push_status, cache."""
        versions: Counter[tuple[str, ...]] = Counter(
            (str(conn.metadata.get("ISTIO_VERSION", "")),) for conn in list(self.connections.values())
        )
        cache = self.cache
        out: dict[str, dict[tuple[str, ...], float]] = {
            "pilot_xds": dict(versions) or {("",): 0},
            "xds_cache_reads": {("hit",): sum(cache.hits.values()), ("miss",): sum(cache.misses.values())},
            "xds_cache_evictions": {("clear",): cache.evictions["clear"], ("size",): cache.evictions["size"]},
            "xds_cache_size": {(): len(cache)},
            "xds_cache_dependent_config_size": {(): cache.dependent_config_size},
        }
        push = self.current
        if push is not None:
            out["pilot_services"] = {(): len(push.services)}
            out["pilot_virt_services"] = {(): len(push.virtual_services)}
            status = push.proxy_status()
            out.update({name: {(): len(status.get(name, ()))} for name in PUSH_STATUS_GAUGES})
            if push.number != self._rejections_counted:
                # istiod counts rejected Gateway servers as it merges them; here once per PushContext seen.
                self._rejections_counted = push.number
                for gateway, entry in status.get("pilot_total_rejected_configs", {}).items():
                    rejected = max(1, str(entry.get("message", "")).count("server "))
                    self.counters[f"pilot_total_rejected_configs{{type=gateway,name={gateway}}}"] += rejected
        return out

    # ----- connection side -----

    def register(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def unregister(self, conn: Connection) -> None:
        if self.connections.get(conn.id) is conn:
            del self.connections[conn.id]
        self.queue.remove(conn)

    def on_request_decision(self, conn: Connection, decision: Decision) -> None:
        if conn.trace is not None and decision.kind in (RequestKind.ACK, RequestKind.NACK):
            state = conn.protocol.types.get(decision.type_url)
            error = decision.error if decision.kind is RequestKind.NACK else ""
            if conn.trace.answered(decision.type_url, state.acked_nonce if state else "", error):
                conn.trace = None
        short = SHORT_TYPE.get(decision.type_url, decision.type_url)
        if decision.kind is RequestKind.NACK:
            self.counters[f"pilot_total_xds_rejects{{type={short}}}"] += 1
            allowed, suppressed = self.log_limiter.allow(("nack", conn.id, decision.type_url))
            if allowed:  # a NACK flood logs once a minute per stream and type
                more = f" ({suppressed} more since last logged)" if suppressed else ""
                error = decision.error[: quarantine.MAX_MESSAGE].replace("\n", " ")
                log.warning("ADS:%s: ACK ERROR %s %s%s", short.upper(), conn.id, error, more)
            if decision.quarantined:
                self._quarantine(conn, decision)
        elif decision.kind is RequestKind.STALE:
            self.counters[f"pilot_xds_expired_nonce{{type={short}}}"] += 1

    def _quarantine(self, conn: Connection, decision: Decision) -> None:
        """Report the resources a proxy rejected, now held back from it (pilot.xds.quarantine)."""
        state = conn.protocol.types[decision.type_url]
        short = SHORT_TYPE.get(decision.type_url, decision.type_url)
        message = decision.error[: quarantine.MAX_MESSAGE]
        for name in decision.quarantined:
            version = state.quarantine.get(name, "")
            origin = self.generator.origins.get((decision.type_url, name))
            objects: tuple[ConfigKey, ...] = ()
            if origin is not None and origin.version == version:
                # The objects behind it that the push which made this version changed.
                objects = quarantine.offending(origin.deps, self.recent_changes.at(origin.changed_at))
            entry = quarantine.Quarantined(conn.id, decision.type_url, name, version, objects, message, time.time())
            self.counters[f"pilot_xds_nack_quarantined{{type={short}}}"] += 1
            if self.quarantine_report.add(entry):
                blamed = ", ".join(str(k) for k in entry.objects) or "unknown objects"
                log.warning(
                    "ADS:%s: %s rejected %s (from %s); serving it the version it holds until that changes",
                    short.upper(),
                    conn.id,
                    name,
                    blamed,
                )

    def quarantine_status(self) -> dict[str, dict[str, object]]:
        """The quarantined resources still in force, for /debug/push_status."""
        live = {
            conn.id: {t: s.quarantine for t, s in conn.protocol.types.items() if s.quarantine}
            for conn in self.connections.values()
        }
        return quarantine.QuarantineReport.status(self.quarantine_report.current(live))

    def unknown_type(self, conn: Connection, type_url: str) -> None:
        """A request for a type pilot does not serve: not answered (as istiod), logged once per proxy and type."""
        allowed, _ = self.log_limiter.allow(("type", conn.id, type_url[:100]))
        if allowed:
            log.warning("ADS: %s asked for type %r, which pilot does not serve; not answered", conn.id, type_url[:100])

    def refuse(self, conn: Connection, reason: str) -> None:
        """A stream refused before it became a proxy's connection: counted, logged once per peer and reason."""
        self.counters["pilot_xds_refused_streams"] += 1
        allowed, suppressed = self.log_limiter.allow(("refuse", conn.address.rpartition(":")[0], reason[:80]))
        if allowed:
            more = f" ({suppressed} more since last logged)" if suppressed else ""
            log.warning("ADS: refused a stream from %s: %s%s", conn.address, reason[:300], more)

    async def _serve(self, stream: grpclib.server.Stream, protocol: SotwStream | DeltaStream, only_type: str) -> None:
        await self.admission.admit()  # PILOT_MAX_REQUESTS_PER_SECOND (pilot.xds.limits)
        conn = Connection(self, stream, next(self._conn_numbers), protocol, only_type)
        try:
            await conn.serve()
        except (ConnectionError, grpclib.exceptions.StreamTerminatedError):
            pass  # the proxy went away; cancellation (grpclib's signal for the same) must propagate
        except grpclib.exceptions.GRPCError:
            raise  # a status for the client (bad request, send timeout)
        except Exception:
            self.counters["pilot_total_xds_internal_errors"] += 1
            raise
        finally:
            if conn.trace is not None:
                conn.trace.closed()
                conn.trace = None
            self.unregister(conn)
            if conn.id:
                log.info("ADS: connection %s closed", conn.id)

    async def stream_aggregated_resources(self, stream: grpclib.server.Stream) -> None:
        await self._serve(stream, SotwStream(), "")

    async def delta_aggregated_resources(self, stream: grpclib.server.Stream) -> None:
        await self._serve(stream, DeltaStream(), "")

    def _per_type_stream(self, type_url: str, delta: bool) -> Callable[[grpclib.server.Stream], Any]:
        async def handler(stream: grpclib.server.Stream) -> None:
            await self._serve(stream, DeltaStream() if delta else SotwStream(), type_url)

        return handler

    def _fetch(self, type_url: str) -> Callable[[grpclib.server.Stream], Any]:
        async def handler(stream: grpclib.server.Stream) -> None:
            request = await stream.recv_message()
            assert request is not None
            await stream.send_message(self.fetch(type_url, request))

        return handler

    def fetch(self, type_url: str, request: discovery_pb2.DiscoveryRequest) -> bytes:
        """A unary Fetch*: the full current answer for the request's subscription (no stream state)."""
        found = self.answer(type_url, request, xds_api="grpc")
        return found[1]

    def answer(self, type_url: str, request: discovery_pb2.DiscoveryRequest, xds_api: str) -> tuple[str, bytes]:
        """Stateless discovery (unary Fetch*, REST): (version, serialised DiscoveryResponse) for a request.

        The version is a digest of the resources, so a client polling with the version it holds can be told
        "unchanged" (REST's 304) across pushes that did not change its resources.
        """
        push = self.current
        if not request.HasField("node") or not request.node.id or push is None:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, "request must carry node.id")
        request.type_url = request.type_url or type_url
        if request.type_url != type_url:
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status.INVALID_ARGUMENT, f"expected type {type_url}, got {request.type_url}"
            )
        node = request.node
        try:
            limits.check_node(node.id, node.cluster, node.metadata.ByteSize() if node.HasField("metadata") else 0)
        except limits.NodeError as exc:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, str(exc)) from None
        metadata = json_format.MessageToDict(request.node.metadata) if request.node.HasField("metadata") else {}
        try:
            proxy = dataclasses.replace(parse_proxy(node.id, metadata, node.cluster, node.locality), xds_api=xds_api)
        except ProxyIdError as exc:
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.INVALID_ARGUMENT, str(exc)) from None
        xdsauth.authorize(proxy)  # unary Fetch* on an authenticated stream (a no-op for REST)
        state = SotwStream()
        state.on_request(discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=request.resource_names))
        names = state.subscription(type_url)
        if names is None and type_url not in WILDCARD_TYPES:
            names = state.types[type_url].names
        snapshot = self.generator.snapshot(type_url, proxy, push, push.view_of(proxy), names)
        version = snapshot.digest()
        outgoing = state.respond(type_url, snapshot, version, force=True)
        assert outgoing is not None
        return version, outgoing.body

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        stream = grpclib.const.Cardinality.STREAM_STREAM
        request, response = discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse
        delta_request, delta_response = discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse
        handlers = {
            ADS_METHOD: grpclib.const.Handler(self.stream_aggregated_resources, stream, request, response),
            DELTA_ADS_METHOD: grpclib.const.Handler(
                self.delta_aggregated_resources, stream, delta_request, delta_response
            ),
        }
        for type_url, (service, suffix) in TYPE_SERVICES.items():
            handlers[f"/{service}/Stream{suffix}"] = grpclib.const.Handler(
                self._per_type_stream(type_url, delta=False), stream, request, response
            )
            handlers[f"/{service}/Delta{suffix}"] = grpclib.const.Handler(
                self._per_type_stream(type_url, delta=True), stream, delta_request, delta_response
            )
            handlers[f"/{service}/Fetch{suffix}"] = grpclib.const.Handler(
                self._fetch(type_url), grpclib.const.Cardinality.UNARY_UNARY, request, response
            )
        return handlers
