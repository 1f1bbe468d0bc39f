"""pilot's own serving certificate: TLS server contexts for xDS (15012) and the TLS monitoring listener.

As istiod's secure gRPC server: TLS 1.2 or later, the serving certificate and key from files, and, when a root
is given, client certificates requested and verified against it if the client sends one (Go's
``VerifyClientCertIfGiven``): a client may instead prove itself with a token, and a client certificate that
does not verify fails the handshake.

The files are a mounted Secret that is rotated in place, so they are checked again on TLS handshakes, at most
once per ``interval``: a new connection after a rotation gets the new pair (and a root added to the CA file is
trusted); a pair caught half-written keeps the previous one in service until the files change again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0
HANDSHAKE_TIMEOUT = 10.0  # a client that opens a connection and never completes TLS is dropped
GRPC_ALPN = ("h2",)
HTTP_ALPN = ("http/1.1",)  # aiohttp speaks HTTP/1.1 only


class TlsConfigError(Exception):
    """The serving certificate, key or root cannot be loaded (at start: pilot stops with this one line)."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None  # root that signs client certificates; None: clients authenticate by token only

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) if self.ca is None else (self.cert, self.key, self.ca)


def server_context(files: TlsFiles, alpn: Sequence[str]) -> ssl.SSLContext:
    """Raises OSError / ssl.SSLError when a file cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(list(alpn))
    context.load_cert_chain(str(files.cert), str(files.key))
    if files.ca is not None:
        context.load_verify_locations(cafile=str(files.ca))
        context.verify_mode = ssl.CERT_OPTIONAL  # verified when given; a token may prove identity instead
    return context


Stamp = tuple[tuple[int, int, int, int], ...]


def _stamp(paths: Sequence[Path]) -> Stamp:
    out = []
    for path in paths:
        st = os.stat(path)  # follows symlinks (a Secret volume's ..data swap changes the target)
        out.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class ReloadingContext:
    """A listening SSLContext whose handshakes get the newest loadable version of the files."""

    def __init__(
        self,
        files: TlsFiles,
        alpn: Sequence[str],
        *,
        what: str = "serving certificate",
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = files
        self.alpn = tuple(alpn)
        self.what = what
        self.interval = interval
        self.clock = clock
        self.reloads = 0
        try:
            self._loaded = _stamp(files.paths())
            self.context = server_context(files, self.alpn)
        except (OSError, ssl.SSLError) as exc:
            names = ", ".join(str(p) for p in files.paths())
            raise TlsConfigError(f"{what} ({names}): {exc}") from exc
        self.context.sni_callback = self._on_handshake
        self._current = self.context
        self._failed: Stamp | None = None
        self._unreadable = False  # the files could not be stat'ed at the last check (logged once)
        self._next_check = clock() + interval

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def check(self) -> None:
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.interval
        try:
            stamp = _stamp(self.files.paths())
        except OSError as exc:
            # A rotation in progress (a file briefly missing), or worse: keep the loaded pair, say so once.
            if not self._unreadable:
                log.warning("%s files unreadable, keeping the loaded pair: %s", self.what, exc)
                self._unreadable = True
            return
        self._unreadable = False
        if stamp in (self._loaded, self._failed):
            return
        try:
            context = server_context(self.files, self.alpn)
        except (OSError, ssl.SSLError) as exc:
            log.warning("%s not reloaded, keeping the previous one: %s", self.what, exc)
            self._failed = stamp
            return
        self._current = context
        self._loaded = stamp
        self._failed = None
        self.reloads += 1
        log.info("%s reloaded from %s", self.what, self.files.cert)

    def _on_handshake(self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: Any) -> None:
        # An exception here would fail the handshake with no trace: log and keep the current context.
        try:
            self.check()
            if connection.context is not self._current:
                connection.context = self._current
        except Exception:
            log.exception("%s check failed", self.what)


def peer_certificate(transport: Any) -> dict[str, Any] | None:
    """The verified client certificate of a TLS connection (``ssl`` getpeercert() form), else None."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    cert = ssl_object.getpeercert()
    return cert or None


def is_tls(transport: Any) -> bool:
    return transport is not None and transport.get_extra_info("ssl_object") is not None


async def serve_https(
    runner: Any, host: str, port: int, context: ssl.SSLContext, *, max_connections: int
) -> asyncio.AbstractServer:
    """The monitoring app (an aiohttp ``AppRunner``, set up) over TLS, with the plain listener's connection cap."""
    from pilot import httpserve

    loop = asyncio.get_running_loop()
    factory = httpserve.LimitedFactory(runner.server, max_connections)
    return await loop.create_server(
        factory, host, port, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT, reuse_address=True
    )
