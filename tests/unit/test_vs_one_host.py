"""Several VirtualServices for one host, as istiod treats them: on a sidecar the first one wins the host (in
istiod's order: VirtualServices private to the proxy's namespace, then those exported to it by name, then
public ones) and the others are reported as duplicate domains; on a gateway their routes are merged, in the
same order, catch-all routes last."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_pb2

from pilot.model.proxy import parse_proxy
from pilot.xds import rds
from tests.support import push_of

SERVICE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}, {address: 10.0.0.2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""
HOST = "reviews.default.svc.cluster.local"
SIDECAR = parse_proxy("sidecar~10.0.0.9~app.default~default.svc.cluster.local")
OTHER = parse_proxy("sidecar~10.0.0.8~app.other~other.svc.cluster.local")
ROUTER = parse_proxy("router~10.0.0.7~gw.default~default.svc.cluster.local", {"LABELS": {"istio": "ingressgateway"}})


def vs(name: str, namespace: str, http: str, export_to: str = "", gateways: str = "") -> str:
    extra = (f"\n  exportTo: {export_to}" if export_to else "") + (f"\n  gateways: {gateways}" if gateways else "")
    return f"""
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{HOST}]{extra}
  http: {http}
"""


def header_route(value: str) -> str:
    """A route recognisable by the response header it adds."""
    return f"[{{headers: {{response: {{set: {{x-vs: {value}}}}}}}, route: [{{destination: {{host: {HOST}}}}}]}}]"


def sidecar_routes(text: str, proxy: Any = SIDECAR) -> tuple[list[route_pb2.Route], dict[str, Any]]:
    push = push_of(text)
    (config,) = rds.build_routes(proxy, push, ["9080"])
    (vhost,) = [v for v in config.virtual_hosts if v.name == f"{HOST}:9080"]
    return list(vhost.routes), push.proxy_status()


def added_header(route: route_pb2.Route) -> str:
    return next(h.header.value for h in route.response_headers_to_add if h.header.key == "x-vs")


def test_on_a_sidecar_the_first_virtual_service_wins_the_host_and_the_other_is_reported() -> None:
    text = SERVICE + vs("a", "default", header_route("a")) + vs("b", "default", header_route("b"))
    routes, status = sidecar_routes(text)
    assert [added_header(r) for r in routes] == ["a"]
    assert status["pilot_vservice_dup_domain"] == {
        f"{HOST}:9080": {"proxy": "app.default", "message": f"duplicate domain from service: {HOST}:9080"}
    }


def test_a_virtual_service_private_to_the_namespace_wins_over_exported_and_public_ones() -> None:
    text = (
        SERVICE
        + vs("a-public", "x", header_route("public"))
        + vs("m-exported", "y", header_route("exported"), export_to="[default, other]")
        + vs("z-private", "default", header_route("private"), export_to='["."]')
    )
    assert [added_header(r) for r in sidecar_routes(text)[0]] == ["private"]
    # From another namespace the private one is invisible, and the one exported to it by name comes first.
    assert [added_header(r) for r in sidecar_routes(text, OTHER)[0]] == ["exported"]
    without_exported = text.replace("[default, other]", "[default]")
    assert [added_header(r) for r in sidecar_routes(without_exported, OTHER)[0]] == ["public"]


def gateway_routes(text: str) -> list[route_pb2.Route]:
    (config,) = rds.build_routes(ROUTER, push_of(text), ["http.8080"])
    (vhost,) = config.virtual_hosts
    return list(vhost.routes)


def test_on_a_gateway_the_routes_of_every_virtual_service_for_the_host_are_merged_catch_alls_last() -> None:
    catch_all = header_route("catch-all")
    by_path = (
        f"[{{match: [{{uri: {{prefix: /v2}}}}], headers: {{response: {{set: {{x-vs: by-path}}}}}}, "
        f"route: [{{destination: {{host: {HOST}}}}}]}}]"
    )
    text = SERVICE + vs("a", "default", catch_all, gateways="[gw]") + vs("b", "default", by_path, gateways="[gw]")
    assert [added_header(r) for r in gateway_routes(text)] == ["by-path", "catch-all"]


def test_on_a_gateway_merged_routes_follow_istiods_visibility_order() -> None:
    def by_path(value: str) -> str:
        return (
            f"[{{match: [{{uri: {{prefix: /{value}}}}}], headers: {{response: {{set: {{x-vs: {value}}}}}}}, "
            f"route: [{{destination: {{host: {HOST}}}}}]}}]"
        )

    text = (
        SERVICE
        + vs("a-public", "x", by_path("public"), gateways="[default/gw]")
        + vs("m-exported", "y", by_path("exported"), export_to="[default]", gateways="[default/gw]")
        + vs("z-private", "default", by_path("private"), export_to='["."]', gateways="[gw]")
    )
    assert [added_header(r) for r in gateway_routes(text)] == ["private", "exported", "public"]


def test_a_regex_catch_all_is_istiods_dot_star() -> None:
    """istiod's IsCatchAllRoute: a ``.*`` regex URI matches everything: routes after it in the same
    VirtualService are not generated, and on a gateway it goes after the other VirtualServices' routes."""
    regex_all = (
        f"[{{match: [{{uri: {{regex: '.*'}}}}], headers: {{response: {{set: {{x-vs: regex}}}}}}, "
        f"route: [{{destination: {{host: {HOST}}}}}]}}, {{route: [{{destination: {{host: {HOST}}}}}]}}]"
    )
    by_path = (
        f"[{{match: [{{uri: {{prefix: /v2}}}}], headers: {{response: {{set: {{x-vs: by-path}}}}}}, "
        f"route: [{{destination: {{host: {HOST}}}}}]}}]"
    )
    text = SERVICE + vs("a", "default", regex_all, gateways="[gw]") + vs("b", "default", by_path, gateways="[gw]")
    assert [added_header(r) for r in gateway_routes(text)] == ["by-path", "regex"]
