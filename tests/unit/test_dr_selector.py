"""DestinationRule workloadSelector (istiod's SidecarScope.DestinationRule): a rule with a selector applies to the
proxies of its own namespace whose labels it selects; the others get the namespace's rule without a selector,
or none; a proxy elsewhere never gets it."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2

from pilot.model.config import ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.scope import scope_for
from pilot.xds.cache import XdsCache
from pilot.xds.generate import Generator
from pilot.xds.names import CLUSTER_TYPE
from tests.support import push_of

Cluster = cluster_pb2.Cluster
HOST = "reviews.backend.svc.cluster.local"
CLUSTER = f"outbound|9080||{HOST}"

SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: backend}
spec:
  hosts: [reviews.backend.svc.cluster.local]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
"""


def rule(name: str, namespace: str, simple: str, selector: str = "") -> str:
    return f"""---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {HOST}
  trafficPolicy: {{loadBalancer: {{simple: {simple}}}}}
{f"  workloadSelector: {{matchLabels: {selector}}}" if selector else ""}
"""


def sidecar(namespace: str, app: str) -> Proxy:
    return parse_proxy(
        f"sidecar~10.1.0.{len(app)}~{app}-1.{namespace}~{namespace}.svc.cluster.local", {"LABELS": {"app": app}}
    )


def lb_policies(text: str, *proxies: Proxy) -> list[int]:
    """The lb_policy of CLUSTER for each proxy, generated through one cache (so a shared entry would show)."""
    push = push_of(text)
    generator = Generator(XdsCache())
    out = []
    for proxy in proxies:
        for resource in generator.resources(CLUSTER_TYPE, proxy, push, None):
            cluster = Cluster()
            cluster.ParseFromString(resource.value)
            if cluster.name == CLUSTER:
                out.append(cluster.lb_policy)
    return out


def test_the_selected_proxies_get_the_selector_rule_the_others_the_catch_all() -> None:
    text = SERVICE + rule("all", "shop", "RANDOM") + rule("web-only", "shop", "ROUND_ROBIN", "{app: web}")
    web, cart = sidecar("shop", "web"), sidecar("shop", "cart")
    assert lb_policies(text, web, cart, web) == [Cluster.ROUND_ROBIN, Cluster.RANDOM, Cluster.ROUND_ROBIN]
    push = push_of(text)
    assert push.view_of(web).outbound != push.view_of(cart).outbound  # their caches cannot be shared
    assert ConfigKey("DestinationRule", "shop", "web-only") in scope_for(push, cart).destination_rules


def test_a_selector_rule_of_another_namespace_applies_to_nobody_there() -> None:
    text = SERVICE + rule("web-only", "backend", "ROUND_ROBIN", "{app: web}")
    # the service's namespace holds only a selector rule: a proxy elsewhere gets no rule (LEAST_REQUEST)
    assert lb_policies(text, sidecar("shop", "web")) == [Cluster.LEAST_REQUEST]
    assert lb_policies(text, sidecar("backend", "web"), sidecar("backend", "db")) == [
        Cluster.ROUND_ROBIN,
        Cluster.LEAST_REQUEST,
    ]


def test_selector_only_rules_hide_the_service_namespace_rule_as_in_istiod() -> None:
    """istiod takes the candidates from the first namespace that has rules for the host; a proxy its selector
    rules do not select gets none, even though the service's namespace exports one."""
    text = SERVICE + rule("exported", "backend", "RANDOM") + rule("web-only", "shop", "ROUND_ROBIN", "{app: web}")
    assert lb_policies(text, sidecar("shop", "web"), sidecar("shop", "cart"), sidecar("other", "cart")) == [
        Cluster.ROUND_ROBIN,
        Cluster.LEAST_REQUEST,
        Cluster.RANDOM,
    ]


def test_selected_destination_rules_are_those_selecting_the_proxy() -> None:
    text = SERVICE + rule("all", "shop", "RANDOM") + rule("web-only", "shop", "ROUND_ROBIN", "{app: web}")
    push = push_of(text)
    web_only = ConfigKey("DestinationRule", "shop", "web-only")
    assert push.selected_destination_rules(sidecar("shop", "web")) == (web_only,)
    assert push.selected_destination_rules(sidecar("shop", "cart")) == ()
