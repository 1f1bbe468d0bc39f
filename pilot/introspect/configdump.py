"""/debug/config_dump: what pilot would send one proxy, in the shape of Envoy's admin ``ConfigDump``.

As istiod (``connectionConfigDump``): the proxy's current view is generated for every type it watches
(from the generator's shared snapshots, so for a connected proxy this is normally cache hits), and the
resources are laid out as the admin API lays out Envoy's own dump: an empty ``BootstrapConfigDump``, dynamic
clusters, endpoints (only with ``include_eds``), listeners, empty scoped routes, route configurations, empty
secrets (certificates never pass through pilot) and empty ECDS. ``types=cds,lds`` instead returns the bare
resources in ``configs``. JSON field names are protobuf's JSON names, as istiod's jsonpb writes them.

Resources are turned into JSON one at a time, yielding to the event loop every few milliseconds, so a dump of
thousands of clusters never holds up pushes; each resource's JSON is kept (by type and content version) for
the next dump.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError

from pilot.push.context import PushContext
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.resource import Resource

ADMIN = "type.googleapis.com/envoy.admin.v3."
SECTION_ORDER = ("bootstrap", "clusters", "endpoints", "listeners", "scoped_routes", "routes", "secrets", "ecds")
# istiod's short type names (``types=``), and the short names its typed handlers use.
SHORT_TYPES = {"cds": CLUSTER_TYPE, "lds": LISTENER_TYPE, "rds": ROUTE_TYPE, "eds": ENDPOINT_TYPE}
DUMP_ORDER = (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE, ENDPOINT_TYPE)

YIELD_EVERY = 0.004  # seconds of JSON conversion between two yields to the event loop
_JSON_CACHE_MAX = 8192


class UnknownType(ValueError):
    pass


def resource_types(query: str) -> list[str]:
    """``types=cds,lds`` (short names, or full type URLs) -> type URLs in dump order."""
    wanted = set()
    for part in (p.strip() for p in query.split(",")):
        if not part:
            continue
        type_url = SHORT_TYPES.get(part.lower(), part if part.startswith("type.googleapis.com/") else "")
        if not type_url:
            raise UnknownType(f"unknown type {part!r} (expected cds, lds, rds or eds)")
        wanted.add(type_url)
    return [t for t in DUMP_ORDER if t in wanted]


class ResourceJson:
    """Envoy resources as protobuf JSON, kept per (type, content version): dumps repeat the same resources."""

    def __init__(self, max_entries: int = _JSON_CACHE_MAX) -> None:
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def __call__(self, resource: Resource) -> dict[str, Any]:
        key = (resource.type_url, resource.version)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        found = to_json(resource.type_url, resource.value)
        self._entries[key] = found
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return found


def to_json(type_url: str, value: bytes) -> dict[str, Any]:
    """One resource as an ``Any`` in protobuf JSON; a type this process cannot decode keeps its bytes."""
    message = any_pb2.Any(type_url=type_url, value=value)
    try:
        return json_format.MessageToDict(message)
    except (TypeError, KeyError, DecodeError, json_format.Error):
        return {"@type": type_url, "value": base64.b64encode(value).decode()}


async def to_json_chunked(resources: Iterable[Resource], convert: ResourceJson) -> list[dict[str, Any]]:
    out = []
    started = time.monotonic()
    for resource in resources:
        out.append(convert(resource))
        if time.monotonic() - started > YIELD_EVERY:
            await asyncio.sleep(0)
            started = time.monotonic()
    return out


def proxy_resources(discovery: Any, conn: Any, push: PushContext, types: Iterable[str]) -> dict[str, list[Resource]]:
    """The resources of each watched type pilot would send the connection's proxy now (istiod's
    getConfigDumpByResourceType: unwatched types are left out)."""
    proxy = conn.proxy
    view = push.view_of(proxy)
    out: dict[str, list[Resource]] = {}
    for type_url in types:
        state = conn.protocol.types.get(type_url)
        if state is None or not state.requested:
            continue
        names = conn.protocol.subscription(type_url)
        snapshot = discovery.generator.snapshot(type_url, proxy, push, view, names)
        out[type_url] = list(snapshot.resources.values())
    return out


async def config_dump(
    discovery: Any, conn: Any, convert: ResourceJson, *, types: list[str] | None = None, include_eds: bool = False
) -> dict[str, Any]:
    push = discovery.current
    if push is None:
        return {"configs": []}
    if types:
        by_type = proxy_resources(discovery, conn, push, types)
        configs: list[dict[str, Any]] = []
        for type_url in types:
            configs.extend(await to_json_chunked(by_type.get(type_url, ()), convert))
        return {"configs": configs}

    wanted = [CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE] + ([ENDPOINT_TYPE] if include_eds else [])
    by_type = proxy_resources(discovery, conn, push, wanted)
    version = push.version
    clusters = await to_json_chunked(by_type.get(CLUSTER_TYPE, ()), convert)
    listeners = await to_json_chunked(by_type.get(LISTENER_TYPE, ()), convert)
    routes = await to_json_chunked(by_type.get(ROUTE_TYPE, ()), convert)
    listener_names = [r.name for r in by_type.get(LISTENER_TYPE, ())]
    configs = [
        {"@type": ADMIN + "BootstrapConfigDump"},
        {
            "@type": ADMIN + "ClustersConfigDump",
            "versionInfo": version,
            "dynamicActiveClusters": [{"cluster": c} for c in clusters],
        },
    ]
    if include_eds:
        endpoints = await to_json_chunked(by_type.get(ENDPOINT_TYPE, ()), convert)
        configs.append(
            {
                "@type": ADMIN + "EndpointsConfigDump",
                "dynamicEndpointConfigs": [{"versionInfo": version, "endpointConfig": e} for e in endpoints],
            }
        )
    configs += [
        {
            "@type": ADMIN + "ListenersConfigDump",
            "versionInfo": version,
            "dynamicListeners": [
                {"name": name, "activeState": {"versionInfo": version, "listener": listener}}
                for name, listener in zip(listener_names, listeners, strict=True)
            ],
        },
        {"@type": ADMIN + "ScopedRoutesConfigDump"},
        {
            "@type": ADMIN + "RoutesConfigDump",
            "dynamicRouteConfigs": [{"versionInfo": version, "routeConfig": r} for r in routes],
        },
        {"@type": ADMIN + "SecretsConfigDump"},
        {"@type": ADMIN + "EcdsConfigDump"},
    ]
    return {"configs": configs}
