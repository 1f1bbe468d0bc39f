"""The aggregate registry: every service registry behind one interface (istiod's aggregate controller).

Registries are consulted in order (Kubernetes before ServiceEntry, as in istiod): when two define the same
hostname, the first one's Service wins. Endpoints of all registries live in the shared endpoint index,
sharded by registry, so a hostname defined by both keeps every endpoint of its namespace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from pilot.model.config import ConfigKey
from pilot.model.service import Service
from pilot.registry.base import Changes, RegistryUpdate, ServiceRegistry


class AggregateRegistry:
    name = "Aggregate"

    def __init__(self, registries: Sequence[ServiceRegistry]) -> None:
        self.registries = tuple(registries)
        self.kinds = frozenset(kind for registry in self.registries for kind in registry.kinds)
        # A kind may feed several registries (Pods: Kubernetes endpoints and ServiceEntry workloadSelectors).
        self._by_kind: dict[str, tuple[ServiceRegistry, ...]] = {}
        for registry in self.registries:
            for kind in registry.kinds:
                self._by_kind[kind] = (*self._by_kind.get(kind, ()), registry)
        self._services: Mapping[str, Service] | None = None

    def apply(self, changes: Changes) -> RegistryUpdate:
        """Route each changed object to the registries that read its kind; objects of other kinds are ignored."""
        routed: dict[str, dict[ConfigKey, object]] = {}
        for key, cfg in changes.items():
            for registry in self._by_kind.get(key.kind, ()):
                routed.setdefault(registry.name, {})[key] = cfg
        update = RegistryUpdate()
        for registry in self.registries:
            part = routed.get(registry.name)
            if part:
                update.update(registry.apply(part))  # type: ignore[arg-type]
        if update.services:
            self._services = None
        return update

    def services(self) -> Mapping[str, Service]:
        if self._services is None:
            merged: dict[str, Service] = {}
            for registry in self.registries:
                for hostname, service in registry.services().items():
                    merged.setdefault(hostname, service)
            self._services = MappingProxyType(merged)
        return self._services
