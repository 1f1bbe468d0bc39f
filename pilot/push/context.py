"""PushContext: an immutable snapshot of services and routing config that generators read.

Built from the Environment on every full push; never mutated afterwards, so a push in flight never sees
half-applied config. A new context reuses every index of the previous one whose inputs did not change:
``build(..., previous, changed_kinds)`` copies the lazily computed indexes whose kinds (below, per index)
are untouched, so a VirtualService edit does not re-index DestinationRules or services.

Endpoints are not part of the snapshot: they are read from the environment's endpoint index, which an
endpoint-only push updates without building a new context (as istiod's EndpointIndex).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, NamedTuple

from pilot.config.convert import enum_name
from pilot.model.config import (
    DESTINATION_RULE,
    GATEWAY,
    PEER_AUTHENTICATION,
    SECRET,
    SERVICE_KIND,
    SIDECAR,
    VIRTUAL_SERVICE,
    Config,
    ConfigKey,
)
from pilot.model.endpoint_index import EndpointIndex
from pilot.model.environment import ROOT_NAMESPACE, Environment
from pilot.model.host import MESH_GATEWAY, matches, resolve_gateway_name, resolve_short_name, subset_of
from pilot.model.proxy import Proxy
from pilot.model.service import Port, Protocol, Resolution, Service, ServiceEndpoints, labels_match
from pilot.push import credentials
from pilot.push.authn import TLS_MODE_LABEL, AuthnPolicies, has_workload_certificates
from pilot.push.delegation import is_delegate, merge_virtual_service
from pilot.push.gateways import REJECTED_STATUS, MergedGateway, merge_gateways
from pilot.push.instances import AddressIndex, ServiceTarget, targets_at, targets_by_address
from pilot.push.locality import NO_NEEDS, LocalityNeeds, rule_needs

log = logging.getLogger(__name__)

# push_status map of delegate routes dropped while merging them into their roots (pilot's own: istiod only logs).
DELEGATE_STATUS = "pilot_vservice_delegate"

# The routing kinds a PushContext indexes, and PeerAuthentication (mTLS); services come from the registry
# (pseudo-kind SERVICE_KIND).
ROUTING_KINDS = (VIRTUAL_SERVICE, DESTINATION_RULE, GATEWAY, SIDECAR, PEER_AUTHENTICATION)
# Also in the snapshot: Secrets (gateway credentials, served over SDS; a change of one pushes SDS only).
SNAPSHOT_KINDS = (*ROUTING_KINDS, SECRET)
# push_status map of gateway credentials that cannot be served (istiod counts pilot_sds_certificate_errors).
CREDENTIAL_STATUS = "pilot_sds_certificate_errors"
# Gateway proxies remembered across contexts for push_status (rejected servers, credential problems).
_MAX_OBSERVED_ROUTERS = 1024
# istiod's DisableGatewayPortTranslationLabel: a router's service that keeps Gateway ports untranslated.
DISABLE_PORT_TRANSLATION_LABEL = "experimental.istio.io/disable-gateway-port-translation"

# Which inputs each lazily built index reads; an index is carried over to the next context unless one of
# them changed. Indexes not listed here are per-context.
_INDEX_INPUTS: dict[str, frozenset[str]] = {
    "virtual_services": frozenset({VIRTUAL_SERVICE}),
    "_delegate_problems": frozenset({VIRTUAL_SERVICE}),
    "uses_source_labels": frozenset({VIRTUAL_SERVICE}),
    "_destination_rules_by_host": frozenset({DESTINATION_RULE}),
    "_rule_conflicts": frozenset({DESTINATION_RULE}),
    "_wildcard_destination_rule_hosts": frozenset({DESTINATION_RULE}),
    "_destination_rule_memo": frozenset({DESTINATION_RULE, SERVICE_KIND}),
    "_locality_rules": frozenset({DESTINATION_RULE}),
    "_selector_rules_by_namespace": frozenset({DESTINATION_RULE}),
    "_credential_rules": frozenset({DESTINATION_RULE}),
    "gateways": frozenset({GATEWAY}),
    "_merged_gateway_memo": frozenset({GATEWAY}),
    "_observed_routers": frozenset(),  # always carried over; entries are checked against the current config
    "_secrets_by_name": frozenset({SECRET}),
    "sidecars": frozenset({SIDECAR}),
    "_sidecars_by_namespace": frozenset({SIDECAR}),
    "_sorted_services": frozenset({SERVICE_KIND}),
    "_visible_memo": frozenset({SERVICE_KIND}),
    "_sidecar_scope_memo": frozenset({SIDECAR}),
    "authn_policies": frozenset({PEER_AUTHENTICATION}),
}


@dataclass(frozen=True)
class EgressListener:
    """One Sidecar egress listener (or the implicit catch-all one when no Sidecar applies)."""

    hosts: tuple[tuple[str, str], ...]  # (namespace or "*", dnsName) pairs, "." already resolved
    port: Port | None = None  # None = every service port
    bind: str = ""
    capture_mode: str = "DEFAULT"  # DEFAULT | IPTABLES | NONE

    def selects(self, service: Service) -> bool:
        for ns, dns in self.hosts:
            if ns not in ("*", service.namespace):
                continue
            if subset_of(service.hostname, dns):
                return True
        return False

    def selects_host(self, host: str, namespace: str) -> bool:
        """For VirtualServices: the VS hosts must match a (namespace, dnsName) pair."""
        for ns, dns in self.hosts:
            if ns not in ("*", namespace):
                continue
            if matches(dns, host):
                return True
        return False


DEFAULT_EGRESS = EgressListener(hosts=(("*", "*"),))


@dataclass(frozen=True)
class SidecarScope:
    sidecar: Config | None
    egress: tuple[EgressListener, ...]


@dataclass(frozen=True)
class BoundVirtualService:
    """A VirtualService with its hosts and gateways resolved to FQDN / ``ns/name`` form; for a root, ``config``
    has its delegates' routes merged in and ``delegates`` names every delegate it refers to."""

    config: Config
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]  # "mesh" or "ns/name"
    delegates: tuple[ConfigKey, ...] = ()

    @property
    def keys(self) -> tuple[ConfigKey, ...]:
        """The VirtualServices whose change can change these routes: this one and its delegates."""
        return (self.config.key, *self.delegates)


class View(NamedTuple):
    """What generation reads from a proxy (``PushContext.view_of``), in two parts.

    ``outbound``: everything but the proxy's own service instances; it decides the scope, routes, clusters
    and endpoints of the services it calls, so the sidecars of every service in a namespace share it.
    ``inbound``: its service targets and the mTLS policy in effect for them; only its inbound listeners
    and clusters read it, so only LDS and CDS snapshots are kept per full view.
    ``locality``: the proxy's locality and failoverPriority label values, when locality load balancing
    applies to some cluster it sees (``pilot.push.locality``); only endpoints read it, so only EDS snapshots
    are kept per locality. ``cluster_locality``: the same for the inline endpoints of DNS clusters, which
    only CDS snapshots read (empty unless such a cluster is balanced).
    """

    outbound: tuple[object, ...] = ()
    inbound: tuple[object, ...] = ()
    locality: tuple[object, ...] = ()
    cluster_locality: tuple[object, ...] = ()


@dataclass(frozen=True, eq=False)
class PushContext:
    version: str
    domain_suffix: str
    configs: Mapping[str, tuple[Config, ...]]  # routing config by kind, each in key order
    services: Mapping[str, Service]  # by hostname
    endpoint_index: EndpointIndex = field(default_factory=EndpointIndex)
    number: int = 0  # increases with every context; the XdsCache's write token
    root_namespace: str = ROOT_NAMESPACE

    # ----- construction -----

    @classmethod
    def build(
        cls,
        env: Environment,
        version: str,
        number: int,
        previous: PushContext | None = None,
        changed_kinds: frozenset[str] | None = None,
    ) -> PushContext:
        """A context from the environment; with ``previous``, unchanged inputs and indexes are reused.

        ``changed_kinds`` None means anything may have changed (everything is rebuilt).
        """
        reuse = previous is not None and changed_kinds is not None

        def changed(kind: str) -> bool:
            return not reuse or kind in changed_kinds  # type: ignore[operator]

        configs = {
            kind: previous.configs[kind] if not changed(kind) else tuple(env.configs.list(kind))  # type: ignore[union-attr]
            for kind in SNAPSHOT_KINDS
        }
        services = previous.services if not changed(SERVICE_KIND) else env.services.services()  # type: ignore[union-attr]
        push = cls(
            version=version,
            domain_suffix=env.domain_suffix,
            configs=MappingProxyType(configs),
            services=services,
            endpoint_index=env.endpoints,
            number=number,
            root_namespace=env.root_namespace,
        )
        if reuse:
            assert previous is not None and changed_kinds is not None
            inherited = previous.__dict__
            for name, inputs in _INDEX_INPUTS.items():
                if name in inherited and not (inputs & changed_kinds):
                    push.__dict__[name] = inherited[name]
        return push

    @classmethod
    def of(
        cls,
        configs: Iterable[Config] = (),
        services: Iterable[Service] = (),
        endpoints: Mapping[str, ServiceEndpoints] | EndpointIndex | None = None,
        *,
        domain_suffix: str = "cluster.local",
        version: str = "1",
    ) -> PushContext:
        """A context from explicit objects (tests and benchmarks); endpoints by hostname or as an index."""
        by_kind: dict[str, list[Config]] = {kind: [] for kind in SNAPSHOT_KINDS}
        for cfg in sorted(configs, key=lambda c: c.key):
            if cfg.kind in by_kind:
                by_kind[cfg.kind].append(cfg)
        service_map = {s.hostname: s for s in services}
        if isinstance(endpoints, EndpointIndex):
            index = endpoints
        else:
            index = EndpointIndex()
            for hostname, eps in (endpoints or {}).items():
                svc = service_map.get(hostname)
                index.update(hostname, svc.namespace if svc else "", "test", eps.by_port)
        return cls(
            version=version,
            domain_suffix=domain_suffix,
            configs=MappingProxyType({k: tuple(v) for k, v in by_kind.items()}),
            services=MappingProxyType(service_map),
            endpoint_index=index,
        )

    def _of_kind(self, kind: str) -> tuple[Config, ...]:
        return self.configs.get(kind, ())

    # ----- indexes -----

    @cached_property
    def virtual_services(self) -> tuple[BoundVirtualService, ...]:
        """The VirtualServices that route (those with hosts), delegate routes merged into their roots once per
        change of VirtualServices (istiod's MergedVirtualServices); delegates themselves never route."""
        all_vs = self._of_kind(VIRTUAL_SERVICE)
        by_key = {cfg.key: cfg for cfg in all_vs}
        problems = self._delegate_problems
        bound = []
        for cfg in all_vs:
            if is_delegate(cfg):
                continue
            merged = merge_virtual_service(cfg, by_key.get, self.domain_suffix)
            if merged.problems:
                problems[f"{cfg.namespace}/{cfg.name}"] = merged.problems
                for problem in merged.problems:
                    log.warning("VirtualService %s/%s: %s", cfg.namespace, cfg.name, problem)
            hosts = tuple(resolve_short_name(h, cfg.namespace, self.domain_suffix) for h in cfg.spec.hosts)
            gateways = [resolve_gateway_name(gw, cfg.namespace) for gw in cfg.spec.gateways or [MESH_GATEWAY]]
            bound.append(BoundVirtualService(merged.config, hosts, tuple(gateways), merged.delegates))
        return tuple(bound)

    @cached_property
    def _delegate_problems(self) -> dict[str, tuple[str, ...]]:
        """Delegate routes dropped while merging (missing, not exported, conflicting), by root ``ns/name``."""
        return {}

    @cached_property
    def _destination_rules_by_host(self) -> Mapping[str, tuple[Config, ...]]:
        """DestinationRules by resolved host, those of one namespace for one host merged (see merge_rules)."""
        index: dict[str, list[Config]] = {}
        for cfg in self._of_kind(DESTINATION_RULE):
            index.setdefault(resolve_short_name(cfg.spec.host, cfg.namespace, self.domain_suffix), []).append(cfg)
        merged: dict[str, tuple[Config, ...]] = {}
        for host, rules in index.items():
            merged[host] = tuple(merge_rules(host, rules, self._rule_conflicts))
        return merged

    @cached_property
    def _rule_conflicts(self) -> dict[str, str]:
        """Problems found while merging DestinationRules, by host (reported in push_status)."""
        return {}

    @cached_property
    def _locality_rules(self) -> Mapping[tuple[ConfigKey, ...], LocalityNeeds]:
        """What of a proxy each (merged) DestinationRule's locality load balancing reads, for those that read
        something (none in a mesh without outlier detection or ``distribute``)."""
        out = {}
        for rules in self._destination_rules_by_host.values():
            for rule in rules:
                needs = rule_needs(rule)
                if needs:
                    out[rule.keys] = needs
        return out

    @cached_property
    def _locality_memo(self) -> dict[tuple[object, ...], tuple[LocalityNeeds, LocalityNeeds]]:
        return {}

    def _locality_needs(self, proxy: Proxy, outbound: tuple[object, ...]) -> tuple[LocalityNeeds, LocalityNeeds]:
        """What of the proxies of one outbound class the assignments of their clusters read, for EDS and for
        the inline endpoints of DNS clusters: the locality settings of the DestinationRules chosen for the
        services they see (as pilot.push.scope finds them)."""
        rules = self._locality_rules
        if not rules:
            return NO_NEEDS, NO_NEEDS
        found = self._locality_memo.get(outbound)
        if found is None:
            if proxy.is_router:
                services: Iterable[Service] = self.visible_services(proxy)
            else:
                egress = self.sidecar_scope(proxy).egress
                seen = {svc.hostname: svc for listener in egress for svc in self.visible_services(proxy, listener)}
                services = seen.values()
            endpoints = clusters = NO_NEEDS
            for svc in services:
                rule = self.destination_rule(proxy, svc.hostname)
                needs = rules.get(rule.keys, NO_NEEDS) if rule is not None else NO_NEEDS
                if needs:
                    endpoints |= needs
                    if svc.resolution is Resolution.DNS:
                        clusters |= needs
            found = self._locality_memo[outbound] = (endpoints, clusters)
        return found

    @cached_property
    def gateways(self) -> tuple[Config, ...]:
        return self._of_kind(GATEWAY)

    @cached_property
    def sidecars(self) -> tuple[Config, ...]:
        return self._of_kind(SIDECAR)

    @cached_property
    def _sidecars_by_namespace(self) -> Mapping[str, tuple[Config, ...]]:
        index: dict[str, list[Config]] = {}
        for cfg in self.sidecars:
            index.setdefault(cfg.namespace, []).append(cfg)
        return {k: tuple(v) for k, v in index.items()}

    @cached_property
    def _sorted_services(self) -> tuple[Service, ...]:
        return tuple(self.services[h] for h in sorted(self.services))

    @cached_property
    def uses_source_labels(self) -> bool:
        """Whether any VirtualService routes by ``sourceLabels`` (HTTP, TCP or TLS matches), making routes and
        listeners depend on each proxy's labels."""
        return any(
            match.source_labels
            for vs in self.virtual_services
            for route in (*vs.config.spec.http, *vs.config.spec.tcp, *vs.config.spec.tls)
            for match in route.match
        )

    @cached_property
    def authn_policies(self) -> AuthnPolicies:
        """PeerAuthentications by namespace, with the mesh and namespace mTLS modes (see pilot.push.authn)."""
        return AuthnPolicies.build(self._of_kind(PEER_AUTHENTICATION), self.root_namespace)

    @cached_property
    def _targets_by_address(self) -> AddressIndex:
        # Per context, not carried over: endpoints change between full pushes (istiod recomputes a proxy's
        # service targets on full pushes only).
        return targets_by_address(self._sorted_services, self.endpoint_index)

    def service_targets(self, proxy: Proxy) -> tuple[ServiceTarget, ...]:
        """The proxy's own service instances: service ports with an endpoint at one of its IPs."""
        return targets_at(self._targets_by_address, proxy.ip_addresses)

    # ----- lookups used by generators -----

    def service(self, hostname: str) -> Service | None:
        return self.services.get(hostname)

    def service_endpoints(self, hostname: str) -> ServiceEndpoints:
        """The live endpoints of a service (from the environment's index, not the snapshot)."""
        svc = self.services.get(hostname)
        if svc is None:
            return ServiceEndpoints(hostname)
        return self.endpoint_index.get(hostname, svc.namespace)

    @cached_property
    def _wildcard_destination_rule_hosts(self) -> tuple[str, ...]:
        """Wildcard DR hosts, most specific (longest) first."""
        return tuple(sorted((h for h in self._destination_rules_by_host if h.startswith("*")), key=lambda h: -len(h)))

    @cached_property
    def _destination_rule_memo(self) -> dict[tuple[str, str, tuple[ConfigKey, ...]], Config | None]:
        return {}

    def destination_rule(self, proxy: Proxy, hostname: str, *, inbound: bool = False) -> Config | None:
        """The DestinationRule for a host as Istio picks it for a proxy: proxy namespace, then the service's,
        then root; exact host matches win over wildcard ones. In the first namespace that has rules for the
        host, one whose workloadSelector selects the proxy (only rules of the proxy's own namespace can), else
        the one without a selector, else none: istiod's SidecarScope.DestinationRule, which lets a namespace's
        selector-only rules hide the service namespace's. ``inbound`` (a sidecar's own inbound clusters):
        selectors are not consulted, as in istiod. Memoized: generators ask once per cluster and route.
        """
        selected = () if inbound else self.selected_destination_rules(proxy)
        key = (proxy.namespace, hostname, selected)
        memo = self._destination_rule_memo
        if key not in memo:
            memo[key] = self._find_destination_rule(proxy.namespace, hostname, selected)
        return memo[key]

    @cached_property
    def _selector_rules_by_namespace(self) -> Mapping[str, tuple[Config, ...]]:
        """The DestinationRules with a workloadSelector, by namespace (most namespaces have none)."""
        out: dict[str, list[Config]] = {}
        for cfg in self._of_kind(DESTINATION_RULE):
            if rule_selector(cfg):
                out.setdefault(cfg.namespace, []).append(cfg)
        return {ns: tuple(rules) for ns, rules in out.items()}

    def selected_destination_rules(self, proxy: Proxy) -> tuple[ConfigKey, ...]:
        """The DestinationRules of the proxy's namespace whose workloadSelector selects it (part of its view)."""
        rules = self._selector_rules_by_namespace.get(proxy.namespace)
        if not rules:
            return ()
        return tuple(cfg.key for cfg in rules if labels_match(rule_selector(cfg), proxy.labels))

    def destination_rules_for(self, hostname: str) -> Iterable[Config]:
        """Every DestinationRule whose host covers ``hostname`` (exact first), whoever it is exported to."""
        yield from self._destination_rules_by_host.get(hostname, ())
        for host in self._wildcard_destination_rule_hosts:
            if host != hostname and subset_of(hostname, host):
                yield from self._destination_rules_by_host[host]

    def _find_destination_rule(
        self, proxy_namespace: str, hostname: str, selected: tuple[ConfigKey, ...]
    ) -> Config | None:
        svc = self.services.get(hostname)
        ns_order = [proxy_namespace]
        if svc is not None and svc.namespace not in ns_order:
            ns_order.append(svc.namespace)
        if self.root_namespace not in ns_order:
            ns_order.append(self.root_namespace)
        exact = self._destination_rules_by_host.get(hostname, ())
        wildcard = tuple(
            cfg
            for host in self._wildcard_destination_rule_hosts
            if host != hostname and subset_of(hostname, host)
            for cfg in self._destination_rules_by_host[host]
        )
        for candidates in (exact, wildcard):
            if not candidates:
                continue
            for ns in ns_order:
                in_ns = [cfg for cfg in candidates if cfg.namespace == ns and exported_to(cfg, proxy_namespace)]
                if not in_ns:
                    continue
                if ns == proxy_namespace and selected:
                    for cfg in in_ns:
                        if cfg.key in selected:
                            return cfg
                return next((cfg for cfg in in_ns if not rule_selector(cfg)), None)
            for cfg in candidates:
                if exported_to(cfg, proxy_namespace) and not rule_selector(cfg):
                    return cfg
        return None

    def sidecar_for(self, proxy: Proxy) -> Config | None:
        """The Sidecar resource that applies to a sidecar proxy: one in its namespace selecting its labels,
        else its namespace's one without a selector, else the root namespace's, else None."""
        if proxy.is_router:
            return None
        by_ns = self._sidecars_by_namespace
        for ns in (proxy.namespace, self.root_namespace):
            in_ns = by_ns.get(ns, ())
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
    def _sidecar_scope_memo(self) -> dict[tuple[str, ConfigKey | None], SidecarScope]:
        return {}

    def sidecar_scope(self, proxy: Proxy) -> SidecarScope:
        """The egress listeners of the Sidecar that applies (see sidecar_for), or the implicit ``*/*`` scope."""
        chosen = self.sidecar_for(proxy)
        memo_key = (proxy.namespace, chosen.key if chosen is not None else None)
        found = self._sidecar_scope_memo.get(memo_key)
        if found is None:
            found = self._sidecar_scope_memo[memo_key] = _sidecar_scope(chosen, proxy.namespace)
        return found

    @cached_property
    def _visible_memo(self) -> dict[tuple[str, EgressListener], tuple[Service, ...]]:
        return {}

    def visible_services(self, proxy: Proxy, egress: EgressListener = DEFAULT_EGRESS) -> tuple[Service, ...]:
        """Services a proxy may reach through one egress listener, in hostname order."""
        key = (proxy.namespace, egress)
        found = self._visible_memo.get(key)
        if found is None:
            found = self._visible_memo[key] = tuple(
                svc for svc in self._sorted_services if svc.visible_in(proxy.namespace) and egress.selects(svc)
            )
        return found

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

    def gateway_port_map(self, proxy: Proxy) -> tuple[tuple[int, int], ...]:
        """istiod's resolvePorts for label-selected Gateways: (service port, targetPort) of the router's own
        services, the first one per port, which its Gateway servers listen on instead of the service port."""
        found: dict[int, int] = {}
        for target in self.service_targets(proxy):
            if DISABLE_PORT_TRANSLATION_LABEL not in target.service.labels:
                found.setdefault(target.port.number, target.target_port)
        return tuple(sorted(found.items()))

    @cached_property
    def _merged_gateway_memo(self) -> dict[tuple[object, ...], MergedGateway]:
        return {}

    @cached_property
    def _observed_routers(self) -> dict[tuple[object, ...], Proxy]:
        """One router per (namespace, labels, IPs) generated for, in this context or an earlier one: push_status
        reports the rejected servers and credential problems of their Gateways as current config has them."""
        return {}

    def merged_gateway(self, proxy: Proxy) -> MergedGateway:
        """The Gateways selecting a router merged as istiod's mergeGateways (pilot.push.gateways), memoized per
        selection and port map."""
        selection = tuple(gw.key for gw in self.gateways_for_proxy(proxy))
        port_map = self.gateway_port_map(proxy) if selection else ()
        observed = self._observed_routers
        seen_as = (proxy.namespace, tuple(sorted(proxy.labels.items())), proxy.ip_addresses)
        if seen_as not in observed:
            if len(observed) >= _MAX_OBSERVED_ROUTERS:
                observed.pop(next(iter(observed)))
            observed[seen_as] = proxy
        return self._merged(selection, port_map)

    def _merged(self, selection: tuple[ConfigKey, ...], port_map: tuple[tuple[int, int], ...]) -> MergedGateway:
        memo = self._merged_gateway_memo
        found = memo.get((selection, port_map))
        if found is None:
            by_key = {gw.key: gw for gw in self.gateways}
            gateways = [by_key[key] for key in selection if key in by_key]
            found = memo[(selection, port_map)] = merge_gateways(gateways, dict(port_map))
        return found

    @cached_property
    def _secrets_by_name(self) -> Mapping[tuple[str, str], Config]:
        return {(cfg.namespace, cfg.name): cfg for cfg in self._of_kind(SECRET)}

    def secret(self, namespace: str, name: str) -> Config | None:
        """A Secret of this snapshot (its spec: pilot.model.secret.SecretData)."""
        return self._secrets_by_name.get((namespace, name))

    def gateway_credentials(self, proxy: Proxy) -> dict[str, credentials.SecretRef]:
        """The SDS resources a router may fetch for its Gateways (pilot.push.credentials): those its merged
        Gateway servers reference whose Secret is in the router's own namespace."""
        out: dict[str, credentials.SecretRef] = {}
        for resource in self.merged_gateway(proxy).credentials:
            ref = credentials.parse_resource_name(resource, proxy.namespace)
            if ref is not None and ref.namespace == proxy.namespace:
                out[resource] = ref
        return out

    @cached_property
    def _credential_rules(self) -> tuple[Config, ...]:
        """The DestinationRules whose client TLS names a credential (few or none)."""
        return tuple(
            cfg
            for cfg in self._of_kind(DESTINATION_RULE)
            if any(credentials.client_resources(tls) for tls in credentials.rule_client_tls(cfg.spec))
        )

    @property
    def sidecars_read_secrets(self) -> bool:
        """Whether some sidecar may fetch a credential: a DestinationRule with a workloadSelector names one."""
        return any(rule_selector(cfg) for cfg in self._credential_rules)

    def destination_rule_credentials(self, proxy: Proxy) -> dict[str, credentials.SecretRef]:
        """The SDS resources a proxy may fetch for DestinationRule client TLS (istiod: credentialName applies on
        gateways, and on sidecars only through a rule with a workloadSelector): those named by the rules that
        may apply to it (exported to its namespace; a selector rule only if it selects the proxy), whose Secret
        is in the proxy's own namespace."""
        rules = self._credential_rules
        if not rules:
            return {}
        selected = self.selected_destination_rules(proxy)
        out: dict[str, credentials.SecretRef] = {}
        for cfg in rules:
            applies = cfg.key in selected if rule_selector(cfg) else proxy.is_router
            if not applies or not exported_to(cfg, proxy.namespace):
                continue
            for tls in credentials.rule_client_tls(cfg.spec):
                for resource in credentials.client_resources(tls):
                    ref = credentials.parse_resource_name(resource, proxy.namespace)
                    if ref is not None and ref.namespace == proxy.namespace:
                        out[resource] = ref
        return out

    def proxy_credentials(self, proxy: Proxy) -> dict[str, credentials.SecretRef]:
        """Every SDS resource a proxy may fetch from pilot: its Gateways' and its DestinationRules'."""
        from_rules = self.destination_rule_credentials(proxy)
        if not proxy.is_router:
            return from_rules
        return {**self.gateway_credentials(proxy), **from_rules}

    # ----- proxy classes -----

    @cached_property
    def scope_memo(self) -> dict[tuple[object, ...], Any]:
        """Proxy scopes by outbound view, filled by pilot.push.scope.scope_for (per context: scopes read every kind)."""
        return {}

    def view_of(self, proxy: Proxy) -> View:
        """What generation reads from a proxy: proxies with equal views get identical config.

        Labels matter only through what they select (the Sidecar that applies, the Gateways selecting a
        router, the PeerAuthentication in effect), unless a VirtualService routes by sourceLabels: then the labels
        themselves are part of it. A sidecar's inbound side adds its service targets and, when a Sidecar with
        ingress listeners applies (they bind to and forward to the instance IP), its IPs; mesh mTLS adds whether
        the proxy has workload certificates. A router's Gateways come with the targetPorts of its own services,
        which its Gateway servers listen on (gateway_port_map).
        """
        inbound: tuple[object, ...] = ()
        # Which generator serves the node: Envoy's (""), or "grpc" for proxyless gRPC (pilot.xds.grpcgen).
        generator = str(proxy.metadata.get("GENERATOR") or "")
        if proxy.is_router:
            selected: object = tuple(gw.key for gw in self.gateways_for_proxy(proxy))
            if selected:  # its own services' targetPorts are the ports it listens on
                selected = (selected, self.gateway_port_map(proxy))
        else:
            sidecar = self.sidecar_for(proxy)
            selected = sidecar.key if sidecar is not None else None
            targets = tuple(t.signature for t in self.service_targets(proxy))
            ingress = sidecar is not None and bool(sidecar.spec.ingress)
            if generator and targets:
                # A proxyless gRPC server's listeners read its targets, its mTLS policy and its tlsMode label.
                peer = self.authn_policies.effective(proxy.namespace, proxy.labels)
                inbound = (generator, targets, peer, proxy.labels.get(TLS_MODE_LABEL, ""))
            elif not generator and (targets or ingress):  # no inbound side: its class whatever its policy
                peer = self.authn_policies.effective(proxy.namespace, proxy.labels)
                inbound = (targets, peer, proxy.ip_addresses if ingress else ())
        certs = has_workload_certificates(proxy)  # mTLS config needs them (pilot.push.authn)
        labels = tuple(sorted(proxy.labels.items())) if self.uses_source_labels else ()
        interception = str(proxy.metadata.get("INTERCEPTION_MODE", ""))
        outbound = (
            proxy.type,
            proxy.namespace,
            proxy.dns_domain,
            interception,
            selected,
            labels,
            proxy.xds_api,
            generator,
            certs,
            self.selected_destination_rules(proxy),
        )
        endpoints, clusters = self._locality_needs(proxy, outbound)
        return View(outbound, inbound, endpoints.of(proxy), clusters.of(proxy))

    # ----- status -----

    @cached_property
    def _generation_status(self) -> dict[str, dict[str, dict[str, str]]]:
        """Conditions met while generating some proxy's config in this context (see add_status)."""
        return {}

    def add_status(self, metric: str, key: str, proxy_id: str, message: str) -> None:
        """istiod's PushContext.AddMetric: a condition a generator met for one proxy (e.g. a duplicate virtual
        host), shown in push_status until the next context. As in istiod, config served from the cache is not
        generated again, so it is not reported again."""
        self._generation_status.setdefault(metric, {})[key] = {"proxy": proxy_id, "message": message}

    def proxy_status(self) -> dict[str, dict[str, dict[str, str]]]:
        """istiod's push_status conditions, from the current services and live endpoints, the merging of
        DestinationRules and delegate VirtualServices, and what generation met."""
        status: dict[str, dict[str, dict[str, str]]] = {}
        for metric, entries in sorted(self._generation_status.items()):
            status[metric] = dict(sorted(entries.items()))
        _ = self._destination_rules_by_host  # merging records its conflicts
        for host, message in sorted(self._rule_conflicts.items()):
            status.setdefault("pilot_destrule_subsets", {})[host] = {"message": message}
        _ = self.virtual_services  # so does merging delegates
        for root, problems in sorted(self._delegate_problems.items()):
            status.setdefault(DELEGATE_STATUS, {})[root] = {"message": "; ".join(problems)}
        self._gateway_status(status)
        for host, svc in sorted(self.services.items()):
            if svc.resolution.value != "STATIC":
                continue
            endpoints = self.endpoint_index.get(host, svc.namespace)
            if any(endpoints.by_port.values()):
                continue
            for port in svc.ports:
                status.setdefault("pilot_eds_no_instances", {})[f"outbound|{port.number}||{host}"] = {}
        return status

    def _gateway_status(self, status: dict[str, dict[str, dict[str, str]]]) -> None:
        """Rejected Gateway servers and unservable credentials of the gateway proxies seen so far, from the
        current Gateways and Secrets (so they stay listed until fixed, whatever was generated lately)."""
        for proxy in list(self._observed_routers.values()):
            namespace = proxy.namespace
            merged = self.merged_gateway(proxy)
            for rejection in merged.rejected:
                entry = status.setdefault(REJECTED_STATUS, {}).setdefault(rejection.gateway, {"message": ""})
                text = f"server {rejection.index}: {rejection.message}"
                if text not in entry["message"]:
                    entry["message"] = f"{entry['message']}; {text}" if entry["message"] else text
            for resource, servers in merged.credentials.items():
                if resource in (credentials.BUILTIN_RESOURCE, credentials.BUILTIN_ROOT_RESOURCE):
                    continue  # the proxy's own certificate, from its agent
                ref = credentials.parse_resource_name(resource, namespace)
                if ref is None or ref.namespace != namespace:
                    problem = f"{resource}: not a Secret in the gateway proxy's namespace {namespace}"
                else:
                    problem = credentials.resolve(ref, self.secret).problem
                if problem:
                    users = ", ".join(sorted({s.describe() for s in servers}))
                    key = f"{namespace}/{resource}"
                    status.setdefault(CREDENTIAL_STATUS, {})[key] = {"message": f"{users}: {problem}"}


def rule_selector(rule: Config) -> Mapping[str, str]:
    """A DestinationRule's workloadSelector labels; empty when it has none (it then applies to every proxy)."""
    selector = rule.spec.workload_selector
    return (selector.match_labels or {}) if selector is not None else {}


def merge_rules(host: str, rules: Sequence[Config], conflicts: dict[str, str]) -> list[Config]:
    """istiod's mergeDestinationRule: DestinationRules of one namespace for one host, with the same exportTo
    and no workload selector, act as one: subsets are joined (a duplicate name keeps the first one and is
    reported), and the first rule that has a traffic policy gives it. Rules come in key order, which stands
    for istiod's creation order. Others stay separate, as in istiod.
    """
    out: list[Config] = []
    groups: dict[tuple[str, tuple[str, ...]], int] = {}  # (namespace, exportTo) -> index in out
    for rule in rules:
        spec = rule.spec
        if spec.workload_selector is not None and spec.workload_selector.match_labels:
            out.append(rule)
            continue
        group = (rule.namespace, tuple(sorted(spec.export_to or ())))
        at = groups.get(group)
        if at is None:
            groups[group] = len(out)
            out.append(rule)
            continue
        base = out[at]
        subsets = list(base.spec.subsets or ())
        names = {s.name for s in subsets}
        for subset in spec.subsets or ():
            if subset.name in names:
                conflicts[host] = f"Duplicate subset {subset.name} found while merging destination rules for {host}"
                continue
            subsets.append(subset)
            names.add(subset.name)
        policy = base.spec.traffic_policy if base.spec.traffic_policy is not None else spec.traffic_policy
        merged_spec = dataclasses.replace(base.spec, subsets=subsets, traffic_policy=policy)
        out[at] = dataclasses.replace(base, spec=merged_spec, merged_from=(*base.keys, rule.key))
    return out


def _sidecar_scope(chosen: Config | None, namespace: str) -> SidecarScope:
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
                ns = namespace
            elif ns == "~":
                continue  # '~/*' imports nothing
            hosts.append((ns, dns))
        port = None
        if egress.port is not None and egress.port.number:
            port = Port(egress.port.name, egress.port.number, Protocol.parse(egress.port.protocol))
        capture = enum_name(egress.capture_mode) or "DEFAULT"
        listeners.append(EgressListener(tuple(hosts), port, egress.bind or "", capture))
    return SidecarScope(chosen, tuple(listeners))


def exported_to(cfg: Config, namespace: str) -> bool:
    """Istio's exportTo for config objects: unset or '*' everywhere, '.' own namespace, else listed ones."""
    export_to: Sequence[Any] = getattr(cfg.spec, "export_to", None) or ()
    if not export_to:
        return True
    for target in export_to:
        if target == "*" or target == namespace or (target == "." and cfg.namespace == namespace):
            return True
    return False
