"""One log line for every connection the xDS port turns away before a stream reaches the discovery server,
with the reason (the streams it refuses, e.g. for a bad ``node.id``, are logged by ``DiscoveryServer.refuse``).

- A call to a method pilot does not serve (xDS v2, another gRPC service) is logged with the method.
- A connection that does not speak HTTP/2 (a TLS handshake on the plaintext port, HTTP/1.1) is logged with the
  peer and what it looked like. After the 24-byte HTTP/2 preface the check steps aside (the transport is handed
  to grpclib's protocol directly), so accepted connections pay nothing per frame.

Rejections are logged once each, at most ``MAX_PER_SECOND`` lines a second; the rest are counted and the count
is logged with the next line, so a misconfigured fleet cannot flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpclib.server

log = logging.getLogger("pilot.xds.rejected")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_PER_SECOND = 20


class _Limiter:
    def __init__(self, per_second: int = MAX_PER_SECOND, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_second = per_second
        self._clock = clock
        self._window = 0.0
        self._count = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
        if self._count >= self._per_second:
            self.suppressed += 1
            return False
        self._count += 1
        return True

    def take_suppressed(self) -> str:
        if not self.suppressed:
            return ""
        note = f" ({self.suppressed} more rejections not logged)"
        self.suppressed = 0
        return note


_limiter = _Limiter()


def _report(message: str, *args: object) -> None:
    if _limiter.allow():
        log.warning(message + "%s", *args, _limiter.take_suppressed())


class _Methods(dict):  # type: ignore[type-arg]
    """grpclib's method table; a lookup of a method it does not have is a rejected call."""

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().get(key, default)
        if found is None:
            _report("xDS: rejected call to %s: not a method pilot serves (xDS v3 ADS and per-type services)", key)
        return found


class _PrefaceCheck(asyncio.Protocol):
    """Stands in front of grpclib's protocol until the client has sent the HTTP/2 preface."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._seen = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if self._seen is not None:
            seen = self._seen + data[: len(H2_PREFACE) - len(self._seen)]
            if not H2_PREFACE.startswith(seen):
                peer = self._transport.get_extra_info("peername") if self._transport is not None else None
                where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unknown peer"
                _report("xDS: rejected connection from %s: %s", where, describe_first_bytes(seen))
                self._seen = None  # type: ignore[assignment]
            elif len(seen) == len(H2_PREFACE):
                self._seen = None  # type: ignore[assignment]
                if self._transport is not None:
                    self._transport.set_protocol(inner)  # checked: grpclib takes every later byte directly
            else:
                self._seen = seen
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)


def describe_first_bytes(data: bytes) -> str:
    if data[:1] == b"\x16":
        return "a TLS handshake (pilot's xDS port serves plaintext gRPC)"
    if data.split(b" ", 1)[0] in (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"):
        return "HTTP/1.x (xDS needs gRPC over HTTP/2)"
    return f"not HTTP/2 (first bytes {data[:16]!r})"


def log_rejected_connections(server: grpclib.server.Server) -> None:
    """Hook ``server`` (before it starts) so calls to unknown methods and non-HTTP/2 connections are logged.
    Reaches into grpclib 0.4's server (its method table and protocol factory), pinned in pyproject.toml."""
    server._mapping = _Methods(server._mapping)
    make_protocol = server._protocol_factory

    def protocol_factory() -> asyncio.Protocol:
        return _PrefaceCheck(make_protocol())

    server._protocol_factory = protocol_factory  # type: ignore[method-assign]
