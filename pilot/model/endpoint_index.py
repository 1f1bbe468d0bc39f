"""The endpoint index: every service's endpoints, sharded by registry, updated in place (istiod's EndpointIndex).

Endpoints churn far more than services do, so they live here rather than in the PushContext: a registry
replaces its shard of one service, learns whether anything changed, and an endpoint-only push reads the
index directly without a new PushContext. Services are identified by (hostname, namespace); a shard is
named after the registry (and cluster) that contributed it, e.g. ``Kubernetes/Kubernetes`` or
``ServiceEntry/Kubernetes``. Readers get the shards merged, memoized until a shard of that service changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType

from pilot.model.service import Endpoint, ServiceEndpoints

ByPort = Mapping[str, tuple[Endpoint, ...]]
ServiceId = tuple[str, str]  # (hostname, namespace)


class EndpointIndex:
    def __init__(self) -> None:
        self._shards: dict[ServiceId, dict[str, ByPort]] = {}
        self._merged: dict[ServiceId, ServiceEndpoints] = {}

    def update(self, hostname: str, namespace: str, shard: str, by_port: ByPort) -> bool:
        """Replace one shard of a service; returns whether its endpoints changed. Empty ports are dropped."""
        cleaned = {name: eps for name, eps in by_port.items() if eps}
        sid = (hostname, namespace)
        shards = self._shards.get(sid)
        if not cleaned:
            return self.delete(hostname, namespace, shard)
        if shards is None:
            shards = self._shards[sid] = {}
        old = shards.get(shard)
        if old is not None and dict(old) == cleaned:
            return False
        shards[shard] = MappingProxyType(cleaned)
        self._merged.pop(sid, None)
        return True

    def delete(self, hostname: str, namespace: str, shard: str) -> bool:
        sid = (hostname, namespace)
        shards = self._shards.get(sid)
        if shards is None or shard not in shards:
            return False
        del shards[shard]
        if not shards:
            del self._shards[sid]
        self._merged.pop(sid, None)
        return True

    def get(self, hostname: str, namespace: str) -> ServiceEndpoints:
        """All endpoints of a service, shards merged in shard-name order (an empty value when none)."""
        sid = (hostname, namespace)
        merged = self._merged.get(sid)
        if merged is None:
            merged = self._merged[sid] = self._merge(hostname, self._shards.get(sid, {}))
        return merged

    @staticmethod
    def _merge(hostname: str, shards: Mapping[str, ByPort]) -> ServiceEndpoints:
        if len(shards) == 1:
            (only,) = shards.values()
            return ServiceEndpoints(hostname, only)
        by_port: dict[str, tuple[Endpoint, ...]] = {}
        for name in sorted(shards):
            for port, eps in shards[name].items():
                by_port[port] = by_port.get(port, ()) + tuple(eps)
        return ServiceEndpoints(hostname, MappingProxyType(by_port))

    def shards(self) -> Iterator[tuple[ServiceId, Mapping[str, ByPort]]]:
        """(service, {shard: endpoints by port}) in service order, for the debug endpoints."""
        for sid in sorted(self._shards):
            yield sid, MappingProxyType(self._shards[sid])

    def __len__(self) -> int:
        return len(self._shards)

    @classmethod
    def of(cls, endpoints: Mapping[ServiceId, ByPort], shard: str = "test") -> EndpointIndex:
        """An index holding the given endpoints in one shard (tests and benchmarks)."""
        index = cls()
        for (hostname, namespace), by_port in endpoints.items():
            index.update(hostname, namespace, shard, by_port)
        return index
