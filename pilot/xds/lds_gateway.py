"""LDS for routers: Gateway servers as listeners, as istiod's buildGatewayListeners builds them.

The Gateways selecting a router are merged first (``pilot.push.gateways``: servers per (port, protocol, bind),
conflicting servers rejected). Each (port, bind) becomes listener ``<bind or 0.0.0.0>_<port>``
(``traffic_direction: OUTBOUND``), with filter chains:

* plain-text HTTP servers: one chain, the HTTP connection manager on RDS ``http.<port>[.<bind>]``;
* HTTPS servers terminating TLS: one chain per server, matched by SNI (``server_names`` = its hosts without
  namespace; none for ``*``), a ``DownstreamTlsContext`` and an HCM on RDS
  ``https.<port>.<portName>.<gateway>.<ns>[.<bind>]``;
* TLS servers terminating TLS: SNI-matched chains with a TLS context and the tcp_proxy of the first matching
  VirtualService TCP route; TCP servers: the first matching TCP route;
* PASSTHROUGH: one SNI-matched tcp_proxy chain per matching VirtualService TLS route match (a repeated SNI on
  the port is rejected); AUTO_PASSTHROUGH (east-west gateways): one chain per service port whose host the
  server's hosts cover, matched on SNI ``outbound_.<port>_._.<host>`` (and one per DestinationRule subset,
  ``outbound_.<port>_.<subset>_.<host>``) and Istio's mTLS ALPNs, to the SNI-DNAT cluster of that name
  (``pilot.xds.cds_gateway``): the client's mTLS passes through to the workload.

A listener gets the TLS inspector when a chain matches on SNI or negotiates ALPN; every chain gets istiod's
15 s transport socket connect timeout. VirtualServices bind to a server when a host of each overlaps and, for
``ns/host`` server hosts, the VirtualService is in ``ns``.

TLS contexts (istiod's BuildListenerTLSContext): ALPN ``h2, http/1.1``; client certificates required for
MUTUAL (and ISTIO_MUTUAL), validated but optional for OPTIONAL_MUTUAL. Certificates come from

* ``credentialName`` / ``credentialNames``: SDS over the proxy's xDS stream (``kubernetes://NAME``, and
  ``kubernetes://NAME-cacert`` to validate clients), served by ``pilot.xds.sds``;
* ``serverCertificate`` / ``privateKey`` / ``caCertificates`` / ``tlsCertificates`` / ``caCrl``: files on the
  proxy, which Envoy reads itself (istiod hands the paths to its agent instead, which serves them over SDS);
* ISTIO_MUTUAL: the proxy's workload certificate from its agent (``default`` / ``ROOTCA``), only for proxies
  that have one (others skip the server with a warning).

``subjectAltNames`` (exact; URI for ``scheme://`` values, IP, e-mail, else DNS), ``verifyCertificateSpki`` and
``verifyCertificateHash`` restrict accepted client certificates (MUTUAL, OPTIONAL_MUTUAL);
``minProtocolVersion``, ``maxProtocolVersion`` and ``cipherSuites`` (invalid and repeated suites dropped) set
the TLS parameters. Deviations, to keep Envoy from rejecting the listener: subjectAltNames of SIMPLE servers
are ignored (Envoy refuses SAN checks without a CA), and a filter chain whose match repeats an earlier one's on
the listener is dropped with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2

from pilot.config.validation import VALID_CIPHER_SUITES
from pilot.model.config import Config
from pilot.model.host import matches as hosts_overlap
from pilot.model.host import resolve_gateway_name, resolve_short_name, subset_of
from pilot.model.proxy import Proxy
from pilot.push import credentials
from pilot.push.authn import has_workload_certificates
from pilot.push.context import BoundVirtualService, PushContext, exported_to
from pilot.push.gateways import (
    PASSTHROUGH_MODES,
    GatewayServer,
    is_https_terminating,
    protocol_of,
)
from pilot.xds import cluster_policy, mtls, names
from pilot.xds.cds import config_source
from pilot.xds.filters import add_tls_inspector, http_connection_manager, tcp_proxy, unique_chains
from pilot.xds.rds import visibility_order

log = logging.getLogger(__name__)

Listener = listener_pb2.Listener
FilterChain = listener_components_pb2.FilterChain
DownstreamTlsContext = tls_pb2.DownstreamTlsContext
TlsParameters = common_pb2.TlsParameters

WILDCARD_ADDRESS = "0.0.0.0"
TRANSPORT_SOCKET_CONNECT_TIMEOUT_S = 15  # istiod's PILOT_GATEWAY_TRANSPORT_SOCKET_CONNECT_TIMEOUT
ALPN_HTTP = ("h2", "http/1.1")  # istiod's ALPNHttp
# istiod's allIstioMtlsALPNs: what a sidecar offers in mesh mTLS, matched by AUTO_PASSTHROUGH chains.
ALL_ISTIO_MTLS_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")
_TLS_VERSIONS = {
    "TLS_AUTO": TlsParameters.TLS_AUTO,
    "TLSV1_0": TlsParameters.TLSv1_0,
    "TLSV1_1": TlsParameters.TLSv1_1,
    "TLSV1_2": TlsParameters.TLSv1_2,
    "TLSV1_3": TlsParameters.TLSv1_3,
}


@dataclass
class _ListenerPlan:
    address: str
    port: int
    chains: list[FilterChain] = field(default_factory=list)


def build_listeners(proxy: Proxy, push: PushContext) -> list[Listener]:
    """A router's listeners from the Gateways selecting it, deterministic for a given (view, push)."""
    merged = push.merged_gateway(proxy)
    plans: dict[str, _ListenerPlan] = {}
    passthrough_sni: dict[int, dict[str, str]] = {}  # listen port -> SNI host -> bind, over TLS routes
    for server_port in merged.server_ports:
        bind = server_port.bind or WILDCARD_ADDRESS
        name = names.listener_name(bind, server_port.number)
        plan = plans.setdefault(name, _ListenerPlan(bind, server_port.number))
        group = merged.merged_servers[server_port]
        if protocol_of(group.servers[0].server).is_http:
            plan.chains.append(_http_chain(proxy, name, group.route_name))
            continue
        for entry in group.servers:
            if is_https_terminating(entry.server):
                chain = _https_chain(proxy, name, entry)
                if chain is not None:
                    plan.chains.append(chain)
            else:
                known = passthrough_sni.setdefault(server_port.number, {})
                plan.chains.extend(_tcp_server_chains(proxy, push, entry, known))
    out = []
    for name in sorted(plans, key=lambda n: (plans[n].port, plans[n].address)):
        plan = plans[name]
        chains = _unique_chains(name, plan.chains)
        if not chains:
            log.info("gateway omitting listener %s for %s: no filter chains", name, proxy.id)
            continue
        out.append(_listener(name, plan.address, plan.port, chains))
    return out


def _listener(name: str, address: str, port: int, chains: Sequence[FilterChain]) -> Listener:
    listener = Listener(name=name, traffic_direction=base_pb2.OUTBOUND)
    if address.startswith("unix://"):
        listener.address.pipe.path = address[len("unix://") :]
    else:
        socket = listener.address.socket_address
        socket.address = address
        socket.port_value = port
    for chain in chains:
        chain.transport_socket_connect_timeout.seconds = TRANSPORT_SOCKET_CONNECT_TIMEOUT_S
    listener.filter_chains.extend(chains)
    add_tls_inspector(listener, chains)
    return listener


def _unique_chains(listener: str, chains: Iterable[FilterChain]) -> list[FilterChain]:
    """Envoy rejects a listener with two chains of one match: keep the first of each."""
    out, dropped = unique_chains(chains)
    if dropped:
        log.warning(
            "gateway listener %s: %d filter chains repeat the match of an earlier one; dropped", listener, dropped
        )
    return out


def _sni_match(chain: FilterChain, sni: Iterable[str]) -> None:
    hosts = sorted(set(sni))
    if hosts and "*" not in hosts:  # a "*" host matches every name: no server_names
        chain.filter_chain_match.server_names.extend(hosts)


# ----- HTTP -----


def _http_chain(proxy: Proxy, listener: str, route: str) -> FilterChain:
    chain = FilterChain()
    chain.filters.append(_gateway_hcm(proxy, f"outbound_{listener}", route))
    return chain


def _gateway_hcm(proxy: Proxy, stat_prefix: str, route: str) -> listener_components_pb2.Filter:
    return http_connection_manager(
        stat_prefix, route, use_remote_address=True, source=config_source(proxy), forward_client_cert=True
    )


def _https_chain(proxy: Proxy, listener: str, entry: GatewayServer) -> FilterChain | None:
    context = server_tls_context(proxy, entry, http=True)
    if context is None:
        return None
    chain = FilterChain()
    _sni_match(chain, entry.sni_hosts)
    chain.transport_socket.CopyFrom(mtls.transport_socket(context))
    chain.filters.append(_gateway_hcm(proxy, entry.server.name or f"outbound_{listener}", entry.route_name))
    return chain


# ----- TLS contexts -----


def server_tls_context(proxy: Proxy, entry: GatewayServer, *, http: bool) -> DownstreamTlsContext | None:
    """istiod's BuildListenerTLSContext for a TLS-terminating server; None (with a warning) when the proxy
    cannot take it (ISTIO_MUTUAL or builtin credentials without a workload certificate)."""
    tls = entry.server.tls
    mode = entry.mode
    context = DownstreamTlsContext()
    common = context.common_tls_context
    istio_tcp = mode == "ISTIO_MUTUAL" and not http
    common.alpn_protocols.extend(mtls.ALPN_DOWNSTREAM_TCP if istio_tcp else ALPN_HTTP)
    context.require_client_certificate.value = mode in ("MUTUAL", "ISTIO_MUTUAL")
    validate_client = mode in ("MUTUAL", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL")
    names_ = credentials.credential_names(tls)
    workload_certs = has_workload_certificates(proxy)
    if mode == "ISTIO_MUTUAL" or (names_ and credentials.resource_name(names_[0]) == credentials.BUILTIN_RESOURCE):
        if not workload_certs:
            log.warning("%s: needs the proxy's workload certificate (Istio's agent); skipped", entry.describe())
            return None
    if mode == "ISTIO_MUTUAL":
        common.tls_certificate_sds_secret_configs.append(mtls.sds_secret_config(names.SDS_DEFAULT_RESOURCE))
        combined = common.combined_validation_context
        combined.default_validation_context.match_typed_subject_alt_names.extend(
            mtls.san_matchers(tls.subject_alt_names)
        )
        if tls.ca_crl:  # istiod's ApplyToCommonTLSContext: revoked mesh certificates, from a file on the proxy
            combined.default_validation_context.crl.filename = tls.ca_crl
        combined.validation_context_sds_secret_config.CopyFrom(mtls.sds_secret_config(names.SDS_ROOT_RESOURCE))
        return context
    if names_:
        resources = [credentials.resource_name(n) for n in names_]
        for resource in resources:
            common.tls_certificate_sds_secret_configs.append(_credential_sds(proxy, resource))
        if validate_client:
            combined = common.combined_validation_context
            _client_checks(combined.default_validation_context, tls)
            ca = _credential_sds(proxy, credentials.ca_resource_name(resources[0]))
            combined.validation_context_sds_secret_config.CopyFrom(ca)
    else:
        pairs = [(c.server_certificate, c.private_key) for c in tls.tls_certificates] or [
            (tls.server_certificate, tls.private_key)
        ]
        for cert, key in pairs:
            certificate = common.tls_certificates.add()
            certificate.certificate_chain.filename = cert
            certificate.private_key.filename = key
        if validate_client:
            validation = common.validation_context
            if tls.ca_certificates:
                validation.trusted_ca.filename = tls.ca_certificates
            if tls.ca_crl:
                validation.crl.filename = tls.ca_crl
            _client_checks(validation, tls)
    _tls_parameters(common, tls)
    return context


def _credential_sds(proxy: Proxy, resource: str) -> secret_pb2.SdsSecretConfig:
    """istiod's ConstructSdsSecretConfigForCredential: a credential over the proxy's own xDS transport (ADS for
    Istio's proxies; no initial fetch timeout override, so a missing one never holds a listener forever)."""
    if resource in (credentials.BUILTIN_RESOURCE, credentials.BUILTIN_ROOT_RESOURCE):
        return mtls.sds_secret_config(resource)
    return secret_pb2.SdsSecretConfig(name=resource, sds_config=config_source(proxy))


def _client_checks(validation: common_pb2.CertificateValidationContext, tls: Any) -> None:
    validation.match_typed_subject_alt_names.extend(mtls.san_matchers(tls.subject_alt_names))
    validation.verify_certificate_spki.extend(tls.verify_certificate_spki)
    validation.verify_certificate_hash.extend(tls.verify_certificate_hash)


def _tls_parameters(common: common_pb2.CommonTlsContext, tls: Any) -> None:
    """istiod's applyServerTLSSettings: versions and cipher suites (istiod's FilterCipherSuites first)."""
    minimum = _TLS_VERSIONS.get(_enum(tls.min_protocol_version), TlsParameters.TLS_AUTO)
    maximum = _TLS_VERSIONS.get(_enum(tls.max_protocol_version), TlsParameters.TLS_AUTO)
    if minimum != TlsParameters.TLS_AUTO:
        common.tls_params.tls_minimum_protocol_version = minimum
    if maximum != TlsParameters.TLS_AUTO:
        common.tls_params.tls_maximum_protocol_version = maximum
    suites = list(dict.fromkeys(s for s in tls.cipher_suites if s in VALID_CIPHER_SUITES))
    if suites:
        common.tls_params.cipher_suites.extend(suites)


def _enum(value: Any) -> str:
    return getattr(value, "name", str(value or "TLS_AUTO"))


# ----- TCP, TLS, passthrough -----


def _tcp_server_chains(
    proxy: Proxy, push: PushContext, entry: GatewayServer, known_sni: dict[str, str]
) -> list[FilterChain]:
    """istiod's createGatewayTCPFilterChainOpts for one server."""
    server = entry.server
    if server.tls is None or entry.mode not in PASSTHROUGH_MODES:
        network_filter = _tcp_route_filter(proxy, push, entry)
        if network_filter is None:
            log.info("%s: no VirtualService TCP route for it; no filter chain", entry.describe())
            return []
        chain = FilterChain()
        if server.tls is not None:
            context = server_tls_context(proxy, entry, http=False)
            if context is None:
                return []
            _sni_match(chain, entry.sni_hosts)
            chain.transport_socket.CopyFrom(mtls.transport_socket(context))
        chain.filters.append(network_filter)
        return [chain]
    if entry.mode == "AUTO_PASSTHROUGH":
        return _auto_passthrough_chains(proxy, push, entry)
    return _tls_route_chains(proxy, push, entry, known_sni)


def _bound(proxy: Proxy, push: PushContext, gateway: Config) -> list[BoundVirtualService]:
    """istiod's VirtualServicesForGateway: bound to the Gateway, visible in the proxy's namespace, in order."""
    visible = [vs for vs in push.gateway_virtual_services(gateway) if exported_to(vs.config, proxy.namespace)]
    return visibility_order(visible, proxy.namespace)


def binds_hosts(server_hosts: Sequence[str], bound: BoundVirtualService) -> bool:
    """istiod's pickMatchingGatewayHosts: some VirtualService host overlaps a server host; ``ns/host`` server
    hosts count only for VirtualServices of ``ns``."""
    for raw in server_hosts:
        namespace, sep, host = raw.partition("/")
        if sep:
            if namespace != bound.config.namespace:
                continue
        else:
            host = raw
        if any(hosts_overlap(host, vs_host) for vs_host in bound.hosts):
            return True
    return False


def _l4_match(match: Any, entry: GatewayServer, vs_namespace: str) -> bool:
    """istiod's l4SingleMatch: the match's port is the server's (or unset), its gateways name this one (or none)."""
    if match.port and match.port != entry.server.port.number:
        return False
    if not match.gateways:
        return True
    return entry.gateway_name in {resolve_gateway_name(g, vs_namespace) for g in match.gateways}


def _tcp_route_filter(proxy: Proxy, push: PushContext, entry: GatewayServer) -> listener_components_pb2.Filter | None:
    """The first TCP route (of the VirtualServices binding the server) whose match applies."""
    for bound in _bound(proxy, push, entry.gateway):
        if not binds_hosts(entry.server.hosts, bound):
            continue
        for route in bound.config.spec.tcp or ():
            matches = route.match or ()
            if matches and not any(_l4_match(m, entry, bound.config.namespace) for m in matches):
                continue
            if not route.route:
                continue
            network_filter = route_filter(push, proxy, bound.config.namespace, route.route, entry.server.port.number)
            if network_filter is not None:
                return network_filter
    return None


def _tls_route_chains(
    proxy: Proxy, push: PushContext, entry: GatewayServer, known_sni: dict[str, str]
) -> list[FilterChain]:
    """istiod's buildGatewayNetworkFiltersFromTLSRoutes (PASSTHROUGH): a chain per matching TLS route match."""
    chains = []
    bind = entry.server.bind or ""
    for bound in _bound(proxy, push, entry.gateway):
        if not binds_hosts(entry.server.hosts, bound):
            continue
        for rule_index, route in enumerate(bound.config.spec.tls or ()):
            if not route.route:
                continue
            for match in route.match or ():
                if not _l4_match(match, entry, bound.config.namespace):
                    continue
                duplicates = [h for h in match.sni_hosts if known_sni.get(h) == bind]
                if duplicates:
                    log.warning(
                        "skipping VirtualService %s/%s rule #%d on server port %d of gateway %s, duplicate SNI host "
                        "names: %s",
                        bound.config.namespace,
                        bound.config.name,
                        rule_index,
                        entry.server.port.number,
                        entry.gateway_name,
                        ", ".join(duplicates),
                    )
                    continue
                known_sni.update(dict.fromkeys(match.sni_hosts, bind))
                port = entry.server.port.number
                network_filter = route_filter(push, proxy, bound.config.namespace, route.route, port)
                if network_filter is None:
                    continue
                chain = FilterChain()
                _sni_match(chain, match.sni_hosts)
                chain.filters.append(network_filter)
                chains.append(chain)
    return chains


def _auto_passthrough_chains(proxy: Proxy, push: PushContext, entry: GatewayServer) -> list[FilterChain]:
    """istiod's builtAutoPassthroughFilterChains: per in-mesh service port the server's hosts cover, SNI
    ``outbound_.<port>_.<subset>_.<host>`` with Istio's mTLS ALPNs to the SNI-DNAT cluster of that name."""
    chains = []
    for service in push.visible_services(proxy):
        if service.mesh_external or not any(subset_of(service.hostname, h) for h in entry.sni_hosts):
            continue
        rule = push.destination_rule(proxy, service.hostname)
        subsets = [s.name for s in (rule.spec.subsets or ()) if s.name] if rule is not None else []
        for port in sorted(service.ports, key=lambda p: p.number):
            for subset in ["", *dict.fromkeys(subsets)]:
                cluster = names.dns_srv_name(port.number, subset, service.hostname)
                chain = FilterChain()
                chain.filter_chain_match.server_names.append(cluster)
                chain.filter_chain_match.application_protocols.extend(ALL_ISTIO_MTLS_ALPNS)
                settings = cluster_policy.tcp_settings(rule, subset, tunnel=False)  # istiod: no tunnel for passthrough
                chain.filters.append(tcp_proxy(cluster, cluster, settings=settings))
                chains.append(chain)
    return chains


def _destination(push: PushContext, namespace: str, destination: Any, default_port: int) -> tuple[str, str]:
    """(the destination's cluster, its host)."""
    host = resolve_short_name(destination.host, namespace, push.domain_suffix)
    number = destination.port.number if destination.port is not None and destination.port.number else 0
    if not number:
        service = push.service(host)
        number = service.ports[0].number if service is not None and len(service.ports) == 1 else default_port
    return names.outbound_cluster(number, destination.subset or "", host), host


def route_filter(
    push: PushContext, proxy: Proxy, namespace: str, routes: Any, port: int
) -> listener_components_pb2.Filter | None:
    """A tcp_proxy to a route's destination, or its weighted destinations, with the tcp settings of the
    DestinationRule of the first destination's host (istiod's buildOutboundNetworkFilters)."""
    destinations = [r for r in routes or () if r.destination is not None]
    if not destinations:
        return None
    first_cluster, first_host = _destination(push, namespace, destinations[0].destination, port)
    rule = push.destination_rule(proxy, first_host)
    if len(destinations) == 1:
        settings = cluster_policy.tcp_settings(rule, destinations[0].destination.subset or "")
        return tcp_proxy(first_cluster, first_cluster, settings=settings)
    targets = [(_destination(push, namespace, r.destination, port)[0], r.weight or 0) for r in destinations]
    targets = [t for t in targets if t[1] > 0]
    if not targets:
        return None
    return tcp_proxy(targets[0][0], weighted=targets, settings=cluster_policy.tcp_settings(rule))
