"""Monitoring HTTP server: /ready, /metrics and istiod-style /debug endpoints. Read-only."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from pilot import httpserve
from pilot.config.store import ConfigStore
from pilot.introspect.jsonbody import json_response as _json
from pilot.metrics import exposition
from pilot.model.environment import Environment
from pilot.security import debugauth
from pilot.tasks import Supervisor
from pilot.xds.names import SHORT_TYPE
from pilot.xds.server import DiscoveryServer


class Pilot(Protocol):
    """What the monitoring server reads of a running pilot."""

    ready: asyncio.Event
    store: ConfigStore
    env: Environment
    discovery: DiscoveryServer
    tasks: Supervisor

    def not_ready_reason(self) -> str: ...

    def source_problems(self) -> list[str]: ...


SERVER_KEY: web.AppKey[Pilot] = web.AppKey("pilot", object)  # type: ignore[arg-type]


async def ready(request: web.Request) -> web.Response:
    """200 once serving; 503 while loading, stopping, or while a pipeline task is down. A source that cannot be
    read keeps serving its last good config (as istiod): still 200, with one ``warning:`` line per problem."""
    server = request.app[SERVER_KEY]
    down = server.tasks.problems()
    if server.ready.is_set() and not down:
        warnings = "".join(f"warning: {problem}\n" for problem in server.source_problems())
        return web.Response(text="ready\n" + warnings)
    return web.Response(text=f"not ready: {server.not_ready_reason()}\n", status=503)


async def adsz(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    clients = []
    for conn in sorted(server.discovery.connections.values(), key=lambda c: c.id):
        proxy = conn.proxy
        clients.append(
            {
                "connectionId": conn.id,
                "connectedAt": conn.connected_at.isoformat(),
                "address": conn.address,
                "labels": dict(proxy.labels) if proxy else {},
                "metadata": conn.metadata,
                "watches": {
                    t: sorted(s.names) if not s.wildcard else ["*"]
                    for t, s in sorted(conn.state.types.items())
                    if s.requested
                },
            }
        )
    return _json(request, {"totalClients": len(clients), "clients": clients})


async def syncz(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    out = []
    for conn in sorted(server.discovery.connections.values(), key=lambda c: c.id):
        if conn.proxy is None:
            continue
        entry: dict[str, Any] = {
            "cluster_id": "Kubernetes",
            "proxy": conn.proxy.short_id,
            "proxy_type": conn.proxy.type.value,
            "istio_version": str(conn.metadata.get("ISTIO_VERSION", "")),
        }
        resources = {}
        for type_url, short in SHORT_TYPE.items():
            long = {"cds": "cluster", "eds": "endpoint", "lds": "listener", "rds": "route"}.get(short)
            state = conn.state.types.get(type_url)
            if long:  # istiod's per-type fields; SDS only appears under "resources"
                entry[f"{long}_sent"] = state.sent_nonce if state else ""
                entry[f"{long}_acked"] = state.acked_nonce if state else ""
            if state and state.requested:
                resources[type_url] = {
                    "sent": state.sent_nonce,
                    "acked": state.acked_nonce,
                    "sentTime": _iso(state.sent_time),
                    "lastError": state.last_error,
                }
        entry["resources"] = resources
        out.append(entry)
    return _json(request, out)


async def push_status(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    push = server.discovery.current
    status = dict(push.proxy_status()) if push else {}
    status.update(server.discovery.quarantine_status())  # resources proxies rejected (pilot.xds.quarantine)
    return _json(request, status)


async def config_cache(request: web.Request) -> web.Response:
    discovery = request.app[SERVER_KEY].discovery
    cache = discovery.cache
    if request.query.get("clear", "").lower() in ("", "true", "1") and "clear" in request.query:
        cache.clear_all()
        discovery.generator.clear()
        return web.Response(text="Cache cleared\n")
    if "sizes" in request.query:
        sizes = cache.size_bytes()
        out: dict[str, str] = {t: _human(n) for t, n in sizes.items()}
        out["total"] = _human(sum(sizes.values()))
        return _json(request, out)
    return _json(request, cache.entries())


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else ""


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f}{unit}" if unit != "B" else f"{n}B"
        n /= 1000  # type: ignore[assignment]
    return f"{n}B"


async def configz(request: web.Request) -> web.Response:
    server = request.app[SERVER_KEY]
    out = []
    for key, cfg in sorted(server.store.snapshot().items()):
        spec = cfg.spec.to_dict() if hasattr(cfg.spec, "to_dict") else cfg.spec.get("spec", cfg.spec)
        meta: dict[str, Any] = {"name": key.name}
        if key.namespace:
            meta["namespace"] = key.namespace
        if cfg.labels:
            meta["labels"] = cfg.labels
        out.append({"apiVersion": cfg.api_version, "kind": key.kind, "metadata": meta, "spec": spec})
    return _json(request, out)


async def registryz(request: web.Request) -> web.Response:
    push = request.app[SERVER_KEY].discovery.current
    services = [push.services[h] for h in sorted(push.services)] if push else []
    return _json(request, services)


async def endpoint_shardz(request: web.Request) -> web.Response:
    """istiod's shape: {hostname: {namespace: {"Shards": {"registry/cluster": [endpoint]}}}}."""
    index = request.app[SERVER_KEY].env.endpoints
    out: dict[str, dict[str, Any]] = {}
    for (hostname, namespace), shards in index.shards():
        out.setdefault(hostname, {})[namespace] = {
            "Shards": {name: [ep for eps in by_port.values() for ep in eps] for name, by_port in shards.items()},
        }
    return _json(request, out)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format with istiod's metric names (pilot.metrics; gauges are read now)."""
    body = request.app[SERVER_KEY].discovery.metrics.render()
    return web.Response(body=body.encode(), headers={"Content-Type": exposition.CONTENT_TYPE})


ENDPOINTS = {
    "adsz": adsz,
    "syncz": syncz,
    "push_status": push_status,
    "config_cache": config_cache,
    "cachez": config_cache,
    "configz": configz,
    "registryz": registryz,
    "endpointShardz": endpoint_shardz,
}


async def debug_list(request: web.Request) -> web.Response:
    return _json(request, sorted(ENDPOINTS))


def build_app(server: Pilot) -> web.Application:
    # /debug/* one at a time and within a share of the loop: dumps never starve pushes (pilot.httpserve).
    # Access first (pilot.security.debugauth: loopback, authenticated, namespace-scoped; POST-only mutations), so
    # a refused caller costs the budget nothing; answers filtered and redacted inside the budget.
    access, answers = debugauth.middlewares(getattr(server, "debug_access", None))
    app = web.Application(middlewares=[access, httpserve.DebugBudget().middleware(), answers])
    app[SERVER_KEY] = server
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    from pilot.introspect.endpoints import register  # here: pilot.introspect builds on this module's handlers

    # /debug (index), /debug/list, every endpoint above (some extended) and istiod's others, /version.
    register(app, ENDPOINTS, SERVER_KEY)
    return app
