"""A PushContext from a fixed set of config objects, without sources or a server: for tests, benchmarks and
offline tools (``pilot validate``-style checks that need the generated view)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pilot.model.config import Config, ConfigKey
from pilot.model.endpoint_index import EndpointIndex
from pilot.model.environment import Environment
from pilot.push.context import PushContext
from pilot.registry.aggregate import AggregateRegistry
from pilot.registry.kube import KubernetesRegistry
from pilot.registry.serviceentry import ServiceEntryRegistry


class ConfigSet:
    """An immutable in-memory config view (the store's read interface)."""

    def __init__(self, configs: Iterable[Config]) -> None:
        self._by_key = {c.key: c for c in configs}
        self._by_kind: dict[str, list[Config]] = {}
        for key in sorted(self._by_key):
            self._by_kind.setdefault(key.kind, []).append(self._by_key[key])

    def get(self, key: ConfigKey) -> Config | None:
        return self._by_key.get(key)

    def list(self, kind: str) -> Sequence[Config]:
        return list(self._by_kind.get(kind, ()))


def environment_of(configs: Iterable[Config], domain_suffix: str = "cluster.local") -> Environment:
    """An environment holding ``configs``, with every registry object already applied to the registries."""
    config_set = ConfigSet(configs)
    endpoints = EndpointIndex()
    registry = AggregateRegistry(
        [KubernetesRegistry(endpoints, domain_suffix), ServiceEntryRegistry(endpoints, domain_suffix)]
    )
    registry.apply({c.key: c for c in configs_of(config_set, registry.kinds)})
    return Environment(config_set, registry, endpoints, domain_suffix)


def configs_of(config_set: ConfigSet, kinds: Iterable[str]) -> list[Config]:
    return [c for kind in sorted(kinds) for c in config_set.list(kind)]


def push_of_configs(configs: Iterable[Config], domain_suffix: str = "cluster.local", version: str = "1") -> PushContext:
    configs = list(configs)
    return PushContext.build(environment_of(configs, domain_suffix), version, 1)
