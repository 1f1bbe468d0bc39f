"""What one xDS client may cost the server, and nothing more (issue 8, finding 4).

- ``MAX_RECEIVE_MESSAGE``: the largest request accepted (4 MiB, gRPC's and istiod's default); a larger one ends
  the stream with RESOURCE_EXHAUSTED before its body is read (grpclib itself reads any size).
- Node bounds (``check_node``): node.id, node.cluster and node.metadata are bounded before anything parses
  them, and the IP addresses in the node id must be IP addresses, as istiod requires.
- ``StreamAdmission``: PILOT_MAX_REQUESTS_PER_SECOND as a token bucket on new streams. istiod lets a new stream
  wait up to a second for a token and refuses it after; here streams wait in a bounded line (up to
  ``MAX_ADMISSION_WAIT`` seconds' worth of tokens), so a reconnecting fleet is spread out instead of refused,
  and only a flood beyond that line is refused (RESOURCE_EXHAUSTED; Envoy retries with backoff). The default
  (150 streams per second per core) is above what pilot syncs (about 220 new proxies per second on 2 cores
  with 1,000 services), so it only bites on floods; istiod's default (its push throttle, 25 on 2 cores) would
  stretch a 2,000-proxy reconnect to 80 s. Set the variable to 25 for istiod's pace.
- ``grpc_configuration``: HTTP/2 keepalive pings on every connection, streams or not, so half-open and
  silent connections are closed after ``KEEPALIVE_TIME`` + ``KEEPALIVE_TIMEOUT``.
- ``raise_fd_limit``: the soft open-file limit raised to the hard one at start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import resource
import struct
import time
from collections.abc import Callable

import grpclib.const
import grpclib.exceptions
import grpclib.server
import grpclib.stream
from grpclib.config import Configuration

MAX_RECEIVE_MESSAGE = 4 * 1024 * 1024
MAX_NODE_ID = 1024  # Istio node ids are TYPE~IP~POD.NS~DOMAIN: a few hundred characters at most
MAX_NODE_CLUSTER = 512
# Pod labels and annotations together are limited to 256 KiB by Kubernetes; the agent adds a little.
MAX_NODE_METADATA = 512 * 1024
KEEPALIVE_TIME = 30.0  # seconds between pings on a connection (gRPC keepalive, as istiod's server)
KEEPALIVE_TIMEOUT = 10.0  # a ping not answered within this closes the connection
MAX_ADMISSION_WAIT = 10.0  # seconds a new stream may wait for its turn before it is refused

log = logging.getLogger(__name__)


class NodeError(ValueError):
    """A node that is refused before it is parsed (the message names the field and the bound)."""


def check_node(node_id: str, cluster: str, metadata_bytes: int) -> None:
    """Bounds that must hold before a node is parsed; raises NodeError."""
    if len(node_id) > MAX_NODE_ID:
        raise NodeError(f"node.id is {len(node_id)} characters, more than {MAX_NODE_ID}")
    if len(cluster) > MAX_NODE_CLUSTER:
        raise NodeError(f"node.cluster is {len(cluster)} characters, more than {MAX_NODE_CLUSTER}")
    if metadata_bytes > MAX_NODE_METADATA:
        raise NodeError(f"node.metadata is {metadata_bytes} bytes, more than {MAX_NODE_METADATA}")
    parts = node_id.split("~")
    if len(parts) == 4:
        for ip in (p for p in parts[1].split(",") if p):
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise NodeError(f"node.id {node_id!r}: {ip!r} is not an IP address") from None


# ----- message size -----


async def _bounded_recv_message(stream: grpclib.stream.Stream, codec: object, message_type: type) -> object:
    """grpclib's recv_message, refusing a message over MAX_RECEIVE_MESSAGE before reading its body."""
    meta = await stream.recv_data(5)
    if not meta:
        return None
    compressed, length = struct.unpack(">?I", meta)
    if compressed:
        raise grpclib.exceptions.GRPCError(grpclib.const.Status.UNIMPLEMENTED, "compressed messages are not accepted")
    if length > MAX_RECEIVE_MESSAGE:
        raise grpclib.exceptions.GRPCError(
            grpclib.const.Status.RESOURCE_EXHAUSTED,
            f"received message larger than max ({length} vs. {MAX_RECEIVE_MESSAGE})",
        )
    body = await stream.recv_data(length)
    if len(body) != length:
        raise grpclib.exceptions.GRPCError(grpclib.const.Status.INTERNAL, "incomplete message")
    return codec.decode(body, message_type)  # type: ignore[attr-defined]


def install_message_bound() -> None:
    """Every grpclib server stream reads requests through ``_bounded_recv_message`` (idempotent)."""
    grpclib.server.recv_message = _bounded_recv_message  # type: ignore[attr-defined]


# ----- keepalive -----


def grpc_configuration() -> Configuration:
    return Configuration(
        _keepalive_time=KEEPALIVE_TIME,
        _keepalive_timeout=KEEPALIVE_TIMEOUT,
        _keepalive_permit_without_calls=True,  # a connection that never opens a stream is pinged too
        _http2_max_pings_without_data=0,  # an idle ADS stream sends no data for hours: keep pinging it
        _http2_min_sent_ping_interval_without_data=KEEPALIVE_TIME,
    )


# ----- admission of new streams -----


def default_stream_rate() -> float:
    """PILOT_MAX_REQUESTS_PER_SECOND: new streams per second; 0 or unset means 150 per core (see module doc)."""
    raw = os.environ.get("PILOT_MAX_REQUESTS_PER_SECOND", "").strip()
    value = float(raw) if raw else 0.0
    if value < 0:
        raise ValueError(f"PILOT_MAX_REQUESTS_PER_SECOND={raw!r}: must not be negative")
    return value if value > 0 else 150.0 * (os.cpu_count() or 1)


class StreamAdmission:
    """A token bucket (``rate`` per second, burst ``rate``) that new streams wait on, in a bounded line."""

    def __init__(
        self, rate: float, *, max_wait: float = MAX_ADMISSION_WAIT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.max_wait = max_wait
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._next_free = 0.0  # when the last admitted stream's token is available
        self.refused = 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self) -> float | None:
        """Take a token: the seconds to wait for it (0: at once), or None when the line is full."""
        self._refill()
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        if wait > self.max_wait:
            self._tokens += 1.0
            self.refused += 1
            return None
        return wait

    async def admit(self) -> None:
        """Wait for this stream's turn; raises RESOURCE_EXHAUSTED when too many are waiting."""
        wait = self.reserve()
        if wait is None:
            raise grpclib.exceptions.GRPCError(
                grpclib.const.Status.RESOURCE_EXHAUSTED,
                f"too many new xDS streams (PILOT_MAX_REQUESTS_PER_SECOND={self.rate:g}); retry later",
            )
        if wait > 0:
            await asyncio.sleep(wait)


# ----- file descriptors -----


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (capped at 1M); returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    wanted = min(wanted, 1 << 20)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    return soft, hard
