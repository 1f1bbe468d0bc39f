"""Hypothesis strategies for Istio traffic config: ServiceEntries, VirtualServices, DestinationRules, Gateways
and Sidecars as YAML documents, mostly valid, sometimes at the edges of what validation allows (odd header
names and values, regexes, durations, huge and tiny numbers), so that what pilot accepts is exercised widely.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NAMESPACE = "default"
HOSTS = ("a.default.svc.cluster.local", "b.default.svc.cluster.local", "ext.example.com")
PORTS = (80, 9080)
SUBSETS = ("v1", "v2")
TCP_HOST = "db.default.svc.cluster.local"

# Mostly valid durations; "0s" and "1ms" are at (and just past) validation's edge.
_durations = st.sampled_from(["1s", "0.5s", "100ms", "1.5s", "30s", "1m", "2h", "0.002s", "3600s", "0s", "1ms"])
_small = st.integers(min_value=0, max_value=5)
_ports = st.integers(min_value=1, max_value=65535)
_percent = st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda f: round(f, 3))
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12).filter(
    lambda s: s[0].isalnum() and s[-1].isalnum()
)
_header_name = st.one_of(
    _token, _token, st.sampled_from(["x-user", "X-Mixed-Case", "end-user", ":authority", "content-type", "x_under"])
)
_header_value = st.one_of(
    _token, st.sampled_from(["", " spaced ", "tab\tvalue", "ünïcode", "a" * 300, "%(req)s", "v=1;q=0.5"])
)
_regex = st.sampled_from(["^/api/.*", "/v[0-9]+/.*", ".*", "[a-z]+", "^abc$", "(foo|bar)", "a{2,5}", "\\d+"])
_path = st.sampled_from(["/", "/api", "/api/v1/", "/a b", "/%2F", "/ünï", "/x?y=z", "/long/" + "p" * 200])


def _value(percent: float) -> dict[str, float]:
    return {"value": percent}


def _string_match(values: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        values.map(lambda v: {"exact": v}), values.map(lambda v: {"prefix": v}), _regex.map(lambda v: {"regex": v})
    )


_match = st.fixed_dictionaries(
    {},
    optional={
        "uri": _string_match(_path),
        "headers": st.dictionaries(_header_name, _string_match(_header_value), max_size=2),
        "method": _string_match(st.sampled_from(["GET", "POST", "PUT"])),
        "queryParams": st.dictionaries(_token, _string_match(_token), max_size=2),
        "ignoreUriCase": st.booleans(),
        "authority": _string_match(_token),
        "port": st.sampled_from(PORTS),
        "withoutHeaders": st.dictionaries(_header_name, _string_match(_header_value), max_size=1),
    },
)


def _destination(subsets: bool) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, Any] = {"port": st.sampled_from(PORTS).map(lambda p: {"number": p})}
    if subsets:
        optional["subset"] = st.sampled_from(SUBSETS)
    return st.fixed_dictionaries({"host": st.sampled_from(HOSTS)}, optional=optional)


@st.composite
def _routes(draw: st.DrawFn, subsets: bool) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=3))
    destinations = [draw(_destination(subsets)) for _ in range(count)]
    out = [{"destination": d} for d in destinations]
    if count > 1 or draw(st.booleans()):
        weights = draw(st.lists(st.integers(min_value=0, max_value=100), min_size=count, max_size=count))
        for route, weight in zip(out, weights, strict=True):
            route["weight"] = weight
    return out


_header_ops = st.fixed_dictionaries(
    {},
    optional={
        "set": st.dictionaries(_header_name, _header_value, max_size=2),
        "add": st.dictionaries(_header_name, _header_value, max_size=2),
        "remove": st.lists(_header_name, max_size=2),
    },
)

_retries = st.fixed_dictionaries(
    {"attempts": st.integers(min_value=1, max_value=5)},
    optional={
        "perTryTimeout": _durations,
        "retryOn": st.lists(
            st.sampled_from(["5xx", "gateway-error", "connect-failure", "503", "retriable-4xx", "reset", "cancelled"]),
            min_size=1,
            max_size=3,
        ).map(",".join),
        "retryRemoteLocalities": st.booleans(),
    },
)

_fault = st.fixed_dictionaries(
    {},
    optional={
        "delay": st.fixed_dictionaries({"fixedDelay": _durations}, optional={"percentage": _percent.map(_value)}),
        "abort": st.one_of(
            st.fixed_dictionaries(
                {"httpStatus": st.sampled_from([400, 418, 500, 503])}, optional={"percentage": _percent.map(_value)}
            ),
            st.fixed_dictionaries(
                {"grpcStatus": st.sampled_from(["UNAVAILABLE", "INTERNAL", "NOT_FOUND"])},
                optional={"percentage": _percent.map(_value)},
            ),
        ),
    },
).filter(bool)

_origins = st.sampled_from(["https://a.example.com", "*", "http://x"])
_cors = st.fixed_dictionaries(
    {},
    optional={
        "allowOrigins": st.lists(_string_match(_origins), max_size=2),
        "allowMethods": st.lists(st.sampled_from(["GET", "POST", "OPTIONS", "*"]), max_size=3),
        "allowHeaders": st.lists(_header_name, max_size=2),
        "exposeHeaders": st.lists(_header_name, max_size=2),
        "maxAge": st.sampled_from(["1s", "30s", "1m", "24h", "1.5s"]),
        "allowCredentials": st.booleans(),
    },
)


@st.composite
def http_route(draw: st.DrawFn, subsets: bool) -> dict[str, Any]:
    route: dict[str, Any] = {}
    if draw(st.booleans()):
        route["match"] = draw(st.lists(_match, min_size=1, max_size=2))
    kind = draw(st.sampled_from(["route", "route", "route", "redirect", "direct"]))
    if kind == "route":
        route["route"] = draw(_routes(subsets))
        for key, strategy in (
            ("timeout", _durations),
            ("retries", _retries),
            ("fault", _fault),
            ("corsPolicy", _cors),
            ("headers", st.fixed_dictionaries({}, optional={"request": _header_ops, "response": _header_ops})),
            (
                "rewrite",
                st.one_of(
                    st.fixed_dictionaries({"uri": _path}),
                    st.fixed_dictionaries({"authority": _token}),
                    st.fixed_dictionaries(
                        {
                            "uriRegexRewrite": st.fixed_dictionaries(
                                {"match": _regex, "rewrite": st.sampled_from(["/", "/\\1", "/x"])}
                            )
                        }
                    ),
                ),
            ),
            ("mirror", _destination(subsets)),
            ("mirrorPercentage", _percent.map(_value)),
        ):
            if draw(st.integers(min_value=0, max_value=3)) == 0:
                route[key] = draw(strategy)
    elif kind == "redirect":
        route["redirect"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "uri": _path,
                    "authority": _token,
                    "redirectCode": st.sampled_from([301, 302, 307, 308]),
                    "scheme": st.sampled_from(["http", "https"]),
                    "port": st.sampled_from(PORTS),
                },
            ).filter(bool)
        )
    else:
        route["directResponse"] = draw(
            st.fixed_dictionaries(
                {"status": st.sampled_from([200, 204, 404, 503])},
                optional={"body": st.sampled_from([{"string": "hello"}, {"string": ""}, {"bytes": "aGVsbG8="}])},
            )
        )
    return route


def _traffic_policy(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    hash_key = st.one_of(
        st.fixed_dictionaries({"httpHeaderName": _header_name}),
        st.fixed_dictionaries({"httpCookie": st.fixed_dictionaries({"name": _token}, optional={"ttl": _durations})}),
        st.just({"useSourceIp": True}),
        st.fixed_dictionaries({"httpQueryParameterName": _token}),
    )
    warmup = st.fixed_dictionaries(
        {"duration": _durations},
        optional={
            "minimumPercent": st.floats(min_value=0, max_value=100),
            "aggression": st.floats(min_value=1, max_value=10),
        },
    )
    load_balancer = st.one_of(
        st.fixed_dictionaries(
            {"simple": st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "LEAST_CONN"])},
            optional={"warmup": warmup},
        ),
        st.fixed_dictionaries(
            {"simple": st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST"]), "warmupDurationSecs": _durations}
        ),
        hash_key.map(lambda k: {"consistentHash": k}),
        st.tuples(hash_key, st.integers(min_value=1, max_value=2**20)).map(
            lambda t: {"consistentHash": {**t[0], "minimumRingSize": t[1]}}
        ),
    )
    pool = st.fixed_dictionaries(
        {},
        optional={
            "tcp": st.fixed_dictionaries(
                {},
                optional={
                    "maxConnections": st.integers(min_value=1, max_value=2**31 - 1),
                    "connectTimeout": _durations,
                    "maxConnectionDuration": _durations,
                    "idleTimeout": _durations,
                    "tcpKeepalive": st.fixed_dictionaries(
                        {}, optional={"probes": _small, "time": _durations, "interval": _durations}
                    ),
                },
            ).filter(bool),
            "http": st.fixed_dictionaries(
                {},
                optional={
                    "http1MaxPendingRequests": st.integers(min_value=1, max_value=2**31 - 1),
                    "http2MaxRequests": st.integers(min_value=1, max_value=2**31 - 1),
                    "maxRequestsPerConnection": st.integers(min_value=0, max_value=1000),
                    "maxRetries": st.integers(min_value=0, max_value=2**31 - 1),
                    "idleTimeout": _durations,
                    "h2UpgradePolicy": st.sampled_from(["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]),
                    "useClientProtocol": st.booleans(),
                },
            ).filter(bool),
        },
    ).filter(bool)
    outlier = st.fixed_dictionaries(
        {},
        optional={
            "consecutive5xxErrors": st.integers(min_value=0, max_value=100),
            "consecutiveGatewayErrors": st.integers(min_value=0, max_value=100),
            "interval": _durations,
            "baseEjectionTime": _durations,
            "maxEjectionPercent": st.integers(min_value=0, max_value=100),
            "minHealthPercent": st.integers(min_value=0, max_value=100),
            "splitExternalLocalOriginErrors": st.booleans(),
        },
    )
    tls = st.one_of(
        st.just({"mode": "DISABLE"}),
        st.just({"mode": "SIMPLE"}),
        st.fixed_dictionaries(
            {"mode": st.just("ISTIO_MUTUAL")},
            optional={"sni": _token, "subjectAltNames": st.lists(_token, max_size=2)},
        ),
        st.fixed_dictionaries({"mode": st.just("SIMPLE"), "sni": _token, "insecureSkipVerify": st.booleans()}),
        st.fixed_dictionaries(
            {"mode": st.sampled_from(["SIMPLE", "MUTUAL"]), "credentialName": _token},
            optional={"sni": _token, "subjectAltNames": st.lists(_token, max_size=2)},
        ),
    )
    optional: dict[str, Any] = {
        "loadBalancer": load_balancer,
        "connectionPool": pool,
        "outlierDetection": outlier,
        "tls": tls,
    }
    if depth == 0:  # neither port-level settings nor (pilot's strategies keep it simple) subsets have these
        optional["retryBudget"] = st.fixed_dictionaries(
            {},
            optional={
                "percent": st.floats(min_value=0, max_value=100),
                "minRetryConcurrency": st.integers(min_value=0, max_value=100),
            },
        )
        optional["proxyProtocol"] = st.fixed_dictionaries({}, optional={"version": st.sampled_from(["V1", "V2"])})
        optional["tunnel"] = st.fixed_dictionaries(
            {"targetHost": st.sampled_from(["db.internal", "10.1.2.3", "2001:db8::1"]), "targetPort": _ports},
            optional={"protocol": st.sampled_from(["CONNECT", "POST"])},
        )
        optional["portLevelSettings"] = st.lists(
            st.tuples(st.sampled_from(PORTS), _traffic_policy(1)).map(lambda t: {"port": {"number": t[0]}, **t[1]}),
            max_size=1,
        )
    exclusive = ("tunnel", "proxyProtocol")  # istiod refuses a policy with both
    return st.fixed_dictionaries({}, optional=optional).filter(lambda d: bool(d) and not all(k in d for k in exclusive))


def _doc(kind: str, name: str, spec: dict[str, Any], group: str = "networking.istio.io/v1") -> dict[str, Any]:
    return {"apiVersion": group, "kind": kind, "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def _service_entry(index: int, host: str) -> dict[str, Any]:
    resolution = "DNS" if host == "ext.example.com" else "STATIC"
    spec: dict[str, Any] = {
        "hosts": [host],
        "location": "MESH_EXTERNAL" if resolution == "DNS" else "MESH_INTERNAL",
        "ports": [{"number": p, "name": f"http-{p}", "protocol": "HTTP"} for p in PORTS],
        "resolution": resolution,
    }
    if resolution == "STATIC":
        spec["endpoints"] = [
            {"address": f"10.0.{index}.{j + 1}", "labels": {"app": f"svc{index}", "version": SUBSETS[j % 2]}}
            for j in range(2)
        ]
    return _doc("ServiceEntry", f"se-{index}", spec)


@st.composite
def mesh(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One namespace: three services on two HTTP ports, DestinationRules (maybe with subsets) for some, one or
    two VirtualServices bound to the mesh and to a gateway, and the gateway."""
    docs = [_service_entry(i, host) for i, host in enumerate(HOSTS)]
    # A TCP service on a VIP (a sidecar TCP listener, whose tcp_proxy carries its rule's tcp settings), maybe
    # with a rule, a CIDR range and a tcp route.
    tcp_spec: dict[str, Any] = {
        "hosts": [TCP_HOST],
        "addresses": ["10.96.9.9", *(["10.77.0.0/16"] if draw(st.booleans()) else [])],
        "location": "MESH_INTERNAL",
        "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
        "resolution": "STATIC",
        "endpoints": [{"address": "10.0.9.1", "labels": {"version": "v1"}}],
    }
    docs.append(_doc("ServiceEntry", "se-tcp", tcp_spec))
    if draw(st.booleans()):
        tcp_rule = {
            "host": TCP_HOST,
            "trafficPolicy": draw(_traffic_policy()),
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
        }
        docs.append(_doc("DestinationRule", "dr-tcp", tcp_rule))
        if draw(st.booleans()):
            route = {"tcp": [{"route": [{"destination": {"host": TCP_HOST, "subset": "v1"}}]}], "hosts": [TCP_HOST]}
            docs.append(_doc("VirtualService", "vs-tcp", route))
    with_subsets = draw(st.booleans())
    for i, host in enumerate(HOSTS[:2]):
        if draw(st.booleans()) or with_subsets:
            spec: dict[str, Any] = {"host": host, "trafficPolicy": draw(_traffic_policy())}
            if with_subsets:
                spec["subsets"] = [
                    {"name": s, "labels": {"version": s}, **({"trafficPolicy": draw(_traffic_policy(1))} if k else {})}
                    for k, s in enumerate(SUBSETS)
                ]
            docs.append(_doc("DestinationRule", f"dr-{i}", spec))
    for i in range(draw(st.integers(min_value=1, max_value=2))):
        hosts = draw(st.lists(st.sampled_from(HOSTS[:2]), min_size=1, max_size=2, unique=True))
        spec = {
            "hosts": hosts,
            "gateways": ["mesh", "gw"],
            "http": draw(st.lists(http_route(with_subsets), min_size=1, max_size=3)),
        }
        docs.append(_doc("VirtualService", f"vs-{i}", spec))
    gateway = {
        "selector": {"istio": "ingressgateway"},
        "servers": [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
    }
    docs.append(_doc("Gateway", "gw", gateway))
    return docs
