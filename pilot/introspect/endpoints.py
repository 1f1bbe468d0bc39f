"""istiod's /debug endpoints on the monitoring port, beside the ones in ``pilot.debug`` (which this module
registers too, extending a few of them while keeping their JSON).

Shapes follow ``pilot/pkg/xds/debug.go``: ``?pretty`` indents; per-proxy endpoints take ``?proxyID=`` (an
exact ``pod.namespace``, a node id, or else a substring of the connection id, as istiod), answer 400 when it is
missing and 404 when no such proxy is connected here. Mutations (``cachez?clear``, ``adsz?push``) are POST
only; a GET asking for one gets 405 naming the method to use.

Heavy answers (config_dump, configz) run at most ``HEAVY_CONCURRENCY`` at a time and build their JSON in
slices that yield to the event loop, so a burst of debug requests cannot hold up pushes.
"""

from __future__ import annotations

import asyncio
import html
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from pilot.introspect import configdump, pushstatus
from pilot.introspect.jsonbody import json_response as _json
from pilot.introspect.rejections import STATUS_KEY as REJECTED_KEY
from pilot.push.request import REASON_DEBUG, PushRequest
from pilot.version import version_string

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEAVY_CONCURRENCY = 2
CONFIGZ_SLICE = 200  # objects converted between two yields to the event loop

NO_PROXY_ID = "You must provide a proxyID in the query string\n"
NOT_CONNECTED = "Proxy not connected to this Pilot instance. It may be connected to another instance.\n"

# path (as the index shows it) -> one-line description; the order of the HTML index is sorted by path.
HELP: dict[str, str] = {
    "/debug/adsz": "Status and debug interface for ADS (?proxyID= for one proxy)",
    "/debug/adsz?push=true": "POST: initiates a push of the current state to all connected proxies",
    "/debug/syncz": "Synchronization status of all Envoys connected to this Pilot instance (?namespace=)",
    "/debug/connections": "Info about the connected XDS clients",
    "/debug/config_dump": "ConfigDump in the form of the Envoy admin config dump API for passed in proxyID "
    "(&types=cds,lds,rds,eds, &include_eds)",
    "/debug/edsz": "Status and debug interface for EDS: config_dump of the endpoints of passed in proxyID",
    "/debug/push_status": "Last PushContext details, rejected config and routes to missing subsets",
    "/debug/pushcontext": "Debug support for current push context",
    "/debug/config_cache": "Info about the internal XDS caches",
    "/debug/cachez": "Info about the internal XDS caches (alias of config_cache)",
    "/debug/cachez?sizes=true": "Info about the size of the internal XDS caches",
    "/debug/cachez?clear=true": "POST: clear the XDS caches",
    "/debug/configz": "Debug support for config",
    "/debug/registryz": "Debug support for registry",
    "/debug/endpointz": "Obsolete, use endpointShardz",
    "/debug/endpointShardz": "Info about the endpoint shards",
    "/debug/sidecarz": "Debug sidecar scope for a proxy (?proxyID=)",
    "/debug/instancesz": "Debug support for service instances",
    "/debug/mesh": "Active mesh config",
    "/debug/list": "List all supported debug commands in json",
    "/version": "Pilot version and build information",
    "/ready": "Readiness: 200 once every source has loaded and xDS accepts connections",
    "/metrics": "Prometheus metrics",
}

_HEAVY: web.AppKey[asyncio.Semaphore] = web.AppKey("debug-heavy", asyncio.Semaphore)
_DUMP_JSON: web.AppKey[configdump.ResourceJson] = web.AppKey("debug-dump-json", configdump.ResourceJson)
_MISSING: web.AppKey[pushstatus.MissingSubsets] = web.AppKey("debug-missing-subsets", pushstatus.MissingSubsets)
_NAMES: web.AppKey[list[str]] = web.AppKey("debug-names", list)


def instance_id() -> str:
    """This pilot as istioctl's ISTIOD column names it: the pod name in Kubernetes, else host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def register(app: web.Application, existing: Mapping[str, Handler], server_key: web.AppKey[Any]) -> None:
    """Add /debug, /debug/list, every /debug/* endpoint (``existing``: pilot.debug's, by name) and /version."""
    version_string()  # resolved once now, not in the first /version request
    app[_HEAVY] = asyncio.Semaphore(HEAVY_CONCURRENCY)
    app[_DUMP_JSON] = configdump.ResourceJson()
    app[_MISSING] = pushstatus.MissingSubsets()
    api = _Api(server_key, existing)
    handlers: dict[str, Handler] = dict(existing)
    handlers.update(
        {
            "adsz": api.adsz,
            "syncz": api.syncz,
            "push_status": api.push_status,
            "config_cache": api.config_cache,
            "cachez": api.config_cache,
            "configz": api.configz,
            "connections": api.connections,
            "config_dump": api.config_dump,
            "edsz": api.edsz,
            "endpointz": existing.get("endpointShardz", api.not_found),
            "sidecarz": api.sidecarz,
            "instancesz": api.instancesz,
            "mesh": api.mesh,
            "pushcontext": api.pushcontext,
        }
    )
    names = sorted(handlers)
    app[_NAMES] = names
    for name in names:
        app.router.add_get(f"/debug/{name}", handlers[name])
    app.router.add_post("/debug/config_cache", api.config_cache)
    app.router.add_post("/debug/cachez", api.config_cache)
    app.router.add_post("/debug/adsz", api.adsz)
    app.router.add_get("/debug/list", debug_list)
    app.router.add_get("/debug", index)
    app.router.add_get("/debug/", index)
    app.router.add_get("/version", version)


def _entries(app: web.Application) -> list[tuple[str, str]]:
    paths = {f"/debug/{name}" for name in app[_NAMES]} | {p for p in HELP if "?" in p or not p.startswith("/debug")}
    paths.add("/debug/list")
    return [(path, HELP.get(path, "pilot-specific debug endpoint")) for path in sorted(paths)]


async def index(request: web.Request) -> web.Response:
    rows = "\n".join(
        f"<tr><td><a href='{html.escape(path)}'>{html.escape(path)}</a></td><td>{html.escape(text)}</td></tr>"
        for path, text in _entries(request.app)
    )
    body = (
        "<html><head><title>Pilot Debug Console</title></head>\n<body>\n"
        "<p>Note: use <b>pretty</b> in the query string (like <b>debug/configz?pretty</b>) to format the output. "
        "Endpoints marked POST change state and accept only POST.</p>\n"
        f"<table id='endpoints'>\n<tr><th>Endpoint</th><th>Description</th></tr>\n{rows}\n</table>\n</body></html>\n"
    )
    return web.Response(text=body, content_type="text/html")


async def debug_list(request: web.Request) -> web.Response:
    names = [path.removeprefix("/debug/") for path, _ in _entries(request.app) if path.startswith("/debug/")]
    return _json(request, sorted(n for n in names if n != "list"))


async def version(request: web.Request) -> web.Response:
    return web.Response(text=version_string() + "\n")


def _method_not_allowed(what: str) -> web.Response:
    return web.Response(text=f"{what} changes state: use POST\n", status=405, headers={"Allow": "POST"})


def find_connection(discovery: Any, proxy_id: str) -> Any | None:
    """The connection of ``proxy_id``: an exact connection id, ``pod.namespace`` or node id first, else (as
    istiod) the first connection id containing it."""
    connections = [c for c in sorted(discovery.connections.values(), key=lambda c: c.id) if c.proxy is not None]
    for conn in connections:
        if proxy_id in (conn.id, conn.proxy.short_id, conn.proxy.id):
            return conn
    return next((c for c in connections if proxy_id in c.id), None)


class _Api:
    def __init__(self, server_key: web.AppKey[Any], existing: Mapping[str, Handler]) -> None:
        self._key = server_key
        self._existing = existing

    def _server(self, request: web.Request) -> Any:
        return request.app[self._key]

    def _proxy_connection(self, request: web.Request) -> tuple[Any | None, web.Response | None]:
        proxy_id = request.query.get("proxyID", "")
        if not proxy_id:
            return None, web.Response(text=NO_PROXY_ID, status=400)
        conn = find_connection(self._server(request).discovery, proxy_id)
        if conn is None:
            return None, web.Response(text=NOT_CONNECTED, status=404)
        return conn, None

    async def _existing_json(self, name: str, request: web.Request) -> tuple[Any, web.Response]:
        """Call pilot.debug's handler and decode its JSON (to extend it without changing its shape)."""
        response = await self._existing[name](request)
        assert isinstance(response, web.Response)
        return (orjson.loads(response.body) if response.status == 200 and response.body else None), response

    async def not_found(self, request: web.Request) -> web.Response:
        return web.Response(text="not found\n", status=404)

    # ----- connections -----

    async def adsz(self, request: web.Request) -> web.Response:
        discovery = self._server(request).discovery
        if "push" in request.query:
            if request.method != "POST":
                return _method_not_allowed("adsz?push")
            discovery.push_now(PushRequest(full=True, forced=True, reason=_debug_reason()))
            return web.Response(text=f"Pushed to {len(discovery.connections)} servers\n")
        value, response = await self._existing_json("adsz", request)
        proxy_id = request.query.get("proxyID", "")
        if not proxy_id or value is None:
            return response
        conn = find_connection(discovery, proxy_id)
        if conn is None:
            return web.Response(text=NOT_CONNECTED, status=404)
        clients = [c for c in value.get("clients", []) if c.get("connectionId") == conn.id]
        return _json(request, {"totalClients": len(clients), "clients": clients})

    async def connections(self, request: web.Request) -> web.Response:
        discovery = self._server(request).discovery
        conns = sorted(discovery.connections.values(), key=lambda c: c.id)
        clients = [
            {"connectionId": c.id, "connectedAt": c.connected_at.isoformat(), "address": c.address}
            for c in conns
            if c.id
        ]
        return _json(request, {"totalClients": len(clients), "clients": clients})

    async def syncz(self, request: web.Request) -> web.Response:
        value, response = await self._existing_json("syncz", request)
        if value is None:
            return response
        discovery = self._server(request).discovery
        namespace = request.query.get("namespace", "")
        proxy_id = request.query.get("proxyID", "")
        by_short_id = {c.proxy.short_id: c for c in discovery.connections.values() if c.proxy is not None}
        only = find_connection(discovery, proxy_id) if proxy_id else None
        if proxy_id and only is None:
            return web.Response(text=NOT_CONNECTED, status=404)
        me = instance_id()
        out = []
        for entry in value:
            conn = by_short_id.get(entry.get("proxy", ""))
            if namespace and (conn is None or conn.proxy.namespace != namespace):
                continue
            if only is not None and conn is not only:
                continue
            entry["istiod"] = me
            if only is not None:
                entry["pending"] = _pending(discovery, only)
            out.append(entry)
        return _json(request, out)

    # ----- per proxy -----

    async def config_dump(self, request: web.Request, *, types: str | None = None) -> web.Response:
        conn, error = self._proxy_connection(request)
        if error is not None:
            return error
        try:
            wanted = configdump.resource_types(types if types is not None else request.query.get("types", ""))
        except configdump.UnknownType as exc:
            return web.Response(text=f"{exc}\n", status=400)
        discovery = self._server(request).discovery
        async with request.app[_HEAVY]:
            dump = await configdump.config_dump(
                discovery,
                conn,
                request.app[_DUMP_JSON],
                types=wanted or None,
                include_eds="include_eds" in request.query,
            )
        return _json(request, dump)

    async def edsz(self, request: web.Request) -> web.Response:
        return await self.config_dump(request, types="eds")

    async def sidecarz(self, request: web.Request) -> web.Response:
        conn, error = self._proxy_connection(request)
        if error is not None:
            return error
        push = self._server(request).discovery.current
        if push is None:
            return _json(request, None)
        return _json(request, sidecar_scope(push, conn.proxy))

    async def instancesz(self, request: web.Request) -> web.Response:
        discovery = self._server(request).discovery
        push = discovery.current
        out: dict[str, list[dict[str, Any]]] = {}
        if push is not None:
            for conn in sorted(discovery.connections.values(), key=lambda c: c.id):
                if conn.proxy is not None:
                    out[conn.proxy.id] = [_service_target(t) for t in push.service_targets(conn.proxy)]
        return _json(request, out)

    # ----- the push context and config -----

    async def push_status(self, request: web.Request) -> web.Response:
        value, response = await self._existing_json("push_status", request)
        if value is None and response.status != 200:
            return response
        server = self._server(request)
        status = dict(value or {})
        push = server.discovery.current
        if push is not None:
            missing = request.app[_MISSING](push)
            if missing:
                status[pushstatus.MISSING_SUBSET] = missing
        rejections = getattr(server.store, "rejections", None)
        if rejections is not None:
            rejected = rejections()
            if rejected:
                status[REJECTED_KEY] = rejected
        return _json(request, dict(sorted(status.items())))

    async def pushcontext(self, request: web.Request) -> web.Response:
        push = self._server(request).discovery.current
        if push is None:
            return _json(request, {})
        return _json(
            request,
            {
                # istiod's keys: pilot implements no AuthorizationPolicy and no multi-network gateways yet.
                "AuthorizationPolicies": None,
                "NetworkGateways": [],
                "UnresolvedGateways": [],
                "PushVersion": push.version,
                "Services": len(push.services),
                "VirtualServices": len(push.virtual_services),
                "DestinationRules": len(push.configs.get("DestinationRule", ())),
                "Gateways": len(push.gateways),
                "Sidecars": len(push.sidecars),
            },
        )

    async def config_cache(self, request: web.Request) -> web.Response:
        if "clear" in request.query and request.method != "POST":
            return _method_not_allowed("config_cache?clear")
        if request.method == "POST":
            discovery = self._server(request).discovery
            discovery.cache.clear_all()
            discovery.generator.clear()
            return web.Response(text="Cache cleared\n")
        return await self._existing["config_cache"](request)  # type: ignore[return-value]

    async def configz(self, request: web.Request) -> web.Response:
        """pilot.debug's configz shape, converted in slices (thousands of objects take a while)."""
        store = self._server(request).store
        out: list[dict[str, Any]] = []
        async with request.app[_HEAVY]:
            for count, (key, cfg) in enumerate(sorted(store.snapshot().items()), 1):
                spec = cfg.spec.to_dict() if hasattr(cfg.spec, "to_dict") else cfg.spec.get("spec", cfg.spec)
                meta: dict[str, Any] = {"name": key.name}
                if key.namespace:
                    meta["namespace"] = key.namespace
                if cfg.labels:
                    meta["labels"] = cfg.labels
                out.append({"apiVersion": cfg.api_version, "kind": key.kind, "metadata": meta, "spec": spec})
                if count % CONFIGZ_SLICE == 0:
                    await asyncio.sleep(0)
        return _json(request, out)

    async def mesh(self, request: web.Request) -> web.Response:
        server = self._server(request)
        env = server.discovery.env
        mesh: dict[str, Any] = {
            "proxyListenPort": 15001,
            "proxyInboundListenPort": 15006,
            "connectTimeout": "10s",
            "enableAutoMtls": True,
            "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
            "rootNamespace": env.root_namespace,
            "trustDomain": "cluster.local",
            "defaultConfig": {"discoveryAddress": getattr(getattr(server, "options", None), "grpc_addr", "")},
        }
        kube = getattr(getattr(server, "options", None), "kube", None)
        selectors = getattr(kube, "selectors", None)
        if selectors is not None and hasattr(selectors, "to_json"):
            mesh["discoverySelectors"] = selectors.to_json()
        return _json(request, mesh)


def _debug_reason() -> Any:
    from collections import Counter

    return Counter({REASON_DEBUG: 1})


def _pending(discovery: Any, conn: Any) -> dict[str, Any]:
    """Per watched type, how what pilot would send now differs from what the proxy was last sent, and
    whether that was acknowledged: the basis of ``pilot proxy-status PROXY``."""
    push = discovery.current
    if push is None or conn.proxy is None:
        return {}
    out: dict[str, Any] = {}
    view = push.view_of(conn.proxy)
    for type_url, state in sorted(conn.protocol.types.items()):
        if not state.requested:
            continue
        names = conn.protocol.subscription(type_url)
        snapshot = discovery.generator.snapshot(type_url, conn.proxy, push, view, names)
        diff = snapshot.diff(state.holds)
        out[type_url] = {
            "resources": len(snapshot),
            "added": sorted(r.name for r in diff.changed if r.name not in state.holds),
            "changed": sorted(r.name for r in diff.changed if r.name in state.holds),
            "removed": sorted(diff.removed),
            "acked": bool(state.sent_nonce) and state.acked_nonce == state.sent_nonce,
            "sentVersion": state.sent_version,
            "ackedVersion": state.acked_version,
            "lastError": state.last_error,
            "sentSeconds": round(time.time() - state.sent_time, 3) if state.sent_time else None,
        }
    return out


def _service_target(target: Any) -> dict[str, Any]:
    service = target.service
    return {
        "Service": {
            "hostname": service.hostname,
            "namespace": service.namespace,
            "addresses": list(service.addresses),
            "resolution": service.resolution.value,
            "registry": service.registry,
        },
        "Port": {
            "ServicePort": {
                "name": target.port.name,
                "port": target.port.number,
                "protocol": target.port.protocol.value,
            },
            "TargetPort": target.target_port,
        },
    }


def sidecar_scope(push: Any, proxy: Any) -> dict[str, Any]:
    """The proxy's SidecarScope as istiod's sidecarz shows it: the Sidecar that applies (if any), its egress
    listeners, and what the proxy can see through them."""
    scope = push.sidecar_scope(proxy)
    sidecar = scope.sidecar
    services: dict[str, None] = {}
    virtual_services: dict[str, None] = {}
    for egress in scope.egress:
        for svc in push.visible_services(proxy, egress):
            services[svc.hostname] = None
        if not proxy.is_router:
            for vs in push.sidecar_virtual_services(proxy, egress):
                virtual_services[f"{vs.config.namespace}/{vs.config.name}"] = None
    if proxy.is_router:
        for gateway in push.gateways_for_proxy(proxy):
            for vs in push.gateway_virtual_services(gateway):
                virtual_services[f"{vs.config.namespace}/{vs.config.name}"] = None
    destination_rules: dict[str, str] = {}
    for hostname in services:
        rule = push.destination_rule(proxy, hostname)
        if rule is not None:
            destination_rules[hostname] = f"{rule.namespace}/{rule.name}"
    return {
        "name": sidecar.name if sidecar is not None else "default",
        "namespace": sidecar.namespace if sidecar is not None else proxy.namespace,
        "sidecar": sidecar.spec.to_dict() if sidecar is not None else None,
        "egressListeners": [
            {
                "hosts": [f"{ns}/{dns}" for ns, dns in egress.hosts],
                "port": egress.port.number if egress.port is not None else None,
                "bind": egress.bind,
                "captureMode": egress.capture_mode,
            }
            for egress in scope.egress
        ],
        "services": list(services),
        "virtualServices": list(virtual_services),
        "destinationRules": destination_rules,
    }
