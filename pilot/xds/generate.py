"""Dispatch from xDS type to generator, with a bounded cache of packed resources.

Generators are pure functions of (proxy, push context, requested names). Proxies that look the same to
them share generated resources: the cache key is that *proxy view* (see proxy_view) plus the push version
and the requested names.
A new push context has a new version, so stale entries are never hit; the LRU bound evicts them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from pilot.proxy import Proxy
from pilot.push.context import PushContext
from pilot.xds import cds, eds, lds, rds
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.stream import Resource

CacheKey = tuple[object, ...]


def proxy_view(proxy: Proxy, push: PushContext) -> tuple[object, ...]:
    """What generation reads from a proxy, so proxies with equal views share generated resources.

    Labels matter only through what they select (the Sidecar that applies, the Gateways selecting a router),
    unless a VirtualService routes by sourceLabels: then the labels themselves are part of the view.
    """
    if proxy.is_router:
        selected: object = tuple(gw.key for gw in push.gateways_for_proxy(proxy))
    else:
        sidecar = push.sidecar_for(proxy)
        selected = sidecar.key if sidecar is not None else None
    labels = tuple(sorted(proxy.labels.items())) if push.uses_source_labels else ()
    interception = str(proxy.metadata.get("INTERCEPTION_MODE", ""))
    return (proxy.type, proxy.namespace, proxy.dns_domain, interception, selected, labels)


class XdsCache:
    """LRU of generated resource lists; counts hits and misses for the debug endpoints."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, tuple[Resource, ...]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: CacheKey, build: Callable[[], tuple[Resource, ...]]) -> tuple[Resource, ...]:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        value = build()
        self._entries[key] = value
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> dict[str, list[str]]:
        """{typeUrl: [resource names]} over every cached entry (for /debug/config_cache)."""
        out: dict[str, set[str]] = {}
        for key, resources in self._entries.items():
            type_url = str(key[1])
            out.setdefault(type_url, set()).update(r.name for r in resources)
        return {t: sorted(names) for t, names in sorted(out.items())}

    def size_bytes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, resources in self._entries.items():
            type_url = str(key[1])
            out[type_url] = out.get(type_url, 0) + sum(len(r.packed.value) for r in resources)
        return out


def _pack(messages: Iterable[object]) -> tuple[Resource, ...]:
    return tuple(Resource.of(m.name if hasattr(m, "name") else m.cluster_name, m) for m in messages)  # type: ignore[attr-defined]


def _named(type_url: str, proxy: Proxy, push: PushContext, names: Sequence[str]) -> tuple[Resource, ...]:
    if type_url == ENDPOINT_TYPE:
        return tuple(Resource.of(cla.cluster_name, cla) for cla in eds.build_endpoints(proxy, push, names))
    return _pack(rds.build_routes(proxy, push, names))


def generate(
    cache: XdsCache,
    type_url: str,
    proxy: Proxy,
    push: PushContext,
    names: Iterable[str] = (),
) -> tuple[Resource, ...]:
    """All resources of one type for a proxy (wildcard types) or for the requested names."""
    view = proxy_view(proxy, push)
    if type_url == CLUSTER_TYPE:
        return cache.get_or_build((push.version, type_url, view), lambda: _pack(cds.build_clusters(proxy, push)))
    if type_url == LISTENER_TYPE:
        return cache.get_or_build((push.version, type_url, view), lambda: _pack(lds.build_listeners(proxy, push)))
    if type_url in (ENDPOINT_TYPE, ROUTE_TYPE):
        wanted = tuple(sorted(names))
        return cache.get_or_build((push.version, type_url, view, wanted), lambda: _named(type_url, proxy, push, wanted))
    return ()
