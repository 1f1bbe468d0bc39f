"""EDS generator: subset filtering, locality grouping, weights, empty and unknown clusters."""

from __future__ import annotations

from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2

from pilot.config.validation import check
from pilot.model.config import Config, ConfigKey
from pilot.model.proxy import Proxy, parse_proxy
from pilot.model.service import Endpoint, Port, Protocol, Resolution, Service, ServiceEndpoints
from pilot.push.context import PushContext
from pilot.xds import cds, eds

HOST = "reviews.default.svc.cluster.local"
HTTP = Port("http", 9080, Protocol.HTTP)
GRPC = Port("grpc", 9090, Protocol.GRPC)


def _proxy(kind: str = "sidecar", namespace: str = "default") -> Proxy:
    return parse_proxy(f"{kind}~10.0.0.9~p.{namespace}~{namespace}.svc.cluster.local", {"NAMESPACE": namespace})


def _rule(spec: dict[str, Any]) -> Config:
    typed, errors = check("DestinationRule", {"host": "reviews", **spec}, "default")
    assert not errors, errors
    return Config(
        key=ConfigKey("DestinationRule", "default", "reviews"), api_version="networking.istio.io/v1", spec=typed
    )


def _push(services: list[Service], endpoints: list[ServiceEndpoints], configs: list[Config] = ()) -> PushContext:
    return PushContext.of(configs, services, {e.hostname: e for e in endpoints})


ENDPOINTS = ServiceEndpoints(
    HOST,
    {
        "http": (
            Endpoint("10.1.0.3", 8080, "http", {"version": "v2"}, locality="us-east/zone-b"),
            Endpoint("10.1.0.1", 8080, "http", {"version": "v1"}, weight=5, locality="us-west/zone-a/rack1"),
            Endpoint("10.1.0.2", 8080, "http", {"version": "v1"}, locality="us-east/zone-b"),
        )
    },
)
SUBSETS = _rule({"subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v3", "labels": {"version": "v3"}}]})


def _addresses(cla: endpoint_pb2.ClusterLoadAssignment) -> list[tuple[str, int]]:
    return [
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for group in cla.endpoints
        for lb in group.lb_endpoints
    ]


def _build(names: list[str], configs: list[Config] = (), services: list[Service] | None = None) -> dict[str, Any]:
    svc = Service(HOST, "default", (HTTP, GRPC))
    push = _push(services if services is not None else [svc], [ENDPOINTS], configs)
    return {cla.cluster_name: cla for cla in eds.build_endpoints(_proxy(), push, names)}


def test_all_endpoints_grouped_by_sorted_locality_with_weights() -> None:
    name = f"outbound|9080||{HOST}"
    cla = _build([name])[name]
    assert [(g.locality.region, g.locality.zone, g.locality.sub_zone) for g in cla.endpoints] == [
        ("us-east", "zone-b", ""),
        ("us-west", "zone-a", "rack1"),
    ]
    assert _addresses(cla) == [("10.1.0.2", 8080), ("10.1.0.3", 8080), ("10.1.0.1", 8080)]
    weighted = cla.endpoints[1].lb_endpoints[0]
    assert weighted.load_balancing_weight.value == 5
    assert not cla.endpoints[0].lb_endpoints[0].HasField("load_balancing_weight")
    assert cla.endpoints[0].load_balancing_weight.value == 2
    assert cla.endpoints[1].load_balancing_weight.value == 5


def test_subset_filters_endpoints_by_labels() -> None:
    name = f"outbound|9080|v1|{HOST}"
    cla = _build([name], [SUBSETS])[name]
    assert _addresses(cla) == [("10.1.0.2", 8080), ("10.1.0.1", 8080)]


def test_subset_without_matching_endpoints_and_port_without_endpoints_get_empty_assignments() -> None:
    v3 = f"outbound|9080|v3|{HOST}"
    grpc = f"outbound|9090||{HOST}"
    out = _build([v3, grpc], [SUBSETS])
    assert set(out) == {v3, grpc}
    assert not out[v3].endpoints and not out[grpc].endpoints


def test_unknown_names_are_omitted() -> None:
    out = _build(
        [
            f"outbound|9080|nosuchsubset|{HOST}",
            f"outbound|1234||{HOST}",
            "outbound|9080||missing.default.svc.cluster.local",
            "inbound|9080||",
            "BlackHoleCluster",
            "not|a|cluster",
        ],
        [SUBSETS],
    )
    assert out == {}


def test_dns_and_passthrough_services_are_not_served_over_eds() -> None:
    dns = Service(HOST, "default", (HTTP,), Resolution.DNS)
    assert _build([f"outbound|9080||{HOST}"], services=[dns]) == {}
    none = Service(HOST, "default", (HTTP,), Resolution.NONE)
    assert _build([f"outbound|9080||{HOST}"], services=[none]) == {}
    # Gateways cannot use ORIGINAL_DST, so they get NONE services over EDS.
    push = _push([none], [ENDPOINTS])
    (cla,) = eds.build_endpoints(_proxy("router"), push, [f"outbound|9080||{HOST}"])
    assert len(_addresses(cla)) == 3


def test_every_eds_cluster_from_cds_gets_an_answer() -> None:
    push = _push([Service(HOST, "default", (HTTP, GRPC))], [ENDPOINTS], [SUBSETS])
    proxy = _proxy()
    eds_clusters = [c.name for c in cds.build_clusters(proxy, push) if c.HasField("eds_cluster_config")]
    assert len(eds_clusters) == 6
    assert [cla.cluster_name for cla in eds.build_endpoints(proxy, push, eds_clusters)] == sorted(eds_clusters)


def test_deterministic_and_ordered_by_name() -> None:
    names = [f"outbound|9080||{HOST}", f"outbound|9080|v1|{HOST}", f"outbound|9090||{HOST}"]
    push = _push([Service(HOST, "default", (HTTP, GRPC))], [ENDPOINTS], [SUBSETS])
    first = eds.build_endpoints(_proxy(), push, names)
    second = eds.build_endpoints(_proxy(), push, reversed(names + names))
    assert [c.cluster_name for c in first] == sorted(names)
    assert [c.SerializeToString() for c in first] == [c.SerializeToString() for c in second]
