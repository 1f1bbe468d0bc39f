"""LDS for proxyless gRPC: one API listener per ``xds:///host:port`` target (istiod's grpcgen BuildListeners).

A gRPC client asks for the Listener named exactly as its target, ``host:port`` (or ``host``). ``host`` may be
the service's FQDN or, as istiod allows, a short Kubernetes form relative to the client's namespace (``foo``,
``foo.ns``, ``foo.ns.svc``). Every service in the proxy's scope whose hostname matches gets one listener per
requested spelling and port, named ``<requested host>:<port>``, carrying an HttpConnectionManager with only
the fault and router filters and RDS ``outbound|<port>||<fqdn>`` over ADS. A wildcard request gets every
service port, named ``<fqdn>:<port>``.

Server-side names (``xds.istio.io/grpc/lds/inbound/<address>:<port>``, asked by xDS-enabled gRPC servers)
get istiod's inbound listener when the node is an instance of a service on that port: one filter chain whose
HttpConnectionManager routes everything to the server itself (non-forwarding), in plaintext, or with mTLS
(certificate provider ``default``, client certificate required) when the PeerAuthentication in effect is
STRICT, or PERMISSIVE on a workload labelled ``security.istio.io/tlsMode: istio`` (gRPC has no permissive
mode: its clients then use mTLS). A port the node serves no service on gets no listener (the server waits).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pilot.model.config import SERVICE_KIND, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import Port, Service
from pilot.push.authn import TLS_MODE_ISTIO, TLS_MODE_LABEL, MtlsMode
from pilot.push.context import PushContext
from pilot.push.scope import ProxyScope
from pilot.xds import names
from pilot.xds.cluster_tls import TLS_TRANSPORT_SOCKET
from pilot.xds.units import Unit

log = logging.getLogger(__name__)

SERVER_LISTENER_PREFIX = "xds.istio.io/grpc/lds/inbound/"
UNSPECIFIED_ADDRESS = "0.0.0.0"


@dataclass
class _Wanted:
    """What a client asked of one hostname: the spellings it used and the ports (empty: every port)."""

    spellings: set[str] = field(default_factory=set)
    ports: set[str] = field(default_factory=set)


def split_host_port(name: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort for the names gRPC sends: ``host:port`` or ``[v6]:port``; None without a port."""
    if name.startswith("["):
        end = name.find("]")
        if end < 0 or name[end + 1 : end + 2] != ":":
            return None
        return name[1:end], name[end + 2 :]
    host, sep, port = name.rpartition(":")
    if not sep or ":" in host:
        return None
    return host, port


def join_host_port(host: str, port: int) -> str:
    """Go's net.JoinHostPort: IPv6 literals get brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def expand_short_name(name: str, proxy: Proxy, domain_suffix: str) -> str:
    """istiod's tryFindFQDN: ``foo``, ``foo.<ns>`` and ``foo.<ns>.svc`` as FQDNs in the client's namespace;
    "" for anything else."""
    dns_domain = proxy.dns_domain or f"{proxy.namespace}.svc.{domain_suffix}"
    if "." not in name:
        return f"{name}.{dns_domain}"
    for suffix in (proxy.namespace, f"{proxy.namespace}.svc"):
        short = name.removesuffix(f".{suffix}")
        if short != name and dns_domain.startswith(suffix):
            return f"{short}.{dns_domain}"
    return ""


def _wanted_by_host(requested: Iterable[str], proxy: Proxy, domain_suffix: str) -> dict[str, _Wanted]:
    """istiod's newListenerNameFilter: each requested name under its own host and under the expanded FQDN."""
    wanted: dict[str, _Wanted] = {}
    for name in requested:
        if name.startswith(SERVER_LISTENER_PREFIX):
            continue  # a server's own listener: server_listener_units
        split = split_host_port(name)
        spelling = split[0] if split is not None else name
        hosts = [spelling]
        fqdn = expand_short_name(spelling, proxy, domain_suffix)
        if fqdn:
            hosts.append(fqdn)
        for host in hosts:
            existed = host in wanted
            entry = wanted.setdefault(host, _Wanted())
            entry.spellings.add(spelling)
            if split is None:
                entry.ports.clear()  # a name without a port asks for every port
            elif not existed or entry.ports:
                entry.ports.add(split[1])
    return wanted


def listener_units(proxy: Proxy, push: PushContext, scope: ProxyScope, requested: Iterable[str] | None) -> list[Unit]:
    """One unit per listener: requested names (None: wildcard, every service port under its FQDN)."""
    wanted = None if requested is None else _wanted_by_host(requested, proxy, push.domain_suffix)
    units: list[Unit] = []
    seen: set[str] = set()
    for service in scope.services:
        entry = _Wanted({service.hostname}) if wanted is None else wanted.get(service.hostname)
        if entry is None:
            continue
        spellings, ports = sorted(entry.spellings), entry.ports
        deps = (ConfigKey(SERVICE_KIND, service.namespace, service.hostname),)
        for spelling in spellings:
            for port in service.ports:
                if ports and str(port.number) not in ports:
                    continue
                name = join_host_port(spelling, port.number)
                if name in seen:
                    continue
                seen.add(name)
                key = ("grpc-lds", name, service.hostname, port.number)
                units.append(Unit(key, deps, partial(_build, name, service, port)))
    return units


def server_listener_units(proxy: Proxy, push: PushContext, requested: Iterable[str]) -> list[Unit]:
    """The inbound listeners an xDS-enabled gRPC server asks for (istiod's buildInboundListeners)."""
    by_port = {}
    for target in push.service_targets(proxy):
        by_port.setdefault(target.target_port, target)  # istiod: one service target per workload port
    peer = push.authn_policies.effective(proxy.namespace, proxy.labels)
    authn = tuple(push.authn_policies.keys_in((proxy.namespace, push.root_namespace)))
    units = []
    for name in sorted(n for n in requested if n.startswith(SERVER_LISTENER_PREFIX)):
        split = split_host_port(name[len(SERVER_LISTENER_PREFIX) :])
        if split is None or not split[1].isdigit():
            log.warning("proxy %s: cannot read the address of gRPC server listener %s", proxy.id, name)
            continue
        host, port = split[0], int(split[1])
        target = by_port.get(port)
        if target is None:
            log.warning("proxy %s: no service instance on port %d for gRPC server listener %s", proxy.id, port, name)
            continue
        mode = peer.mode_for_port(port)
        if proxy.labels.get(TLS_MODE_LABEL) == TLS_MODE_ISTIO and mode is MtlsMode.PERMISSIVE:
            mode = MtlsMode.STRICT  # its clients use mTLS (auto-mTLS), and gRPC cannot take both
        mtls = mode is MtlsMode.STRICT
        deps = (ConfigKey(SERVICE_KIND, target.service.namespace, target.service.hostname), *authn)
        key = ("grpc-lds-inbound", name, target.signature, mtls)
        units.append(Unit(key, deps, partial(_server_listener, name, host, port, mtls)))
    return units


def _server_listener(name: str, host: str, port: int, mtls: bool) -> tuple[listener_pb2.Listener]:
    manager = hcm_pb2.HttpConnectionManager()
    route_config = manager.route_config
    route_config.name = "inbound"
    vhost = route_config.virtual_hosts.add(domains=["*"])
    route = vhost.routes.add()
    route.match.prefix = "/"
    route.non_forwarding_action.SetInParent()
    manager.http_filters.add(name=names.ROUTER_FILTER).typed_config.Pack(router_pb2.Router())
    chain = listener_components_pb2.FilterChain(name="inbound-mtls" if mtls else "inbound-plaintext")
    chain.filters.add(name="inbound-hcm").typed_config.Pack(manager)
    if mtls:
        context = tls_pb2.DownstreamTlsContext()
        context.require_client_certificate.value = True
        common = context.common_tls_context
        common.tls_certificate_provider_instance.instance_name = names.GRPC_CERTIFICATE_PROVIDER
        common.tls_certificate_provider_instance.certificate_name = names.SDS_DEFAULT_RESOURCE
        validation = common.combined_validation_context.default_validation_context
        validation.ca_certificate_provider_instance.instance_name = names.GRPC_CERTIFICATE_PROVIDER
        validation.ca_certificate_provider_instance.certificate_name = names.SDS_ROOT_RESOURCE
        chain.transport_socket.name = TLS_TRANSPORT_SOCKET
        chain.transport_socket.typed_config.Pack(context)
    listener = listener_pb2.Listener(name=name)
    listener.address.socket_address.address = host
    listener.address.socket_address.port_value = port
    listener.filter_chains.append(chain)
    return (listener,)


def _build(name: str, service: Service, port: Port) -> tuple[listener_pb2.Listener]:
    return (
        api_listener(name, _address(service), port.number, names.outbound_cluster(port.number, "", service.hostname)),
    )


def _address(service: Service) -> str:
    """The service's first VIP (istiod's GetAddressForProxy); gRPC does not use it."""
    for address in service.addresses:
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            continue  # CIDR ranges are no listener address
    return UNSPECIFIED_ADDRESS


def api_listener(name: str, address: str, port: int, route_name: str) -> listener_pb2.Listener:
    """A Listener whose ``api_listener`` is an HttpConnectionManager with RDS over ADS and the filters gRPC
    implements: fault (routes refer to it in typed_per_filter_config) then router."""
    manager = hcm_pb2.HttpConnectionManager()
    manager.rds.config_source.ads.SetInParent()
    manager.rds.route_config_name = route_name
    for filter_name, config in (
        (names.FAULT_FILTER, fault_pb2.HTTPFault()),
        (names.ROUTER_FILTER, router_pb2.Router()),
    ):
        manager.http_filters.add(name=filter_name).typed_config.Pack(config)
    listener = listener_pb2.Listener(name=name)
    listener.address.socket_address.address = address
    listener.address.socket_address.port_value = port
    listener.api_listener.api_listener.Pack(manager)
    return listener
