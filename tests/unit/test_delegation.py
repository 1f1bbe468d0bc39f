"""Delegate VirtualServices merged into their roots with istiod's rules (pilot/pkg/model/virtualservice.go):
root match AND delegate match, conflicts dropped and reported, delegates visible by exportTo, short names
resolved in the delegate's namespace, delegates only as roots' routes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from envoy.config.route.v3 import route_pb2
from google.protobuf import json_format

from pilot.api.istio.networking.v1alpha3 import HttpMatchRequest, HttpRoute, StringMatch
from pilot.config.loader import load_text
from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import parse_proxy
from pilot.push.context import DELEGATE_STATUS, PushContext
from pilot.push.delegation import has_conflict, merge_matches, merge_route, string_match_conflict
from pilot.push.offline import environment_of
from pilot.push.scope import scope_for
from pilot.xds import rds
from pilot.xds.cache import XdsCache
from pilot.xds.generate import Generator
from pilot.xds.names import ROUTE_TYPE
from tests.support import push_of


def match(**fields: Any) -> HttpMatchRequest:
    return HttpMatchRequest.from_dict(fields)


def as_dicts(matches: list[HttpMatchRequest] | None) -> list[dict[str, Any]] | None:
    return None if matches is None else [m.to_dict() for m in matches]


# ----- string matches: root and leaf → conflict? (istiod's stringMatchConflict) -----

EXACT, PREFIX, REGEX = "exact", "prefix", "regex"

STRING_CASES = [
    # root, leaf, conflict
    (None, (PREFIX, "/a"), False),  # an unset side never conflicts
    ((PREFIX, "/a"), None, False),
    ((PREFIX, "/a"), (PREFIX, "/a/b"), False),  # narrower prefix
    ((PREFIX, "/a"), (PREFIX, "/a"), False),
    ((PREFIX, "/a/b"), (PREFIX, "/a"), True),  # wider prefix
    ((PREFIX, "/a"), (EXACT, "/a/v1"), False),  # exact under the prefix
    ((PREFIX, "/a"), (EXACT, "/b"), True),
    ((EXACT, "/a"), (EXACT, "/a"), False),
    ((EXACT, "/a"), (EXACT, "/a/b"), True),
    ((EXACT, "/a"), (PREFIX, "/a"), True),  # a prefix is never narrower than an exact value
    ((REGEX, "^/a"), (PREFIX, "/a"), True),  # a regex on one side admits nothing on the other
    ((REGEX, "^/a"), (REGEX, "^/a"), True),
    ((PREFIX, "/a"), (REGEX, "^/a"), True),
    ((EXACT, "/a"), (REGEX, "^/a"), True),
    ((PREFIX, ""), (PREFIX, "/a"), True),  # an empty root value narrows nothing (istiod falls through)
]


@pytest.mark.parametrize(("root", "leaf", "conflict"), STRING_CASES)
def test_string_match_conflicts_as_istiod(
    root: tuple[str, str] | None, leaf: tuple[str, str] | None, conflict: bool
) -> None:
    def string_match(spec: tuple[str, str] | None) -> StringMatch | None:
        return None if spec is None else StringMatch(**{spec[0]: spec[1]})

    assert string_match_conflict(string_match(root), string_match(leaf)) is conflict


# ----- whole matches: root and delegate → merged matches, or None (dropped) -----

MATCH_CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]] | None]] = [
    ("no root match: the delegate's", [], [{"uri": {"exact": "/x"}}], [{"uri": {"exact": "/x"}}]),
    ("no delegate match: the root's", [{"uri": {"prefix": "/a"}}], [], [{"uri": {"prefix": "/a"}}]),
    ("uri narrowed", [{"uri": {"prefix": "/pp"}}], [{"uri": {"exact": "/pp/v1"}}], [{"uri": {"exact": "/pp/v1"}}]),
    ("uri outside the root", [{"uri": {"prefix": "/pp"}}], [{"uri": {"exact": "/reviews"}}], None),
    (
        "one delegate match outside every root match drops the route",
        [{"uri": {"prefix": "/pp"}}],
        [{"uri": {"exact": "/pp/v1"}}, {"uri": {"exact": "/reviews"}}],
        None,
    ),
    (
        "each delegate match under each compatible root match",
        [{"uri": {"prefix": "/pp"}}, {"uri": {"prefix": "/reviews"}}],
        [{"uri": {"exact": "/pp/v1"}}, {"uri": {"exact": "/reviews/v1"}}],
        [{"uri": {"exact": "/pp/v1"}}, {"uri": {"exact": "/reviews/v1"}}],
    ),
    (
        "root regex kept when the delegate has no uri",
        [{"uri": {"regex": "^/pp"}}],
        [{"headers": {"x": {"exact": "1"}}}],
        [{"uri": {"regex": "^/pp"}, "headers": {"x": {"exact": "1"}}}],
    ),
    ("root regex, delegate prefix", [{"uri": {"regex": "^/pp"}}], [{"uri": {"prefix": "/pp"}}], None),
    (
        "headers joined",
        [{"headers": {"a": {"exact": "h1"}}}],
        [{"headers": {"b": {"exact": "h2"}}}],
        [{"headers": {"a": {"exact": "h1"}, "b": {"exact": "h2"}}}],
    ),
    (
        "same header narrowed: the delegate's value",
        [{"headers": {"a": {"prefix": "h1"}}}],
        [{"headers": {"a": {"exact": "h1-v1"}}}],
        [{"headers": {"a": {"exact": "h1-v1"}}}],
    ),
    ("same header, other value", [{"headers": {"a": {"exact": "h1"}}}], [{"headers": {"a": {"exact": "h2"}}}], None),
    (
        "withoutHeaders conflict",
        [{"withoutHeaders": {"a": {"prefix": "h1"}}}],
        [{"withoutHeaders": {"a": {"exact": "h2"}}}],
        None,
    ),
    (
        "query params joined",
        [{"queryParams": {"a": {"exact": "1"}}}],
        [{"queryParams": {"b": {"exact": "2"}}}],
        [{"queryParams": {"a": {"exact": "1"}, "b": {"exact": "2"}}}],
    ),
    (
        "port, authority, method and scheme from the root",
        [{"uri": {"prefix": "/pp"}, "port": 8080, "authority": {"exact": "pp.com"}, "method": {"exact": "GET"}}],
        [{"uri": {"exact": "/pp/v1"}, "scheme": {"exact": "https"}}],
        [
            {
                "uri": {"exact": "/pp/v1"},
                "port": 8080,
                "authority": {"exact": "pp.com"},
                "method": {"exact": "GET"},
                "scheme": {"exact": "https"},
            }
        ],
    ),
    ("other port", [{"port": 8080}], [{"port": 9090}], None),
    ("ignoreUriCase differs", [{"ignoreUriCase": True}], [{"uri": {"prefix": "/"}}], None),
    (
        "source labels joined",
        [{"sourceLabels": {"app": "test"}}],
        [{"sourceLabels": {"version": "v1"}}],
        [{"sourceLabels": {"app": "test", "version": "v1"}}],
    ),
    ("source label, other value", [{"sourceLabels": {"a": "b"}}], [{"sourceLabels": {"a": "c"}}], None),
    ("other source namespace", [{"sourceNamespace": "test1"}], [{"sourceNamespace": "test2"}], None),
    ("root source namespace, delegate none", [{"sourceNamespace": "test1"}], [{"uri": {"prefix": "/"}}], None),
    (
        "gateways: the delegate's, within the root's",
        [{"uri": {"prefix": "/pp"}, "gateways": ["ns/ingress", "mesh"]}],
        [{"uri": {"exact": "/pp/v1"}, "gateways": ["ns/ingress"]}, {"uri": {"exact": "/pp/v2"}, "gateways": ["mesh"]}],
        [
            {"uri": {"exact": "/pp/v1"}, "gateways": ["ns/ingress"]},
            {"uri": {"exact": "/pp/v2"}, "gateways": ["mesh"]},
        ],
    ),
    (
        "gateways outside the root's",
        [{"gateways": ["ns/ingress"]}],
        [{"gateways": ["ns/ingress", "mesh"]}],
        None,
    ),
    (
        "match names joined",
        [{"name": "root", "uri": {"prefix": "/"}}],
        [{"name": "leaf", "uri": {"prefix": "/x"}}],
        [{"name": "root-leaf", "uri": {"prefix": "/x"}}],
    ),
]


@pytest.mark.parametrize(("root", "delegate", "merged"), [c[1:] for c in MATCH_CASES], ids=[c[0] for c in MATCH_CASES])
def test_matches_merge_as_istiod(
    root: list[dict[str, Any]], delegate: list[dict[str, Any]], merged: list[dict[str, Any]] | None
) -> None:
    got = merge_matches([match(**m) for m in root], [match(**m) for m in delegate])
    assert as_dicts(got) == (None if merged is None else as_dicts([match(**m) for m in merged]))


def test_has_conflict_is_about_the_delegate_narrowing_the_root() -> None:
    assert not has_conflict(match(port=0), match(port=8080))
    assert not has_conflict(match(port=8080), match(port=0))
    assert has_conflict(match(gateways=["ns/a"]), match(gateways=["ns/a", "mesh"]))


def test_a_delegate_route_inherits_what_it_leaves_unset() -> None:
    root = HttpRoute.from_dict(
        {
            "name": "root",
            "match": [{"uri": {"prefix": "/pp"}}],
            "timeout": "3s",
            "retries": {"attempts": 1},
            "headers": {"request": {"set": {"x-root": "1"}}},
            "corsPolicy": {"allowMethods": ["GET"]},
            "delegate": {"name": "d"},
        }
    )
    leaf = HttpRoute.from_dict(
        {"name": "leaf", "timeout": "5s", "route": [{"destination": {"host": "pp.ns.svc.cluster.local"}}]}
    )
    merged = merge_route(root, leaf)
    assert merged is not None
    out = merged.to_dict()
    assert out["name"] == "root-leaf"
    assert out["timeout"] == "5s", "the delegate's own timeout wins"
    assert out["retries"] == {"attempts": 1}
    assert out["headers"] == {"request": {"set": {"x-root": "1"}}}
    assert out["corsPolicy"] == {"allowMethods": ["GET"]}
    assert out["match"] == [{"uri": {"prefix": "/pp"}}]
    assert "delegate" not in out
    unnamed = merge_route(root, HttpRoute.from_dict({"route": [{"destination": {"host": "pp"}}]}))
    assert unnamed is not None and unnamed.name == "root"
    assert leaf.to_dict().get("retries") is None, "merging must not change the delegate's own config"


# ----- whole VirtualServices through the PushContext -----

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: team}
spec:
  hosts: [reviews.team.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
"""

ROOT = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: [bookinfo.example.com]
  gateways: [gw]
  http:
  - name: pp
    match: [{uri: {prefix: /productpage}}]
    timeout: 3s
    delegate: {name: productpage}
  - name: rv
    match: [{uri: {prefix: /reviews}}]
    delegate: {name: reviews, namespace: team}
"""

PRODUCTPAGE = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  http:
  - name: v1
    match: [{uri: {exact: /productpage/v1}}]
    route: [{destination: {host: productpage}}]
    timeout: 1s
  - route: [{destination: {host: productpage}}]
"""


def reviews(export_to: str = '["default"]', route: str = "[{destination: {host: reviews}}]") -> str:
    """The reviews delegate in namespace team; its short host means reviews.team."""
    return f"""
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: team}}
spec:
  exportTo: {export_to}
  http:
  - route: {route}
"""


ROUTER = parse_proxy("router~10.0.0.7~gw.default~default.svc.cluster.local", {"LABELS": {"istio": "ingressgateway"}})
ROOT_KEY = ConfigKey("VirtualService", "default", "bookinfo")
PRODUCTPAGE_KEY = ConfigKey("VirtualService", "default", "productpage")
REVIEWS_KEY = ConfigKey("VirtualService", "team", "reviews")


def gateway_routes(text: str) -> list[route_pb2.Route]:
    (config,) = rds.build_routes(ROUTER, push_of(text), ["http.8080"])
    return [r for vhost in config.virtual_hosts for r in vhost.routes]


def summary(route: route_pb2.Route) -> tuple[str, dict[str, Any], str, float]:
    return (
        route.name,
        json_format.MessageToDict(route.match),
        route.route.cluster,
        route.route.timeout.seconds + route.route.timeout.nanos / 1e9,
    )


def test_delegate_routes_replace_the_routes_naming_them() -> None:
    routes = gateway_routes(SERVICES + ROOT + PRODUCTPAGE + reviews())
    assert [summary(r) for r in routes] == [
        ("pp-v1", {"path": "/productpage/v1"}, "outbound|9080||productpage.default.svc.cluster.local", 1.0),
        ("pp", {"prefix": "/productpage"}, "outbound|9080||productpage.default.svc.cluster.local", 3.0),
        # the delegate's short host resolves in its own namespace (team), not the root's
        ("rv", {"prefix": "/reviews"}, "outbound|9080||reviews.team.svc.cluster.local", 0.0),
    ]
    path = "/apis/networking.istio.io/v1/namespaces/default/virtual-service/bookinfo"
    assert all(r.metadata.filter_metadata["istio"]["config"] == path for r in routes), "routes belong to the root"


def test_the_context_keeps_roots_merged_and_delegates_out() -> None:
    push = push_of(SERVICES + ROOT + PRODUCTPAGE + reviews())
    (bound,) = push.virtual_services
    assert bound.config.key == ROOT_KEY
    assert bound.keys == (ROOT_KEY, PRODUCTPAGE_KEY, REVIEWS_KEY)
    assert all(http.delegate is None for http in bound.config.spec.http)
    assert DELEGATE_STATUS not in push.proxy_status()


@pytest.mark.parametrize(
    ("delegates", "problem"),
    [
        (PRODUCTPAGE, "delegate virtual service team/reviews of default/bookinfo not found"),
        (
            PRODUCTPAGE + reviews(export_to='["."]'),
            "delegate virtual service team/reviews of default/bookinfo is not exported to default",
        ),
        (
            PRODUCTPAGE + reviews().replace("  exportTo:", "  hosts: [reviews]\n  exportTo:"),
            "delegate virtual service team/reviews of default/bookinfo not found: a VirtualService with hosts is a "
            "root, not a delegate",
        ),
    ],
    ids=["missing", "not exported to the root", "has hosts"],
)
def test_an_unusable_delegate_drops_only_its_routes_and_is_reported(
    delegates: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    text = SERVICES + ROOT + delegates
    with caplog.at_level(logging.WARNING, logger="pilot.push.context"):
        push = push_of(text)
        status = push.proxy_status()
    assert status[DELEGATE_STATUS] == {"default/bookinfo": {"message": problem}}
    assert problem in caplog.text
    routes = gateway_routes(text)
    assert [r.name for r in routes] == ["pp-v1", "pp"], "the productpage routes still work"
    (bound,) = [vs for vs in push.virtual_services if vs.config.key == ROOT_KEY]
    assert REVIEWS_KEY in bound.keys, "a change to the unusable delegate must reach the root"


def test_a_delegate_exported_to_every_namespace_is_visible() -> None:
    routes = gateway_routes(SERVICES + ROOT + PRODUCTPAGE + reviews(export_to='["*"]'))
    assert "rv" in [r.name for r in routes]


def test_a_conflicting_delegate_route_is_dropped_with_a_warning_naming_root_and_delegate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conflicting = PRODUCTPAGE.replace("{uri: {exact: /productpage/v1}}", "{uri: {exact: /reviews/v1}}")
    text = SERVICES + ROOT + conflicting + reviews()
    with caplog.at_level(logging.WARNING, logger="pilot.push.context"):
        status = push_of(text).proxy_status()
    message = (
        "HTTPMatchRequests conflict: root route http[0] 'pp' of default/bookinfo, delegate route http[0] 'v1' of "
        "default/productpage: the delegate route is dropped"
    )
    assert status[DELEGATE_STATUS] == {"default/bookinfo": {"message": message}}
    assert message in caplog.text
    assert [r.name for r in gateway_routes(text)] == ["pp", "rv"]


def test_delegate_names_resolve_in_the_delegates_namespace() -> None:
    """Short gateway names in matches and short mirror hosts mean what they mean where they are written."""

    def delegate(match_gateway: str) -> str:
        return f"""
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: team}}
spec:
  http:
  - match: [{{uri: {{prefix: /reviews/v1}}, gateways: [{match_gateway}]}}]
    route: [{{destination: {{host: reviews}}}}]
    mirror: {{host: reviews}}
"""

    root = ROOT.replace(
        "  - name: rv\n    match: [{uri: {prefix: /reviews}}]",
        "  - name: rv\n    match: [{uri: {prefix: /reviews}, gateways: [gw]}]",
    )
    assert "gateways: [gw]}]" in root
    # default/gw named from team is the root's gw: the merged route is served by the gateway.
    (merged,) = [r for r in gateway_routes(SERVICES + root + PRODUCTPAGE + delegate("default/gw")) if r.name == "rv"]
    assert merged.match.prefix == "/reviews/v1"
    assert [m.cluster for m in merged.route.request_mirror_policies] == [
        "outbound|9080||reviews.team.svc.cluster.local"
    ]
    # A bare gw written in team is team/gw: outside the root's gateways, a conflict.
    status = push_of(SERVICES + root + PRODUCTPAGE + delegate("gw")).proxy_status()
    assert "delegate route http[0] of team/reviews" in status[DELEGATE_STATUS]["default/bookinfo"]["message"]


def test_delegates_route_sidecars_too() -> None:
    text = (
        SERVICES
        + """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    delegate: {name: reviews, namespace: team}
  - route: [{destination: {host: productpage}}]
"""
        + reviews(route="[{destination: {host: reviews}}]\n    match: [{uri: {prefix: /reviews}}]")
    )
    sidecar = parse_proxy("sidecar~10.0.0.9~app.default~default.svc.cluster.local")
    (config,) = rds.build_routes(sidecar, push_of(text), ["9080"])
    (vhost,) = [v for v in config.virtual_hosts if v.name == "productpage.default.svc.cluster.local:9080"]
    first = vhost.routes[0]
    assert first.match.prefix == "/reviews"
    assert [(h.name, h.string_match.exact) for h in first.match.headers] == [("end-user", "jason")]
    assert first.route.cluster == "outbound|9080||reviews.team.svc.cluster.local"
    assert vhost.routes[1].route.cluster == "outbound|9080||productpage.default.svc.cluster.local"


# ----- dependencies: a delegate change reaches exactly the roots' routes and the proxies that see them -----

MESH_ROOT = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage-root, namespace: default}
spec:
  hosts: [productpage]
  http:
  - match: [{uri: {prefix: /reviews}}]
    delegate: {name: reviews, namespace: team}
  - route: [{destination: {host: productpage}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: isolated, namespace: other}
spec:
  egress: [{hosts: ["./*"]}]
"""
SIDECAR = parse_proxy("sidecar~10.0.0.9~app.default~default.svc.cluster.local")
ISOLATED = parse_proxy("sidecar~10.0.0.8~app.other~other.svc.cluster.local")
MESH_ROOT_KEY = ConfigKey("VirtualService", "default", "productpage-root")
DEPENDENCY_MESH = SERVICES + ROOT + PRODUCTPAGE + reviews() + MESH_ROOT


def _generated_routes(generator: Generator, push: PushContext) -> None:
    generator.resources(ROUTE_TYPE, ROUTER, push, ("http.8080",))
    generator.resources(ROUTE_TYPE, SIDECAR, push, ("9080",))
    generator.resources(ROUTE_TYPE, ISOLATED, push, ("9080",))


def test_a_delegate_change_clears_its_roots_routes_and_nothing_else() -> None:
    push = push_of(DEPENDENCY_MESH)
    generator = Generator(XdsCache())
    _generated_routes(generator, push)
    dependents = generator.cache.dependents(REVIEWS_KEY)
    assert ("rds-vs", MESH_ROOT_KEY, 9080, "default", ()) in dependents, "the root's encoded routes"
    route_configs = {key[1] for key in dependents if key[0] == "rds"}
    assert route_configs == {"http.8080", "9080"}, "the router's and the default namespace's route configurations"
    isolated = ("rds", "9080", scope_for(push, ISOLATED).fingerprint)
    assert isolated in generator.cache.keys() and isolated not in dependents, "a class that cannot see the root"
    # The productpage delegate belongs to the gateway root only.
    assert {key[1] for key in generator.cache.dependents(PRODUCTPAGE_KEY) if key[0] == "rds"} == {"http.8080"}
    assert generator.cache.clear([REVIEWS_KEY]) == len(dependents)


def test_proxies_whose_scope_holds_a_root_depend_on_its_delegates() -> None:
    push = push_of(DEPENDENCY_MESH)
    assert scope_for(push, ROUTER).depends_on(REVIEWS_KEY)
    assert scope_for(push, ROUTER).depends_on(PRODUCTPAGE_KEY)
    assert scope_for(push, SIDECAR).depends_on(REVIEWS_KEY)
    assert not scope_for(push, SIDECAR).depends_on(PRODUCTPAGE_KEY), "bookinfo is bound to the gateway only"
    assert not scope_for(push, ISOLATED).depends_on(REVIEWS_KEY)
    # A delegate that does not exist yet: creating it must reach the root's proxies.
    missing = push_of(SERVICES + ROOT + PRODUCTPAGE)
    assert scope_for(missing, ROUTER).depends_on(REVIEWS_KEY)


def _configs(text: str) -> list[Config]:
    result = load_text("test.yaml", text)
    assert not result.errors, [str(e) for e in result.errors]
    return list(result.configs)


def test_the_merge_is_carried_over_until_a_virtual_service_changes() -> None:
    before = PushContext.build(environment_of(_configs(SERVICES + ROOT + PRODUCTPAGE + reviews())), "1", 1)
    _ = before.virtual_services
    edited = environment_of(_configs(SERVICES + ROOT + PRODUCTPAGE + reviews(export_to='["."]')))
    unrelated = PushContext.build(edited, "2", 2, before, frozenset({"DestinationRule"}))
    assert unrelated.virtual_services is before.virtual_services, "merged again although no VirtualService changed"
    after = PushContext.build(edited, "3", 3, unrelated, frozenset({"VirtualService"}))
    assert [h.name for h in after.virtual_services[0].config.spec.http] == ["pp-v1", "pp"]
    assert DELEGATE_STATUS in after.proxy_status() and DELEGATE_STATUS not in unrelated.proxy_status()
