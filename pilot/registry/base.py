"""What every service registry is to the rest of pilot: services by hostname, endpoints in the shared index,
and per-object updates that report which services and which endpoints changed.

A registry owns some config kinds (ServiceEntry and WorkloadEntry; Kubernetes Service, EndpointSlice and
Pod; later Consul, Eureka, other clusters). ``apply`` takes the new version of each changed object (None
for a deletion), updates the registry's services and its shard of the endpoint index in place, and returns
a ``RegistryUpdate``: the keys a push request carries (istiod's conventions: ``ServiceEntry/<ns>/<host>``
for a service whose definition changed, ``Endpoints/<ns>/<host>`` for endpoints only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pilot.model.config import ENDPOINTS_KIND, SERVICE_KIND, Config, ConfigKey
from pilot.model.service import Service

Changes = Mapping[ConfigKey, Config | None]


@dataclass
class RegistryUpdate:
    services: set[ConfigKey] = field(default_factory=set)  # added, removed or redefined services
    endpoints: set[ConfigKey] = field(default_factory=set)  # services whose endpoints changed

    def service_changed(self, hostname: str, namespace: str) -> None:
        self.services.add(ConfigKey(SERVICE_KIND, namespace, hostname))

    def endpoints_changed(self, hostname: str, namespace: str) -> None:
        self.endpoints.add(ConfigKey(ENDPOINTS_KIND, namespace, hostname))

    def update(self, other: RegistryUpdate) -> None:
        self.services |= other.services
        self.endpoints |= other.endpoints

    def __bool__(self) -> bool:
        return bool(self.services or self.endpoints)


class ServiceRegistry(Protocol):
    name: str  # "Kubernetes", "ServiceEntry", ...
    kinds: frozenset[str]  # the config kinds it consumes

    def apply(self, changes: Changes) -> RegistryUpdate: ...

    def services(self) -> Mapping[str, Service]:
        """This registry's services by hostname (each hostname once)."""
        ...
