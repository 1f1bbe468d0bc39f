"""Semantic validation of typed Istio networking specs (pilot.config.validation), with Istio's wording."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pilot.api.istio.networking import v1alpha3 as nw
from pilot.config.convert import FieldError, convert_spec
from pilot.config.validation import check, re2_error, validate_spec, validate_spec_full

RE2_HINT = "; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"


def _typed(kind: str, spec: dict[str, Any]) -> Any:
    message, errors = convert_spec(kind, spec)
    assert errors == [], errors
    return message


def errors(kind: str, spec: dict[str, Any], namespace: str = "default") -> list[str]:
    return [str(e) for e in validate_spec(kind, _typed(kind, spec), namespace)]


def warnings(kind: str, spec: dict[str, Any], namespace: str = "default") -> list[str]:
    return [str(w) for w in validate_spec_full(kind, _typed(kind, spec), namespace)[1]]


def vs(**http: Any) -> dict[str, Any]:
    """A valid VirtualService with one HTTP route, updated with ``http``."""
    route: dict[str, Any] = {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
    route.update(http)
    return {"hosts": ["reviews"], "http": [route]}


def with_(spec: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out.update(fields)
    return out


# --- the API ---------------------------------------------------------------------------------------------------


def test_valid_specs_have_no_errors() -> None:
    assert errors("VirtualService", vs()) == []
    assert errors("DestinationRule", DR) == []
    assert errors("Gateway", GW) == []
    assert errors("ServiceEntry", SE) == []
    assert errors("WorkloadEntry", {"address": "10.0.0.1", "ports": {"http": 8080}, "labels": {"app": "a"}}) == []
    assert errors("Sidecar", SIDECAR) == []


def test_check_converts_then_validates() -> None:
    message, errs = check("VirtualService", vs(), "default")
    assert errs == []
    assert isinstance(message, nw.VirtualService)
    message, errs = check("VirtualService", {"hosts": ["a"], "htp": []}, "default")
    assert message is None
    assert errs == [FieldError("spec.htp", 'unknown field "htp"')]
    message, errs = check("VirtualService", vs(timeout="0s"), "default")
    assert message is None
    assert errs == [FieldError("spec.http[0].timeout", "duration must be greater than 1ms")]


def test_wrong_message_type_for_kind() -> None:
    assert validate_spec("Gateway", nw.VirtualService(), "default") == [
        FieldError("spec", "expected a Gateway message, got VirtualService")
    ]


# --- VirtualService ----------------------------------------------------------------------------------------------


def test_vs_total_weight_zero() -> None:
    spec = vs(route=[{"destination": {"host": "a"}, "weight": 0}, {"destination": {"host": "b"}, "weight": 0}])
    assert errors("VirtualService", spec) == ["spec.http[0].route: total destination weight = 0"]


def test_vs_negative_weight() -> None:
    spec = vs(route=[{"destination": {"host": "a"}, "weight": 101}, {"destination": {"host": "b"}, "weight": -1}])
    assert errors("VirtualService", spec) == ["spec.http[0].route[1].weight: weight -1 < 0"]


def test_vs_route_and_redirect() -> None:
    assert errors("VirtualService", vs(redirect={"uri": "/x"})) == [
        "spec.http[0]: HTTP route cannot contain both route and redirect"
    ]


def test_vs_route_redirect_or_direct_response_required() -> None:
    spec = {"hosts": ["reviews"], "http": [{"match": [{"uri": {"prefix": "/"}}]}]}
    assert errors("VirtualService", spec) == ["spec.http[0]: HTTP route, redirect or direct_response is required"]


def test_vs_direct_response_conflicts() -> None:
    spec = vs(directResponse={"status": 503}, fault={"abort": {"httpStatus": 500}})
    assert errors("VirtualService", spec) == [
        "spec.http[0]: HTTP route cannot contain both route and direct_response",
        "spec.http[0]: HTTP route cannot contain both fault and direct_response",
    ]


def test_vs_redirect_and_rewrite() -> None:
    spec = {"hosts": ["a"], "http": [{"redirect": {"authority": "b"}, "rewrite": {"uri": "/c"}}]}
    assert errors("VirtualService", spec) == ["spec.http[0]: HTTP route rule cannot contain both rewrite and redirect"]


def test_vs_fault_needs_abort_or_delay() -> None:
    assert errors("VirtualService", vs(fault={})) == [
        "spec.http[0].fault: HTTP fault injection must have an abort and/or a delay"
    ]


def test_vs_fault_percentage_and_status() -> None:
    spec = vs(
        fault={
            "abort": {"httpStatus": 700, "percentage": {"value": 150}},
            "delay": {"fixedDelay": "0.5ms", "percentage": {"value": -1}},
        }
    )
    assert errors("VirtualService", spec) == [
        "spec.http[0].fault.abort.percentage: percentage 150 is neither 0.0, nor in range [0.0001, 100.0]",
        "spec.http[0].fault.abort.httpStatus: HTTP status 700 is not in range 200-599",
        "spec.http[0].fault.delay.percentage: percentage -1 is neither 0.0, nor in range [0.0001, 100.0]",
        "spec.http[0].fault.delay.fixedDelay: duration must be greater than 1ms",
    ]


def test_vs_fault_grpc_status() -> None:
    assert errors("VirtualService", vs(fault={"abort": {"grpcStatus": "UNAVAILABLE"}})) == []
    assert errors("VirtualService", vs(fault={"abort": {"grpcStatus": "NOPE"}})) == [
        'spec.http[0].fault.abort.grpcStatus: gRPC status "NOPE" is not supported. See '
        "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example "
        "'NOT_FOUND'"
    ]


def test_vs_bookinfo_fault_status_555_is_accepted() -> None:
    assert errors("VirtualService", vs(fault={"abort": {"httpStatus": 555, "percentage": {"value": 100}}})) == []


def test_vs_retries() -> None:
    assert errors("VirtualService", vs(retries={"attempts": -1})) == [
        "spec.http[0].retries.attempts: attempts cannot be negative"
    ]
    assert errors("VirtualService", vs(retries={"attempts": 0, "perTryTimeout": "1s"})) == [
        "spec.http[0].retries: http retry policy configured when attempts are set to 0 (disabled)"
    ]
    assert errors("VirtualService", vs(retries={"attempts": 2, "retryOn": "5xx,foo,503,retriable-status-codes"})) == [
        'spec.http[0].retries.retryOn: "foo" is not a valid retryOn policy'
    ]
    assert errors("VirtualService", vs(retries={"attempts": 2, "retryOn": "5xx, reset"})) == [
        'spec.http[0].retries.retryOn: " reset" is not a valid retryOn policy'
    ]
    assert errors("VirtualService", vs(retries={"attempts": 2, "backoff": "1.5ms", "perTryTimeout": "2s"})) == [
        "spec.http[0].retries.backoff: only durations to ms precision are supported"
    ]


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        ("0.5ms", "duration must be greater than 1ms"),
        ("0s", "duration must be greater than 1ms"),
        ("-1s", "duration must be greater than 1ms"),
        ("1.0005s", "only durations to ms precision are supported"),
    ],
)
def test_vs_timeout(timeout: str, message: str) -> None:
    assert errors("VirtualService", vs(timeout=timeout)) == [f"spec.http[0].timeout: {message}"]


@pytest.mark.parametrize("timeout", ["1ms", "10s", "1.5s", "1m", "1h"])
def test_vs_timeout_ok(timeout: str) -> None:
    assert errors("VirtualService", vs(timeout=timeout)) == []


def test_vs_regex_lookahead_is_rejected() -> None:
    spec = vs(match=[{"uri": {"regex": "^/api(?=/v1)"}}])
    assert errors("VirtualService", spec) == [
        'spec.http[0].match[0].uri.regex: "uri": error parsing regexp: invalid or unsupported Perl syntax: `(?=`'
        + RE2_HINT
    ]


def test_vs_regex_backreference_in_header() -> None:
    spec = vs(match=[{"headers": {"x-a": {"regex": "(a)\\1"}}}])
    assert errors("VirtualService", spec) == [
        'spec.http[0].match[0].headers[x-a].regex: "headers": error parsing regexp: invalid escape sequence: `\\1`'
        + RE2_HINT
    ]


def test_vs_regex_too_long() -> None:
    spec = vs(match=[{"queryParams": {"q": {"regex": "a" * 1025}}}])
    assert errors("VirtualService", spec) == [
        'spec.http[0].match[0].queryParams[q].regex: "queryParams": regex is too large, max length allowed is 1024'
    ]


def test_vs_empty_prefix_and_regex() -> None:
    spec = vs(match=[{"uri": {"prefix": ""}, "method": {"prefix": ""}, "authority": {"regex": ""}}])
    assert errors("VirtualService", spec) == [
        'spec.http[0].match[0].method.prefix: "method": prefix string match should not be empty',
        'spec.http[0].match[0].authority.regex: "authority": regex string match should not be empty',
    ]


def test_vs_without_headers_star_is_presence_not_regex() -> None:
    assert errors("VirtualService", vs(match=[{"withoutHeaders": {"x-a": {"regex": "*"}}}])) == []
    assert errors("VirtualService", vs(match=[{"headers": {"x-a": {"regex": "*"}}}])) == [
        'spec.http[0].match[0].headers[x-a].regex: "headers": error parsing regexp: '
        "missing argument to repetition operator: `*`" + RE2_HINT
    ]


def test_vs_match_fields() -> None:
    spec = vs(
        match=[
            {
                "port": 70000,
                "sourceLabels": {"app": "a b"},
                "sourceNamespace": "Bad_NS",
                "headers": {"bad header": {"exact": "x"}},
                "gateways": ["ns/Bad_Gw"],
            }
        ]
    )
    assert errors("VirtualService", spec) == [
        "spec.http[0].match[0].headers[bad header]: header name bad header is not a valid header name",
        "spec.http[0].match[0].port: port number 70000 must be in the range 1..65535",
        'spec.http[0].match[0].sourceLabels[app]: invalid tag value: "a b"',
        'spec.http[0].match[0].gateways[0]: invalid value for gateway name: "Bad_Gw"',
        "spec.http[0].match[0].sourceNamespace: sourceNamespace match Bad_NS is invalid",
    ]


def test_vs_hosts() -> None:
    assert errors("VirtualService", with_(vs(), hosts=["-bad-"])) == [
        'spec.hosts[0]: domain name "-bad-" invalid (label "-bad-" invalid)'
    ]
    assert errors("VirtualService", with_(vs(), hosts=["*"])) == [
        "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"
    ]
    assert errors("VirtualService", with_(vs(), hosts=["*"], gateways=["my-gateway"])) == []
    assert errors("VirtualService", with_(vs(), hosts=["*.foo.com", "a.foo.com"])) == [
        "spec.hosts[1]: duplicate hosts in virtual service: *.foo.com & a.foo.com"
    ]
    assert errors("VirtualService", with_(vs(), hosts=["reviews", "10.0.0.1", "reviews.prod.svc.cluster.local"])) == []


def test_vs_needs_a_route_kind() -> None:
    assert errors("VirtualService", {"hosts": ["a"]}) == ["spec: http, tcp or tls must be provided in virtual service"]


def test_vs_delegate_rules() -> None:
    spec = {"gateways": ["gw"], "tcp": [{"route": [{"destination": {"host": "a"}}]}], "http": vs()["http"]}
    assert errors("VirtualService", spec) == [
        "spec.gateways: delegate virtual service must have no gateways specified",
        "spec.tcp: delegate virtual service must have no tcp route specified",
    ]
    delegate = {"http": [{"delegate": {"name": "x"}, "route": [{"destination": {"host": "a"}}]}]}
    assert errors("VirtualService", delegate) == ["spec.http[0].delegate: delegate HTTP route cannot contain delegate"]
    root = {"hosts": ["a.com"], "http": [{"name": "r", "delegate": {"name": "x"}, "redirect": {"uri": "/"}}]}
    assert errors("VirtualService", root) == ["spec.http[0]: root HTTP route r must not specify redirect"]


def test_vs_gateway_names() -> None:
    assert errors("VirtualService", with_(vs(), gateways=["istio-system/", "Bad_NS/gw", "-x-"])) == [
        "spec.gateways[0]: config namespace and gateway name cannot be empty",
        'spec.gateways[0]: invalid value for gateway name: ""',
        'spec.gateways[1]: invalid value for namespace: "Bad_NS"',
        'spec.gateways[2]: domain name "-x-" invalid (label "-x-" invalid)',
    ]
    assert warnings("VirtualService", with_(vs(), gateways=["gw.istio-system"])) == [
        'spec.gateways[0]: using legacy gatewayName format "gw.istio-system"; prefer the <namespace>/<name> format: '
        '"istio-system/gw"'
    ]


def test_vs_export_to() -> None:
    assert errors("VirtualService", with_(vs(), exportTo=["default", ".", "Bad_x", "~"]), "default") == [
        "spec.exportTo[1]: duplicate entries in exportTo: . and current namespace default",
        "spec.exportTo[2]: only .,*, or a valid DNS 1123 label is allowed as exportTo entry",
        "spec.exportTo[3]: exportTo ~ (none) is not allowed for Istio configuration objects",
    ]
    assert errors("VirtualService", with_(vs(), exportTo=["*", "ns1"])) == [
        "spec.exportTo: cannot have both public (*) and non-public exportTo values for a resource"
    ]


def test_vs_destination() -> None:
    spec = vs(route=[{"destination": {"host": "*", "subset": "V_1", "port": {"number": 0}}}])
    assert errors("VirtualService", spec) == [
        "spec.http[0].route[0].destination.host: invalid destination host *",
        "spec.http[0].route[0].destination.subset: subset name is invalid: V_1",
        "spec.http[0].route[0].destination.port.number: port number 0 must be in the range 1..65535",
    ]
    assert errors("VirtualService", vs(route=[{"weight": 100}])) == [
        "spec.http[0].route[0].destination: destination is required",
    ]


def test_vs_mirrors() -> None:
    spec = vs(mirror={"host": "m"}, mirrors=[{"destination": {"host": "m2"}, "percentage": {"value": 120}}])
    assert errors("VirtualService", spec) == [
        "spec.http[0]: HTTP route cannot contain both mirror and mirrors",
        "spec.http[0].mirrors[0].percentage: mirror percentage must have a max value of 100 (it has 120.000000)",
    ]
    assert errors("VirtualService", vs(mirrorPercentage={"value": 101})) == [
        "spec.http[0].mirrorPercentage: mirror_percentage must have a max value of 100 (it has 101.000000)"
    ]
    assert errors("VirtualService", vs(mirrorPercent=150)) == [
        "spec.http[0].mirrorPercent: mirror_percent must have a max value of 100 (it has 150)"
    ]


def test_vs_redirect_rules() -> None:
    def redirect(**fields: Any) -> dict[str, Any]:
        return {"hosts": ["a"], "http": [{"redirect": fields}]}

    assert errors("VirtualService", redirect()) == [
        "spec.http[0].redirect: redirect must specify URI, authority, scheme, or port"
    ]
    assert errors("VirtualService", redirect(uri="/x", redirectCode=200)) == [
        "spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx"
    ]
    assert errors("VirtualService", redirect(scheme="ftp")) == [
        'spec.http[0].redirect.scheme: invalid redirect scheme, must be "http" or "https"'
    ]
    assert errors("VirtualService", redirect(derivePort="FROM_REQUEST_PORT")) == []
    assert errors("VirtualService", redirect(port=70000)) == [
        "spec.http[0].redirect.port: port number 70000 must be in the range 1..65535"
    ]


def test_vs_rewrite_rules() -> None:
    assert errors("VirtualService", vs(rewrite={"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}})) == [
        "spec.http[0].rewrite: rewrite may only contain one of URI or UriRegexRewrite"
    ]
    assert errors("VirtualService", vs(rewrite={})) == [
        "spec.http[0].rewrite: rewrite must specify at least one of URI, UriRegexRewrite, or authority. "
        "Only one of URI or UriRegexRewrite may be specified"
    ]
    assert errors("VirtualService", vs(rewrite={"uriRegexRewrite": {"match": "(?!x)", "rewrite": "/"}})) == [
        'spec.http[0].rewrite.uriRegexRewrite.match: "HTTPRewrite.UriRegexRewrite.Match": error parsing regexp: '
        "invalid or unsupported Perl syntax: `(?!`" + RE2_HINT
    ]
    spec = vs(rewrite={"authority": "a"}, headers={"request": {"set": {"host": "b"}}})
    assert errors("VirtualService", spec) == [
        'spec.http[0].headers.request.set[host]: authority header cannot be set multiple times: have "a", '
        'attempting to set "b"'
    ]


def test_vs_header_operations() -> None:
    spec = vs(
        headers={
            "request": {"set": {":path": "/x", "x-ok": "%HOSTNAME%"}, "add": {"x-bad": "abc%123"}},
            "response": {"set": {"Host": "h"}, "remove": [""]},
        }
    )
    assert errors("VirtualService", spec) == [
        "spec.http[0].headers.request.add[x-bad]: header value configuration: invalid header configuration. "
        "Un-terminated variable expression 'abc%123'",
        'spec.http[0].headers.request.set[:path]: invalid header ":path": header cannot have ":" prefix',
        'spec.http[0].headers.response.set[Host]: invalid header "Host": cannot set Host header',
        "spec.http[0].headers.response.remove[0]: header name cannot be empty",
    ]
    ok = vs(headers={"request": {"set": {"x-a": "100%%", "x-b": '%REQ(["x-c"])%', "x-d": "%START_TIME%"}}})
    assert errors("VirtualService", ok) == []


def test_vs_cors() -> None:
    spec = vs(
        corsPolicy={
            "allowOrigins": [{"exact": ""}, {"regex": "(?<=a)b"}, {"prefix": "https://"}],
            "allowMethods": ["GET", "FETCH", "*"],
            "allowHeaders": ["*", "x y"],
            "maxAge": "1.5s",
        }
    )
    assert errors("VirtualService", spec) == [
        "spec.http[0].corsPolicy.allowOrigins[0]: '' is not a valid match type for CORS allow origins",
        'spec.http[0].corsPolicy.allowOrigins[1].regex: "corsPolicy.allowOrigins": error parsing regexp: '
        "invalid or unsupported Perl syntax: `(?<`" + RE2_HINT,
        'spec.http[0].corsPolicy.allowMethods[1]: "FETCH" is not a supported HTTP method',
        "spec.http[0].corsPolicy.allowHeaders[1]: header name x y is not a valid header name",
        "spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision",
    ]


def test_vs_jwt_claim_routing_needs_a_gateway() -> None:
    spec = vs(match=[{"headers": {"@request.auth.claims.group": {"exact": "admin"}}}])
    assert errors("VirtualService", spec) == [
        "spec.http[0].match[0].headers[@request.auth.claims.group]: JWT claim based routing "
        "(key: @request.auth.claims.group) is only supported for gateway, found no gateways: []"
    ]
    assert errors("VirtualService", with_(spec, gateways=["istio-system/gw"])) == []


def test_vs_tls_routes() -> None:
    spec = {
        "hosts": ["*.bookinfo.com"],
        "gateways": ["gw"],
        "tls": [
            {"match": [{"port": 443, "sniHosts": ["login.bookinfo.com"]}], "route": [{"destination": {"host": "a"}}]},
            {"match": [{"sniHosts": ["other.com"], "destinationSubnets": ["10.0.0.0/33"]}]},
            {"route": [{"destination": {"host": "a"}}]},
        ],
    }
    assert errors("VirtualService", spec) == [
        'spec.tls[1].match[0].sniHosts[0]: SNI host "other.com" is not a compatible subset of any of the virtual '
        "service hosts: [*.bookinfo.com]",
        "spec.tls[1].match[0].destinationSubnets[0]: 10.0.0.0/33 is not a valid CIDR block",
        "spec.tls[1].route: TLS route is required",
        "spec.tls[2].match: TLS route must have at least one match condition",
    ]


def test_vs_tcp_routes() -> None:
    spec = {"hosts": ["mongo"], "tcp": [{"match": [{"port": 27017, "destinationSubnets": ["x"]}]}]}
    assert errors("VirtualService", spec) == [
        "spec.tcp[0].match[0].destinationSubnets[0]: x is not a valid IP",
        "spec.tcp[0].route: TCP route is required",
    ]


def test_vs_unreachable_rule_warnings() -> None:
    spec = {
        "hosts": ["a"],
        "http": [
            {"match": [{"uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "a"}}]},
            {"match": [{"name": "dup", "uri": {"prefix": "/a"}}], "route": [{"destination": {"host": "b"}}]},
            {"route": [{"destination": {"host": "c"}}]},
            {"name": "late", "route": [{"destination": {"host": "d"}}]},
        ],
    }
    assert errors("VirtualService", spec) == []
    assert warnings("VirtualService", spec) == [
        'spec.http[1].match[0]: virtualService rule #1 match "dup" is not used '
        "(duplicate/overlapping match in rule #0)",
        "spec.http[1]: virtualService rule #1 not used (all matches used by prior rules)",
        'spec.http[3]: virtualService rule "late" not used (only the last rule can have no matches)',
    ]


# --- DestinationRule -------------------------------------------------------------------------------------------------

DR: dict[str, Any] = {
    "host": "reviews",
    "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
    "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
}


def dr_policy(**policy: Any) -> dict[str, Any]:
    return {"host": "reviews", "trafficPolicy": policy}


def test_dr_duplicate_and_invalid_subsets() -> None:
    spec = with_(DR, subsets=[{"name": "v1"}, {"name": "v1"}, {"name": "V_2"}, {"name": ""}])
    assert errors("DestinationRule", spec) == [
        "spec.subsets[1].name: duplicate subset names: v1",
        "spec.subsets[2].name: subset name is invalid: V_2",
        "spec.subsets[3].name: subset name cannot be empty",
    ]


def test_dr_host() -> None:
    assert errors("DestinationRule", with_(DR, host="")) == ["spec.host: empty domain name not allowed"]
    assert errors("DestinationRule", with_(DR, host="*.foo.com")) == []
    assert errors("DestinationRule", with_(DR, host="a.1")) == [
        'spec.host: domain name "1" invalid (top level domain "1" cannot be all-numeric)'
    ]


def test_dr_empty_policies() -> None:
    assert errors("DestinationRule", {"host": "a", "trafficPolicy": {}}) == [
        "spec.trafficPolicy: traffic policy must have at least one field"
    ]
    assert errors("DestinationRule", dr_policy(portLevelSettings=[{"port": {"number": 80}}, {"tls": {}}])) == [
        "spec.trafficPolicy.portLevelSettings[0]: port traffic policy must have at least one field",
        "spec.trafficPolicy.portLevelSettings[1].port: portTrafficPolicy must have valid port",
    ]
    assert errors("DestinationRule", dr_policy(connectionPool={})) == [
        "spec.trafficPolicy.connectionPool: connection pool must have at least one field"
    ]


def test_dr_load_balancer() -> None:
    spec = dr_policy(loadBalancer={"consistentHash": {"minimumRingSize": 10, "ringHash": {"minimumRingSize": 10}}})
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.loadBalancer.consistentHash: only one of MinimumRingSize or Maglev/Ringhash can be "
        "specified"
    ]
    spec = dr_policy(loadBalancer={"consistentHash": {"maglev": {"tableSize": 100}}})
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be a prime number for maglev"
    ]
    assert errors("DestinationRule", dr_policy(loadBalancer={"consistentHash": {"maglev": {"tableSize": 65537}}})) == []
    spec = dr_policy(loadBalancer={"consistentHash": {"httpCookie": {"ttl": "0s"}}})
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: name required for HttpCookie"
    ]
    spec = dr_policy(loadBalancer={"simple": "ROUND_ROBIN", "warmup": {"aggression": 0.5, "minimumPercent": 150}})
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.loadBalancer.warmup.duration: duration is required",
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent: minimumPercent value should be less than or equal "
        "to 100",
        "spec.trafficPolicy.loadBalancer.warmup.aggression: aggression should be greater than or equal to 1",
    ]


def test_dr_connection_pool() -> None:
    spec = dr_policy(
        connectionPool={
            "tcp": {"maxConnections": -1, "connectTimeout": "0.1ms", "idleTimeout": "0s"},
            "http": {"http2MaxRequests": -5, "h2UpgradePolicy": "UPGRADE", "useClientProtocol": True},
        }
    )
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.connectionPool.http.http2MaxRequests: http2 max requests must be non-negative",
        "spec.trafficPolicy.connectionPool.http.useClientProtocol: use client protocol must not be true when "
        "H2UpgradePolicy is UPGRADE",
        "spec.trafficPolicy.connectionPool.tcp.maxConnections: max connections must be non-negative",
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration must be greater than 1ms",
    ]


def test_dr_outlier_detection() -> None:
    spec = dr_policy(
        outlierDetection={"maxEjectionPercent": 150, "consecutiveLocalOriginFailures": 3, "interval": "1.5ms"}
    )
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: outlier detection consecutive local "
        "origin failures is specified, but split external local origin errors is set to false",
        "spec.trafficPolicy.outlierDetection.interval: only durations to ms precision are supported",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 150 is not in range 0..100",
    ]
    assert warnings("DestinationRule", dr_policy(outlierDetection={"consecutiveErrors": 5})) == [
        "spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive errors is deprecated, "
        "use consecutiveGatewayErrors or consecutive5xxErrors instead"
    ]


def test_dr_client_tls() -> None:
    assert errors("DestinationRule", dr_policy(tls={"mode": "MUTUAL"})) == [
        "spec.trafficPolicy.tls.clientCertificate: client certificate required for mutual tls",
        "spec.trafficPolicy.tls.privateKey: private key required for mutual tls",
    ]
    assert errors("DestinationRule", dr_policy(tls={"mode": "MUTUAL", "credentialName": "c"})) == []
    assert errors(
        "DestinationRule", dr_policy(tls={"mode": "SIMPLE", "credentialName": "c", "caCertificates": "x"})
    ) == [
        "spec.trafficPolicy.tls: cannot specify client certificates or CA certificate or CA CRL If credentialName "
        "is set"
    ]
    spec = dr_policy(tls={"mode": "SIMPLE", "insecureSkipVerify": True, "subjectAltNames": ["a"]})
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.tls: cannot specify CaCertificates or CredentialName or SubjectAltNames when "
        "InsecureSkipVerify is set true"
    ]


def test_dr_workload_selector_and_export_to() -> None:
    spec = with_(DR, workloadSelector={"matchLabels": {"app": "a"}}, exportTo=["*"])
    assert errors("DestinationRule", spec, "ns1") == [
        "spec.exportTo: destination rule with workload selector cannot have exportTo beyond current namespace"
    ]
    assert errors("DestinationRule", with_(spec, exportTo=["."]), "ns1") == []
    spec = with_(DR, workloadSelector={"matchLabels": {"app": "a*"}})
    assert errors("DestinationRule", spec) == [
        'spec.workloadSelector.matchLabels[app]: wildcard is not supported in selector: "app=a*"'
    ]


def test_dr_locality_lb() -> None:
    distribute = [{"from": "us-east/*", "to": {"us-west/*": 60, "eu/*": 30}}]
    spec = dr_policy(loadBalancer={"localityLbSetting": {"distribute": distribute}})
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: total locality weight 90 != 100"
    ]
    failover = [{"from": "us-east", "to": "us-east"}]
    spec = dr_policy(loadBalancer={"localityLbSetting": {"failover": failover}}, outlierDetection={"interval": "1s"})
    assert errors("DestinationRule", spec) == [
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: locality lb failover settings must specify "
        "different regions"
    ]


def test_dr_tunnel() -> None:
    spec = dr_policy(tunnel={"protocol": "GET", "targetHost": "10.0.0.1", "targetPort": 0})
    assert errors("DestinationRule", spec) == [
        'spec.trafficPolicy.tunnel.protocol: tunnel protocol must be "CONNECT" or "POST"',
        "spec.trafficPolicy.tunnel.targetPort: tunnel target port is invalid: port number 0 must be in the range "
        "1..65535",
    ]
    assert errors("DestinationRule", dr_policy(tunnel={"targetHost": "a.b", "targetPort": 80}, proxyProtocol={})) == [
        "spec.trafficPolicy: tunnel and proxyProtocol must not be set together"
    ]


def test_dr_subset_policy_is_validated() -> None:
    spec = with_(DR, subsets=[{"name": "v1", "trafficPolicy": {"outlierDetection": {"minHealthPercent": -1}}}])
    assert errors("DestinationRule", spec) == [
        "spec.subsets[0].trafficPolicy.outlierDetection.minHealthPercent: percentage -1 is not in range 0..100"
    ]


# --- Gateway --------------------------------------------------------------------------------------------------------

GW: dict[str, Any] = {
    "selector": {"istio": "ingressgateway"},
    "servers": [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
        {
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
            "hosts": ["ns1/bookinfo.com"],
            "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-cert"},
        },
    ],
}


def server(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["a.com"]}
    base.update(fields)
    return {"servers": [base]}


def test_gw_servers_required() -> None:
    assert errors("Gateway", {"selector": {"istio": "x"}}) == ["spec.servers: gateway must have at least one server"]


def test_gw_server_hosts_and_port() -> None:
    assert errors("Gateway", server(hosts=[])) == [
        "spec.servers[0].hosts: server config must contain at least one host"
    ]
    assert errors("Gateway", {"servers": [{"hosts": ["a.com"]}]}) == ["spec.servers[0].port: port is required"]
    assert errors("Gateway", server(port={"number": 80, "protocol": "HTTP"})) == [
        'spec.servers[0].port.name: port name must be set: number:80 protocol:"HTTP"'
    ]
    assert errors("Gateway", server(port={"number": 0, "name": "p", "protocol": "FTP"})) == [
        'spec.servers[0].port.protocol: invalid protocol "FTP", supported protocols are HTTP, HTTP2, GRPC, '
        "GRPC-WEB, MONGO, REDIS, MYSQL, TCP",
        "spec.servers[0].port.number: port number 0 must be in the range 1..65535",
    ]


def test_gw_server_host_forms() -> None:
    assert errors("Gateway", server(hosts=["foo", "Bad_NS/a.com", "*/foo*.com", "10.0.0.1", "./*"])) == [
        "spec.servers[0].hosts[0]: short names (non FQDN) are not allowed",
        'spec.servers[0].hosts[1]: invalid namespace value "Bad_NS" in gateway',
        'spec.servers[0].hosts[2]: domain name "foo*.com" invalid (label "foo*" invalid)',
        'spec.servers[0].hosts[2]: partial wildcard "foo*.com" not allowed',
    ]


def test_gw_duplicate_port_names() -> None:
    spec = {"servers": [server()["servers"][0], server(hosts=["b.com"])["servers"][0]]}
    assert errors("Gateway", spec) == [
        "spec.servers[1].port.name: port names in servers must be unique: duplicate name http"
    ]


def test_gw_tls() -> None:
    https = {"number": 443, "name": "https", "protocol": "HTTPS"}
    assert errors("Gateway", server(port=https)) == [
        "spec.servers[0]: server must have TLS settings for HTTPS/TLS protocols"
    ]
    assert errors("Gateway", server(port=https, tls={"mode": "SIMPLE"})) == [
        "spec.servers[0].tls.serverCertificate: SIMPLE TLS requires a server certificate",
        "spec.servers[0].tls.privateKey: SIMPLE TLS requires a private key",
    ]
    assert errors(
        "Gateway", server(port=https, tls={"mode": "MUTUAL", "serverCertificate": "c", "privateKey": "k"})
    ) == ["spec.servers[0].tls.caCertificates: MUTUAL TLS requires a client CA bundle"]
    assert errors("Gateway", server(port=https, tls={"mode": "ISTIO_MUTUAL", "credentialName": "c"})) == [
        "spec.servers[0].tls: ISTIO_MUTUAL TLS cannot have associated credentialName"
    ]
    assert errors("Gateway", server(tls={"mode": "SIMPLE", "credentialName": "c"})) == [
        "spec.servers[0].tls: server cannot have TLS settings for plain text HTTP ports"
    ]
    assert errors("Gateway", server(tls={"httpsRedirect": True})) == []
    tcp = {"number": 31400, "name": "tcp", "protocol": "TCP"}
    assert errors("Gateway", server(port=tcp, tls={"httpsRedirect": True})) == [
        "spec.servers[0].tls: server cannot have TLS settings for non HTTPS/TLS ports"
    ]
    assert warnings("Gateway", server(port=tcp, tls={"httpsRedirect": True})) == [
        "spec.servers[0].tls.httpsRedirect: tls.httpsRedirect should only be used with http servers"
    ]


def test_gw_bind() -> None:
    assert errors("Gateway", server(bind="not-an-ip")) == ["spec.servers[0].bind: not-an-ip is not a valid IP"]
    uds = server(bind="unix:///var/run/gw.sock", port={"number": 0, "name": "uds", "protocol": "HTTP"})
    assert errors("Gateway", uds) == []


# --- ServiceEntry ----------------------------------------------------------------------------------------------------

SE: dict[str, Any] = {
    "hosts": ["api.example.com"],
    "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
    "resolution": "DNS",
    "location": "MESH_EXTERNAL",
}


def test_se_hosts() -> None:
    assert errors("ServiceEntry", with_(SE, hosts=[])) == ["spec.hosts: service entry must have at least one host"]
    assert errors("ServiceEntry", with_(SE, hosts=["*"], resolution="NONE")) == ["spec.hosts[0]: invalid host *"]
    assert errors("ServiceEntry", with_(SE, hosts=["*.example.com"])) == [
        "spec.hosts[0]: hosts must be FQDN if no endpoints are provided for resolution mode DNS"
    ]
    assert errors("ServiceEntry", with_(SE, hosts=["*.example.com"], resolution="NONE")) == []


def test_se_ports() -> None:
    ports = [
        {"number": 80, "name": "http", "protocol": "HTTP"},
        {"number": 80, "name": "http", "protocol": "FOO"},
        {"number": 0, "protocol": "HTTP", "targetPort": 70000},
    ]
    assert errors("ServiceEntry", with_(SE, ports=ports)) == [
        'spec.ports[1].name: service entry port name "http" already defined',
        "spec.ports[1].number: service entry port 80 already defined",
        "spec.ports[1].protocol: unsupported protocol: FOO",
        "spec.ports[2].targetPort: port number 70000 must be in the range 1..65535",
        "spec.ports[2].name: invalid port name: ",
        "spec.ports[2].number: port number 0 must be in the range 1..65535",
    ]


def test_se_resolution_none() -> None:
    spec = with_(SE, resolution="NONE", endpoints=[{"address": "1.1.1.1"}])
    assert errors("ServiceEntry", spec) == ["spec.endpoints: no endpoints should be provided for resolution type none"]


def test_se_resolution_static() -> None:
    ports = [{"number": 80, "name": "http", "protocol": "HTTP"}]
    static = with_(SE, ports=ports, resolution="STATIC")
    assert errors("ServiceEntry", static) == []  # STATIC without endpoints or selector is accepted, as in Istio
    spec = with_(static, endpoints=[{"address": "foo.com"}, {"address": "10.0.0.1", "ports": {"grpc": 9000}}])
    assert errors("ServiceEntry", spec) == [
        'spec.endpoints[0].address: endpoint address "foo.com" is not a valid IP address',
        "spec.endpoints[1].ports[grpc]: endpoint port 9000 is not defined by the service entry",
    ]
    uds = with_(static, endpoints=[{"address": "unix:///var/run/sock", "ports": {"http": 1}}])
    assert errors("ServiceEntry", uds) == [
        "spec.endpoints[0].ports: unix endpoint unix:///var/run/sock must not include ports"
    ]


def test_se_resolution_dns() -> None:
    spec = with_(SE, endpoints=[{"address": "-bad-"}, {"address": "us.example.com", "ports": {"https": 8443}}])
    assert errors("ServiceEntry", spec) == [
        'spec.endpoints[0].address: endpoint address "-bad-" is not a valid FQDN or an IP address'
    ]
    spec = with_(SE, resolution="DNS_ROUND_ROBIN", endpoints=[{"address": "a.com"}, {"address": "b.com"}])
    assert errors("ServiceEntry", spec) == [
        "spec.endpoints: there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN"
    ]
    spec = with_(SE, addresses=["10.0.0.0/24"])
    assert errors("ServiceEntry", spec) == [
        "spec.addresses: CIDR addresses are allowed only for NONE/STATIC resolution types"
    ]


def test_se_multiple_hosts_need_http_or_tls() -> None:
    spec = with_(SE, hosts=["a.com", "b.com"], ports=[{"number": 3306, "name": "mysql", "protocol": "TCP"}])
    assert errors("ServiceEntry", spec) == ["spec.ports[0]: multiple hosts provided with non-HTTP, non-TLS ports"]
    assert errors("ServiceEntry", with_(spec, resolution="NONE")) == []


def test_se_selector_and_endpoints() -> None:
    spec = with_(SE, resolution="STATIC", workloadSelector={"labels": {"app": "a"}}, endpoints=[{"address": "1.1.1.1"}])
    assert errors("ServiceEntry", spec) == [
        "spec: only one of WorkloadSelector or Endpoints is allowed in Service Entry"
    ]
    spec = with_(SE, workloadSelector={"labels": {"*": "a"}}, hosts=[])
    assert errors("ServiceEntry", spec) == [
        'spec.workloadSelector.labels[*]: wildcard is not supported in selector: "*=a"'
    ]


def test_se_export_to() -> None:
    assert errors("ServiceEntry", with_(SE, exportTo=["~"])) == []
    assert errors("ServiceEntry", with_(SE, exportTo=["~", "*"])) == [
        "spec.exportTo: cannot have both public (*) and non-public exportTo values for a resource",
        "spec.exportTo: cannot export service entry to no one (~) and someone",
    ]


def test_se_bad_addresses() -> None:
    assert errors("ServiceEntry", with_(SE, addresses=["300.0.0.1"])) == [
        "spec.addresses[0]: 300.0.0.1 is not a valid IP"
    ]


# --- WorkloadEntry ---------------------------------------------------------------------------------------------------


def test_workload_entry() -> None:
    assert errors("WorkloadEntry", {"labels": {"app": "a"}}) == ["spec.address: address is required"]
    assert errors("WorkloadEntry", {"network": "n1"}) == []
    assert errors("WorkloadEntry", {"address": "vm1.example.com"}) == []
    assert errors("WorkloadEntry", {"address": "-x-"}) == [
        'spec.address: endpoint address "-x-" is not a valid FQDN or an IP address'
    ]
    assert errors("WorkloadEntry", {"address": "1.1.1.1", "ports": {"Bad_Name": 0}, "labels": {"-k": "v"}}) == [
        "spec.ports[Bad_Name]: invalid port name: Bad_Name",
        "spec.ports[Bad_Name]: port number 0 must be in the range 1..65535",
        'spec.labels[-k]: invalid tag key: "-k"',
    ]
    long_name = "a" * 64
    assert errors("WorkloadEntry", {"address": "1.1.1.1", "labels": {f"example.com/{long_name}": "v"}}) == [
        f'spec.labels[example.com/{long_name}]: invalid tag key: "example.com/{long_name}" (name is too long)'
    ]
    assert errors("WorkloadEntry", {"address": "unix://relative"}) == [
        "spec.address: relative is not an absolute path to a file"
    ]


# --- Sidecar ---------------------------------------------------------------------------------------------------------

SIDECAR: dict[str, Any] = {
    "egress": [{"hosts": ["./*", "istio-system/*"]}],
    "ingress": [
        {"port": {"number": 9080, "protocol": "HTTP", "name": "http"}, "defaultEndpoint": "127.0.0.1:8080"},
    ],
    "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
}


def test_sidecar_empty() -> None:
    assert errors("Sidecar", {}) == ["spec: sidecar: empty configuration provided"]


def test_sidecar_egress_hosts() -> None:
    port = {"number": 80, "protocol": "HTTP"}
    spec = {"egress": [{"port": port, "hosts": ["foo.com", "ns/foo", "Bad_NS/a.com", "~/*"]}, {}]}
    assert errors("Sidecar", spec) == [
        "spec.egress[0].hosts[0]: host must be of form namespace/dnsName",
        "spec.egress[0].hosts[1]: short names (non FQDN) are not allowed",
        'spec.egress[0].hosts[2]: invalid namespace value "Bad_NS" in sidecar',
        "spec.egress[1].hosts: sidecar: egress listener must contain at least one host",
    ]


def test_sidecar_egress_ports_bind_capture_mode() -> None:
    spec = {
        "egress": [
            {"port": {"number": 0, "protocol": "HTTP"}, "bind": "10.0.0.1", "hosts": ["*/*"]},
            {"port": {"number": 0}, "bind": "unix:///a.sock", "captureMode": "IPTABLES", "hosts": ["*/*"]},
            {"port": {"number": 8080, "protocol": "HTTP"}, "bind": "localhost", "hosts": ["*/*"]},
            {"port": {"number": 8080, "protocol": "HTTP"}, "hosts": ["*/*"]},
        ]
    }
    assert errors("Sidecar", spec) == [
        "spec.egress[0].bind: sidecar: ports with 0 value must have a unix domain socket bind address",
        "spec.egress[1].captureMode: sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
        "spec.egress[2].bind: localhost is not a valid IP",
        "spec.egress[3].port.number: sidecar: ports on IP bound listeners must be unique",
    ]


def test_sidecar_catch_all_egress_must_be_last() -> None:
    spec = {"egress": [{"hosts": ["*/*"]}, {"port": {"number": 80, "protocol": "HTTP"}, "hosts": ["*/*"]}]}
    assert errors("Sidecar", spec) == [
        "spec.egress[0]: sidecar: the egress listener with empty port should be the last listener in the list"
    ]


def test_sidecar_ingress() -> None:
    spec = {
        "ingress": [
            {"defaultEndpoint": "127.0.0.1:80"},
            {"port": {"number": 80, "protocol": "HTTP"}, "defaultEndpoint": "10.0.0.1:80"},
            {"port": {"number": 80, "protocol": "HTTP"}, "defaultEndpoint": "127.0.0.1"},
            {"port": {"number": 81, "protocol": "TCP"}, "tls": {"mode": "SIMPLE", "credentialName": "c"}},
        ]
    }
    assert errors("Sidecar", spec) == [
        "spec.ingress[0].port: sidecar: port is required for ingress listeners",
        "spec.ingress[1].defaultEndpoint: sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,"
        "[::1]:port,[::]:port,unix://filepath or unset",
        "spec.ingress[2].port.number: sidecar: ports on IP bound listeners must be unique",
        "spec.ingress[2].defaultEndpoint: address 127.0.0.1: missing port in address",
        "spec.ingress[2].defaultEndpoint: sidecar: defaultEndpoint port () is not a number: strconv.Atoi: parsing "
        '"": invalid syntax',
        "spec.ingress[3].tls.credentialName: sidecar: credentialName is not currently supported",
        "spec.ingress[3].tls: server cannot have TLS settings for non HTTPS/TLS ports",
    ]


def test_sidecar_outbound_traffic_policy() -> None:
    spec = {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY", "egressProxy": {"host": "proxy.example.com"}}}
    assert errors("Sidecar", spec) == [
        "spec.outboundTrafficPolicy.egressProxy: sidecar: egress_proxy must be set only with ALLOW_ANY "
        "outbound_traffic_policy mode"
    ]
    spec = {"outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {"host": "proxy.example.com"}}}
    assert errors("Sidecar", spec) == [
        "spec.outboundTrafficPolicy.egressProxy.port: sidecar: egress_proxy port must be non-nil"
    ]


def test_sidecar_workload_selector() -> None:
    spec = with_(SIDECAR, workloadSelector={"labels": {"": "x"}})
    assert errors("Sidecar", spec) == ['spec.workloadSelector.labels[]: empty key is not supported in selector: "=x"']
    assert warnings("Sidecar", with_(SIDECAR, workloadSelector={})) == [
        "spec.workloadSelector: sidecar: workload selector specified without labels, will be applied to all services "
        "in namespace"
    ]


# --- RE2 --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "^(.*?;)?(user=dev-123)(;.*)?",
        "b.*",
        r"\d+$",
        "(?i)abc",
        "a(?i)b",
        "(?i:a)b",
        "(?U)a+",
        r"\pL+\p{Greek}\PN",
        r"end\z",
        "[[:alpha:]]+",
        "(?P<name>x)(?<other>y)",
        r"\Q.*+\E",
        r"\x{41}\x41",
        r"\101",
        "a{2,5}",
        "a{1000}",
        "[]a]",
        "[^]a]",
        "x{,5}",
        "a*?b+?c??",
    ],
)
def test_re2_accepts(pattern: str) -> None:
    assert re2_error(pattern) is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(?=x)", "invalid or unsupported Perl syntax: `(?=`"),
        ("(?!x)", "invalid or unsupported Perl syntax: `(?!`"),
        ("(?<=x)", "invalid or unsupported Perl syntax: `(?<`"),
        ("(?<!x)", "invalid or unsupported Perl syntax: `(?<`"),
        ("(?>x)", "invalid or unsupported Perl syntax: `(?>`"),
        ("(?#c)", "invalid or unsupported Perl syntax: `(?#`"),
        ("(?x)a", "invalid or unsupported Perl syntax: `(?x`"),
        ("(a)\\1", "invalid escape sequence: `\\1`"),
        ("a*+", "invalid nested repetition operator: `*+`"),
        ("a++", "invalid nested repetition operator: `++`"),
        ("a{1001}", "invalid repeat count: `{1001}`"),
        ("(abc", "missing closing ): `(abc`"),
        ("abc)", "unexpected ): `abc)`"),
        ("[abc", "missing closing ]: `[abc`"),
        ("*a", "missing argument to repetition operator: `*a`"),
        ("\\C", "invalid escape sequence: `\\C`"),
        ("a\\Z", "invalid escape sequence: `\\Z`"),
        ("[[:foo:]]", "invalid character class range: `[:foo:]`"),
        ("x\\", "trailing backslash at end of expression: ``"),
    ],
)
def test_re2_rejects(pattern: str, message: str) -> None:
    assert re2_error(pattern) == f"error parsing regexp: {message}"


# --- speed and warnings ------------------------------------------------------------------------------------------


def test_check_of_a_typical_virtual_service() -> None:
    spec = {
        "hosts": ["reviews.prod.svc.cluster.local"],
        "gateways": ["mesh", "istio-system/ingress"],
        "http": [
            {
                "name": "v2",
                "match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/ratings"}}],
                "route": [
                    {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 75},
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 25},
                ],
                "timeout": "10s",
                "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,connect-failure"},
            },
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
        ],
    }
    assert check("VirtualService", spec, "default")[1] == []  # speed: benchmarks/bench_config.py


def test_service_entry_tcp_without_addresses_is_only_a_warning() -> None:
    spec = with_(SE, ports=[{"number": 3306, "name": "mysql", "protocol": "TCP"}])
    assert errors("ServiceEntry", spec) == []
    assert warnings("ServiceEntry", spec) == [
        "spec.ports[0]: addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation "
        "is not enabled"
    ]
