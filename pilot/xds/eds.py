"""EDS: ClusterLoadAssignments for the EDS clusters a proxy asks for by name.

Only ``outbound|<port>|<subset>|<host>`` names of services the proxy reaches over EDS are answered. A known
cluster without endpoints still gets an (empty) assignment, since Envoy keeps a cluster warming until its
first EDS answer; unknown names are left out (SotW EDS has no deletion: the client times them out).

Endpoints that can take Istio mTLS carry ``envoy.transport_socket_match: {tlsMode: istio}`` metadata, which
auto-mTLS clusters match on (istiod's mtlsChecker): those whose ``security.istio.io/tlsMode`` label says
``istio`` (the injector sets it on the Pod) unless the PeerAuthentication in effect for them says DISABLE for
their port; a DestinationRule TLS mode for the cluster decides instead when there is one.

An assignment depends on its service, on the service's endpoints, on the DestinationRule that defines the
subset and on the PeerAuthentications of the service's namespace and the mesh (istiod clears all EDS on a
PeerAuthentication change); its cache key is the cluster name, the rule when a subset needs it, the TLS mode
the proxy's DestinationRule sets for the cluster and the version of those PeerAuthentications.

Locality load balancing (``pilot.xds.locality``) sets priorities and locality weights relative to the proxy
where it applies (``distribute``, or outlier detection on the cluster): the assignment then also depends on
the rule, and its key adds the rule and what of the proxy the setting reads (its locality, its
failoverPriority label values), so proxies that differ only there still share everything else.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.endpoint.v3 import endpoint_pb2

from pilot.model.config import ENDPOINTS_KIND, SERVICE_KIND, Config, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import labels_match
from pilot.push.context import PushContext
from pilot.push.locality import locality_lb
from pilot.xds import locality, names
from pilot.xds.cds import eds_resolution, load_assignment
from pilot.xds.cluster_policy import effective_policy, subset_labels
from pilot.xds.cluster_tls import authn_deps, authn_version, destination_rule_tls_mode, endpoint_tls_metadata
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
    rule = push.destination_rule(proxy, parsed.host)
    labels = None
    if parsed.subset:
        labels = subset_labels(rule, parsed.subset)
        if labels is None:
            return None  # CDS has no such subset cluster
    deps = [
        ConfigKey(SERVICE_KIND, service.namespace, service.hostname),
        ConfigKey(ENDPOINTS_KIND, service.namespace, service.hostname),
    ]
    if rule is not None and parsed.subset:
        deps.extend(rule.keys)  # the subset's labels; the rule's TLS mode is in the key (output only)
    deps.extend(authn_deps(push, service))
    tls_mode = endpoint_tls_metadata(push, service, rule, parsed.subset, parsed.port)
    balancer, balance_key = locality_balancer(proxy, rule, parsed.port, parsed.subset)
    if balancer is not None and rule is not None and not parsed.subset:
        deps.extend(rule.keys)  # the priorities and weights follow the rule

    def build() -> tuple[endpoint_pb2.ClusterLoadAssignment]:
        endpoints = push.service_endpoints(parsed.host).for_port(port)
        if labels is not None:
            endpoints = tuple(ep for ep in endpoints if labels_match(labels, ep.labels))
        return (load_assignment(cluster_name, endpoints, tls_mode, balancer),)

    # A subset's endpoints depend on the rule; every cluster's metadata only on its TLS mode for the cluster.
    subset_rule = rule.keys if rule is not None and parsed.subset else ()
    dr_tls = destination_rule_tls_mode(rule, parsed.subset, parsed.port)
    key = ("eds", cluster_name, subset_rule, dr_tls, authn_version(push, service), balance_key)
    return Unit(key, tuple(deps), build)


def locality_balancer(
    proxy: Proxy, rule: Config | None, port: int, subset: str
) -> tuple[locality.Balancer | None, tuple[object, ...]]:
    """The locality load balancing of one cluster's assignment for this proxy, and its cache key part: the
    rule and the proxy's values it reads; (None, ()) when the assignment does not depend on them."""
    if rule is None:
        return None, ()  # without a rule there is no outlier detection nor distribute: nothing to do
    policy = effective_policy(rule, port, subset)
    lb = locality_lb(policy.load_balancer, policy.outlier_detection)
    balancer = locality.Balancer.of(lb, proxy)
    if balancer is None or lb is None:
        return None, ()
    return balancer, (rule.keys, lb.needs.of(proxy))


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
