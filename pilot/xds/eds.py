"""EDS: ClusterLoadAssignments for the EDS clusters a proxy asks for by name.

Only ``outbound|<port>|<subset>|<host>`` names of services the proxy reaches over EDS are answered. A known
cluster without endpoints still gets an (empty) assignment, since Envoy keeps a cluster warming until its
first EDS answer; unknown names are left out (SotW EDS has no deletion: the client times them out).
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.endpoint.v3 import endpoint_pb2

from pilot.proxy import Proxy
from pilot.push.context import PushContext
from pilot.registry.model import labels_match
from pilot.xds import names
from pilot.xds.cds import eds_resolution, load_assignment, subset_labels


def build_endpoint(proxy: Proxy, push: PushContext, cluster_name: str) -> endpoint_pb2.ClusterLoadAssignment | None:
    """The assignment for one cluster name, or None when no such EDS cluster exists for this proxy."""
    parsed = names.parse_cluster_name(cluster_name)
    if parsed is None or parsed.direction != "outbound":
        return None
    service = push.service(parsed.host)
    if service is None or not service.visible_in(proxy.namespace) or not eds_resolution(service, proxy):
        return None
    port = service.port_by_number(parsed.port)
    if port is None:
        return None
    endpoints = push.service_endpoints(parsed.host).for_port(port)
    if parsed.subset:
        labels = subset_labels(push.destination_rule(proxy.namespace, parsed.host), parsed.subset)
        if labels is None:
            return None  # CDS has no such subset cluster
        endpoints = tuple(ep for ep in endpoints if labels_match(labels, ep.labels))
    return load_assignment(cluster_name, endpoints)


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
