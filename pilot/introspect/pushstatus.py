"""What /debug/push_status adds to the PushContext's own conditions.

- ``pilot_rejected_configs``: every object the config sources refused, with file, document, object, field and
  why, and what pilot serves instead (see ``pilot.introspect.rejections``).
- ``pilot_vservice_missing_subset``: routes to a DestinationRule subset that no rule for that host defines.
  Envoy gets a route to a cluster that does not exist and answers 503 (NC); istiod says nothing about it, the
  cause behind "I deleted a DestinationRule and got 503s".

Computed once per push context (it reads every VirtualService route), not per request.
"""

from __future__ import annotations

from typing import Any

from pilot.model.config import Config
from pilot.model.host import resolve_short_name
from pilot.push.context import PushContext

MISSING_SUBSET = "pilot_vservice_missing_subset"


class MissingSubsets:
    def __init__(self) -> None:
        self._for: tuple[int, dict[str, dict[str, str]]] | None = None

    def __call__(self, push: PushContext) -> dict[str, dict[str, str]]:
        if self._for is not None and self._for[0] == push.number:
            return self._for[1]
        found = missing_subsets(push)
        self._for = (push.number, found)
        return found


def missing_subsets(push: PushContext) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    subsets_by_host: dict[str, set[str]] = {}

    def defined(host: str) -> set[str]:
        found = subsets_by_host.get(host)
        if found is None:
            found = set()
            for rule in push.destination_rules_for(host):
                found.update(s.name for s in rule.spec.subsets)
            subsets_by_host[host] = found
        return found

    for bound in push.virtual_services:
        vs: Config = bound.config
        for destination in _destinations(vs.spec):
            subset = destination.subset
            if not subset or not destination.host:
                continue
            host = resolve_short_name(destination.host, vs.namespace, push.domain_suffix)
            if subset in defined(host):
                continue
            port = destination.port.number if destination.port is not None and destination.port.number else 0
            if not port:
                service = push.service(host)
                port = service.ports[0].number if service is not None and len(service.ports) == 1 else 0
            cluster = f"outbound|{port or ''}|{subset}|{host}"
            out[cluster] = {
                "message": f"VirtualService {vs.namespace}/{vs.name} routes to subset {subset} of {host}, which no "
                "DestinationRule defines: Envoy has no such cluster and answers 503 (NC)",
            }
    return dict(sorted(out.items()))


def _destinations(spec: Any) -> list[Any]:
    found = []
    for http in spec.http:
        found.extend(r.destination for r in http.route if r.destination is not None)
        if http.mirror is not None:
            found.append(http.mirror)
        found.extend(m.destination for m in http.mirrors if m.destination is not None)
    for route in (*spec.tcp, *spec.tls):
        found.extend(r.destination for r in route.route if r.destination is not None)
    return found
