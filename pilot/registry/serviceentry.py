"""ServiceEntry / WorkloadEntry registry: a pure function from config objects to the service model.

Each ServiceEntry host becomes one ``Service`` (short hosts resolve in the ServiceEntry's namespace). Its
endpoints are the inline ``endpoints`` or, when there are none, the WorkloadEntries in the same namespace
selected by ``workloadSelector``. A DNS ServiceEntry without endpoints gets one endpoint per (non-wildcard)
host, at the host name itself, for the proxy to resolve.

When several ServiceEntries define the same host, the first by (kind, namespace, name) wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from pilot.config.convert import enum_name
from pilot.config.model import Config

# A module import, not a name import: pilot.push.context imports this module while it initialises.
from pilot.push import context as push_context
from pilot.registry.model import (
    EMPTY_LABELS,
    Endpoint,
    Port,
    Protocol,
    Resolution,
    Service,
    ServiceEndpoints,
    labels_match,
)

REGISTRY = "ServiceEntry"

_RESOLUTIONS = {
    "NONE": Resolution.NONE,
    "STATIC": Resolution.STATIC,
    "DNS": Resolution.DNS,
    "DNS_ROUND_ROBIN": Resolution.DNS,
    "DYNAMIC_DNS": Resolution.DNS,
}


def build(
    service_entries: list[Config], workload_entries: list[Config], domain_suffix: str
) -> tuple[list[Service], dict[str, ServiceEndpoints]]:
    """ServiceEntries (+ the WorkloadEntries they select) → services and their endpoints, by hostname."""
    workloads_by_ns: dict[str, list[Config]] = {}
    for we in sorted(workload_entries, key=lambda c: c.key):
        workloads_by_ns.setdefault(we.namespace, []).append(we)

    services: list[Service] = []
    endpoints: dict[str, ServiceEndpoints] = {}
    for cfg in sorted(service_entries, key=lambda c: c.key):
        spec = cfg.spec
        ports = tuple(Port(p.name, p.number, Protocol.parse(p.protocol)) for p in spec.ports)
        target_ports = {p.name: p.target_port or p.number for p in spec.ports}
        resolution = _RESOLUTIONS.get(enum_name(spec.resolution), Resolution.NONE)
        mesh_external = enum_name(spec.location) != "MESH_INTERNAL"
        workloads = _workloads(cfg, workloads_by_ns.get(cfg.namespace, ()))
        shared = _endpoints_by_port(ports, target_ports, workloads)

        for raw_host in spec.hosts:
            hostname = push_context.resolve_short_name(raw_host, cfg.namespace, domain_suffix)
            if not hostname or hostname in endpoints:
                continue
            services.append(
                Service(
                    hostname=hostname,
                    namespace=cfg.namespace,
                    ports=ports,
                    resolution=resolution,
                    addresses=tuple(spec.addresses),
                    mesh_external=mesh_external,
                    labels=_frozen(cfg.labels),
                    export_to=tuple(spec.export_to),
                    origin=cfg.key,
                    registry=REGISTRY,
                )
            )
            by_port = shared
            if resolution is Resolution.DNS and not workloads and not hostname.startswith("*"):
                origin = _origin(cfg)
                by_port = {
                    port.name: (Endpoint(hostname, target_ports[port.name], port.name, origin=origin),)
                    for port in ports
                }
            endpoints[hostname] = ServiceEndpoints(hostname, MappingProxyType(dict(by_port)))
    return services, endpoints


def _workloads(cfg: Config, same_namespace: Iterable[Config]) -> list[tuple[Any, Mapping[str, str], str]]:
    """(WorkloadEntry message, labels, origin) for the ServiceEntry's instances, in a stable order."""
    spec = cfg.spec
    if spec.endpoints:
        origin = _origin(cfg)
        return [(we, we.labels, origin) for we in spec.endpoints]
    selector = spec.workload_selector
    if selector is None or not selector.labels:
        return []
    selected = []
    for we_cfg in same_namespace:
        # Istio merges the object's metadata labels over the spec labels.
        labels = {**we_cfg.spec.labels, **we_cfg.labels}
        if labels_match(selector.labels, labels):
            selected.append((we_cfg.spec, labels, f"WorkloadEntry/{we_cfg.namespace}/{we_cfg.name}"))
    return selected


def _endpoints_by_port(
    ports: tuple[Port, ...],
    target_ports: Mapping[str, int],
    workloads: list[tuple[Any, Mapping[str, str], str]],
) -> dict[str, tuple[Endpoint, ...]]:
    by_port: dict[str, tuple[Endpoint, ...]] = {}
    for port in ports:
        eps = []
        for we, labels, origin in workloads:
            if not we.address:
                continue
            eps.append(
                Endpoint(
                    address=we.address,
                    port=we.ports.get(port.name) or target_ports[port.name],
                    service_port_name=port.name,
                    labels=_frozen(labels),
                    weight=we.weight,
                    locality=we.locality,
                    origin=origin,
                )
            )
        by_port[port.name] = tuple(eps)
    return by_port


def _origin(cfg: Config) -> str:
    return f"ServiceEntry/{cfg.namespace}/{cfg.name}"


def _frozen(labels: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(labels)) if labels else EMPTY_LABELS
