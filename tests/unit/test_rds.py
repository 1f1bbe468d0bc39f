"""RDS generator: VirtualService → Envoy routes for sidecars and gateways; Envoy validates the output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, json_format

from pilot.config.convert import convert_spec
from pilot.config.validation import check
from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.model.service import Port, Protocol, Resolution, Service
from pilot.push.context import PushContext
from pilot.push.offline import push_of_configs
from pilot.xds import names, rds

RouteConfiguration = route_pb2.RouteConfiguration
REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
DETAILS = "details.other.svc.cluster.local"
HTTPBIN = "httpbin.default.svc.cluster.local"
MULTI = "multi.default.svc.cluster.local"
DB = "db.default.svc.cluster.local"
SERVICES = (
    Service(REVIEWS, "default", (Port("http", 9080, Protocol.HTTP),), addresses=("10.96.0.10",)),
    Service(RATINGS, "default", (Port("http", 9080, Protocol.HTTP),), addresses=("10.96.0.11",)),
    Service(DETAILS, "other", (Port("http", 9080, Protocol.HTTP),), addresses=("10.96.0.12",)),
    Service(HTTPBIN, "default", (Port("http", 8000, Protocol.HTTP),), addresses=("10.96.0.13",)),
    Service(MULTI, "default", (Port("http", 80, Protocol.HTTP), Port("admin", 8080, Protocol.HTTP))),
    Service(DB, "default", (Port("tcp", 9080, Protocol.TCP), Port("pg", 5432, Protocol.TCP))),
)
PREVIOUS_HOSTS_TYPE = "type.googleapis.com/" + previous_hosts_pb2.PreviousHostsPredicate.DESCRIPTOR.full_name
MILLION = percent_pb2.FractionalPercent.MILLION
HUNDRED = percent_pb2.FractionalPercent.HUNDRED
SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


# ----- helpers -----


def _config(kind: str, namespace: str, name: str, spec: dict[str, Any]) -> Config:
    typed, errors = check(kind, spec, namespace)
    assert not errors, errors
    return Config(key=ConfigKey(kind, namespace, name), api_version="networking.istio.io/v1", spec=typed)


def _vs(name: str, spec: dict[str, Any], namespace: str = "default", *, validated: bool = True) -> Config:
    if validated:
        return _config("VirtualService", namespace, name, spec)
    # For inputs validation rejects but the generator still handles defensively (as Istio's does).
    typed, errors = convert_spec("VirtualService", spec)
    assert not errors, errors
    return Config(key=ConfigKey("VirtualService", namespace, name), api_version="networking.istio.io/v1", spec=typed)


def _push(configs: Iterable[Config] = (), services: Sequence[Service] = SERVICES) -> PushContext:
    return PushContext.of(configs, services, {})


def _sidecar(namespace: str = "default", labels: dict[str, str] | None = None) -> Proxy:
    return parse_proxy(
        f"sidecar~10.1.0.9~app-1.{namespace}~{namespace}.svc.cluster.local",
        {"NAMESPACE": namespace, "LABELS": labels or {"app": "app"}},
    )


def _router() -> Proxy:
    return parse_proxy(
        "router~10.1.0.8~gw-1.istio-system~istio-system.svc.cluster.local",
        {"NAMESPACE": "istio-system", "LABELS": {"istio": "ingressgateway"}},
    )


def _one(proxy: Proxy, push: PushContext, name: str) -> RouteConfiguration:
    (config,) = rds.build_routes(proxy, push, [name])
    assert config.name == name
    assert config.HasField("validate_clusters") and config.validate_clusters.value is False
    return config


def _vhosts(config: RouteConfiguration) -> dict[str, rc.VirtualHost]:
    return {vh.name: vh for vh in config.virtual_hosts}


def _routes(http: list[dict[str, Any]], *, validated: bool = True) -> list[rc.Route]:
    """The routes a sidecar gets for a VirtualService on reviews with these http entries."""
    push = _push([_vs("reviews", {"hosts": ["reviews"], "http": http}, validated=validated)])
    return list(_vhosts(_one(_sidecar(), push, "9080"))[f"{REVIEWS}:9080"].routes)


def _route(http: dict[str, Any], *, validated: bool = True) -> rc.Route:
    (route,) = _routes([http], validated=validated)
    return route


def _fault(route: rc.Route) -> fault_pb2.HTTPFault:
    fault = fault_pb2.HTTPFault()
    assert route.typed_per_filter_config[names.FAULT_FILTER].Unpack(fault)
    return fault


def _cors(route: rc.Route) -> cors_pb2.CorsPolicy:
    cors = cors_pb2.CorsPolicy()
    assert route.typed_per_filter_config[names.CORS_FILTER].Unpack(cors)
    return cors


def _header_options(options: Iterable[base_pb2.HeaderValueOption]) -> list[tuple[str, str, int]]:
    return [(o.header.key, o.header.value, o.append_action) for o in options]


TO_REVIEWS = [{"destination": {"host": "reviews"}}]


# ----- sidecar virtual hosts -----


def test_sidecar_default_virtual_hosts_domains_and_catch_all() -> None:
    config = _one(_sidecar(), _push(), "9080")
    assert [vh.name for vh in config.virtual_hosts] == [
        f"{DETAILS}:9080",
        f"{RATINGS}:9080",
        f"{REVIEWS}:9080",
        names.ALLOW_ANY_VHOST,
    ]  # sorted by name, catch-all last; db's 9080 is TCP and gets no vhost
    vhosts = _vhosts(config)
    assert list(vhosts[f"{REVIEWS}:9080"].domains) == [
        REVIEWS,
        f"{REVIEWS}:9080",
        "reviews",
        "reviews:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        "reviews.default",
        "reviews.default:9080",
        "10.96.0.10",
        "10.96.0.10:9080",
    ]
    # Another namespace's service: no single-label short name.
    assert list(vhosts[f"{DETAILS}:9080"].domains) == [
        DETAILS,
        f"{DETAILS}:9080",
        "details.other",
        "details.other:9080",
        "details.other.svc",
        "details.other.svc:9080",
        "10.96.0.12",
        "10.96.0.12:9080",
    ]
    assert vhosts[f"{REVIEWS}:9080"].include_request_attempt_count

    (route,) = vhosts[f"{REVIEWS}:9080"].routes
    assert route.name == "default"
    assert route.match.prefix == "/" and not route.match.headers
    assert route.route.cluster == f"outbound|9080||{REVIEWS}"
    assert route.route.timeout.ToSeconds() == 0 and route.route.HasField("timeout")
    assert route.route.HasField("max_grpc_timeout") and route.route.max_grpc_timeout.ToSeconds() == 0
    assert route.decorator.operation == f"{REVIEWS}:9080/*"
    retry = route.route.retry_policy
    assert retry.retry_on == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert retry.num_retries.value == 2
    assert list(retry.retriable_status_codes) == [503]
    assert retry.host_selection_retry_max_attempts == 5
    (predicate,) = retry.retry_host_predicate
    assert predicate.name == "envoy.retry_host_predicates.previous_hosts"
    assert predicate.typed_config.type_url == PREVIOUS_HOSTS_TYPE

    catch_all = config.virtual_hosts[-1]
    assert list(catch_all.domains) == ["*"]
    (passthrough,) = catch_all.routes
    assert passthrough.name == names.ALLOW_ANY_VHOST
    assert passthrough.match.prefix == "/"
    assert passthrough.route.cluster == names.PASSTHROUGH_CLUSTER
    assert passthrough.route.HasField("timeout") and passthrough.route.timeout.ToSeconds() == 0


def test_sidecar_in_other_namespace_gets_no_single_label_names() -> None:
    vhost = _vhosts(_one(_sidecar("other"), _push(), "9080"))[f"{REVIEWS}:9080"]
    assert "reviews" not in vhost.domains and "reviews:9080" not in vhost.domains
    assert "reviews.default" in vhost.domains and "reviews.default.svc:9080" in vhost.domains
    assert "details" in _vhosts(_one(_sidecar("other"), _push(), "9080"))[f"{DETAILS}:9080"].domains


def test_service_entry_hosts_and_ipv6_vip() -> None:
    external = Service("api.example.com", "default", (Port("http", 80, Protocol.HTTP),), Resolution.DNS, ("fd00::1",))
    vhost = _vhosts(_one(_sidecar(), _push(services=[*SERVICES, external]), "80"))["api.example.com:80"]
    assert list(vhost.domains) == ["api.example.com", "api.example.com:80", "[fd00::1]", "[fd00::1]:80"]


def test_port_without_http_services_has_only_the_catch_all() -> None:
    config = _one(_sidecar(), _push(), "5432")
    assert [vh.name for vh in config.virtual_hosts] == [names.ALLOW_ANY_VHOST]


def test_registry_only_sidecar_gets_block_all() -> None:
    sidecar = _config(
        "Sidecar",
        "default",
        "default",
        {"egress": [{"hosts": ["./*"]}], "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}},
    )
    config = _one(_sidecar(), _push([sidecar]), "9080")
    # ./* hides the 'other' namespace
    assert [vh.name for vh in config.virtual_hosts] == [f"{RATINGS}:9080", f"{REVIEWS}:9080", names.BLOCK_ALL_VHOST]
    (route,) = config.virtual_hosts[-1].routes
    assert route.name == names.BLOCK_ALL_VHOST
    assert route.direct_response.status == 502
    assert list(config.virtual_hosts[-1].domains) == ["*"]


def test_sidecar_egress_listener_for_port() -> None:
    sidecar = _config(
        "Sidecar",
        "default",
        "default",
        {
            "egress": [
                {"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "hosts": ["other/*"]},
                {"hosts": ["*/*"]},
            ]
        },
    )
    push = _push([sidecar])
    assert [vh.name for vh in _one(_sidecar(), push, "9080").virtual_hosts] == [f"{DETAILS}:9080", "allow_any"]
    assert [vh.name for vh in _one(_sidecar(), push, "8000").virtual_hosts] == [f"{HTTPBIN}:8000", "allow_any"]


def test_sniffed_route_name_returns_only_that_host() -> None:
    config = _one(_sidecar(), _push(), f"{REVIEWS}:9080")
    assert [vh.name for vh in config.virtual_hosts] == [f"{REVIEWS}:9080"]


def test_unknown_names_are_omitted() -> None:
    push = _push()
    assert rds.build_routes(_sidecar(), push, ["http.80", "foo", "0"]) == []
    assert rds.build_routes(_router(), push, ["9080", "http.80"]) == []  # no Gateway selects the router
    built = rds.build_routes(_sidecar(), push, ["9080", "bogus", "8000", "9080"])
    assert [c.name for c in built] == ["8000", "9080"]


# ----- VirtualService on sidecars -----


def test_virtual_service_replaces_default_route_and_keeps_domains() -> None:
    push = _push(
        [
            _vs(
                "reviews",
                {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]},
            )
        ]
    )
    vhosts = _vhosts(_one(_sidecar(), push, "9080"))
    vhost = vhosts[f"{REVIEWS}:9080"]
    assert "reviews:9080" in vhost.domains and "10.96.0.10" in vhost.domains
    (route,) = vhost.routes
    assert route.name == ""
    assert route.route.cluster == f"outbound|9080|v1|{REVIEWS}"
    assert route.match.prefix == "/"
    assert route.metadata.filter_metadata["istio"].fields["config"].string_value == (
        "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews"
    )
    assert route.decorator.operation == f"{REVIEWS}:9080/*"
    # Untouched services keep their default route.
    assert vhosts[f"{RATINGS}:9080"].routes[0].name == "default"


def test_virtual_service_in_other_namespace_resolves_short_hosts_there() -> None:
    push = _push(
        [
            _vs(
                "details",
                {"hosts": ["details"], "http": [{"route": [{"destination": {"host": "details", "subset": "v2"}}]}]},
                "other",
            )
        ]
    )
    vhost = _vhosts(_one(_sidecar(), push, "9080"))[f"{DETAILS}:9080"]
    assert vhost.routes[0].route.cluster == f"outbound|9080|v2|{DETAILS}"
    assert (
        vhost.routes[0]
        .metadata.filter_metadata["istio"]
        .fields["config"]
        .string_value.endswith("/namespaces/other/virtual-service/details")
    )


def test_match_translation() -> None:
    routes = _routes(
        [
            {
                "name": "api",
                "match": [
                    {
                        "name": "exact",
                        "uri": {"exact": "/v1/items"},
                        "headers": {
                            "x-b": {"prefix": "pre"},
                            "x-a": {"exact": "yes"},
                            "x-c": {"regex": "^v[0-9]+$"},
                            "x-any": {"regex": "*"},  # rejected by validation; still a presence match
                            "x-empty": {},
                        },
                        "withoutHeaders": {"x-b-debug": {"exact": "1"}},
                        "method": {"exact": "GET"},
                        "authority": {"prefix": "reviews"},
                        "scheme": {"exact": "https"},
                        "queryParams": {"b": {"regex": "[0-9]+"}, "a": {"exact": "1"}},
                        "ignoreUriCase": True,
                    },
                    {"uri": {"prefix": "/v2"}},
                    {"uri": {"regex": "/v[3-4]/.*"}},
                    {"uri": {"prefix": "/"}},  # catch-all: stops generation
                    {"uri": {"prefix": "/never"}},
                ],
                "route": TO_REVIEWS,
            },
            {"name": "unreachable", "route": TO_REVIEWS},
        ],
        validated=False,
    )
    assert [r.name for r in routes] == ["api.exact", "api", "api", "api"]
    first, prefix, regex, catch_all = routes
    assert first.match.path == "/v1/items"
    assert first.match.HasField("case_sensitive") and first.match.case_sensitive.value is False
    assert [(h.name, h.WhichOneof("header_match_specifier"), h.invert_match) for h in first.match.headers] == [
        ("x-a", "string_match", False),
        ("x-any", "present_match", False),
        ("x-b", "string_match", False),
        ("x-b-debug", "string_match", True),  # headers and withoutHeaders sorted together
        ("x-c", "string_match", False),
        ("x-empty", "present_match", False),
        (":method", "string_match", False),
        (":authority", "string_match", False),
        (":scheme", "string_match", False),
    ]
    headers = {h.name: h for h in first.match.headers}
    assert headers["x-a"].string_match.exact == "yes"
    assert headers["x-b"].string_match.prefix == "pre"
    assert headers["x-c"].string_match.safe_regex.regex == "^v[0-9]+$"
    assert headers["x-any"].present_match is True
    assert headers["x-b-debug"].string_match.exact == "1"
    assert headers[":method"].string_match.exact == "GET"
    assert headers[":authority"].string_match.prefix == "reviews"
    assert headers[":scheme"].string_match.exact == "https"
    assert [(q.name, q.string_match.WhichOneof("match_pattern")) for q in first.match.query_parameters] == [
        ("a", "exact"),
        ("b", "safe_regex"),
    ]
    assert first.match.query_parameters[1].string_match.safe_regex.regex == "[0-9]+"
    assert prefix.match.prefix == "/v2" and not prefix.match.HasField("case_sensitive")
    assert regex.match.safe_regex.regex == "/v[3-4]/.*"
    assert catch_all.match.prefix == "/"
    assert first.decorator.operation == f"{REVIEWS}:9080/v1/items"


def test_match_port_source_labels_and_gateways_filter_routes() -> None:
    routes = _routes(
        [
            {"name": "other-port", "match": [{"port": 8080}], "route": TO_REVIEWS},
            {"name": "this-port", "match": [{"port": 9080, "uri": {"prefix": "/p"}}], "route": TO_REVIEWS},
            {"name": "labels-no", "match": [{"sourceLabels": {"app": "nope"}}], "route": TO_REVIEWS},
            {
                "name": "labels-yes",
                "match": [{"sourceLabels": {"app": "app"}, "uri": {"prefix": "/l"}}],
                "route": TO_REVIEWS,
            },
            {"name": "ns-no", "match": [{"sourceNamespace": "other"}], "route": TO_REVIEWS},
            {"name": "gw-no", "match": [{"gateways": ["istio-system/gw"]}], "route": TO_REVIEWS},
            {"name": "gw-mesh", "match": [{"gateways": ["mesh"], "uri": {"prefix": "/m"}}], "route": TO_REVIEWS},
            {"name": "last", "route": TO_REVIEWS},
        ]
    )
    assert [r.name for r in routes] == ["this-port", "labels-yes", "gw-mesh", "last"]


def test_weighted_destinations_subsets_and_per_destination_headers() -> None:
    route = _route(
        {
            "route": [
                {
                    "destination": {"host": "reviews", "subset": "v1"},
                    "weight": 70,
                    "headers": {"request": {"set": {"x-version": "v1"}}, "response": {"remove": ["x-internal"]}},
                },
                {
                    "destination": {"host": "reviews", "subset": "v2"},
                    "weight": 30,
                    "headers": {"request": {"set": {"host": "v2.reviews"}}},
                },
                {"destination": {"host": "reviews", "subset": "v3"}, "weight": 0},
            ]
        }
    )
    assert route.route.WhichOneof("cluster_specifier") == "weighted_clusters"
    clusters = route.route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in clusters] == [
        (f"outbound|9080|v1|{REVIEWS}", 70),
        (f"outbound|9080|v2|{REVIEWS}", 30),
    ]
    assert _header_options(clusters[0].request_headers_to_add) == [("x-version", "v1", SET)]
    assert list(clusters[0].response_headers_to_remove) == ["x-internal"]
    assert not clusters[1].request_headers_to_add  # Host is not a header to add...
    assert clusters[1].host_rewrite_literal == "v2.reviews"  # ...it rewrites the authority
    assert route.decorator.operation == "reviews:9080/*"  # several clusters: VirtualService name


def test_destination_ports() -> None:
    route = _route(
        {
            "route": [
                {"destination": {"host": "httpbin"}, "weight": 25},  # only port 8000
                {"destination": {"host": "multi"}, "weight": 25},  # several ports, none is 9080
                {"destination": {"host": "multi", "port": {"number": 8080}}, "weight": 25},
                {"destination": {"host": "httpbin.default.svc.cluster.local", "subset": "a"}, "weight": 25},
            ]
        }
    )
    assert [c.name for c in route.route.weighted_clusters.clusters] == [
        f"outbound|8000||{HTTPBIN}",
        f"outbound|9080||{MULTI}",
        f"outbound|8080||{MULTI}",
        f"outbound|8000|a|{HTTPBIN}",
    ]
    single = _route({"route": [{"destination": {"host": "ratings"}}]})
    assert single.route.cluster == f"outbound|9080||{RATINGS}"


def test_timeout_and_retries() -> None:
    routes = _routes(
        [
            {
                "match": [{"uri": {"prefix": "/a"}}],
                "route": TO_REVIEWS,
                "timeout": "5s",
                "retries": {"attempts": 3, "perTryTimeout": "1.5s", "retryOn": "5xx,gateway-error,503,429"},
            },
            {"match": [{"uri": {"prefix": "/b"}}], "route": TO_REVIEWS, "retries": {"attempts": 0}},
            {"match": [{"uri": {"prefix": "/c"}}], "route": TO_REVIEWS, "retries": {"attempts": 4, "retryOn": "reset"}},
            {
                "match": [{"uri": {"prefix": "/d"}}],
                "route": TO_REVIEWS,
                "retries": {
                    "attempts": 1,
                    "retryOn": "503",
                    "retryRemoteLocalities": True,
                    "retryIgnorePreviousHosts": False,
                },
            },
        ]
    )
    a, b, c, d = routes
    assert a.route.timeout.ToMilliseconds() == 5000
    assert a.route.max_grpc_timeout.ToMilliseconds() == 5000
    retry = a.route.retry_policy
    assert retry.num_retries.value == 3
    assert retry.per_try_timeout.ToMilliseconds() == 1500
    assert retry.retry_on == "5xx,gateway-error,retriable-status-codes"
    assert list(retry.retriable_status_codes) == [503, 429]
    assert retry.host_selection_retry_max_attempts == 5
    assert [p.name for p in retry.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]

    assert not b.route.HasField("retry_policy")  # attempts 0 disables retries
    assert b.route.HasField("timeout") and b.route.timeout.ToSeconds() == 0  # no VS timeout: disabled

    assert c.route.retry_policy.retry_on == "reset"
    assert c.route.retry_policy.num_retries.value == 4
    assert not c.route.retry_policy.retriable_status_codes

    assert d.route.retry_policy.retry_on == "retriable-status-codes"
    assert list(d.route.retry_policy.retriable_status_codes) == [503]
    assert d.route.retry_policy.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert not d.route.retry_policy.retry_host_predicate


def test_fault_injection() -> None:
    routes = _routes(
        [
            {
                "match": [{"uri": {"prefix": "/a"}}],
                "route": TO_REVIEWS,
                "fault": {
                    "delay": {"fixedDelay": "7s", "percentage": {"value": 12.5}},
                    "abort": {"httpStatus": 503, "percentage": {"value": 0.5}},
                },
            },
            {
                "match": [{"uri": {"prefix": "/b"}}],
                "route": TO_REVIEWS,
                "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
            },
            {"match": [{"uri": {"prefix": "/c"}}], "route": TO_REVIEWS},
        ]
    )
    a, b, c = routes
    fault = _fault(a)
    assert fault.delay.fixed_delay.ToSeconds() == 7
    assert (fault.delay.percentage.numerator, fault.delay.percentage.denominator) == (125000, MILLION)
    assert fault.abort.http_status == 503
    assert (fault.abort.percentage.numerator, fault.abort.percentage.denominator) == (5000, MILLION)
    grpc = _fault(b)
    assert not grpc.HasField("delay")
    assert grpc.abort.grpc_status == 14
    assert (grpc.abort.percentage.numerator, grpc.abort.percentage.denominator) == (1000000, MILLION)
    assert names.FAULT_FILTER not in c.typed_per_filter_config
    assert names.FAULT_FILTER == "envoy.filters.http.fault"


def test_header_operations() -> None:
    route = _route(
        {
            "route": TO_REVIEWS,
            "headers": {
                "request": {
                    "set": {"x-b": "2", "x-a": "1", "Host": "rewritten.example.com"},
                    "add": {"x-c": "3"},
                    "remove": ["x-drop"],
                },
                "response": {"set": {"x-resp": "s"}, "add": {"x-resp-add": "a"}, "remove": ["server"]},
            },
        }
    )
    assert _header_options(route.request_headers_to_add) == [("x-a", "1", SET), ("x-b", "2", SET), ("x-c", "3", APPEND)]
    assert list(route.request_headers_to_remove) == ["x-drop"]
    assert _header_options(route.response_headers_to_add) == [("x-resp", "s", SET), ("x-resp-add", "a", APPEND)]
    assert list(route.response_headers_to_remove) == ["server"]
    assert route.route.host_rewrite_literal == "rewritten.example.com"


def test_pseudo_and_host_headers_are_never_sent_as_header_operations() -> None:
    route = _route(
        {
            "route": TO_REVIEWS,
            "headers": {
                "request": {
                    "set": {":path": "/nope"},
                    "add": {":authority": "a.example.com"},
                    "remove": [":authority", "host", "x-r"],
                }
            },
        },
        validated=False,
    )
    assert not route.request_headers_to_add
    assert list(route.request_headers_to_remove) == ["x-r"]
    assert route.route.host_rewrite_literal == "a.example.com"


def test_rewrite() -> None:
    routes = _routes(
        [
            {
                "match": [{"uri": {"prefix": "/old"}}],
                "route": TO_REVIEWS,
                "rewrite": {"uri": "/new", "authority": "new.example.com"},
            },
            {
                "match": [{"uri": {"prefix": "/re"}}],
                "route": TO_REVIEWS,
                "rewrite": {"uriRegexRewrite": {"match": "^/re/(.*)$", "rewrite": "/\\1"}},
            },
        ]
    )
    prefix, regex = routes
    assert prefix.route.prefix_rewrite == "/new"
    assert prefix.route.host_rewrite_literal == "new.example.com"
    assert not regex.route.prefix_rewrite
    assert regex.route.regex_rewrite.pattern.regex == "^/re/(.*)$"
    assert regex.route.regex_rewrite.substitution == "/\\1"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (None, rc.RedirectAction.MOVED_PERMANENTLY),
        (301, rc.RedirectAction.MOVED_PERMANENTLY),
        (302, rc.RedirectAction.FOUND),
        (303, rc.RedirectAction.SEE_OTHER),
        (307, rc.RedirectAction.TEMPORARY_REDIRECT),
        (308, rc.RedirectAction.PERMANENT_REDIRECT),
    ],
)
def test_redirect_codes(code: int | None, expected: int) -> None:
    redirect: dict[str, Any] = {"uri": "/new", "authority": "new.example.com"}
    if code is not None:
        redirect["redirectCode"] = code
    route = _route({"redirect": redirect})
    assert route.WhichOneof("action") == "redirect"
    assert route.redirect.response_code == expected
    assert route.redirect.path_redirect == "/new"
    assert route.redirect.host_redirect == "new.example.com"


def test_redirect_scheme_and_ports() -> None:
    routes = _routes(
        [
            {"match": [{"uri": {"prefix": "/a"}}], "redirect": {"scheme": "https", "port": 8443}},
            {"match": [{"uri": {"prefix": "/b"}}], "redirect": {"scheme": "https", "port": 443}},
            {"match": [{"uri": {"prefix": "/c"}}], "redirect": {"derivePort": "FROM_REQUEST_PORT"}},
            {"match": [{"uri": {"prefix": "/d"}}], "redirect": {"uri": "/x", "redirectCode": 300}},
        ]
    )
    a, b, c, d = routes
    assert (a.redirect.scheme_redirect, a.redirect.port_redirect) == ("https", 8443)
    assert (b.redirect.scheme_redirect, b.redirect.port_redirect) == ("https", 0)  # default port omitted
    assert c.redirect.port_redirect == 9080
    assert d.WhichOneof("action") is None  # unsupported code: no action, as in Istio


def test_direct_response() -> None:
    route = _route({"directResponse": {"status": 418, "body": {"string": "teapot"}}})
    assert route.WhichOneof("action") == "direct_response"
    assert route.direct_response.status == 418
    assert route.direct_response.body.inline_string == "teapot"


def test_mirrors() -> None:
    routes = _routes(
        [
            {
                "match": [{"uri": {"prefix": "/a"}}],
                "route": TO_REVIEWS,
                "mirror": {"host": "ratings", "subset": "v2"},
                "mirrorPercentage": {"value": 25.0},
            },
            {"match": [{"uri": {"prefix": "/b"}}], "route": TO_REVIEWS, "mirror": {"host": "ratings"}},
            {
                "match": [{"uri": {"prefix": "/c"}}],
                "route": TO_REVIEWS,
                "mirror": {"host": "ratings"},
                "mirrorPercentage": {"value": 0},
            },
            {
                "match": [{"uri": {"prefix": "/d"}}],
                "route": TO_REVIEWS,
                "mirrors": [
                    {"destination": {"host": "ratings"}, "percentage": {"value": 50}},
                    {"destination": {"host": "httpbin"}},
                ],
            },
        ]
    )
    a, b, c, d = routes
    (policy,) = a.route.request_mirror_policies
    assert policy.cluster == f"outbound|9080|v2|{RATINGS}"
    assert (policy.runtime_fraction.default_value.numerator, policy.runtime_fraction.default_value.denominator) == (
        250000,
        MILLION,
    )
    assert policy.HasField("trace_sampled") and policy.trace_sampled.value is False
    (policy,) = b.route.request_mirror_policies
    assert (policy.runtime_fraction.default_value.numerator, policy.runtime_fraction.default_value.denominator) == (
        100,
        HUNDRED,
    )
    assert not c.route.request_mirror_policies
    assert [(p.cluster, p.runtime_fraction.default_value.numerator) for p in d.route.request_mirror_policies] == [
        (f"outbound|9080||{RATINGS}", 500000),
        (f"outbound|8000||{HTTPBIN}", 100),
    ]


def test_cors_policy() -> None:
    routes = _routes(
        [
            {
                "match": [{"uri": {"prefix": "/a"}}],
                "route": TO_REVIEWS,
                "corsPolicy": {
                    "allowOrigins": [
                        {"exact": "https://a.example.com"},
                        {"prefix": "https://b."},
                        {"regex": ".*\\.c\\.com"},
                    ],
                    "allowMethods": ["GET", "POST"],
                    "allowHeaders": ["x-a", "x-b"],
                    "exposeHeaders": ["x-e"],
                    "maxAge": "24h",
                    "allowCredentials": True,
                },
            },
            {
                "match": [{"uri": {"prefix": "/b"}}],
                "route": TO_REVIEWS,
                "corsPolicy": {"allowOrigins": [{"exact": "*"}], "unmatchedPreflights": "IGNORE"},
            },
        ]
    )
    cors = _cors(routes[0])
    assert [m.WhichOneof("match_pattern") for m in cors.allow_origin_string_match] == ["exact", "prefix", "safe_regex"]
    assert cors.allow_origin_string_match[2].safe_regex.regex == ".*\\.c\\.com"
    assert cors.allow_methods == "GET,POST"
    assert cors.allow_headers == "x-a,x-b"
    assert cors.expose_headers == "x-e"
    assert cors.max_age == "86400"
    assert cors.allow_credentials.value is True
    assert cors.forward_not_matching_preflights.value is True
    assert (cors.filter_enabled.default_value.numerator, cors.filter_enabled.default_value.denominator) == (
        100,
        HUNDRED,
    )
    ignore = _cors(routes[1])
    assert ignore.forward_not_matching_preflights.value is False
    assert not ignore.HasField("allow_credentials")
    assert names.CORS_FILTER == "envoy.filters.http.cors"


def test_consistent_hash_from_destination_rule() -> None:
    rule = _config(
        "DestinationRule",
        "default",
        "reviews",
        {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "v2",
                    "labels": {"version": "v2"},
                    "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "c", "ttl": "10s"}}}},
                },
            ],
        },
    )
    vs = _vs(
        "reviews", {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "v2"}}]}]}
    )
    vhosts = _vhosts(_one(_sidecar(), _push([rule, vs]), "9080"))
    (route,) = vhosts[f"{REVIEWS}:9080"].routes
    (policy,) = route.route.hash_policy
    assert policy.cookie.name == "c" and policy.cookie.ttl.ToSeconds() == 10
    assert not route.route.retry_policy.retry_host_predicate  # no previous-hosts with consistent hashing
    vhosts = _vhosts(_one(_sidecar(), _push([rule]), "9080"))
    (default,) = vhosts[f"{REVIEWS}:9080"].routes
    (policy,) = default.route.hash_policy
    assert policy.header.header_name == "x-user"
    assert not default.route.retry_policy.retry_host_predicate
    assert not vhosts[f"{RATINGS}:9080"].routes[0].route.hash_policy


def test_virtual_service_only_hosts_get_vhosts_on_port_80() -> None:
    vs = _vs(
        "bookinfo",
        {"hosts": ["bookinfo.com", "reviews"], "http": [{"route": TO_REVIEWS}]},
    )
    push = _push(
        [
            vs,
            _vs(
                "ext",
                {"hosts": ["ext.example.com"], "http": [{"route": [{"destination": {"host": "ext.example.com"}}]}]},
            ),
        ]
    )
    port80 = _vhosts(_one(_sidecar(), push, "80"))
    assert list(port80["bookinfo.com:80"].domains) == ["bookinfo.com", "bookinfo.com:80"]
    assert list(port80["ext.example.com:80"].domains) == ["ext.example.com", "ext.example.com:80"]
    assert port80["ext.example.com:80"].routes[0].route.cluster == "outbound|80||ext.example.com"
    # On 9080 the VirtualService also owns a service there, so its extra host comes along; ext does not.
    port9080 = _vhosts(_one(_sidecar(), push, "9080"))
    assert "bookinfo.com:9080" in port9080 and "ext.example.com:9080" not in port9080
    assert port9080[f"{REVIEWS}:9080"].routes[0].route.cluster == f"outbound|9080||{REVIEWS}"


def test_wildcard_virtual_services_most_specific_wins() -> None:
    wide = _vs("wide", {"hosts": ["*.svc.cluster.local"], "http": [{"route": [{"destination": {"host": "ratings"}}]}]})
    narrow = _vs(
        "narrow",
        {"hosts": ["*.default.svc.cluster.local"], "http": [{"route": [{"destination": {"host": "httpbin"}}]}]},
    )
    exact = _vs(
        "zexact", {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "x"}}]}]}
    )
    vhosts = _vhosts(_one(_sidecar(), _push([wide, narrow, exact]), "9080"))
    assert vhosts[f"{REVIEWS}:9080"].routes[0].route.cluster == f"outbound|9080|x|{REVIEWS}"
    assert vhosts[f"{RATINGS}:9080"].routes[0].route.cluster == f"outbound|8000||{HTTPBIN}"
    assert vhosts[f"{DETAILS}:9080"].routes[0].route.cluster == f"outbound|9080||{RATINGS}"
    names_ = [vh.name for vh in _one(_sidecar(), _push([wide, narrow, exact]), "9080").virtual_hosts]
    assert len(names_) == len(set(names_))


def test_first_virtual_service_for_a_host_wins_and_domains_stay_unique() -> None:
    a = _vs("a", {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": "a"}}]}]})
    b = _vs(
        "b",
        {
            "hosts": ["reviews.default.svc.cluster.local"],
            "http": [{"route": [{"destination": {"host": "reviews", "subset": "b"}}]}],
        },
    )
    config = _one(_sidecar(), _push([b, a]), "9080")
    vhosts = _vhosts(config)
    assert vhosts[f"{REVIEWS}:9080"].routes[0].route.cluster == f"outbound|9080|a|{REVIEWS}"
    domains = [d for vh in config.virtual_hosts for d in vh.domains]
    assert len(domains) == len(set(domains))


def test_shared_vip_domains_go_to_the_first_service_only() -> None:
    first = Service("a.example.com", "default", (Port("http", 80, Protocol.HTTP),), Resolution.DNS, ("240.0.0.1",))
    second = Service("b.example.com", "default", (Port("http", 80, Protocol.HTTP),), Resolution.DNS, ("240.0.0.1",))
    vhosts = _vhosts(_one(_sidecar(), _push(services=[*SERVICES, second, first]), "80"))
    assert list(vhosts["a.example.com:80"].domains) == [
        "a.example.com",
        "a.example.com:80",
        "240.0.0.1",
        "240.0.0.1:80",
    ]
    assert list(vhosts["b.example.com:80"].domains) == ["b.example.com", "b.example.com:80"]


def test_virtual_service_not_exported_is_ignored() -> None:
    vs = _vs(
        "hidden",
        {
            "hosts": ["details"],
            "exportTo": ["."],
            "http": [{"route": [{"destination": {"host": "details", "subset": "v9"}}]}],
        },
        "other",
    )
    vhosts = _vhosts(_one(_sidecar(), _push([vs]), "9080"))
    assert vhosts[f"{DETAILS}:9080"].routes[0].name == "default"


def test_push_context_built_from_service_entries() -> None:
    entry = _config(
        "ServiceEntry",
        "shop",
        "payments",
        {
            "hosts": ["payments.shop.svc.cluster.local", "api.payments.example"],
            "addresses": ["240.0.0.5"],
            "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
            "resolution": "STATIC",
            "location": "MESH_INTERNAL",
            "endpoints": [{"address": "10.0.0.5"}],
        },
    )
    vs = _vs(
        "payments",
        {
            "hosts": ["api.payments.example"],
            "http": [{"route": [{"destination": {"host": "payments.shop.svc.cluster.local"}}]}],
        },
        "shop",
    )
    push = push_of_configs((entry, vs))
    config = _one(_sidecar("shop"), push, "8080")
    vhosts = _vhosts(config)
    assert [vh.name for vh in config.virtual_hosts] == [
        "api.payments.example:8080",
        "payments.shop.svc.cluster.local:8080",
        names.ALLOW_ANY_VHOST,
    ]
    # Both hosts share the VIP; the VirtualService's vhost is built first and keeps it (domains stay unique).
    assert list(vhosts["api.payments.example:8080"].domains) == [
        "api.payments.example",
        "api.payments.example:8080",
        "240.0.0.5",
        "240.0.0.5:8080",
    ]
    assert list(vhosts["payments.shop.svc.cluster.local:8080"].domains) == [
        "payments.shop.svc.cluster.local",
        "payments.shop.svc.cluster.local:8080",
        "payments",
        "payments:8080",
        "payments.shop.svc",
        "payments.shop.svc:8080",
        "payments.shop",
        "payments.shop:8080",
    ]
    assert (
        vhosts["api.payments.example:8080"].routes[0].route.cluster == "outbound|8080||payments.shop.svc.cluster.local"
    )
    assert vhosts["payments.shop.svc.cluster.local:8080"].routes[0].name == "default"


# ----- gateways -----

GATEWAY_SELECTOR = {"istio": "ingressgateway"}


def _gateway(name: str, servers: list[dict[str, Any]], namespace: str = "istio-system") -> Config:
    return _config("Gateway", namespace, name, {"selector": GATEWAY_SELECTOR, "servers": servers})


def _http_server(hosts: list[str], port: int = 80, **extra: Any) -> dict[str, Any]:
    return {"port": {"number": port, "name": f"http-{port}", "protocol": "HTTP"}, "hosts": hosts, **extra}


def test_gateway_without_virtual_services_is_a_404_blackhole() -> None:
    push = _push([_gateway("gw", [_http_server(["*"])])])
    config = _one(_router(), push, "http.80")
    (vhost,) = config.virtual_hosts
    assert vhost.name == "blackhole:80"
    assert list(vhost.domains) == ["*"]
    (route,) = vhost.routes
    assert route.match.prefix == "/"
    assert route.direct_response.status == 404
    assert rds.build_routes(_router(), push, ["http.8080"]) == []  # no server on that port
    assert rds.build_routes(_sidecar(), push, ["http.80"]) == []
    # A VirtualService not exported to the gateway's namespace does not bind either.
    hidden = _vs(
        "hidden", {"hosts": ["*"], "gateways": ["istio-system/gw"], "exportTo": ["."], "http": [{"route": TO_REVIEWS}]}
    )
    assert [
        vh.name
        for vh in _one(_router(), _push([_gateway("gw", [_http_server(["*"])]), hidden]), "http.80").virtual_hosts
    ] == ["blackhole:80"]


def test_gateway_virtual_hosts_from_bound_virtual_services() -> None:
    gateway = _gateway("gw", [_http_server(["*.example.com", "default/plain.test"])])
    vs_a = _vs(
        "a",
        {
            "hosts": ["a.example.com", "other.org"],
            "gateways": ["istio-system/gw"],
            "http": [{"match": [{"uri": {"prefix": "/api"}}], "route": [{"destination": {"host": "multi"}}]}],
        },
    )
    vs_star = _vs(
        "star",
        {"hosts": ["*"], "gateways": ["istio-system/gw"], "http": [{"route": [{"destination": {"host": "httpbin"}}]}]},
    )
    vs_other_ns = _vs(
        "plain",
        {
            "hosts": ["plain.test"],
            "gateways": ["istio-system/gw"],
            "http": [{"route": [{"destination": {"host": "details"}}]}],
        },
        "other",
    )
    mesh_only = _vs("mesh", {"hosts": ["m.example.com"], "http": [{"route": TO_REVIEWS}]})
    config = _one(_router(), _push([gateway, vs_a, vs_star, vs_other_ns, mesh_only]), "http.80")
    vhosts = _vhosts(config)
    # a.example.com from vs a; *.example.com and plain.test (namespace default) from the '*' VirtualService;
    # plain.test is limited to namespace default, so the VirtualService in 'other' does not bind it.
    assert list(vhosts) == ["*.example.com:80", "a.example.com:80", "plain.test:80"]
    assert list(vhosts["a.example.com:80"].domains) == ["a.example.com", "a.example.com:80"]
    (api,) = vhosts["a.example.com:80"].routes
    assert api.match.prefix == "/api"
    assert api.route.cluster == f"outbound|80||{MULTI}"  # the gateway port, which multi has...
    assert vhosts["*.example.com:80"].routes[0].route.cluster == f"outbound|8000||{HTTPBIN}"  # ...httpbin's only port
    assert vhosts["plain.test:80"].routes[0].route.cluster == f"outbound|8000||{HTTPBIN}"
    assert vhosts["a.example.com:80"].include_request_attempt_count


def test_gateway_merges_virtual_services_for_one_host() -> None:
    gateway = _gateway("gw", [_http_server(["shop.example.com"])])
    first = _vs(
        "a-first",
        {
            "hosts": ["shop.example.com"],
            "gateways": ["istio-system/gw"],
            "http": [{"name": "catch", "route": TO_REVIEWS}],
        },
    )
    second = _vs(
        "b-second",
        {
            "hosts": ["shop.example.com"],
            "gateways": ["istio-system/gw"],
            "http": [
                {
                    "name": "cart",
                    "match": [{"uri": {"prefix": "/cart"}}],
                    "route": [{"destination": {"host": "ratings"}}],
                }
            ],
        },
    )
    config = _one(_router(), _push([second, gateway, first]), "http.80")
    (vhost,) = config.virtual_hosts
    assert vhost.name == "shop.example.com:80"
    assert [r.name for r in vhost.routes] == ["cart", "catch"]  # catch-all routes last
    assert [
        r.metadata.filter_metadata["istio"].fields["config"].string_value.rsplit("/", 1)[1] for r in vhost.routes
    ] == [
        "b-second",
        "a-first",
    ]
    # A second server whose hosts also cover the host does not repeat the routes.
    wide_server = {"port": {"number": 80, "name": "http-wide", "protocol": "HTTP"}, "hosts": ["*.example.com"]}
    wide = _gateway("gw", [_http_server(["shop.example.com"]), wide_server])
    (vhost,) = _one(_router(), _push([second, wide, first]), "http.80").virtual_hosts
    assert [r.name for r in vhost.routes] == ["cart", "catch"]


def test_gateway_match_gateways_and_https_redirect_and_bind() -> None:
    gateway = _gateway(
        "gw",
        [
            _http_server(["*"], tls={"httpsRedirect": True}),
            _http_server(["*"], port=8080, bind="127.0.0.1"),
        ],
    )
    other = _gateway("other", [_http_server(["*"], port=81)])
    vs = _vs(
        "both",
        {
            "hosts": ["app.example.com"],
            "gateways": ["istio-system/gw", "istio-system/other"],
            "http": [
                {
                    "name": "only-other",
                    "match": [{"gateways": ["istio-system/other"], "uri": {"prefix": "/o"}}],
                    "route": TO_REVIEWS,
                },
                {
                    "name": "only-gw",
                    "match": [{"gateways": ["istio-system/gw"], "uri": {"prefix": "/g"}}],
                    "route": TO_REVIEWS,
                },
                {"name": "all", "route": [{"destination": {"host": "multi"}}]},
            ],
        },
    )
    push = _push([gateway, other, vs])
    vhosts = _vhosts(_one(_router(), push, "http.80"))
    assert vhosts["app.example.com:80"].require_tls == rc.VirtualHost.ALL
    assert vhosts["*:80"].require_tls == rc.VirtualHost.ALL  # server host without a VirtualService still redirects
    assert list(vhosts["*:80"].domains) == ["*"]
    assert [r.name for r in vhosts["app.example.com:80"].routes] == ["only-gw", "all"]
    assert [r.name for r in _one(_router(), push, "http.81").virtual_hosts[0].routes] == ["only-other", "all"]
    bound = _one(_router(), push, "http.8080.127.0.0.1")
    assert [vh.name for vh in bound.virtual_hosts] == ["app.example.com:8080"]
    assert bound.virtual_hosts[0].require_tls == rc.VirtualHost.NONE
    assert bound.virtual_hosts[0].routes[-1].route.cluster == f"outbound|8080||{MULTI}"


# ----- determinism and Envoy acceptance -----


def _everything() -> list[Config]:
    return [
        _gateway("gw", [_http_server(["*"]), _http_server(["*.example.com"], port=8080)]),
        _vs(
            "everything",
            {
                "hosts": ["reviews", "app.example.com"],
                "gateways": ["mesh", "istio-system/gw"],
                "http": [
                    {
                        "name": "full",
                        "match": [
                            {
                                "uri": {"regex": "/r/[a-z]+"},
                                "headers": {"x-a": {"exact": "1"}, "x-b": {}},
                                "withoutHeaders": {"x-c": {"prefix": "no"}},
                                "queryParams": {"q": {"exact": "1"}},
                                "ignoreUriCase": True,
                            }
                        ],
                        "route": [
                            {
                                "destination": {"host": "reviews", "subset": "v1"},
                                "weight": 60,
                                "headers": {"request": {"add": {"x-w": "1"}}},
                            },
                            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40},
                        ],
                        "timeout": "3s",
                        "retries": {"attempts": 2, "perTryTimeout": "1s", "retryOn": "5xx,503"},
                        "fault": {
                            "delay": {"fixedDelay": "1s", "percentage": {"value": 1}},
                            "abort": {"httpStatus": 500, "percentage": {"value": 2}},
                        },
                        "corsPolicy": {
                            "allowOrigins": [{"exact": "https://x"}],
                            "allowMethods": ["GET"],
                            "maxAge": "1m",
                        },
                        "headers": {
                            "request": {"set": {"x-s": "1"}, "remove": ["x-r"]},
                            "response": {"add": {"x-o": "2"}},
                        },
                        "mirror": {"host": "ratings"},
                        "mirrorPercentage": {"value": 10},
                        "rewrite": {"uri": "/x", "authority": "a.b"},
                    },
                    {
                        "name": "moved",
                        "match": [{"uri": {"exact": "/old"}}],
                        "redirect": {"uri": "/new", "redirectCode": 308, "port": 8443, "scheme": "https"},
                    },
                    {
                        "name": "teapot",
                        "match": [{"uri": {"prefix": "/tea"}}],
                        "directResponse": {"status": 418, "body": {"string": "short and stout"}},
                    },
                    {"name": "rest", "route": [{"destination": {"host": "reviews"}}]},
                ],
            },
        ),
        _vs("bookinfo", {"hosts": ["bookinfo.com"], "http": [{"route": [{"destination": {"host": "ratings"}}]}]}),
    ]


def test_output_is_deterministic() -> None:
    configs = _everything()
    for proxy, route_names in ((_sidecar(), ["9080", "80", "8000"]), (_router(), ["http.80", "http.8080"])):
        first = [c.SerializeToString() for c in rds.build_routes(proxy, _push(configs), route_names)]
        second = [
            c.SerializeToString()
            for c in rds.build_routes(proxy, _push(list(reversed(configs))), reversed(route_names))
        ]
        assert len(first) == len(route_names)
        assert first == second


def _envoy() -> str | None:
    local = Path(sys.executable).parent / "envoy"
    return str(local) if local.exists() else shutil.which("envoy")


def _http_connection_manager(index: int, config: RouteConfiguration) -> dict[str, Any]:
    """The HCM other generators build: fault, CORS, router, in that order, here with the routes inline."""
    manager = hcm_pb2.HttpConnectionManager(stat_prefix=f"l{index}", route_config=config)
    for name, message in (
        (names.FAULT_FILTER, fault_pb2.HTTPFault()),
        (names.CORS_FILTER, cors_pb2.Cors()),
        (names.ROUTER_FILTER, router_pb2.Router()),
    ):
        manager.http_filters.add(name=name).typed_config.Pack(message)
    packed = any_pb2.Any()
    packed.Pack(manager)
    return {"name": names.HCM_FILTER, "typed_config": json.loads(json_format.MessageToJson(packed))}


def _bootstrap(route_configs: list[RouteConfiguration], path: Path) -> dict[str, Any]:
    """A static bootstrap with one listener per RouteConfiguration."""
    listeners = [
        {
            "name": f"l{index}",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 20000 + index}},
            "filter_chains": [{"filters": [_http_connection_manager(index, config)]}],
        }
        for index, config in enumerate(route_configs)
    ]
    bootstrap = {"node": {"id": "test", "cluster": "test"}, "static_resources": {"listeners": listeners}}
    path.write_text(json.dumps(bootstrap))
    return bootstrap


def _validate(envoy: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "-l", "error"], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(_envoy() is None, reason="envoy binary not found")
def test_envoy_accepts_generated_routes(tmp_path: Path) -> None:
    envoy = _envoy()
    assert envoy is not None
    push = _push(_everything())
    configs = rds.build_routes(_sidecar(), push, ["9080", "80", "8000"]) + rds.build_routes(
        _router(), push, ["http.80", "http.8080"]
    )
    assert len(configs) == 5
    path = tmp_path / "bootstrap.json"
    bootstrap = _bootstrap(configs, path)
    result = _validate(envoy, path)
    assert result.returncode == 0, result.stdout + result.stderr

    # The check has teeth: Envoy rejects a domain used by two virtual hosts.
    (chain,) = bootstrap["static_resources"]["listeners"][0]["filter_chains"]
    route_config = chain["filters"][0]["typed_config"]["routeConfig"]
    route_config["virtualHosts"][1]["domains"].append(route_config["virtualHosts"][0]["domains"][0])
    path.write_text(json.dumps(bootstrap))
    assert _validate(envoy, path).returncode != 0
