"""From changed objects to push requests: routing config goes to the push as is, registry objects go
through the service registries first (istiod's config and registry event handlers).

For every batch of changed keys a config source reports:

* ServiceEntry, WorkloadEntry, Kubernetes Service, EndpointSlice and Pod are applied to the aggregate
  registry, which updates services and the endpoint index in place and says what changed: a service
  definition (a full push keyed ``ServiceEntry/<ns>/<host>``, reason ``service``) or only endpoints (an
  endpoint-only push keyed ``Endpoints/<ns>/<host>``, reason ``endpoint``);
* VirtualService, DestinationRule, Gateway and Sidecar become a full push keyed by themselves (reason
  ``config``);
* a Secret becomes a push keyed by itself (reason ``secret``), which reaches only the gateway proxies whose
  Gateways reference it and regenerates only their SDS (``pilot.xds.names.UNAFFECTED_BY``);
* other kinds (Namespace) change nothing pilot generates and push nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable

from pilot.model.config import SECRET, Config, ConfigKey
from pilot.model.environment import ConfigView
from pilot.push.context import ROUTING_KINDS
from pilot.push.request import REASON_CONFIG, REASON_ENDPOINT, REASON_SECRET, REASON_SERVICE, PushRequest
from pilot.registry.aggregate import AggregateRegistry
from pilot.registry.base import RegistryUpdate

log = logging.getLogger(__name__)

_ROUTING = frozenset(ROUTING_KINDS)


class ChangeHandler:
    def __init__(self, configs: ConfigView, registry: AggregateRegistry, emit: Callable[[PushRequest], None]) -> None:
        self._configs = configs
        self._registry = registry
        self._emit = emit
        self.events: Counter[str] = Counter()  # objects seen, by kind

    def sync(self, keys: Iterable[ConfigKey]) -> RegistryUpdate:
        """Feed existing objects to the registries without pushing (initial load)."""
        return self._registry.apply(self._lookup(keys))

    def __call__(self, keys: set[ConfigKey]) -> None:
        for key in keys:
            self.events[key.kind] += 1
        update = self._registry.apply(self._lookup(keys))
        routing = {key for key in keys if key.kind in _ROUTING}
        if routing:
            self._emit(PushRequest(full=True, configs_updated=routing, reason=Counter({REASON_CONFIG: len(routing)})))
        secrets = {key for key in keys if key.kind == SECRET}
        if secrets:
            self._emit(PushRequest(full=True, configs_updated=secrets, reason=Counter({REASON_SECRET: len(secrets)})))
        if update.services:
            self._emit(
                PushRequest(
                    full=True,
                    configs_updated=update.services | update.endpoints,
                    reason=Counter({REASON_SERVICE: len(update.services)}),
                )
            )
        elif update.endpoints:
            self._emit(
                PushRequest(
                    full=False,
                    configs_updated=update.endpoints,
                    reason=Counter({REASON_ENDPOINT: len(update.endpoints)}),
                )
            )

    def _lookup(self, keys: Iterable[ConfigKey]) -> dict[ConfigKey, Config | None]:
        kinds = self._registry.kinds
        return {key: self._configs.get(key) for key in keys if key.kind in kinds}
