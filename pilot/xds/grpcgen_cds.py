"""CDS and EDS for proxyless gRPC (istiod's grpcgen BuildClusters, and EDS as gRPC parses it).

gRPC asks for clusters by name, ``outbound|<port>|<subset>|<fqdn>``, as its routes name them. Each one that
belongs to a service in the proxy's scope (and, for a subset, to the DestinationRule that applies) is built:

- services resolved by pilot (STATIC, and NONE: gRPC has no original-destination clusters, it balances
  over the endpoints itself) get an EDS cluster whose EDS config is ADS (gRPC implements nothing else);
- DNS services get a LOGICAL_DNS cluster naming one ``host:port`` for gRPC's own resolver (istiod sends an
  EDS cluster whose assignment stays empty; gRPC cannot take host names in EDS).

Traffic policies are merged as for Envoy (``cluster_policy.effective_policy``) and applied as far as gRPC implements
them: ``consistentHash`` becomes RING_HASH (gRPC has no Maglev), ROUND_ROBIN and an unset policy stay
ROUND_ROBIN; other simple policies (LEAST_REQUEST, RANDOM...) are NACKed by gRPC's C-core as lb_policy
values, so they become ROUND_ROBIN with a warning. Of the connection pool only ``http2MaxRequests`` applies
(circuit breaking, gRFC A32). TLS settings are not sent (see ``pilot.xds.grpcgen``).

Assignments are Envoy's (``cds.load_assignment``), made acceptable to gRPC: every locality carries a
``locality`` message (gRPC rejects the assignment without one) and its ``load_balancing_weight`` (gRPC skips
localities without one), and an address listed twice is kept once (gRPC rejects duplicates).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pilot.config.convert import enum_name
from pilot.model.config import ENDPOINTS_KIND, SERVICE_KIND, Config, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import Endpoint, Port, Resolution, Service, labels_match
from pilot.push.context import PushContext
from pilot.push.scope import ProxyScope
from pilot.xds import names
from pilot.xds.cds import load_assignment
from pilot.xds.cluster_policy import EffectivePolicy, effective_policy, subset_labels
from pilot.xds.cluster_tls import TLS_TRANSPORT_SOCKET
from pilot.xds.eds import locality_balancer
from pilot.xds.names import GRPC_CERTIFICATE_PROVIDER
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

Cluster = cluster_pb2.Cluster
MAX_RING_SIZE = 8388608  # gRPC rejects larger ring sizes
STATS_DELIMITER = ";"  # istiod's StatPrefixDelimiter, ending alt_stat_name


# ----- what a cluster name stands for -----


def _resolve(proxy: Proxy, push: PushContext, name: str) -> tuple[Service, Port, str, Config | None] | None:
    """(service, port, subset, DestinationRule that applies) for an outbound cluster name the proxy may reach
    (a subset must exist in that rule), or None."""
    parsed = names.parse_cluster_name(name)
    if parsed is None or parsed.direction != "outbound":
        return None
    service = push.service(parsed.host)
    if service is None or not service.visible_in(proxy.namespace):
        return None
    port = service.port_by_number(parsed.port)
    if port is None:
        return None
    rule = push.destination_rule(proxy, parsed.host)
    if parsed.subset and subset_labels(rule, parsed.subset) is None:
        return None  # no such subset in the DestinationRule that applies
    return service, port, parsed.subset, rule


def _endpoints(push: PushContext, service: Service, port: Port, rule: Config | None, subset: str) -> list[Endpoint]:
    endpoints = push.service_endpoints(service.hostname).for_port(port)
    if subset:
        labels = subset_labels(rule, subset) or {}
        endpoints = tuple(e for e in endpoints if labels_match(labels, e.labels))
    return list(endpoints)


# ----- CDS -----


def cluster_units(proxy: Proxy, push: PushContext, scope: ProxyScope, requested: Iterable[str]) -> list[Unit]:
    """One unit per requested cluster that exists for this proxy (gRPC never asks for all of them)."""
    units: list[Unit] = []
    for name in sorted(set(requested)):
        resolved = _resolve(proxy, push, name)
        if resolved is None or resolved[0].hostname not in scope.hosts:
            continue
        service, port, subset, rule = resolved
        rule_keys = rule.keys if rule is not None else ()
        deps: tuple[ConfigKey, ...] = (ConfigKey(SERVICE_KIND, service.namespace, service.hostname), *rule_keys)
        if service.resolution is Resolution.DNS:
            deps += (ConfigKey(ENDPOINTS_KIND, service.namespace, service.hostname),)
        key = ("grpc-cds", name, rule_keys)
        units.append(Unit(key, deps, partial(_build_cluster, push, name, service, port, subset, rule)))
    return units


def _build_cluster(
    push: PushContext, name: str, service: Service, port: Port, subset: str, rule: Config | None
) -> tuple[Cluster, ...]:
    cluster = Cluster(name=name, alt_stat_name=name + STATS_DELIMITER)
    if service.resolution is Resolution.DNS:
        assignment = _logical_dns_assignment(push, name, service, port, subset, rule)
        if assignment is None:
            return ()
        cluster.type = Cluster.LOGICAL_DNS
        cluster.load_assignment.CopyFrom(assignment)
    else:
        cluster.type = Cluster.EDS
        cluster.eds_cluster_config.service_name = name
        cluster.eds_cluster_config.eds_config.ads.SetInParent()
    policy = effective_policy(rule, port.number, subset)
    apply_policy(cluster, policy)
    apply_istio_mutual(cluster, policy, service)
    return (cluster,)


def apply_istio_mutual(cluster: Cluster, policy: EffectivePolicy, service: Service) -> None:
    """istiod's grpcgen applyTLS: only an explicit ISTIO_MUTUAL (gRPC cannot tell which servers take mTLS,
    so there is no auto-mTLS), as certificate-provider TLS: the ``default`` provider of the client's bootstrap
    (``pilot bootstrap --grpc --cert --key --ca``) gives certificate ``default`` and root ``ROOTCA``; the
    server's identities are the rule's subjectAltNames, else the service's. A client that does not use xDS
    credentials ignores it and stays plaintext."""
    if enum_name(getattr(policy.tls, "mode", None)) != "ISTIO_MUTUAL":
        return
    context = tls_pb2.UpstreamTlsContext()
    common = context.common_tls_context
    common.tls_certificate_provider_instance.instance_name = GRPC_CERTIFICATE_PROVIDER
    common.tls_certificate_provider_instance.certificate_name = names.SDS_DEFAULT_RESOURCE
    validation = common.combined_validation_context.default_validation_context
    validation.ca_certificate_provider_instance.instance_name = GRPC_CERTIFICATE_PROVIDER
    validation.ca_certificate_provider_instance.certificate_name = names.SDS_ROOT_RESOURCE
    sans = list(getattr(policy.tls, "subject_alt_names", None) or service.subject_alt_names)
    for san in sans:  # untyped, as istiod sends them to gRPC
        validation.match_subject_alt_names.add(exact=san)
    cluster.transport_socket.name = TLS_TRANSPORT_SOCKET
    cluster.transport_socket.typed_config.Pack(context)


def _logical_dns_assignment(
    push: PushContext, name: str, service: Service, port: Port, subset: str, rule: Config | None
) -> endpoint_pb2.ClusterLoadAssignment | None:
    """The one ``host:port`` gRPC resolves itself: the first endpoint's, or the service hostname's."""
    endpoints = sorted(_endpoints(push, service, port, rule, subset), key=lambda e: (e.address, e.port))
    if not endpoints:
        if "*" in service.hostname:
            log.warning("cluster %s: DNS resolution for a wildcard host needs endpoints; skipped", name)
            return None
        endpoints = [Endpoint(service.hostname, port.number, port.name)]
    elif len(endpoints) > 1:
        log.warning("cluster %s: gRPC resolves one DNS name per cluster; using %s", name, endpoints[0].address)
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = assignment.endpoints.add()
    group.locality.SetInParent()
    address = group.lb_endpoints.add().endpoint.address.socket_address
    address.address = endpoints[0].address
    address.port_value = endpoints[0].port
    return assignment


def _uint(value: Any) -> int:
    """A spec integer that may arrive unset, plain, or as a wrapper message."""
    value = getattr(value, "value", value)
    return int(value) if value else 0


def apply_policy(cluster: Cluster, policy: EffectivePolicy) -> None:
    """The parts of a merged traffic policy gRPC implements: load balancer and max_requests."""
    lb = policy.load_balancer
    consistent = getattr(lb, "consistent_hash", None) if lb is not None else None
    if consistent is not None:
        cluster.lb_policy = Cluster.RING_HASH
        ring = getattr(consistent, "ring_hash", None)
        size = _uint(getattr(ring, "minimum_ring_size", 0)) or _uint(getattr(consistent, "minimum_ring_size", 0))
        if size:
            cluster.ring_hash_lb_config.minimum_ring_size.value = min(size, MAX_RING_SIZE)
    elif lb is not None:
        simple = enum_name(getattr(lb, "simple", None))
        if simple not in ("", "UNSPECIFIED", "ROUND_ROBIN"):
            log.warning("cluster %s: gRPC does not implement load balancer %s; using ROUND_ROBIN", cluster.name, simple)
    http = getattr(policy.connection_pool, "http", None) if policy.connection_pool is not None else None
    max_requests = _uint(getattr(http, "http2_max_requests", 0)) if http is not None else 0
    if max_requests > 0:
        threshold = circuit_breaker_pb2.CircuitBreakers.Thresholds()
        threshold.max_requests.value = max_requests
        cluster.circuit_breakers.thresholds.append(threshold)


# ----- EDS -----


def endpoint_unit(proxy: Proxy, push: PushContext, cluster_name: str) -> Unit | None:
    """The assignment of one EDS cluster of a grpc proxy, or None when there is no such cluster."""
    resolved = _resolve(proxy, push, cluster_name)
    if resolved is None:
        return None
    service, port, subset, rule = resolved
    if service.resolution is Resolution.DNS:
        return None  # a LOGICAL_DNS cluster: nothing to assign
    # istiod serves gRPC its EDS builder's assignments: locality priorities and weights included
    balancer, balance_key = locality_balancer(proxy, rule, port.number, subset)
    rule_keys = rule.keys if rule is not None and (subset or balancer is not None) else ()
    deps = (
        ConfigKey(SERVICE_KIND, service.namespace, service.hostname),
        ConfigKey(ENDPOINTS_KIND, service.namespace, service.hostname),
        *rule_keys,
    )

    def build() -> tuple[endpoint_pb2.ClusterLoadAssignment]:
        endpoints = _endpoints(push, service, port, rule, subset)
        return (for_grpc(load_assignment(cluster_name, endpoints, balancer=balancer)),)

    return Unit(("grpc-eds", cluster_name, rule_keys, balance_key), deps, build)


def for_grpc(assignment: endpoint_pb2.ClusterLoadAssignment) -> endpoint_pb2.ClusterLoadAssignment:
    """An assignment as gRPC accepts it: a locality message on every group, each address once, and every
    group weighted by its endpoints (empty groups dropped)."""
    out = endpoint_pb2.ClusterLoadAssignment(cluster_name=assignment.cluster_name)
    seen: set[tuple[str, int]] = set()
    for group in assignment.endpoints:
        kept = endpoint_components_pb2.LocalityLbEndpoints(priority=group.priority)
        kept.locality.SetInParent()  # present even when it names no region: gRPC rejects a group without one
        kept.locality.MergeFrom(group.locality)
        total = 0
        for lb in group.lb_endpoints:
            socket = lb.endpoint.address.socket_address
            address = (socket.address, socket.port_value)
            if address in seen:
                continue
            seen.add(address)
            kept.lb_endpoints.append(lb)
            total += lb.load_balancing_weight.value or 1
        if len(kept.lb_endpoints) == len(group.lb_endpoints) and group.load_balancing_weight.value:
            total = group.load_balancing_weight.value  # as given (locality weights from ``distribute``)
        if kept.lb_endpoints:
            kept.load_balancing_weight.value = total
            out.endpoints.append(kept)
    return out
