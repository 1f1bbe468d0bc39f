"""The monitoring port cannot take the xDS server down (issue 8, finding 4).

- ``serve_tcp``: the aiohttp app on a plain asyncio server whose protocol factory refuses connections beyond
  ``max_connections`` (closed at once, counted), so idle or slow HTTP clients cannot use up the process's file
  descriptors; aiohttp's keep-alive timer (``HEADER_TIMEOUT``) closes a connection whose request headers do not
  arrive in time and an idle keep-alive connection alike.
- ``DebugBudget``: /debug/* handlers run one at a time and, together, use at most ``DEBUG_SHARE`` of the event
  loop: after a dump that took t seconds the next debug request waits t * (1/share - 1). A client polling
  /debug/configz in a loop slows itself down, never the pushes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

HEADER_TIMEOUT = 10.0  # seconds for a request's headers to arrive (and for an idle keep-alive connection)
DEBUG_SHARE = 0.25  # the most of the event loop that /debug/* handlers may use together
MAX_DEBUG_PAUSE = 5.0


def max_connections_from_env() -> int:
    raw = os.environ.get("PILOT_MONITORING_MAX_CONNECTIONS", "").strip()
    value = int(raw) if raw else 256
    if value < 1:
        raise ValueError(f"PILOT_MONITORING_MAX_CONNECTIONS={raw!r}: must be at least 1")
    return value


class _Refused(asyncio.Protocol):
    """A connection over the limit: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class LimitedFactory:
    """aiohttp's protocol factory (``web.Server``) with a cap on open connections."""

    def __init__(self, server: web.Server, max_connections: int) -> None:
        self.server = server
        self.max_connections = max_connections
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        if len(self.server.connections) >= self.max_connections:
            self.refused += 1
            return _Refused()
        return self.server()  # type: ignore[no-any-return]


async def serve_tcp(
    runner: web.AppRunner, host: str, port: int, *, max_connections: int, reuse_port: bool = False
) -> tuple[asyncio.AbstractServer, LimitedFactory]:
    """Serve ``runner`` (set up with ``keepalive_timeout=HEADER_TIMEOUT``) on host:port, capped."""
    server = runner.server
    assert server is not None, "runner.setup() first"
    factory = LimitedFactory(server, max_connections)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(factory, host, port, reuse_address=True, reuse_port=reuse_port or None)
    return listener, factory


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DebugBudget:
    """aiohttp middleware: /debug/* one at a time, within ``share`` of the loop (see module doc)."""

    def __init__(self, share: float = DEBUG_SHARE, clock: Callable[[], float] = time.monotonic) -> None:
        self.share = share
        self._clock = clock
        self._gate = asyncio.Lock()
        self.paused = 0.0  # seconds debug requests were held back in total (for tests and metrics)

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        """This budget as an aiohttp middleware."""

        @web.middleware
        async def debug_budget(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await self(request, handler)

        return debug_budget

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/debug"):
            return await handler(request)
        await self._gate.acquire()
        started = self._clock()
        try:
            return await handler(request)
        finally:
            # The response goes out now; the next debug request waits out this one's share.
            pause = min(MAX_DEBUG_PAUSE, (self._clock() - started) * (1.0 / self.share - 1.0))
            if pause > 0.001:
                self.paused += pause
                asyncio.get_running_loop().call_later(pause, self._gate.release)
            else:
                self._gate.release()
