"""LDS for proxyless gRPC: one API listener per ``xds:///host:port`` target (istiod's grpcgen BuildListeners).

A gRPC client asks for the Listener named exactly as its target, ``host:port`` (or ``host``). ``host`` may be
the service's FQDN or, as istiod allows, a short Kubernetes form relative to the client's namespace (``foo``,
``foo.ns``, ``foo.ns.svc``). Every service in the proxy's scope whose hostname matches gets one listener per
requested spelling and port, named ``<requested host>:<port>``, carrying an HttpConnectionManager with only
the fault and router filters and RDS ``outbound|<port>||<fqdn>`` over ADS. A wildcard request gets every
service port, named ``<fqdn>:<port>``.

Server-side names (``xds.istio.io/grpc/lds/inbound/...``, asked by xDS-enabled gRPC servers) are not
answered: the server keeps waiting for its listener, as it would for an unknown one.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from pilot.model.config import SERVICE_KIND, ConfigKey
from pilot.model.proxy import Proxy
from pilot.model.service import Port, Service
from pilot.push.context import PushContext
from pilot.push.scope import ProxyScope
from pilot.xds import names
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
            log.debug("proxy %s: gRPC server listener %s is not supported", proxy.id, name)
            continue
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
