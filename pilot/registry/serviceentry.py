"""ServiceEntry / WorkloadEntry registry, updated per object.

Each ServiceEntry host becomes one ``Service`` (short hosts resolve in the ServiceEntry's namespace). Its
endpoints are the inline ``endpoints`` or, when there are none, the WorkloadEntries and Pods in the same
namespace selected by ``workloadSelector`` (a Pod counts once it has an IP and is Ready, and not once it is
terminating, as istiod's pod cache; its port for a ServiceEntry port is the container port of the same name,
else the targetPort; its service account is its identity). A DNS ServiceEntry without endpoints gets one
endpoint per (non-wildcard) host, at the host name itself, for the proxy to resolve.

When several ServiceEntries define the same host, the first by (namespace, name) wins; when it goes away
the next one takes over. A change to one object recomputes only the ServiceEntries it touches (itself, or
those selecting a changed WorkloadEntry), and reports services whose definition changed apart from services
whose endpoints alone changed, so endpoint churn becomes an endpoint-only push (istiod's serviceEntryHandler
and workloadEntryHandler). DNS services carry their endpoints inside the cluster, so for them an endpoint
change is a service change.
"""

from __future__ import annotations

import ipaddress
from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pilot.config.convert import enum_name
from pilot.model.config import POD, SERVICE_ENTRY, WORKLOAD_ENTRY, Config, ConfigKey
from pilot.model.endpoint_index import ByPort, EndpointIndex
from pilot.model.host import resolve_short_name
from pilot.model.locality import LEGACY_LOCALITY_LABEL
from pilot.model.service import (
    DEFAULT_TRUST_DOMAIN,
    EMPTY_LABELS,
    Endpoint,
    Port,
    Protocol,
    Resolution,
    Service,
    ServiceEndpoints,
    labels_match,
)
from pilot.registry.base import Changes, RegistryUpdate

REGISTRY = "ServiceEntry"

_RESOLUTIONS = {
    "NONE": Resolution.NONE,
    "STATIC": Resolution.STATIC,
    "DNS": Resolution.DNS,
    "DNS_ROUND_ROBIN": Resolution.DNS,
    "DYNAMIC_DNS": Resolution.DNS,
}


def _host_address(address: str) -> str:
    """istiod's convertServices: a CIDR of one address (/32, /128) is that address (a VIP of its own)."""
    try:
        network = ipaddress.ip_network(address, strict=False)
    except ValueError:
        return address
    if "/" in address and network.num_addresses == 1:
        return str(network.network_address)
    return address


@dataclass(frozen=True)
class _Built:
    service: Service
    endpoints: ByPort


def convert(
    cfg: Config, workloads: Iterable[Config], domain_suffix: str, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> list[_Built]:
    """One ServiceEntry (+ the WorkloadEntries of its namespace) → its services and their endpoints."""
    spec = cfg.spec
    ports = tuple(Port(p.name, p.number, Protocol.parse(p.protocol)) for p in spec.ports)
    target_ports = {p.name: p.target_port or p.number for p in spec.ports}
    resolution = _RESOLUTIONS.get(enum_name(spec.resolution), Resolution.NONE)
    mesh_external = enum_name(spec.location) != "MESH_INTERNAL"
    selected = _workloads(cfg, workloads)
    shared = _endpoints_by_port(ports, target_ports, selected)
    # istiod's ServiceAccounts: the subjectAltNames, then the SPIFFE identity of each instance's account.
    accounts = sorted({we.service_account for we, _labels, _origin in selected if we.service_account})
    sans = tuple(
        dict.fromkeys(
            [*spec.subject_alt_names, *(f"spiffe://{trust_domain}/ns/{cfg.namespace}/sa/{a}" for a in accounts)]
        )
    )
    out: list[_Built] = []
    seen: set[str] = set()
    for raw_host in spec.hosts:
        hostname = resolve_short_name(raw_host, cfg.namespace, domain_suffix)
        if not hostname or hostname in seen:
            continue
        seen.add(hostname)
        service = Service(
            hostname=hostname,
            namespace=cfg.namespace,
            ports=ports,
            resolution=resolution,
            addresses=tuple(_host_address(a) for a in spec.addresses),
            mesh_external=mesh_external,
            labels=_frozen(cfg.labels),
            export_to=tuple(spec.export_to),
            origin=cfg.key,
            registry=REGISTRY,
            dns_round_robin=enum_name(spec.resolution) == "DNS_ROUND_ROBIN",
            subject_alt_names=sans,
        )
        by_port: ByPort = shared
        if resolution is Resolution.DNS and not selected and not hostname.startswith("*"):
            origin = _origin(cfg)
            by_port = {
                port.name: (Endpoint(hostname, target_ports[port.name], port.name, origin=origin),) for port in ports
            }
        out.append(_Built(service, MappingProxyType(dict(by_port))))
    return out


class ServiceEntryRegistry:
    name = REGISTRY
    kinds = frozenset({SERVICE_ENTRY, WORKLOAD_ENTRY, POD})  # Pods: the Kubernetes registry reads them too

    def __init__(
        self,
        endpoints: EndpointIndex,
        domain_suffix: str,
        cluster_id: str = "Kubernetes",
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> None:
        self._index = endpoints
        self._domain = domain_suffix
        self._trust_domain = trust_domain
        self._shard = f"{REGISTRY}/{cluster_id}"
        self._entries: dict[ConfigKey, Config] = {}
        self._workloads: dict[str, dict[ConfigKey, Any]] = {}  # WorkloadEntries and Pods, by namespace
        self._selectors: dict[str, set[ConfigKey]] = {}  # ServiceEntries with a workloadSelector, by namespace
        self._built: dict[ConfigKey, list[_Built]] = {}
        self._definers: dict[str, list[ConfigKey]] = {}  # hostname -> ServiceEntries defining it, sorted
        self._services: dict[str, _Built] = {}  # hostname -> the winning definition
        self._services_view: Mapping[str, Service] | None = None

    # ----- reads -----

    def services(self) -> Mapping[str, Service]:
        if self._services_view is None:
            self._services_view = MappingProxyType({h: b.service for h, b in self._services.items()})
        return self._services_view

    # ----- updates -----

    def apply(self, changes: Changes) -> RegistryUpdate:
        affected: set[ConfigKey] = set()
        for key, cfg in changes.items():
            if key.kind == SERVICE_ENTRY:
                if cfg is None:
                    self._entries.pop(key, None)
                    self._selectors.get(key.namespace, set()).discard(key)
                else:
                    self._entries[key] = cfg
                    selector = cfg.spec.workload_selector
                    if not cfg.spec.endpoints and selector is not None and selector.labels:
                        self._selectors.setdefault(key.namespace, set()).add(key)
                    else:
                        self._selectors.get(key.namespace, set()).discard(key)
                affected.add(key)
            elif key.kind in (WORKLOAD_ENTRY, POD):
                workload: Any = cfg if key.kind == WORKLOAD_ENTRY else pod_workload(cfg)
                in_ns = self._workloads.setdefault(key.namespace, {})
                old = in_ns.pop(key, None)
                if workload is not None:
                    in_ns[key] = workload
                elif not in_ns:
                    del self._workloads[key.namespace]
                if old is not None or workload is not None:
                    affected.update(self._selecting(key.namespace, (old, workload)))
        return self._recompute(affected)

    def _selecting(self, namespace: str, workloads: Iterable[Any]) -> Iterable[ConfigKey]:
        """ServiceEntries of ``namespace`` whose workloadSelector matches any of the given workloads."""
        keys = self._selectors.get(namespace)
        if not keys:
            return  # the usual case for a Pod: no ServiceEntry of its namespace selects workloads
        label_sets = [_workload_labels(we) for we in workloads if we is not None]
        for key in sorted(keys):
            selector = self._entries[key].spec.workload_selector
            if any(labels_match(selector.labels, labels) for labels in label_sets):
                yield key

    def _recompute(self, entries: Iterable[ConfigKey]) -> RegistryUpdate:
        hosts: set[str] = set()
        for key in entries:
            for built in self._built.pop(key, ()):
                hostname = built.service.hostname
                hosts.add(hostname)
                definers = self._definers[hostname]
                definers.remove(key)
                if not definers:
                    del self._definers[hostname]
            cfg = self._entries.get(key)
            if cfg is None:
                continue
            workloads = self._workloads.get(key.namespace, {}).values()
            built_list = convert(cfg, workloads, self._domain, self._trust_domain)
            self._built[key] = built_list
            for built in built_list:
                hosts.add(built.service.hostname)
                insort(self._definers.setdefault(built.service.hostname, []), key)
        update = RegistryUpdate()
        for hostname in sorted(hosts):
            self._settle(hostname, update)
        return update

    def _settle(self, hostname: str, update: RegistryUpdate) -> None:
        """Make the winning definition of ``hostname`` current; record what changed."""
        old = self._services.get(hostname)
        definers = self._definers.get(hostname)
        new = None
        if definers:
            new = next(b for b in self._built[definers[0]] if b.service.hostname == hostname)
        if old is not None and (new is None or new.service.namespace != old.service.namespace):
            if self._index.delete(hostname, old.service.namespace, self._shard):
                update.endpoints_changed(hostname, old.service.namespace)
        if new is None:
            if old is not None:
                del self._services[hostname]
                self._services_view = None
                update.service_changed(hostname, old.service.namespace)
            return
        self._services[hostname] = new
        if old is None or old.service != new.service:
            self._services_view = None
            update.service_changed(hostname, new.service.namespace)
            if old is not None and old.service.namespace != new.service.namespace:
                update.service_changed(hostname, old.service.namespace)
        if self._index.update(hostname, new.service.namespace, self._shard, new.endpoints):
            update.endpoints_changed(hostname, new.service.namespace)
            if new.service.resolution is Resolution.DNS:
                update.service_changed(hostname, new.service.namespace)  # endpoints live in the DNS cluster


def build(
    service_entries: Iterable[Config], workload_entries: Iterable[Config], domain_suffix: str
) -> tuple[list[Service], dict[str, ServiceEndpoints]]:
    """The services and endpoints of a set of objects at once (tests, benchmarks, offline tools)."""
    index = EndpointIndex()
    registry = ServiceEntryRegistry(index, domain_suffix)
    registry.apply({c.key: c for c in [*service_entries, *workload_entries]})
    services = [registry.services()[h] for h in sorted(registry.services())]
    return services, {s.hostname: index.get(s.hostname, s.namespace) for s in services}


def _workload_labels(we: Any) -> Mapping[str, str]:
    # Istio merges the object's metadata labels over the spec labels.
    return {**we.spec.labels, **we.labels}


def _workloads(cfg: Config, same_namespace: Iterable[Any]) -> list[tuple[Any, Mapping[str, str], str]]:
    """(WorkloadEntry message or Pod stand-in, labels, origin) for the ServiceEntry's instances, in a stable
    order (WorkloadEntries and Pods by key)."""
    spec = cfg.spec
    if spec.endpoints:
        origin = _origin(cfg)
        return [(we, we.labels, origin) for we in spec.endpoints]
    selector = spec.workload_selector
    if selector is None or not selector.labels:
        return []
    selected = []
    for we_cfg in sorted(same_namespace, key=lambda c: c.key):
        labels = _workload_labels(we_cfg)
        if labels_match(selector.labels, labels):
            selected.append((we_cfg.spec, labels, f"{we_cfg.key.kind}/{we_cfg.namespace}/{we_cfg.name}"))
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


@dataclass(frozen=True)
class _PodSpec:
    """The parts of a Pod a ServiceEntry endpoint reads, named as a WorkloadEntry's."""

    address: str
    ports: Mapping[str, int]  # named container ports
    locality: str
    service_account: str
    weight: int = 0
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)  # the Pod's are its metadata labels


@dataclass(frozen=True)
class _PodWorkload:
    key: ConfigKey
    labels: Mapping[str, str]
    spec: _PodSpec

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def name(self) -> str:
        return self.key.name


def pod_workload(cfg: Config | None) -> _PodWorkload | None:
    """A Pod as a workload a ServiceEntry can select, or None while it cannot serve (istiod's pod cache: an
    IP, not Succeeded/Failed, not terminating, condition Ready)."""
    if cfg is None:
        return None
    obj: Mapping[str, Any] = cfg.spec if isinstance(cfg.spec, Mapping) else {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    metadata = obj.get("metadata") or {}
    address = str(status.get("podIP") or "")
    if not address or status.get("phase") in ("Succeeded", "Failed") or metadata.get("deletionTimestamp"):
        return None
    conditions = status.get("conditions") or ()
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions if isinstance(c, Mapping)):
        return None
    ports: dict[str, int] = {}
    for container in spec.get("containers") or ():
        for port in (container.get("ports") or ()) if isinstance(container, Mapping) else ():
            if isinstance(port, Mapping) and port.get("name") and isinstance(port.get("containerPort"), int):
                ports.setdefault(str(port["name"]), int(port["containerPort"]))
    labels = dict(cfg.labels)
    locality = labels.get(LEGACY_LOCALITY_LABEL, "").replace(".", "/")
    account = str(spec.get("serviceAccountName") or "default")
    pod_spec = _PodSpec(address, MappingProxyType(ports), locality, account)
    return _PodWorkload(cfg.key, _frozen(labels), pod_spec)


def _origin(cfg: Config) -> str:
    return f"ServiceEntry/{cfg.namespace}/{cfg.name}"


def _frozen(labels: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(labels)) if labels else EMPTY_LABELS
