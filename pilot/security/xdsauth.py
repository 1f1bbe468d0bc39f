"""Authenticated xDS: who a stream is, and PILOT_ENABLE_XDS_IDENTITY_CHECK.

As istiod (``pilot/pkg/xds/auth.go``, ``pkg/security``):

- Streams on the TLS port (15012) are authenticated before the first request is read: a client certificate
  with a SPIFFE identity, or a service-account JWT in the ``authorization: Bearer`` metadata. A stream that
  proves nothing ends with UNAUTHENTICATED ("authentication failure"; the reasons go to the log only).
- Streams on the plaintext port (15010) are not authenticated (istiod's default), unless
  ``XDS_AUTH_PLAINTEXT=true`` (for a trusted network), which authenticates them the same way.
- With ``PILOT_ENABLE_XDS_IDENTITY_CHECK`` (default true), an authenticated proxy may only be a proxy of its
  identity's namespace (and of its service account, when it declares ``SERVICE_ACCOUNT`` metadata): the
  namespace it would be configured as (``metadata.NAMESPACE``, else its node id's) and the namespace in its node
  id must both be the identity's, else the stream ends with PERMISSION_DENIED and one log line with the reason.
  An unauthenticated (plaintext) proxy is not checked, as in istiod.

The listener that wants authentication serves ``XdsAuth.handlers(discovery, secure=True)``: the discovery
server's handlers, each wrapped to authenticate the stream first and to record the caller in a context
variable for the rest of that stream's handling (the grpclib task of the stream and the tasks it starts). The
discovery server calls ``authorize(proxy)`` once it knows who the proxy claims to be; that is a no-op
on streams nobody authenticated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import grpclib.const
import grpclib.exceptions
import grpclib.server

from pilot.model.proxy import Proxy
from pilot.ratelog import LogLimiter
from pilot.security.authn import AuthenticationError, Authenticators, Caller, Credentials, Identity

log = logging.getLogger(__name__)

MAX_LOGGED_ID = 200  # characters of a node id shown in a log line (ids come from the client)


@dataclass(frozen=True, slots=True)
class StreamAuth:
    caller: Caller
    identity_check: bool
    address: str  # the peer, for log lines


_STREAM_AUTH: ContextVar[StreamAuth | None] = ContextVar("pilot_xds_stream_auth", default=None)
_unauthorized_log = LogLimiter()


class IdentityMismatch(Exception):
    pass


def current_caller() -> Caller | None:
    """The authenticated caller of the xDS stream being handled, if any."""
    auth = _STREAM_AUTH.get()
    return auth.caller if auth is not None else None


def node_id_namespace(proxy: Proxy) -> str:
    """The NS of ``TYPE~IP~POD.NS~DOMAIN`` ('' when the id names none)."""
    parts = proxy.id.split("~")
    return parts[2].partition(".")[2] if len(parts) == 4 else ""


def check_identity(proxy: Proxy, caller: Caller) -> Identity:
    """The caller's identity this proxy may act as; raises IdentityMismatch naming what did not match."""
    id_namespace = node_id_namespace(proxy)
    account = proxy.metadata.get("SERVICE_ACCOUNT")
    account = account if isinstance(account, str) and account else ""
    for identity in caller.identities:
        if identity.namespace != proxy.namespace:
            continue
        if id_namespace and identity.namespace != id_namespace:
            continue
        if account and identity.service_account != account:
            continue
        return identity
    claimed = f"namespace {proxy.namespace!r}"
    if id_namespace and id_namespace != proxy.namespace:
        claimed += f" (node id namespace {id_namespace!r})"
    if account:
        claimed += f", service account {account!r}"
    raise IdentityMismatch(f"no identity ({caller.describe()}) matched the proxy's {claimed}")


def authorize(proxy: Proxy) -> Identity | None:
    """Check the proxy against the stream's identity; raises GRPCError(PERMISSION_DENIED) on a mismatch.

    None when the stream is not authenticated or the identity check is off.
    """
    auth = _STREAM_AUTH.get()
    if auth is None or not auth.identity_check:
        return None
    try:
        return check_identity(proxy, auth.caller)
    except IdentityMismatch as exc:
        allowed, held = _unauthorized_log.allow(auth.address.rpartition(":")[0])
        if allowed:
            more = f" ({held} more not logged)" if held else ""
            log.warning("Unauthorized XDS: %s node %s: %s%s", auth.address, proxy.id[:MAX_LOGGED_ID], exc, more)
        raise grpclib.exceptions.GRPCError(
            grpclib.const.Status.PERMISSION_DENIED, f"authorization failed: {exc}"
        ) from None


def peer_address(stream: grpclib.server.Stream) -> str:
    peer = stream.peer.addr() if stream.peer is not None else None
    return f"{peer[0]}:{peer[1]}" if peer else "unknown"


class XdsAuth:
    def __init__(
        self,
        authenticators: Authenticators,
        *,
        identity_check: bool = True,
        authenticate_plaintext: bool = False,
    ) -> None:
        self.authenticators = authenticators
        self.identity_check = identity_check
        self.authenticate_plaintext = authenticate_plaintext
        self.failures = 0  # streams refused as unauthenticated
        self._log_limit = LogLimiter()

    def handlers(self, service: Any, *, secure: bool) -> Any:
        """What a grpclib Server should serve: ``service`` itself, or it behind authentication."""
        if not secure and not self.authenticate_plaintext:
            return service
        return _Authenticating(service, self)

    async def authenticate(self, stream: grpclib.server.Stream) -> Caller:
        metadata = stream.metadata or {}
        credentials = Credentials(
            peer_cert=stream.peer.cert() if stream.peer is not None else None,
            authorization=str(metadata.get("authorization", "")),
            cluster_id=str(metadata.get("clusterid", "")),
        )
        try:
            return await self.authenticators.authenticate(credentials)
        except AuthenticationError as exc:
            self.failures += 1
            address = peer_address(stream)
            allowed, held = self._log_limit.allow(address.rpartition(":")[0])
            if allowed:
                more = f" ({held} more not logged)" if held else ""
                log.error("Failed to authenticate client from %s: %s%s", address, exc, more)
            raise grpclib.exceptions.GRPCError(grpclib.const.Status.UNAUTHENTICATED, "authentication failure") from None


class _Authenticating:
    """A grpclib service: ``inner``'s handlers, each authenticating its stream before it runs."""

    def __init__(self, inner: Any, auth: XdsAuth) -> None:
        self._inner = inner
        self._auth = auth

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            path: handler._replace(func=self._wrap(handler.func)) for path, handler in self._inner.__mapping__().items()
        }

    def _wrap(self, func: Callable[[grpclib.server.Stream], Any]) -> Callable[[grpclib.server.Stream], Any]:
        auth = self._auth

        async def authenticated(stream: grpclib.server.Stream) -> None:
            caller = await auth.authenticate(stream)
            token = _STREAM_AUTH.set(StreamAuth(caller, auth.identity_check, peer_address(stream)))
            try:
                await func(stream)
            finally:
                _STREAM_AUTH.reset(token)

        return authenticated
