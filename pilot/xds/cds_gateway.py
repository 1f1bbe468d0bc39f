"""CDS for gateways: the SNI-DNAT clusters of AUTO_PASSTHROUGH servers (istiod's buildOutboundSniDnatClusters).

A router whose Gateways have an AUTO_PASSTHROUGH server (an east-west gateway) forwards a client's mTLS
connection, unopened, to the cluster its SNI names. So, besides its usual clusters, it gets for every in-mesh
service port it sees a cluster named in the DNS-SRV form ``outbound_.<port>_._.<host>``, and one per
DestinationRule subset (``outbound_.<port>_.<subset>_.<host>``): the outbound cluster's type, endpoints (EDS
under the same name) and traffic policy, without any upstream TLS (the client's TLS passes through).
"""

from __future__ import annotations

from functools import partial

from envoy.config.cluster.v3 import cluster_pb2

from pilot.model.config import SERVICE_KIND, Config, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import Port, Resolution, Service, labels_match
from pilot.push.context import PushContext
from pilot.push.scope import ProxyScope
from pilot.xds import cds, names
from pilot.xds.units import Unit

Cluster = cluster_pb2.Cluster


def cluster_units(proxy: Proxy, push: PushContext, scope: ProxyScope) -> list[Unit]:
    """The SNI-DNAT clusters of a router with an AUTO_PASSTHROUGH server (none for others)."""
    if not proxy.is_router or not push.merged_gateway(proxy).auto_passthrough:
        return []
    units: list[Unit] = []
    seen: set[str] = set()
    for service in scope.services:
        if service.mesh_external:
            continue
        rule = push.destination_rule(proxy, service.hostname)
        rule_keys = rule.keys if rule is not None else ()
        deps = (ConfigKey(SERVICE_KIND, service.namespace, service.hostname), *rule_keys)
        subsets = [s.name for s in (rule.spec.subsets or ()) if s.name] if rule is not None else []
        # Inline (DNS) endpoints are balanced for the proxy's locality.
        locality = proxy.locality if service.resolution is Resolution.DNS else None
        for port in sorted(service.ports, key=lambda p: p.number):
            for subset in ["", *subsets]:
                name = names.dns_srv_name(port.number, subset, service.hostname)
                if name in seen:
                    continue
                seen.add(name)
                key = ("cds", name, "sni-dnat", proxy.xds_api, rule_keys, locality)
                units.append(Unit(key, deps, partial(_build, proxy, push, service, port, subset, rule)))
    return units


def _build(
    proxy: Proxy, push: PushContext, service: Service, port: Port, subset: str, rule: Config | None
) -> tuple[Cluster, ...]:
    endpoints = None
    if service.resolution is Resolution.DNS:
        found = push.service_endpoints(service.hostname).for_port(port)
        if found and subset:
            labels = cds.subset_labels(rule, subset) or {}
            found = tuple(e for e in found if labels_match(labels, e.labels))
        endpoints = found or None
    policy = cds.effective_policy(rule, port.number, subset)
    cluster = cds.build_cluster(proxy, service, port, subset, policy, endpoints)
    if cluster is None:
        return ()
    name = names.dns_srv_name(port.number, subset, service.hostname)
    cluster.name = name
    if cluster.HasField("eds_cluster_config"):
        cluster.eds_cluster_config.service_name = name
    if cluster.HasField("load_assignment"):
        cluster.load_assignment.cluster_name = name
    # The client's mTLS passes through: no upstream TLS of the gateway's own.
    cluster.ClearField("transport_socket")
    cluster.ClearField("transport_socket_matches")
    return (cluster,)
