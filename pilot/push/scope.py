"""Proxy scope: which configs can shape one class of proxies' config (istiod's SidecarScope dependencies).

A scope is computed once per (PushContext, outbound proxy view) and shared by the proxies of that view. It answers
two questions:

* ``depends_on(key)``: can a change to this config key change what these proxies get? A push goes to a
  proxy only if its previous or its current scope depends on one of the changed keys (istiod's
  ProxyNeedsPush, which checks SidecarScope and PrevSidecarScope): the previous scope catches what went
  away, the current one what came into view.
* ``fingerprint``: identifies the set of services, VirtualServices, DestinationRules and Gateways in view,
  so that a cached listener or route configuration (built from that whole set) is not reused once the set
  changes (a new object is nobody's dependency yet: it changes the set instead).

Sidecars: the services their Sidecar egress listeners (or the implicit ``*/*``) import and exportTo allows,
the mesh-bound VirtualServices for those hosts, the DestinationRules that may apply to them, and the Sidecar
itself (a Sidecar in their own or the root namespace may start to apply). Routers: the services visible in
their namespace, the Gateways selecting them, the VirtualServices bound to those Gateways, and the Secrets of
the credentials their Gateway servers reference (a Secret's change pushes SDS to them only). A root
VirtualService in view brings in its delegates: their changes change its merged routes. Both: the
PeerAuthentications of their own namespace, the root namespace and the namespaces of the services in view
(istiod's SidecarScope.AuthnPolicies): they shape inbound mTLS and outbound auto-mTLS; and the Secrets of the
DestinationRule credentials they may fetch (pilot.push.credentials).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from pilot.model.config import (
    DESTINATION_RULE,
    ENDPOINTS_KIND,
    GATEWAY,
    PEER_AUTHENTICATION,
    SECRET,
    SERVICE_KIND,
    SIDECAR,
    VIRTUAL_SERVICE,
    ConfigKey,
)
from pilot.model.proxy import Proxy
from pilot.model.service import Service
from pilot.push.context import PushContext, View, exported_to


@dataclass(frozen=True, eq=False)
class ProxyScope:
    view: tuple[object, ...]  # the outbound part of its proxies' View: their inbound side does not matter here
    is_router: bool
    namespace: str
    root_namespace: str
    services: tuple[Service, ...]  # what outbound config is built for, in hostname order
    hosts: frozenset[str]
    virtual_services: frozenset[ConfigKey]  # those in view and the delegates merged into them
    destination_rules: frozenset[ConfigKey]
    gateways: frozenset[ConfigKey]
    sidecar: ConfigKey | None
    peer_authentications: frozenset[ConfigKey] = frozenset()
    secrets: frozenset[ConfigKey] = frozenset()  # the Secrets behind the credentials they may fetch

    def depends_on(self, key: ConfigKey) -> bool:
        kind = key.kind
        if kind == SERVICE_KIND or kind == ENDPOINTS_KIND:
            return key.name in self.hosts
        if kind == VIRTUAL_SERVICE:
            return key in self.virtual_services
        if kind == DESTINATION_RULE:
            return key in self.destination_rules
        if kind == SIDECAR:
            return not self.is_router and (
                key == self.sidecar or key.namespace in (self.namespace, self.root_namespace)
            )
        if kind == GATEWAY:
            return self.is_router and key in self.gateways
        if kind == PEER_AUTHENTICATION:
            return key in self.peer_authentications
        if kind == SECRET:
            return key in self.secrets
        return True  # a kind nobody declared: assume it matters

    @cached_property
    def service_keys(self) -> frozenset[ConfigKey]:
        return frozenset(ConfigKey(SERVICE_KIND, s.namespace, s.hostname) for s in self.services)

    @cached_property
    def deps(self) -> frozenset[ConfigKey]:
        """Every config key a resource built from the whole scope (listeners, routes) depends on."""
        out = set(self.service_keys) | self.virtual_services | self.destination_rules | self.gateways
        if self.sidecar is not None:
            out.add(self.sidecar)
        return frozenset(out)

    @cached_property
    def fingerprint(self) -> str:
        parts = [
            repr(self.view),
            ",".join(s.hostname for s in self.services),
            ",".join(str(k) for k in sorted(self.virtual_services)),
            ",".join(str(k) for k in sorted(self.gateways)),
            ",".join(str(k) for k in sorted(self.destination_rules)),
            str(self.sidecar),
        ]
        return hashlib.blake2b("\n".join(parts).encode(), digest_size=12).hexdigest()


def scope_for(push: PushContext, proxy: Proxy, view: View | None = None) -> ProxyScope:
    """The scope of ``proxy`` in ``push``, memoized per outbound view (sidecars of different services in one
    namespace share it)."""
    if view is None:
        view = push.view_of(proxy)
    memo = push.scope_memo
    found = memo.get(view.outbound)
    if found is None:
        found = memo[view.outbound] = _compute(push, proxy, view.outbound)
    return found


def outbound_services(push: PushContext, proxy: Proxy) -> tuple[Service, ...]:
    """Services a proxy builds outbound config for, in hostname order.

    Sidecars: the union over their Sidecar egress listeners. Routers: everything visible in their namespace.
    """
    if proxy.is_router:
        return push.visible_services(proxy)
    egress = push.sidecar_scope(proxy).egress
    if len(egress) == 1:
        return push.visible_services(proxy, egress[0])
    seen: dict[str, Service] = {}
    for listener in egress:
        for svc in push.visible_services(proxy, listener):
            seen.setdefault(svc.hostname, svc)
    return tuple(seen[h] for h in sorted(seen))


def _compute(push: PushContext, proxy: Proxy, view: tuple[object, ...]) -> ProxyScope:
    services = outbound_services(push, proxy)
    hosts = frozenset(s.hostname for s in services)
    if proxy.is_router:
        gateways = push.gateways_for_proxy(proxy)
        virtual_services = frozenset(
            key for gw in gateways for vs in push.gateway_virtual_services(gw) for key in vs.keys
        )
        gateway_keys = frozenset(gw.key for gw in gateways)
        sidecar = None
    else:
        gateway_keys = frozenset()
        egress = push.sidecar_scope(proxy)
        virtual_services = frozenset(
            key
            for listener in egress.egress
            for vs in push.sidecar_virtual_services(proxy, listener)
            for key in vs.keys  # a root's routes are also its delegates'
        )
        sidecar = egress.sidecar.key if egress.sidecar is not None else None
    secrets = frozenset(k for ref in push.proxy_credentials(proxy).values() for k in ref.related_keys())
    rules = frozenset(
        key
        for host in hosts
        for rule in push.destination_rules_for(host)
        if exported_to(rule, proxy.namespace)
        for key in rule.keys  # merged DestinationRules stand for several objects
    )
    namespaces = {proxy.namespace, push.root_namespace, *(s.namespace for s in services)}
    return ProxyScope(
        view=view,
        is_router=proxy.is_router,
        namespace=proxy.namespace,
        root_namespace=push.root_namespace,
        services=services,
        hosts=hosts,
        virtual_services=virtual_services,
        destination_rules=rules,
        gateways=gateway_keys,
        sidecar=sidecar,
        peer_authentications=push.authn_policies.keys_in(namespaces),
        secrets=secrets,
    )
