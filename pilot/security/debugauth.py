"""Who may read which debug endpoint: an aiohttp middleware for the monitoring server.

As istiod's ``allowAuthenticatedOrLocalhost`` with ``ENABLE_DEBUG_ENDPOINT_AUTH`` (``pilot/pkg/xds/debug.go``):

- ``/ready``, ``/metrics`` and ``/version`` are open (probes and Prometheus), as on istiod's 15014.
- ``/debug/*`` from a loopback address (127.0.0.0/8, ::1: istiod's "request from localhost", which includes a
  ``kubectl port-forward``) or over a unix socket (the ``--workers`` supervisor): everything.
- From anywhere else the caller must authenticate as an xDS client does: a client certificate with a SPIFFE
  identity on the TLS monitoring listener, or ``Authorization: Bearer <service-account JWT>``. Otherwise 401.
- An authenticated caller of the root namespace (istio-system) or of ``DEBUG_ENDPOINT_AUTH_ALLOWED_NAMESPACES``
  gets everything. Any other namespace sees only its own: the per-proxy endpoints for proxies of its namespace
  (a proxy of another namespace is "not connected", 404, as istiod answers), the proxy lists (``adsz``,
  ``connections``, ``syncz``, ``instancesz``) cut to its proxies, ``configz`` cut to its objects; every other
  endpoint is 403 (istiod allows such callers only config_dump, ndsz and edsz).
  ``ENABLE_DEBUG_ENDPOINT_AUTH=false`` gives every authenticated caller everything, as in istiod.
- Changing state takes POST: a GET (or HEAD) carrying a mutating parameter (``config_cache?clear``,
  ``cachez?clear``, ``adsz?push``) is 405 and changes nothing; only full-access callers may POST.
- xDS over REST (``/v3/discovery:*``) is open like the plaintext xDS port while that port is enabled; with
  plaintext xDS off it is for full-access callers only.
- Every JSON answer goes through ``pilot.security.redact`` (env values, Secret data, private keys, proxy
  metadata), for every caller.

Endpoints are known by name; for a namespace-scoped caller, one that is not listed in ``SCOPED`` is refused,
so an endpoint added later is closed to such callers until its scoping is written here. Filtering needs the
answer as a ``web.Response`` with a JSON body (every debug endpoint answers so); a scoped endpoint that
streamed its answer could not be filtered, and is refused (the test suite checks every registered route).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from pilot.ratelog import LogLimiter
from pilot.security import redact
from pilot.security.authn import AuthenticationError, Authenticators, Caller, Credentials
from pilot.security.tls import peer_certificate

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/ready", "/metrics", "/version"})
REST_XDS_PREFIX = "/v3/discovery:"
DEBUG_PREFIX = "/debug"
SAFE_METHODS = frozenset({"GET", "HEAD"})
# endpoint -> query parameters that make a request change state
MUTATING_PARAMS: dict[str, frozenset[str]] = {
    "config_cache": frozenset({"clear"}),
    "cachez": frozenset({"clear"}),
    "adsz": frozenset({"push"}),
}
NOT_CONNECTED = "Proxy not connected to this Pilot instance. It may be connected to another instance.\n"
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
DEFAULT_FULL_NAMESPACES = frozenset({"istio-system"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who asks: ``namespace`` None means everything is visible."""

    namespace: str | None
    who: str

    @property
    def full(self) -> bool:
        return self.namespace is None


class Denied(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


# ----- per-endpoint scoping for namespace-scoped callers -------------------------------------------------------


class ProxyNamespaces:
    """The namespaces of the connected proxies, by connection id, ``pod.namespace`` and node id."""

    def __init__(self, connections: Iterable[Any]) -> None:
        self.conns = [c for c in connections if getattr(c, "proxy", None) is not None and c.id]
        self.by_conn = {c.id: c.proxy.namespace for c in self.conns}
        self.by_short = {c.proxy.short_id: c.proxy.namespace for c in self.conns}
        self.by_node = {c.proxy.id: c.proxy.namespace for c in self.conns}

    def candidates(self, proxy_id: str) -> list[str]:
        """Namespaces of every proxy ``?proxyID=`` may name: exact matches (connection id, pod.namespace or node
        id) if any, else every connection id containing it (istiod's substring match)."""
        exact = [c for c in self.conns if proxy_id in (c.id, c.proxy.short_id, c.proxy.id)]
        matches = exact or [c for c in self.conns if proxy_id in c.id]
        return [c.proxy.namespace for c in matches]


def _clients(value: Any, namespaces: ProxyNamespaces, namespace: str) -> Any:
    if not isinstance(value, dict) or not isinstance(value.get("clients"), list):
        return value
    clients = [
        c
        for c in value["clients"]
        if isinstance(c, dict) and namespaces.by_conn.get(c.get("connectionId")) == namespace
    ]
    return {**value, "clients": clients, "totalClients": len(clients)}


def _syncz(value: Any, namespaces: ProxyNamespaces, namespace: str) -> Any:
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, dict) and namespaces.by_short.get(e.get("proxy")) == namespace]


def _instancesz(value: Any, namespaces: ProxyNamespaces, namespace: str) -> Any:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if namespaces.by_node.get(k) == namespace}


def _configz(value: Any, namespaces: ProxyNamespaces, namespace: str) -> Any:
    if not isinstance(value, list):
        return []
    return [
        obj
        for obj in value
        if isinstance(obj, dict)
        and isinstance(obj.get("metadata"), dict)
        and obj["metadata"].get("namespace") == namespace
    ]


def _unchanged(value: Any, namespaces: ProxyNamespaces, namespace: str) -> Any:
    return value


@dataclass(frozen=True)
class Scope:
    """How a namespace-scoped caller sees one endpoint."""

    filter: Callable[[Any, ProxyNamespaces, str], Any] = _unchanged
    per_proxy: bool = False  # needs ?proxyID= of a proxy in the caller's namespace
    json: bool = True  # its 200 answers are JSON to filter (False: nothing namespaced in it, e.g. the index)


SCOPED: dict[str, Scope] = {
    "": Scope(json=False),  # the HTML index
    "list": Scope(),
    "adsz": Scope(_clients),
    "connections": Scope(_clients),
    "syncz": Scope(_syncz),
    "instancesz": Scope(_instancesz),
    "configz": Scope(_configz),
    "config_dump": Scope(per_proxy=True),
    "edsz": Scope(per_proxy=True),
    "ndsz": Scope(per_proxy=True),
    "sidecarz": Scope(per_proxy=True),
}


# ----- the policy ------------------------------------------------------------------------------------------------


@dataclass
class DebugAccess:
    """The monitoring server's access policy (one per server)."""

    authenticators: Authenticators = field(default_factory=Authenticators)
    local_networks: tuple[Network, ...] = LOOPBACK_NETWORKS
    full_namespaces: frozenset[str] = DEFAULT_FULL_NAMESPACES
    namespace_auth: bool = True  # ENABLE_DEBUG_ENDPOINT_AUTH
    rest_xds_open: bool = True  # xDS over REST is as open as the plaintext xDS port (on while that port is)
    connections: Callable[[], Iterable[Any]] | None = None  # the live xDS connections, for scoping
    unauthorized: int = 0  # requests answered 401
    _log_limit: LogLimiter = field(default_factory=LogLimiter)

    def is_local(self, request: web.Request) -> bool:
        transport = request.transport
        if transport is None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is not None and getattr(sock, "family", None) == socket.AF_UNIX:
            return True
        try:
            address = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.local_networks)

    async def viewer(self, request: web.Request) -> Viewer:
        """Raises Denied(401) when a non-local caller does not authenticate."""
        if self.is_local(request):
            return Viewer(None, "local")
        credentials = Credentials(
            peer_cert=peer_certificate(request.transport),
            authorization=request.headers.get("Authorization", ""),
            cluster_id=request.headers.get("clusterid", ""),
        )
        try:
            caller = await self.authenticators.authenticate(credentials)
        except AuthenticationError as exc:
            self.unauthorized += 1
            allowed, held = self._log_limit.allow(request.remote or "unknown")
            if allowed:
                more = f" ({held} more not logged)" if held else ""
                log.warning(
                    "Failed to authenticate %s %s from %s: %s%s",
                    request.method,
                    request.path,
                    request.remote,
                    exc,
                    more,
                )
            raise Denied(
                web.Response(text="unauthorized\n", status=401, headers={"WWW-Authenticate": 'Bearer realm="pilot"'})
            ) from None
        return self._viewer_of(caller)

    def _viewer_of(self, caller: Caller) -> Viewer:
        namespace = caller.namespace
        if not self.namespace_auth or namespace in self.full_namespaces:
            return Viewer(None, caller.describe())
        return Viewer(namespace, caller.describe())

    def proxy_namespaces(self) -> ProxyNamespaces | None:
        return ProxyNamespaces(self.connections()) if self.connections is not None else None


_refusal_log = LogLimiter()


def _forbidden(viewer: Viewer, path: str) -> web.Response:
    allowed, held = _refusal_log.allow(viewer.who)
    if allowed:
        more = f" ({held} more not logged)" if held else ""
        log.info("debug request to %s refused for %s (namespace %s)%s", path, viewer.who, viewer.namespace, more)
    return web.Response(text=f"forbidden: {path} is not available to namespace {viewer.namespace}\n", status=403)


def _method_not_allowed(name: str, params: Iterable[str]) -> web.Response:
    what = f"{name}?{'&'.join(sorted(params))}"
    return web.Response(text=f"{what} changes state: use POST\n", status=405, headers={"Allow": "POST"})


def _debug_name(path: str) -> str | None:
    """'adsz' for /debug/adsz, '' for /debug and /debug/, None for paths outside /debug."""
    if path == DEBUG_PREFIX:
        return ""
    if path.startswith(DEBUG_PREFIX + "/"):
        return path[len(DEBUG_PREFIX) + 1 :]
    return None


def _rewrite(response: web.Response, value: Any, pretty: bool) -> web.Response:
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if pretty else 0)
    response.body = orjson.dumps(value, option=option)
    return response


def _is_json(response: web.StreamResponse) -> bool:
    return (
        isinstance(response, web.Response)
        and response.content_type == "application/json"
        and isinstance(response.body, bytes | bytearray)
    )


def _postprocess(
    response: web.StreamResponse,
    name: str,
    viewer: Viewer,
    scope: Scope | None,
    namespaces: ProxyNamespaces | None,
    pretty: bool,
) -> web.StreamResponse:
    if not viewer.full and (
        response.prepared or (scope is not None and scope.json and response.status == 200 and not _is_json(response))
    ):
        # Not JSON where JSON was expected: nothing can be filtered, so nothing is shown. (An answer the handler
        # streamed itself is already sent: a bug in that endpoint, which tests/security's route test catches.)
        log.error("debug endpoint %s answered in a form that cannot be scoped; refused for %s", name, viewer.who)
        return web.Response(text="cannot scope this answer\n", status=500)
    if not _is_json(response):
        return response
    assert isinstance(response, web.Response) and isinstance(response.body, bytes | bytearray)
    body = bytes(response.body)
    scoped = not viewer.full and scope is not None and scope.json and response.status == 200
    if not scoped and name != "adsz" and not redact.may_need(body):
        return response
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return response if viewer.full else web.Response(text="cannot scope this answer\n", status=500)
    if scoped and scope is not None and viewer.namespace is not None:
        value = scope.filter(value, namespaces or ProxyNamespaces(()), viewer.namespace)
    if name == "adsz":
        redact.redact_adsz(value)
    redact.redact(value)
    return _rewrite(response, value, pretty)


@dataclass(frozen=True, slots=True)
class _Decision:
    """What the access check decided for one debug request, for the answer's filtering."""

    name: str
    viewer: Viewer
    scope: Scope | None
    namespaces: ProxyNamespaces | None


# Set by ``access`` for the handler chain it runs (one task), read by ``answers`` further in.
_DECISION: ContextVar[_Decision | None] = ContextVar("pilot_debug_decision", default=None)


def middlewares(policy: DebugAccess | None) -> tuple[Any, Any]:
    """The policy as two aiohttp middlewares (None: the default policy, loopback only, no authenticators):
    ``access`` (who may ask; outermost, so a refused caller costs nothing) and ``answers`` (filtering and
    redaction of what the handler answered; innermost, so its work counts in the debug budget)."""
    access_policy = policy if policy is not None else DebugAccess()

    @web.middleware
    async def access(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        path = request.path
        if path in OPEN_PATHS:
            return await handler(request)
        if path.startswith(REST_XDS_PREFIX):
            if access_policy.rest_xds_open:
                return await handler(request)
            try:
                viewer = await access_policy.viewer(request)
            except Denied as denied:
                return denied.response
            return await handler(request) if viewer.full else _forbidden(viewer, path)
        name = _debug_name(path)
        if name is None:
            return await handler(request)

        mutating = MUTATING_PARAMS.get(name, frozenset()) & set(request.query)
        if request.method in SAFE_METHODS and mutating:
            return _method_not_allowed(name, mutating)
        try:
            viewer = await access_policy.viewer(request)
        except Denied as denied:
            return denied.response
        scope: Scope | None = None
        namespaces: ProxyNamespaces | None = None
        if not viewer.full:
            scope = SCOPED.get(name)
            if scope is None or request.method not in SAFE_METHODS:
                return _forbidden(viewer, path)
            namespaces = access_policy.proxy_namespaces()
            if namespaces is None and (scope.filter is not _unchanged or scope.per_proxy):
                return _forbidden(viewer, path)  # nothing here knows the proxies: fail closed
            proxy_id = request.query.get("proxyID", "")
            if scope.per_proxy and not proxy_id:
                return web.Response(text="You must provide a proxyID in the query string\n", status=400)
            if proxy_id and namespaces is not None:
                found = namespaces.candidates(proxy_id)
                if any(ns != viewer.namespace for ns in found):
                    return web.Response(text=NOT_CONNECTED, status=404)
        token = _DECISION.set(_Decision(name, viewer, scope, namespaces))
        try:
            response: web.StreamResponse = await handler(request)
        finally:
            _DECISION.reset(token)
        return response

    @web.middleware
    async def answers(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        decision = _DECISION.get()
        if decision is None:
            return response
        pretty = "pretty" in request.query
        return _postprocess(response, decision.name, decision.viewer, decision.scope, decision.namespaces, pretty)

    return access, answers


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip())
