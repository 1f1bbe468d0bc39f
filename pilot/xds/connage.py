"""A maximum age for xDS connections (istiod's keepaliveMaxServerConnectionAge,
``PILOT_KEEPALIVE_MAX_SERVER_CONNECTION_AGE``): proxies spread again over the replicas after a scale-out.

An xDS connection lives as long as its proxy, so without a limit every proxy stays on the replica it first
reached: new replicas get only new proxies. When a connection reaches its age (the setting, spread by up to
10 % either way as gRPC does, so a fleet that connected together does not reconnect together), pilot sends
HTTP/2 GOAWAY (NO_ERROR) and closes it; the proxy reconnects at once, through the Service, to any replica,
and is sent its whole config again. istiod lets in-flight streams finish for a grace period after GOAWAY, but
an ADS stream never finishes, so its connection ends at the same point; the HTTP/2 library pilot uses cannot
send on a connection after GOAWAY, so the two steps are one here.

Off when the setting is 0 or unset (the chart sets istiod's 30m).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import grpclib.server

log = logging.getLogger(__name__)

JITTER = 0.1  # gRPC's MaxConnectionAge jitter: +/- 10 %


class ConnectionAge:
    """Limits the age of the connections of grpclib servers it is applied to; counts what it closed."""

    def __init__(self, max_age: float, *, jitter: float = JITTER, rng: Callable[[], float] = random.random) -> None:
        if max_age <= 0:
            raise ValueError("max_age must be positive")
        self.max_age = max_age
        self._jitter = jitter
        self._rng = rng
        self.closed = 0  # connections closed for their age

    def age_for_new_connection(self) -> float:
        return self.max_age * (1 - self._jitter + 2 * self._jitter * self._rng())

    def apply(self, server: grpclib.server.Server) -> None:
        """Hook ``server`` (before it starts). Reaches into grpclib 0.4's protocol factory, as pilot.connlog."""
        make_protocol = server._protocol_factory

        def protocol_factory() -> asyncio.Protocol:
            return _Aged(make_protocol(), self)

        server._protocol_factory = protocol_factory  # type: ignore[method-assign]


class _Aged(asyncio.Protocol):
    """Stands in front of grpclib's protocol: everything passes through; at its age the connection is ended."""

    def __init__(self, inner: Any, owner: ConnectionAge) -> None:
        self._inner = inner
        self._owner = owner
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)
        age = self._owner.age_for_new_connection()
        self._timer = asyncio.get_running_loop().call_later(age, self._expire)

    def _expire(self) -> None:
        self._timer = None
        connection = getattr(self._inner, "connection", None)
        if connection is None or connection.is_closing():
            return
        self._owner.closed += 1
        try:
            connection._connection.close_connection()  # GOAWAY, NO_ERROR: the client reconnects, no error
            connection.flush()
        except Exception as exc:  # the h2 state may refuse it (already closing): close all the same
            log.debug("xDS: GOAWAY on an aged connection failed: %s", exc)
        self._inner.connection_lost(None)  # end its streams as a disconnect does (their handlers clean up)
        connection.close()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)
