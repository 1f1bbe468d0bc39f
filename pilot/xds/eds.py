"""EDS: ClusterLoadAssignments for the EDS clusters a proxy asks for by name.

Only ``outbound|<port>|<subset>|<host>`` names of services the proxy reaches over EDS are answered. A known
cluster without endpoints still gets an (empty) assignment, since Envoy keeps a cluster warming until its
first EDS answer; unknown names are left out (SotW EDS has no deletion: the client times them out).

An assignment depends on its service, on the service's endpoints and on the DestinationRule that defines
the subset; its cache key is the cluster name and that rule.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.endpoint.v3 import endpoint_pb2

from pilot.model.config import ENDPOINTS_KIND, SERVICE_KIND, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import labels_match
from pilot.push.context import PushContext
from pilot.xds import names
from pilot.xds.cds import eds_resolution, load_assignment, subset_labels
from pilot.xds.units import Unit


def endpoint_unit(proxy: Proxy, push: PushContext, cluster_name: str) -> Unit | None:
    """The unit for one cluster name, or None when no such EDS cluster exists for this proxy."""
    parsed = names.parse_cluster_name(cluster_name)
    if parsed is None or parsed.direction != "outbound":
        return None
    service = push.service(parsed.host)
    if service is None or not service.visible_in(proxy.namespace) or not eds_resolution(service, proxy):
        return None
    port = service.port_by_number(parsed.port)
    if port is None:
        return None
    rule = push.destination_rule(proxy.namespace, parsed.host) if parsed.subset else None
    labels = None
    if parsed.subset:
        labels = subset_labels(rule, parsed.subset)
        if labels is None:
            return None  # CDS has no such subset cluster
    deps = [
        ConfigKey(SERVICE_KIND, service.namespace, service.hostname),
        ConfigKey(ENDPOINTS_KIND, service.namespace, service.hostname),
    ]
    if rule is not None:
        deps.extend(rule.keys)

    def build() -> tuple[endpoint_pb2.ClusterLoadAssignment]:
        endpoints = push.service_endpoints(parsed.host).for_port(port)
        if labels is not None:
            endpoints = tuple(ep for ep in endpoints if labels_match(labels, ep.labels))
        return (load_assignment(cluster_name, endpoints),)

    return Unit(("eds", cluster_name, rule.keys if rule is not None else ()), tuple(deps), build)


def build_endpoint(proxy: Proxy, push: PushContext, cluster_name: str) -> endpoint_pb2.ClusterLoadAssignment | None:
    """The assignment for one cluster name, built directly (no cache), or None when there is no such cluster."""
    unit = endpoint_unit(proxy, push, cluster_name)
    return None if unit is None else unit.build()[0]  # type: ignore[return-value]


def build_endpoints(
    proxy: Proxy, push: PushContext, cluster_names: Iterable[str]
) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """Assignments for the requested names that exist, in sorted name order (duplicates answered once)."""
    out = []
    for name in sorted(set(cluster_names)):
        cla = build_endpoint(proxy, push, name)
        if cla is not None:
            out.append(cla)
    return out
