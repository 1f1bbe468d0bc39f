"""PushContext: an immutable snapshot of config + services that generators read.

Built once per debounced push from the config store; never mutated afterwards, so a push in flight never
sees half-applied config. Index lookups that generators need (services visible to a proxy, the
DestinationRule for a host, the Gateways selecting a router, the VirtualServices bound to a gateway) live
here so generators stay small pure functions of (proxy, push).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from pilot.config.convert import enum_name
from pilot.config.model import Config, ConfigKey
from pilot.proxy import Proxy
from pilot.registry import kube as kube_registry
from pilot.registry import serviceentry as se_registry
from pilot.registry.model import Port, Protocol, Service, ServiceEndpoints, labels_match

MESH_GATEWAY = "mesh"
ROOT_NAMESPACE = "istio-system"


def resolve_short_name(host: str, namespace: str, domain_suffix: str) -> str:
    """Istio's ResolveShortnameToFQDN: names without a dot become ``name.ns.svc.<domain>``."""
    if not host or host == "*" or "." in host:
        return host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    return f"{host}.{namespace}.svc.{domain_suffix}"


def resolve_gateway_name(name: str, namespace: str) -> str:
    """Istio's resolveGatewayName: ``mesh``, ``ns/name`` (``./name`` = own namespace), legacy
    ``name.ns[.svc.cluster.local]``, or a bare name in the config's namespace."""
    if name == MESH_GATEWAY:
        return name
    if "/" in name:
        ns, _, gw = name.partition("/")
        return f"{namespace}/{gw}" if ns == "." else name
    if "." in name:
        gw, _, rest = name.partition(".")
        return f"{rest.split('.', 1)[0]}/{gw}"
    return f"{namespace}/{name}"


def host_matches(pattern: str, host: str) -> bool:
    """Istio host.Name.Matches: exact, '*' everything, '*.suffix' any name ending with '.suffix'."""
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return False


def hosts_overlap(a: str, b: str) -> bool:
    return host_matches(a, b) or host_matches(b, a)


@dataclass(frozen=True)
class EgressListener:
    """One Sidecar egress listener (or the implicit catch-all one when no Sidecar applies)."""

    hosts: tuple[tuple[str, str], ...]  # (namespace or "*" / ".", dnsName) pairs, already resolved "."
    port: Port | None = None  # None = every service port
    bind: str = ""
    capture_mode: str = "DEFAULT"  # DEFAULT | IPTABLES | NONE

    def selects(self, service: Service) -> bool:
        for ns, dns in self.hosts:
            if ns not in ("*", service.namespace):
                continue
            if host_matches(dns, service.hostname):
                return True
        return False

    def selects_host(self, host: str, namespace: str) -> bool:
        """For VirtualServices: the VS hosts must match a (namespace, dnsName) pair."""
        for ns, dns in self.hosts:
            if ns not in ("*", namespace):
                continue
            if hosts_overlap(dns, host):
                return True
        return False


DEFAULT_EGRESS = EgressListener(hosts=(("*", "*"),))


@dataclass(frozen=True)
class SidecarScope:
    sidecar: Config | None
    egress: tuple[EgressListener, ...]


@dataclass(frozen=True)
class BoundVirtualService:
    """A VirtualService with its hosts and gateways resolved to FQDN / ``ns/name`` form."""

    config: Config
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]  # "mesh" or "ns/name"


@dataclass(frozen=True)
class PushContext:
    version: str
    domain_suffix: str
    configs: Mapping[ConfigKey, Config]
    services: Mapping[str, Service]  # by hostname
    endpoints: Mapping[str, ServiceEndpoints]  # by hostname
    # Messages for /debug/push_status: {metric: {key: {"proxy":..., "message":...}}}
    proxy_status: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)

    # ----- construction -----

    @classmethod
    def build(cls, version: str, configs: Mapping[ConfigKey, Config], domain_suffix: str) -> PushContext:
        by_kind: dict[str, list[Config]] = defaultdict(list)
        for key in sorted(configs):
            by_kind[key.kind].append(configs[key])
        services: dict[str, Service] = {}
        endpoints: dict[str, ServiceEndpoints] = {}
        # Kubernetes first, as in Istio's aggregate registry: on a hostname clash the first registry wins.
        for svc_list, eps in (
            kube_registry.build(
                by_kind.get("Service", []), by_kind.get("EndpointSlice", []), by_kind.get("Pod", []), domain_suffix
            ),
            se_registry.build(by_kind.get("ServiceEntry", []), by_kind.get("WorkloadEntry", []), domain_suffix),
        ):
            for svc in svc_list:
                if svc.hostname in services:
                    continue
                services[svc.hostname] = svc
                if svc.hostname in eps:
                    endpoints[svc.hostname] = eps[svc.hostname]
        status: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
        for host, svc in services.items():
            if svc.resolution.value == "STATIC" and not any(
                endpoints.get(host, ServiceEndpoints(host)).by_port.values()
            ):
                for port in svc.ports:
                    status["pilot_eds_no_instances"][f"outbound|{port.number}||{host}"] = {}
        return cls(
            version=version,
            domain_suffix=domain_suffix,
            configs=configs,
            services=services,
            endpoints=endpoints,
            proxy_status={k: dict(v) for k, v in status.items()},
        )

    # ----- config by kind -----

    @cached_property
    def _by_kind(self) -> Mapping[str, tuple[Config, ...]]:
        """Configs grouped by kind, each group in key order; built once per snapshot."""
        grouped: dict[str, list[Config]] = defaultdict(list)
        for key in sorted(self.configs):
            grouped[key.kind].append(self.configs[key])
        return {kind: tuple(configs) for kind, configs in grouped.items()}

    def _of_kind(self, kind: str) -> tuple[Config, ...]:
        return self._by_kind.get(kind, ())

    @cached_property
    def virtual_services(self) -> tuple[BoundVirtualService, ...]:
        bound = []
        for cfg in self._of_kind("VirtualService"):
            spec = cfg.spec
            hosts = tuple(resolve_short_name(h, cfg.namespace, self.domain_suffix) for h in spec.hosts)
            gateways = [resolve_gateway_name(gw, cfg.namespace) for gw in spec.gateways or [MESH_GATEWAY]]
            bound.append(BoundVirtualService(cfg, hosts, tuple(gateways)))
        return tuple(bound)

    @cached_property
    def _destination_rules_by_host(self) -> Mapping[str, tuple[Config, ...]]:
        index: dict[str, list[Config]] = defaultdict(list)
        for cfg in self._of_kind("DestinationRule"):
            index[resolve_short_name(cfg.spec.host, cfg.namespace, self.domain_suffix)].append(cfg)
        return {k: tuple(v) for k, v in index.items()}

    @cached_property
    def gateways(self) -> tuple[Config, ...]:
        return self._of_kind("Gateway")

    @cached_property
    def sidecars(self) -> tuple[Config, ...]:
        return self._of_kind("Sidecar")

    # ----- lookups used by generators -----

    def service(self, hostname: str) -> Service | None:
        return self.services.get(hostname)

    def service_endpoints(self, hostname: str) -> ServiceEndpoints:
        return self.endpoints.get(hostname) or ServiceEndpoints(hostname)

    @cached_property
    def _wildcard_destination_rule_hosts(self) -> tuple[str, ...]:
        """Wildcard DR hosts, most specific (longest) first."""
        return tuple(sorted((h for h in self._destination_rules_by_host if h.startswith("*")), key=lambda h: -len(h)))

    @cached_property
    def _destination_rule_memo(self) -> dict[tuple[str, str], Config | None]:
        return {}

    def destination_rule(self, proxy_namespace: str, hostname: str) -> Config | None:
        """The DestinationRule for a host as Istio picks it: proxy namespace, then the service's, then root.

        Exact host matches win over wildcard ones. Memoized: generators ask once per cluster and route.
        """
        key = (proxy_namespace, hostname)
        memo = self._destination_rule_memo
        if key not in memo:
            memo[key] = self._find_destination_rule(proxy_namespace, hostname)
        return memo[key]

    def _find_destination_rule(self, proxy_namespace: str, hostname: str) -> Config | None:
        svc = self.services.get(hostname)
        ns_order = [proxy_namespace]
        if svc is not None and svc.namespace not in ns_order:
            ns_order.append(svc.namespace)
        if ROOT_NAMESPACE not in ns_order:
            ns_order.append(ROOT_NAMESPACE)
        exact = self._destination_rules_by_host.get(hostname, ())
        wildcard = tuple(
            cfg
            for host in self._wildcard_destination_rule_hosts
            if host != hostname and host_matches(host, hostname)
            for cfg in self._destination_rules_by_host[host]
        )
        for candidates in (exact, wildcard):
            if not candidates:
                continue
            for ns in ns_order:
                for cfg in candidates:
                    if cfg.namespace == ns and exported_to(cfg, proxy_namespace):
                        return cfg
            for cfg in candidates:
                if exported_to(cfg, proxy_namespace):
                    return cfg
        return None

    def sidecar_for(self, proxy: Proxy) -> Config | None:
        """The Sidecar resource that applies to a sidecar proxy: one in its namespace selecting its labels,
        else its namespace's one without a selector, else the root namespace's, else None."""
        if proxy.is_router:
            return None
        for ns in (proxy.namespace, ROOT_NAMESPACE):
            in_ns = [c for c in self.sidecars if c.namespace == ns]
            if ns == proxy.namespace:
                for c in in_ns:
                    selector = c.spec.workload_selector
                    if selector is not None and selector.labels and labels_match(selector.labels, proxy.labels):
                        return c
            for c in in_ns:
                if c.spec.workload_selector is None or not c.spec.workload_selector.labels:
                    return c
        return None

    @cached_property
    def uses_source_labels(self) -> bool:
        """Whether any VirtualService routes by ``sourceLabels``, making routes depend on each proxy's labels."""
        return any(
            match.source_labels for vs in self.virtual_services for http in vs.config.spec.http for match in http.match
        )

    def sidecar_scope(self, proxy: Proxy) -> SidecarScope:
        """The egress listeners of the Sidecar that applies (see sidecar_for), or the implicit ``*/*`` scope."""
        chosen = self.sidecar_for(proxy)
        if chosen is None or not chosen.spec.egress:
            return SidecarScope(chosen, (DEFAULT_EGRESS,))
        listeners = []
        for egress in chosen.spec.egress:
            hosts = []
            for raw in egress.hosts:
                ns, _, dns = raw.partition("/")
                if not dns:
                    continue  # validation rejects these; skip defensively
                if ns == ".":
                    ns = proxy.namespace
                elif ns == "~":
                    continue  # '~/*' imports nothing
                hosts.append((ns, dns))
            port = None
            if egress.port is not None and egress.port.number:
                port = Port(egress.port.name, egress.port.number, Protocol.parse(egress.port.protocol))
            capture = enum_name(egress.capture_mode) or "DEFAULT"
            listeners.append(EgressListener(tuple(hosts), port, egress.bind or "", capture))
        return SidecarScope(chosen, tuple(listeners))

    def visible_services(self, proxy: Proxy, egress: EgressListener = DEFAULT_EGRESS) -> tuple[Service, ...]:
        """Services a proxy may reach through one egress listener, in hostname order."""
        return tuple(
            svc
            for host, svc in sorted(self.services.items())
            if svc.visible_in(proxy.namespace) and egress.selects(svc)
        )

    def sidecar_virtual_services(
        self, proxy: Proxy, egress: EgressListener = DEFAULT_EGRESS
    ) -> tuple[BoundVirtualService, ...]:
        """VirtualServices bound to the mesh gateway that a sidecar sees through one egress listener."""
        return tuple(
            vs
            for vs in self.virtual_services
            if MESH_GATEWAY in vs.gateways
            and exported_to(vs.config, proxy.namespace)
            and any(egress.selects_host(h, vs.config.namespace) for h in vs.hosts)
        )

    def gateways_for_proxy(self, proxy: Proxy) -> tuple[Config, ...]:
        """Gateways whose selector matches the router's labels (an empty selector matches nothing)."""
        return tuple(gw for gw in self.gateways if gw.spec.selector and labels_match(gw.spec.selector, proxy.labels))

    def gateway_virtual_services(self, gateway: Config) -> tuple[BoundVirtualService, ...]:
        name = f"{gateway.namespace}/{gateway.name}"
        return tuple(vs for vs in self.virtual_services if name in vs.gateways)


def exported_to(cfg: Config, namespace: str) -> bool:
    """Istio's exportTo for config objects: unset or '*' everywhere, '.' own namespace, else listed ones."""
    export_to = list(getattr(cfg.spec, "export_to", None) or ())
    if not export_to:
        return True
    for target in export_to:
        if target == "*" or target == namespace or (target == "." and cfg.namespace == namespace):
            return True
    return False
