"""One simulated proxy that talks ADS the way Envoy does, SotW or Delta.

- One HTTP/2 connection and one ADS stream at a time; the first request carries the node (Istio id,
  ``LABELS`` and ``NAMESPACE`` metadata).
- CDS and LDS are wildcard; EDS is requested for the EDS clusters received, LDS once those clusters have
  warmed (the first EDS answer, or right after CDS when there is no EDS cluster), RDS for the route names of
  the listeners' HTTP connection managers. Every response is accepted and ACKed.
- SotW: every request echoes the type's last nonce and accepted version and lists the full subscription.
  Delta: ``"*"`` subscribes to CDS/LDS, EDS/RDS names are subscribed and unsubscribed as they change (those
  requests carry no nonce), each response is ACKed by its nonce, removed_resources are dropped.
- A lost stream is retried with jittered exponential backoff (Envoy's: 0.5 s base, 30 s cap, full jitter;
  reset once a stream got a response). On every new stream the proxy keeps its config and re-requests all
  it watches: SotW with the last accepted version per type, Delta with ``initial_resource_versions``.

Config is held as decoded facts (see decode.py), shared between proxies whenever the content is the same.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import grpclib.client
import grpclib.const
import grpclib.exceptions
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from pilot.loadtest.decode import EMPTY, Decoded, Decoder
from pilot.loadtest.expect import Expectation
from pilot.loadtest.fleet import NodeSpec
from pilot.loadtest.wire import DELTA_METHOD, SOTW_METHOD, TYPE_INDEX, TYPES, WILDCARD, RawCodec

CDS_I, EDS_I, LDS_I, RDS_I = range(4)
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


class Tally:
    """Counts proxies still to reach a state; ``done`` is set when none is left."""

    def __init__(self) -> None:
        self.total = 0
        self.remaining = 0
        self.done = asyncio.Event()
        self.done.set()

    def reset(self, n: int) -> None:
        self.total = n
        self.remaining = n
        if n > 0:
            self.done.clear()
        else:
            self.done.set()

    def mark(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


class Shared:
    """What the proxies of one client process share: the target, decode caches, the phase's tallies."""

    def __init__(self, host: str, port: int, protocol: str) -> None:
        self.host = host
        self.port = port
        self.protocol = protocol
        self.decoder = Decoder()
        self.give_up_at = float("inf")  # proxies stop retrying after this (monotonic)
        self.last_message_at = 0.0
        self.synced = Tally()  # proxies with ``awaiting_sync`` set
        self.converged = Tally()  # proxies with ``awaiting_change`` set
        self.answered = Tally()  # proxies with ``awaiting_answer`` set
        self.expectation: Expectation | None = None
        self.request_bytes: dict[tuple[int, frozenset[str]], bytes] = {}  # SotW request prefix per subscription

    def sotw_prefix(self, index: int, names: frozenset[str]) -> bytes:
        """The serialised type_url + resource_names of a SotW request; version and nonce are appended (fields
        of a serialised message may come in any order)."""
        key = (index, names)
        prefix = self.request_bytes.get(key)
        if prefix is None:
            if len(self.request_bytes) > 4096:
                self.request_bytes.clear()
            prefix = discovery_pb2.DiscoveryRequest(type_url=TYPES[index], resource_names=sorted(names))
            prefix = self.request_bytes[key] = prefix.SerializeToString()
        return prefix


class SimProxy:
    def __init__(self, node: NodeSpec, shared: Shared) -> None:
        self.node = node
        self.shared = shared
        self.codec = RawCodec()
        # Config, kept across streams.
        self.held: list[Mapping[str, Any]] = [EMPTY, EMPTY, EMPTY, EMPTY]
        self.versions = ["", "", "", ""]  # SotW: last accepted version_info per type
        self.resource_versions: list[Mapping[str, str]] = [EMPTY, EMPTY, EMPTY, EMPTY]  # Delta
        self.eds_names: frozenset[str] = frozenset()
        self.route_names: frozenset[str] = frozenset()
        self.lds_requested = False
        # The current stream.
        self.nonces = ["", "", "", ""]
        self.answered = 0  # bit per type answered on this stream
        self.synced_at: float | None = None  # full config on this stream
        self._send: Any = None
        self._channel: grpclib.client.Channel | None = None
        self._drop_requested = False
        self._dropped_at_stream = 0
        # Measurements.
        self.msgs = [0, 0, 0, 0]
        self.bytes = [0, 0, 0, 0]
        self.first_response_at: float | None = None
        self.last_response_at: float | None = None
        self.ready_at: float | None = None  # first full config
        self.converged_at: float | None = None
        self.stream_errors: Counter[str] = Counter()
        self.streams = 0
        self.error = ""  # why it gave up
        self.awaiting_sync = False  # full config on the current stream
        self.awaiting_change = False  # the shared expectation
        self.awaiting_answer = False  # any response on a stream opened after drop_stream()
        self.recording: list[tuple[int, bytes]] | None = None  # responses, while recording
        self.recorded: list[tuple[int, bytes]] | None = None  # the responses up to the first full config
        self.stopping = False

    # ----- lifecycle -----

    async def run(self) -> None:
        attempt = 0
        try:
            while not self.stopping:
                self._new_stream()
                channel = grpclib.client.Channel(self.shared.host, self.shared.port, codec=self.codec)
                self._channel = channel
                try:
                    reason = await self._stream(channel)
                except asyncio.CancelledError:
                    raise
                except grpclib.exceptions.GRPCError as exc:
                    reason = f"{exc.status.name}: {exc.message}"
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                finally:
                    self._channel = None
                    channel.close()
                if self.stopping:
                    return
                if self._drop_requested:  # a reconnect the scenario asked for: at once, no backoff
                    self._drop_requested = False
                    attempt = 0
                    continue
                self.stream_errors[reason] += 1
                if self.answered:
                    attempt = 0
                backoff = random.uniform(0, min(BACKOFF_BASE * 2**attempt, BACKOFF_CAP))
                attempt += 1
                if time.monotonic() + backoff > self.shared.give_up_at:
                    self.error = reason
                    return
                await asyncio.sleep(backoff)
        finally:
            self._release()

    def drop_stream(self) -> None:
        """Close the connection; ``run`` reconnects at once with the config it holds."""
        self._dropped_at_stream = self.streams
        if self._channel is not None:
            self._drop_requested = True
            self._channel.close()

    def _release(self) -> None:
        """A proxy that ended does not hold up a phase."""
        if self.awaiting_sync:
            self.awaiting_sync = False
            self.shared.synced.mark()
        if self.awaiting_change:
            self.awaiting_change = False
            self.shared.converged.mark()
        if self.awaiting_answer:
            self.awaiting_answer = False
            self.shared.answered.mark()

    def _new_stream(self) -> None:
        self.nonces = ["", "", "", ""]
        self.answered = 0
        self.synced_at = None
        self.streams += 1

    async def _stream(self, channel: grpclib.client.Channel) -> str:
        delta = self.shared.protocol == "delta"
        method = DELTA_METHOD if delta else SOTW_METHOD
        request_type = discovery_pb2.DeltaDiscoveryRequest if delta else discovery_pb2.DiscoveryRequest
        response_type = discovery_pb2.DeltaDiscoveryResponse if delta else discovery_pb2.DiscoveryResponse
        on_response = self._on_delta if delta else self._on_sotw
        async with channel.request(method, grpclib.const.Cardinality.STREAM_STREAM, request_type, response_type) as s:
            self._send = s.send_message
            await (self._open_delta() if delta else self._open_sotw())
            while True:
                data = await s.recv_message()
                if data is None:
                    return "stream closed by the server"
                await on_response(data)

    def _node(self, request: Any) -> None:
        request.node.id = self.node.node_id
        request.node.metadata.CopyFrom(_metadata(self.node))

    # ----- SotW -----

    async def _open_sotw(self) -> None:
        first = discovery_pb2.DiscoveryRequest(type_url=TYPES[CDS_I], version_info=self.versions[CDS_I])
        self._node(first)
        await self._send(first)
        if self.eds_names:
            await self._sotw_request(EDS_I, self.eds_names)
        if self.lds_requested:
            await self._sotw_request(LDS_I)
        if self.route_names:
            await self._sotw_request(RDS_I, self.route_names)

    async def _sotw_request(self, i: int, names: frozenset[str] = frozenset()) -> None:
        tail = discovery_pb2.DiscoveryRequest(version_info=self.versions[i], response_nonce=self.nonces[i])
        await self._send(self.shared.sotw_prefix(i, names) + tail.SerializeToString())

    async def _on_sotw(self, data: bytes) -> None:
        now = time.monotonic()
        decoded, nonce = self.shared.decoder.sotw(data)
        i = TYPE_INDEX.get(decoded.type_url)
        if i is None:
            return  # a type this proxy never asked for
        self._count(i, len(data), now)
        self.nonces[i] = nonce
        self.versions[i] = decoded.version
        if i == CDS_I:
            self.held[CDS_I] = decoded.resources
            await self._sotw_request(CDS_I)
            if decoded.eds_names != self.eds_names:
                self.eds_names = decoded.eds_names
                await self._sotw_request(EDS_I, self.eds_names)
            if not self.eds_names and not self.lds_requested:
                self.lds_requested = True
                await self._sotw_request(LDS_I)
        elif i == EDS_I:
            self.held[EDS_I] = _merge(self.held[EDS_I], decoded, self.eds_names)
            await self._sotw_request(EDS_I, self.eds_names)
            if not self.lds_requested:
                self.lds_requested = True
                await self._sotw_request(LDS_I)
        elif i == LDS_I:
            self.held[LDS_I] = decoded.resources
            await self._sotw_request(LDS_I)
            if decoded.route_names != self.route_names:
                self.route_names = decoded.route_names
                await self._sotw_request(RDS_I, self.route_names)
        else:
            self.held[RDS_I] = _merge(self.held[RDS_I], decoded, self.route_names)
            await self._sotw_request(RDS_I, self.route_names)
        self._after(i, data, now)

    # ----- Delta -----

    async def _open_delta(self) -> None:
        first = self._delta_subscribe(CDS_I, [WILDCARD], ())
        self._node(first)
        first.initial_resource_versions.update(self.resource_versions[CDS_I])
        await self._send(first)
        if self.eds_names:
            await self._resubscribe(EDS_I, sorted(self.eds_names))
        if self.lds_requested:
            await self._resubscribe(LDS_I, [WILDCARD])
        if self.route_names:
            await self._resubscribe(RDS_I, sorted(self.route_names))

    async def _resubscribe(self, i: int, names: list[str]) -> None:
        """The first request of a type on a new stream: every name again, with the versions held."""
        request = self._delta_subscribe(i, names, ())
        request.initial_resource_versions.update(self.resource_versions[i])
        await self._send(request)

    @staticmethod
    def _delta_subscribe(i: int, subscribe: Any, unsubscribe: Any) -> Any:
        return discovery_pb2.DeltaDiscoveryRequest(
            type_url=TYPES[i], resource_names_subscribe=subscribe, resource_names_unsubscribe=unsubscribe
        )

    async def _on_delta(self, data: bytes) -> None:
        now = time.monotonic()
        decoded, nonce = self.shared.decoder.delta(data)
        i = TYPE_INDEX.get(decoded.type_url)
        if i is None:
            return
        self._count(i, len(data), now)
        had = self.held[i]
        self.held[i], self.resource_versions[i] = _apply_delta(had, self.resource_versions[i], decoded)
        await self._send(discovery_pb2.DeltaDiscoveryRequest(type_url=decoded.type_url, response_nonce=nonce))
        if i == CDS_I:
            if had is EMPTY:
                eds = decoded.eds_names
            else:
                changed = set(self.eds_names).difference(decoded.removed)
                for name, is_eds in decoded.resources.items():
                    (changed.add if is_eds else changed.discard)(name)
                eds = frozenset(changed)
            if eds != self.eds_names:
                await self._change_subscription(EDS_I, self.eds_names, eds)
                self.eds_names = eds
            if not self.eds_names and not self.lds_requested:
                self.lds_requested = True
                await self._send(self._delta_subscribe(LDS_I, [WILDCARD], ()))
        elif i == EDS_I:
            if not self.lds_requested:
                self.lds_requested = True
                await self._send(self._delta_subscribe(LDS_I, [WILDCARD], ()))
        elif i == LDS_I:
            routes = frozenset(r for names in self.held[LDS_I].values() for r in names)
            if routes != self.route_names:
                await self._change_subscription(RDS_I, self.route_names, routes)
                self.route_names = routes
        self._after(i, data, now)

    async def _change_subscription(self, i: int, old: frozenset[str], new: frozenset[str]) -> None:
        gone = old - new
        if gone:  # Envoy forgets what it no longer watches
            self.held[i] = {k: v for k, v in self.held[i].items() if k not in gone}
            self.resource_versions[i] = {k: v for k, v in self.resource_versions[i].items() if k not in gone}
        await self._send(self._delta_subscribe(i, sorted(new - old), sorted(gone)))

    # ----- both -----

    def _count(self, i: int, size: int, now: float) -> None:
        self.msgs[i] += 1
        self.bytes[i] += size
        self.shared.last_message_at = now
        self.last_response_at = now
        if self.first_response_at is None:
            self.first_response_at = now
        if self.awaiting_answer and self.streams > self._dropped_at_stream:
            self.awaiting_answer = False
            self.shared.answered.mark()

    def _after(self, i: int, data: bytes, now: float) -> None:
        self.answered |= 1 << i
        if self.recording is not None:
            self.recording.append((i, data))
        if self.synced_at is None and self._complete():
            self.synced_at = now
            if self.ready_at is None:
                self.ready_at = now
                if self.recording is not None:
                    self.recorded, self.recording = self.recording, None
            if self.awaiting_sync:
                self.awaiting_sync = False
                self.shared.synced.mark()
        expectation = self.shared.expectation
        if self.awaiting_change and expectation is not None and i in expectation.types:
            if expectation.met(self.held, self.eds_names):
                self.converged_at = now
                self.awaiting_change = False
                self.shared.converged.mark()

    def _complete(self) -> bool:
        """All watched types answered on this stream, every subscribed EDS/RDS name held."""
        need = 1 << CDS_I | 1 << LDS_I
        if self.eds_names:
            need |= 1 << EDS_I
        if self.route_names:
            need |= 1 << RDS_I
        return (
            self.answered & need == need
            and self.lds_requested
            and self.eds_names <= self.held[EDS_I].keys()
            and self.route_names <= self.held[RDS_I].keys()
        )

    def start_recording(self) -> None:
        """Keep every response up to the first full config, for the transport floor to replay."""
        self.recording = []


def _merge(held: Mapping[str, Any], decoded: Decoded, subscribed: frozenset[str]) -> Mapping[str, Any]:
    """SotW EDS/RDS: a response may carry only some names; one that covers the subscription replaces all."""
    if held is EMPTY or decoded.names >= subscribed:
        return decoded.resources
    merged = dict(held)
    merged.update(decoded.resources)
    return merged


def _apply_delta(
    held: Mapping[str, Any], versions: Mapping[str, str], decoded: Decoded
) -> tuple[Mapping[str, Any], Mapping[str, str]]:
    if held is EMPTY and not decoded.removed:
        return decoded.resources, decoded.resource_versions
    new_held = dict(held)
    new_held.update(decoded.resources)
    new_versions = dict(versions)
    new_versions.update(decoded.resource_versions)
    for name in decoded.removed:
        new_held.pop(name, None)
        new_versions.pop(name, None)
    return new_held, new_versions


_METADATA: dict[tuple[str, tuple[tuple[str, str], ...]], struct_pb2.Struct] = {}


def _metadata(node: NodeSpec) -> struct_pb2.Struct:
    key = (node.namespace, tuple(sorted(node.labels.items())))
    found = _METADATA.get(key)
    if found is None:
        found = _METADATA[key] = struct_pb2.Struct()
        found.update(node.metadata)
    return found
