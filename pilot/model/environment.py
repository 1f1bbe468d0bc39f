"""The Environment: the state that outlives a push (istiod's model.Environment).

It holds the config store (routing config: VirtualService, DestinationRule, Gateway, Sidecar), the service
registry (every registry aggregated behind one interface) and the endpoint index, all updated in place by
the sources. A PushContext is an immutable snapshot taken from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pilot.model.config import Config, ConfigKey
from pilot.model.endpoint_index import EndpointIndex
from pilot.model.service import Service

ROOT_NAMESPACE = "istio-system"


class ConfigView(Protocol):
    def get(self, key: ConfigKey) -> Config | None: ...

    def list(self, kind: str) -> Sequence[Config]:
        """Objects of one kind, in key order."""
        ...


class ServiceDiscovery(Protocol):
    def services(self) -> Mapping[str, Service]:
        """Every service by hostname; an immutable mapping, replaced (not mutated) when services change."""
        ...


@dataclass
class Environment:
    configs: ConfigView
    services: ServiceDiscovery
    endpoints: EndpointIndex = field(default_factory=EndpointIndex)
    domain_suffix: str = "cluster.local"
    root_namespace: str = ROOT_NAMESPACE
