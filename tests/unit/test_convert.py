"""Strict proto3-JSON conversion of Istio specs into typed betterproto2 messages (pilot.config.convert)."""

from __future__ import annotations

import datetime
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import betterproto2
import pytest

from pilot.api.istio.networking import v1alpha3 as nw
from pilot.config.convert import (
    ISTIO_KINDS,
    FieldError,
    convert_message,
    convert_spec,
    json_name,
    parse_go_duration,
)

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto" / "istio"


def errors_of(kind: str, spec: object) -> list[str]:
    message, errors = convert_spec(kind, spec)
    assert message is None
    assert errors
    return [str(e) for e in errors]


def ok(kind: str, spec: object) -> betterproto2.Message:
    message, errors = convert_spec(kind, spec)
    assert errors == []
    assert message is not None
    return message


# --- the public API shape -----------------------------------------------------------------------------------------


def test_istio_kinds_map_to_generated_classes() -> None:
    assert ISTIO_KINDS == {
        "VirtualService": nw.VirtualService,
        "DestinationRule": nw.DestinationRule,
        "Gateway": nw.Gateway,
        "ServiceEntry": nw.ServiceEntry,
        "WorkloadEntry": nw.WorkloadEntry,
        "Sidecar": nw.Sidecar,
    }


def test_field_error_str_and_frozen() -> None:
    err = FieldError("spec.http[0].rout", 'unknown field "rout"')
    assert str(err) == 'spec.http[0].rout: unknown field "rout"'
    with pytest.raises(AttributeError):
        err.path = "x"  # type: ignore[misc]


def test_unknown_kind() -> None:
    message, errors = convert_spec("PeerAuthentication", {})
    assert message is None
    assert [e.path for e in errors] == ["spec"]
    assert errors[0].message.startswith('unsupported kind "PeerAuthentication"')


def test_missing_spec_is_empty_message() -> None:
    assert ok("VirtualService", None) == nw.VirtualService()


def test_spec_must_be_an_object() -> None:
    assert errors_of("VirtualService", ["a"]) == ["spec: expected an object, got a list"]


# --- a full VirtualService and what downstream code reads ---------------------------------------------------------


def test_virtual_service_typed_reading() -> None:
    vs = ok(
        "VirtualService",
        {
            "hosts": ["reviews"],
            "http": [
                {
                    "match": [{"headers": {"end-user": {"exact": "jason"}}, "uri": {"prefix": "/api"}}],
                    "route": [
                        {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 80},
                        {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20},
                    ],
                    "timeout": "0.5s",
                    "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx", "retryRemoteLocalities": True},
                    "mirrorPercentage": {"value": 50},
                }
            ],
        },
    )
    assert isinstance(vs, nw.VirtualService)
    route = vs.http[0]
    assert route.route[0].destination.host == "reviews"
    assert route.route[0].destination.port.number == 9080
    assert route.route[1].destination.port is None
    assert [d.weight for d in route.route] == [80, 20]
    assert route.timeout == datetime.timedelta(milliseconds=500)
    assert route.retries.attempts == 3
    assert route.retries.per_try_timeout == datetime.timedelta(seconds=2)
    assert route.retries.retry_remote_localities is True
    assert route.retries.retry_ignore_previous_hosts is None
    header = route.match[0].headers["end-user"]
    assert betterproto2.which_one_of(header, "match_type") == ("exact", "jason")
    assert route.match[0].uri.prefix == "/api"
    assert route.match[0].uri.exact is None
    assert route.mirror_percentage.value == 50.0
    assert route.fault is None
    assert route.match[0].port == 0


def test_snake_case_names_are_accepted() -> None:
    vs = ok("VirtualService", {"hosts": ["a"], "export_to": ["."], "http": [{"cors_policy": {"allow_origin": ["x"]}}]})
    assert vs.export_to == ["."]
    assert vs.http[0].cors_policy.allow_origin == ["x"]


def test_json_names_with_digits() -> None:
    dr = ok(
        "DestinationRule",
        {
            "host": "a",
            "trafficPolicy": {
                "outlierDetection": {"consecutive5xxErrors": 5, "consecutive_gateway_errors": 3},
                "connectionPool": {"http": {"http1MaxPendingRequests": 1, "h2UpgradePolicy": "UPGRADE"}},
            },
        },
    )
    outlier = dr.traffic_policy.outlier_detection
    assert outlier.consecutive_5xx_errors == 5
    assert outlier.consecutive_gateway_errors == 3
    assert outlier.consecutive_local_origin_failures is None
    http = dr.traffic_policy.connection_pool.http
    assert http.http1_max_pending_requests == 1
    assert http.h2_upgrade_policy == nw.ConnectionPoolSettingsHttpSettingsH2UpgradePolicy.UPGRADE


def test_keyword_field_from() -> None:
    dr = ok(
        "DestinationRule",
        {
            "host": "a",
            "trafficPolicy": {
                "loadBalancer": {"localityLbSetting": {"distribute": [{"from": "r1/*", "to": {"r2/*": 100}}]}}
            },
        },
    )
    distribute = dr.traffic_policy.load_balancer.locality_lb_setting.distribute[0]
    assert distribute.from_ == "r1/*"
    assert distribute.to == {"r2/*": 100}


def test_enums_by_name_and_number() -> None:
    dr = ok("DestinationRule", {"host": "a", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
    assert dr.traffic_policy.tls.mode == nw.ClientTlsSettingsTlSmode.ISTIO_MUTUAL
    dr = ok("DestinationRule", {"host": "a", "trafficPolicy": {"tls": {"mode": 2}}})
    assert dr.traffic_policy.tls.mode == nw.ClientTlsSettingsTlSmode.MUTUAL
    lb = ok("DestinationRule", {"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}})
    assert lb.traffic_policy.load_balancer.simple == nw.LoadBalancerSettingsSimpleLb.ROUND_ROBIN
    assert lb.traffic_policy.load_balancer.consistent_hash is None


def test_wrappers_are_plain_scalars() -> None:
    dr = ok(
        "DestinationRule",
        {
            "host": "a",
            "trafficPolicy": {
                "tls": {"mode": "SIMPLE", "insecureSkipVerify": False},
                "loadBalancer": {"warmup": {"duration": "10s", "aggression": 2, "minimumPercent": "12.5"}},
            },
        },
    )
    assert dr.traffic_policy.tls.insecure_skip_verify is False
    warm = dr.traffic_policy.load_balancer.warmup
    assert warm.aggression == 2.0
    assert warm.minimum_percent == 12.5
    assert warm.duration == datetime.timedelta(seconds=10)


def test_maps_of_messages_and_numbers() -> None:
    se = ok(
        "ServiceEntry",
        {
            "hosts": ["a.com"],
            "endpoints": [{"address": "1.1.1.1", "ports": {"http": 8080, 9090: 1}, "labels": {"on": "x"}}],
            "workload_selector": None,
        },
    )
    endpoint = se.endpoints[0]
    assert endpoint.ports == {"http": 8080, "9090": 1}  # non-string YAML keys become strings, as in Kubernetes
    assert endpoint.labels == {"on": "x"}
    assert se.workload_selector is None


def test_integers_from_strings_and_integral_floats() -> None:
    vs = ok("VirtualService", {"hosts": ["a"], "http": [{"route": [{"weight": "50"}, {"weight": 50.0}]}]})
    assert [r.weight for r in vs.http[0].route] == [50, 50]
    dr = ok(
        "DestinationRule",
        {"host": "a", "trafficPolicy": {"loadBalancer": {"consistentHash": {"maglev": {"tableSize": "65537"}}}}},
    )
    assert dr.traffic_policy.load_balancer.consistent_hash.maglev.table_size == 65537


def test_bytes_are_base64() -> None:
    vs = ok(
        "VirtualService", {"hosts": ["a"], "http": [{"directResponse": {"status": 200, "body": {"bytes": "aGk="}}}]}
    )
    assert vs.http[0].direct_response.body.bytes == b"hi"
    assert vs.http[0].direct_response.body.string is None


def test_null_means_unset() -> None:
    vs = ok("VirtualService", {"hosts": ["a"], "http": None, "gateways": None, "tcp": [{"match": None}]})
    assert vs.http == []
    assert vs.tcp[0].match == []


def test_legacy_websocket_upgrade_is_accepted() -> None:
    vs = ok("VirtualService", {"hosts": ["a"], "http": [{"websocketUpgrade": True, "route": []}]})
    assert vs.http[0].websocket_upgrade is True


# --- durations ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("10s", 10_000_000_000),
        ("0.5s", 500_000_000),
        ("1.5s", 1_500_000_000),
        ("1.000000001s", 1_000_000_001),
        ("100ms", 100_000_000),
        ("1m", 60_000_000_000),
        ("3m", 180_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("1.5m", 90_000_000_000),
        ("300us", 300_000),
        ("300\u00b5s", 300_000),
        ("7ns", 7),
        ("0", 0),
        ("-1.5s", -1_500_000_000),
        (".5s", 500_000_000),
    ],
)
def test_go_durations(text: str, nanos: int) -> None:
    assert parse_go_duration(text) == nanos


@pytest.mark.parametrize(
    ("text", "reason"),
    [("10", "missing unit"), ("10x", 'unknown unit "x"'), ("", "empty duration"), ("s", "expected a number")],
)
def test_bad_go_durations(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_go_duration(text)


def test_duration_fields_become_timedelta() -> None:
    dr = ok(
        "DestinationRule",
        {"host": "a", "trafficPolicy": {"outlierDetection": {"interval": "8ms", "baseEjectionTime": "1m"}}},
    )
    outlier = dr.traffic_policy.outlier_detection
    assert outlier.interval == datetime.timedelta(milliseconds=8)
    assert outlier.base_ejection_time == datetime.timedelta(minutes=1)


def test_sub_microsecond_durations_truncate() -> None:
    vs = ok("VirtualService", {"hosts": ["a"], "http": [{"timeout": "1.0000015s"}]})
    assert vs.http[0].timeout == datetime.timedelta(seconds=1, microseconds=1)


# --- errors, with their paths -------------------------------------------------------------------------------------


def test_unknown_field_path() -> None:
    assert errors_of("VirtualService", {"hosts": ["a"], "http": [{"rout": []}]}) == [
        'spec.http[0].rout: unknown field "rout"'
    ]


def test_unknown_top_level_field() -> None:
    assert errors_of("Gateway", {"server": []}) == ['spec.server: unknown field "server"']


def test_wrong_container_types() -> None:
    assert errors_of("VirtualService", {"hosts": "reviews", "http": [{"route": {"destination": {}}}]}) == [
        'spec.hosts: expected a list, got string "reviews"',
        "spec.http[0].route: expected a list, got an object",
    ]
    assert errors_of("VirtualService", {"http": [{"match": [{"uri": ["x"]}]}]}) == [
        "spec.http[0].match[0].uri: expected an object, got a list"
    ]
    assert errors_of("Gateway", {"selector": ["istio=ingress"]}) == [
        "spec.selector: expected an object (map), got a list"
    ]


def test_wrong_scalar_types() -> None:
    assert errors_of(
        "VirtualService",
        {
            "hosts": [1],
            "http": [
                {
                    "route": [{"weight": "fifty"}, {"weight": 1.5}, {"weight": True}],
                    "match": [{"ignoreUriCase": "yes"}],
                    "mirrorPercentage": {"value": "lots"},
                }
            ],
        },
    ) == [
        "spec.hosts[0]: expected a string, got integer 1",
        'spec.http[0].route[0].weight: expected an integer, got string "fifty"',
        "spec.http[0].route[1].weight: expected an integer, got number 1.5",
        "spec.http[0].route[2].weight: expected an integer, got boolean true",
        'spec.http[0].match[0].ignoreUriCase: expected a boolean, got string "yes"',
        'spec.http[0].mirrorPercentage.value: expected a number, got string "lots"',
    ]


def test_integer_ranges() -> None:
    assert errors_of("Gateway", {"servers": [{"port": {"number": -1}}, {"port": {"number": 2**32}}]}) == [
        "spec.servers[0].port.number: value -1 is out of range for uint32",
        "spec.servers[1].port.number: value 4294967296 is out of range for uint32",
    ]
    assert errors_of("VirtualService", {"http": [{"route": [{"weight": 2**31}]}]}) == [
        "spec.http[0].route[0].weight: value 2147483648 is out of range for int32"
    ]


def test_bad_enum_names() -> None:
    assert errors_of("DestinationRule", {"host": "a", "trafficPolicy": {"tls": {"mode": "STRICT"}}}) == [
        'spec.trafficPolicy.tls.mode: invalid value "STRICT", expected one of: DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL'
    ]
    assert errors_of("ServiceEntry", {"resolution": "dns"}) == [
        'spec.resolution: invalid value "dns", expected one of: NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS'
    ]
    assert errors_of("ServiceEntry", {"location": 7}) == [
        "spec.location: invalid value 7, expected one of: MESH_EXTERNAL, MESH_INTERNAL"
    ]


def test_bad_durations() -> None:
    assert errors_of(
        "VirtualService",
        {"http": [{"timeout": 10, "retries": {"perTryTimeout": "1.5"}, "fault": {"delay": {"fixedDelay": "5 s"}}}]},
    ) == [
        'spec.http[0].timeout: expected a duration string such as "10s", "1.5s" or "100ms", got integer 10',
        'spec.http[0].retries.perTryTimeout: invalid duration "1.5": missing unit',
        'spec.http[0].fault.delay.fixedDelay: invalid duration "5 s": unknown unit " s"',
    ]


def test_wrapper_type_errors() -> None:
    assert errors_of(
        "DestinationRule",
        {
            "host": "a",
            "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": -1}, "tls": {"insecureSkipVerify": 1}},
        },
    ) == [
        "spec.trafficPolicy.outlierDetection.consecutive5xxErrors: value -1 is out of range for uint32",
        "spec.trafficPolicy.tls.insecureSkipVerify: expected a boolean, got integer 1",
    ]


def test_oneof_conflict() -> None:
    assert errors_of("VirtualService", {"http": [{"match": [{"uri": {"exact": "/a", "prefix": "/b"}}]}]}) == [
        'spec.http[0].match[0].uri.prefix: cannot be set together with "exact" (only one of exact, prefix, regex)'
    ]
    assert errors_of(
        "DestinationRule",
        {"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM", "consistentHash": {"useSourceIp": True}}}},
    ) == [
        "spec.trafficPolicy.loadBalancer.consistentHash: cannot be set together with "
        '"simple" (only one of simple, consistentHash)'
    ]


def test_same_field_twice() -> None:
    assert errors_of("VirtualService", {"exportTo": ["."], "export_to": ["*"]}) == [
        'spec.export_to: field is given twice (also as "exportTo")'
    ]


def test_map_errors() -> None:
    assert errors_of(
        "VirtualService",
        {"http": [{"match": [{"headers": {"x-a": None, "x-b": "v", "x-c": {"exakt": "v"}}}]}]},
    ) == [
        "spec.http[0].match[0].headers[x-a]: null is not allowed as a map value",
        'spec.http[0].match[0].headers[x-b]: expected an object, got string "v"',
        'spec.http[0].match[0].headers[x-c].exakt: unknown field "exakt"',
    ]
    assert errors_of("WorkloadEntry", {"address": "1.1.1.1", "ports": {"http": "eighty"}, "labels": {"v": 1}}) == [
        'spec.ports[http]: expected an integer, got string "eighty"',
        "spec.labels[v]: expected a string, got integer 1",
    ]


def test_null_in_list() -> None:
    assert errors_of("VirtualService", {"hosts": ["a", None]}) == ["spec.hosts[1]: null is not allowed in a list"]


def test_bad_base64() -> None:
    assert errors_of("VirtualService", {"http": [{"directResponse": {"body": {"bytes": "!!!"}}}]}) == [
        "spec.http[0].directResponse.body.bytes: invalid base64 data"
    ]


def test_all_errors_are_collected_across_the_document() -> None:
    errors = errors_of(
        "Sidecar",
        {
            "egress": [{"hosts": "ns/*", "bindd": "x"}],
            "ingress": [{"port": {"number": "x"}, "captureMode": "ALL"}],
            "outboundTrafficPolicy": {"mode": "DENY"},
        },
    )
    assert errors == [
        'spec.egress[0].hosts: expected a list, got string "ns/*"',
        'spec.egress[0].bindd: unknown field "bindd"',
        'spec.ingress[0].port.number: expected an integer, got string "x"',
        'spec.ingress[0].captureMode: invalid value "ALL", expected one of: DEFAULT, IPTABLES, NONE',
        'spec.outboundTrafficPolicy.mode: invalid value "DENY", expected one of: REGISTRY_ONLY, ALLOW_ANY',
    ]


def test_non_string_object_key_is_unknown_field() -> None:
    assert errors_of("Gateway", {1: "x"}) == ['spec.1: unknown field "1"']


# --- google.protobuf.Struct / Value (not used by these six kinds; checked on a tiny generated schema) -------------

WKT_PROTO = """
syntax = "proto3";
package wkttest;
import "google/protobuf/struct.proto";
message Holder {
  google.protobuf.Struct config = 1;
  google.protobuf.Value value = 2;
  repeated google.protobuf.Value values = 3;
  map<string, google.protobuf.Value> named = 4;
}
"""


@pytest.fixture(scope="module")
def wkt_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    grpc_protoc = pytest.importorskip("grpc_tools.protoc")
    root = tmp_path_factory.mktemp("wktgen")
    (root / "proto").mkdir()
    (root / "proto" / "holder.proto").write_text(WKT_PROTO)
    package = root / "pilot_wkt_test_gen"
    package.mkdir()
    (package / "__init__.py").write_text("")
    include = str(Path(grpc_protoc.__file__).parent / "_proto")
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + old_path
    try:
        status = grpc_protoc.main(
            ["protoc", f"-I{root / 'proto'}", f"-I{include}", f"--python_betterproto2_out={package}", "holder.proto"]
        )
    finally:
        os.environ["PATH"] = old_path
    if status != 0:
        pytest.skip("betterproto2 plugin not available")
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("pilot_wkt_test_gen.wkttest")
    finally:
        sys.path.remove(str(root))


def test_struct_and_value(wkt_module: Any) -> None:
    message, errors = convert_message(
        wkt_module.Holder,
        {"config": {"a": [1, "x", None, {"b": True}]}, "value": None, "values": [None, 2], "named": {"n": None}},
        "spec",
    )
    assert errors == []
    assert message.config.to_dict() == {"a": [1.0, "x", None, {"b": True}]}
    assert message.value is not None and message.value.to_dict() is None  # null is a value here, not "unset"
    assert [v.to_dict() for v in message.values] == [None, 2.0]
    assert message.named["n"].to_dict() is None


def test_struct_errors(wkt_module: Any) -> None:
    message, errors = convert_message(wkt_module.Holder, {"config": {"a": datetime.date(2020, 1, 1)}, "values": {}})
    assert message is None
    assert [str(e) for e in errors] == [
        "spec.config[a]: expected a JSON value, got date 2020-01-01",
        "spec.values: expected a list, got an object",
    ]


# --- schema fidelity ----------------------------------------------------------------------------------------------


def _proto_field_names() -> set[str]:
    names: set[str] = set()
    pattern = re.compile(r"^\s*(?:repeated\s+)?(?:map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+\s*;", re.M)
    for path in PROTO_DIR.rglob("*.proto"):
        names.update(pattern.findall(path.read_text()))
    return names


def test_every_generated_field_maps_to_a_proto_field() -> None:
    """The JSON names pilot accepts are derived from the generated attributes; check them against the .proto text."""
    proto_names = _proto_field_names()
    assert "consecutive_5xx_errors" in proto_names
    seen: set[type] = set()
    stack: list[type] = list(ISTIO_KINDS.values())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        meta = cls._betterproto  # type: ignore[attr-defined]
        for attr in meta.sorted_field_names:
            proto = attr[:-1] if attr.endswith("_") else attr
            assert proto in proto_names, f"{cls.__name__}.{attr}"
            field_cls = meta.cls_by_field.get(f"{attr}.value", meta.cls_by_field[attr])
            if isinstance(field_cls, type) and issubclass(field_cls, betterproto2.Message):
                if not field_cls.__module__.endswith("google.protobuf"):
                    stack.append(field_cls)
    assert len(seen) > 50


@pytest.mark.parametrize(
    ("proto", "json"),
    [
        ("export_to", "exportTo"),
        ("consecutive_5xx_errors", "consecutive5xxErrors"),
        ("http1_max_pending_requests", "http1MaxPendingRequests"),
        ("h2_upgrade_policy", "h2UpgradePolicy"),
        ("sni", "sni"),
    ],
)
def test_json_name(proto: str, json: str) -> None:
    assert json_name(proto) == json


# --- speed --------------------------------------------------------------------------------------------------------


def test_typical_virtual_service_converts() -> None:
    spec = {
        "hosts": ["reviews.prod.svc.cluster.local"],
        "gateways": ["mesh"],
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
    ok("VirtualService", spec)  # its speed is measured in benchmarks/bench_config.py
