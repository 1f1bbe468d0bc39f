"""PushContext lookups: name resolution, gateway binding, DestinationRule precedence, Sidecar scope."""

from __future__ import annotations

from pilot.model.proxy import Proxy, parse_proxy
from pilot.push.context import resolve_gateway_name, resolve_short_name
from tests.support import push_of


def sidecar_in(namespace: str) -> Proxy:
    return parse_proxy(f"sidecar~10.0.0.9~p.{namespace}~{namespace}.svc.cluster.local")


def test_resolve_short_name_follows_istio() -> None:
    assert resolve_short_name("reviews", "bookinfo", "cluster.local") == "reviews.bookinfo.svc.cluster.local"
    assert resolve_short_name("reviews.other", "bookinfo", "cluster.local") == "reviews.other"
    assert resolve_short_name("*", "bookinfo", "cluster.local") == "*"
    assert resolve_short_name("10.0.0.1", "bookinfo", "cluster.local") == "10.0.0.1"


def test_resolve_gateway_name_forms() -> None:
    assert resolve_gateway_name("mesh", "ns") == "mesh"
    assert resolve_gateway_name("gw", "ns") == "ns/gw"
    assert resolve_gateway_name("./gw", "ns") == "ns/gw"
    assert resolve_gateway_name("other/gw", "ns") == "other/gw"
    assert resolve_gateway_name("gw.istio-system.svc.cluster.local", "ns") == "istio-system/gw"


GATEWAY_AND_VS = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: default}
spec:
  hosts: [a.example.com]
  gateways: [gw.istio-system.svc.cluster.local]
  http: [{route: [{destination: {host: a.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only, namespace: default}
spec:
  hosts: [b.example.com]
  http: [{route: [{destination: {host: b.example.com}}]}]
"""


def test_gateway_binding_and_selection() -> None:
    push = push_of(GATEWAY_AND_VS)
    router = parse_proxy("router~1.1.1.1~gw-1.istio-system~x", {"LABELS": {"istio": "ingressgateway"}})
    other = parse_proxy("router~1.1.1.1~gw-2.istio-system~x", {"LABELS": {"istio": "egressgateway"}})
    (gateway,) = push.gateways_for_proxy(router)
    assert push.gateways_for_proxy(other) == ()
    assert [vs.config.name for vs in push.gateway_virtual_services(gateway)] == ["legacy"]
    sidecar = parse_proxy("sidecar~1.1.1.2~app-1.default~x")
    assert [vs.config.name for vs in push.sidecar_virtual_services(sidecar)] == ["mesh-only"]


DESTINATION_RULES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: backend}
spec:
  hosts: [svc.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: in-backend, namespace: backend}
spec: {host: svc.example.com, subsets: [{name: backend, labels: {v: b}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: in-client, namespace: client}
spec: {host: svc.example.com, subsets: [{name: client, labels: {v: c}}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wildcard, namespace: istio-system}
spec: {host: "*.example.com", subsets: [{name: root, labels: {v: r}}]}
"""


def test_destination_rule_precedence() -> None:
    push = push_of(DESTINATION_RULES)
    assert push.destination_rule(sidecar_in("client"), "svc.example.com").name == "in-client"
    assert push.destination_rule(sidecar_in("elsewhere"), "svc.example.com").name == "in-backend"
    assert push.destination_rule(sidecar_in("client"), "other.example.com").name == "wildcard"
    assert push.destination_rule(sidecar_in("client"), "other.example.org") is None


SIDECARS = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: apps}
spec:
  egress:
  - hosts: ["./*", "istio-system/*"]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: special, namespace: apps}
spec:
  workloadSelector: {labels: {app: special}}
  egress:
  - port: {number: 9080, name: http, protocol: HTTP}
    bind: 127.0.0.1
    captureMode: NONE
    hosts: ["*/reviews.default.svc.cluster.local"]
"""


def test_sidecar_scope_selection_and_hosts() -> None:
    push = push_of(SIDECARS)
    plain = push.sidecar_scope(parse_proxy("sidecar~1.1.1.1~a-1.apps~x", {"LABELS": {"app": "a"}}))
    assert plain.sidecar is not None and plain.sidecar.name == "default"
    (egress,) = plain.egress
    assert egress.hosts == (("apps", "*"), ("istio-system", "*"))
    special = push.sidecar_scope(parse_proxy("sidecar~1.1.1.1~s-1.apps~x", {"LABELS": {"app": "special"}}))
    (egress,) = special.egress
    assert special.sidecar.name == "special"
    assert (egress.bind, egress.capture_mode, egress.port.number) == ("127.0.0.1", "NONE", 9080)
    none = push.sidecar_scope(parse_proxy("sidecar~1.1.1.1~x-1.other~x"))
    assert none.sidecar is None and none.egress[0].hosts == (("*", "*"),)
