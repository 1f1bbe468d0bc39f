"""Service registries: ServiceEntry/WorkloadEntry and Kubernetes objects → Services and endpoints."""

from __future__ import annotations

from typing import Any

from pilot.api.istio.networking import v1alpha3 as networking
from pilot.model.config import Config, ConfigKey
from pilot.model.service import Endpoint, Port, Protocol, Resolution, ServiceEndpoints
from pilot.registry import kube, serviceentry

DOMAIN = "cluster.local"
Res = networking.ServiceEntryResolution
Loc = networking.ServiceEntryLocation


def se(name: str, ns: str = "default", **spec: Any) -> Config:
    return Config(ConfigKey("ServiceEntry", ns, name), "networking.istio.io/v1", networking.ServiceEntry(**spec))


def we(name: str, ns: str = "default", meta_labels: dict[str, str] | None = None, **spec: Any) -> Config:
    return Config(
        ConfigKey("WorkloadEntry", ns, name),
        "networking.istio.io/v1",
        networking.WorkloadEntry(**spec),
        labels=meta_labels or {},
    )


def kobj(kind: str, name: str, ns: str = "default", labels: dict[str, str] | None = None, **body: Any) -> Config:
    api = "discovery.k8s.io/v1" if kind == "EndpointSlice" else "v1"
    obj: dict[str, Any] = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, **body}
    if labels:
        obj["metadata"]["labels"] = labels
    return Config(ConfigKey(kind, ns, name), api, obj, labels=labels or {})


def addrs(eps: ServiceEndpoints, port: str) -> list[tuple[str, int]]:
    return [(e.address, e.port) for e in eps.by_port[port]]


HTTP = networking.ServicePort(number=80, name="http", protocol="HTTP")

# ----- ServiceEntry -----


def test_service_entry_static_inline_endpoints() -> None:
    entry = se(
        "ext",
        ns="web",
        hosts=["a.example.com", "short"],
        addresses=["240.0.0.1"],
        ports=[HTTP, networking.ServicePort(number=443, name="tls", protocol="tls", target_port=8443)],
        location=Loc.MESH_INTERNAL,
        resolution=Res.STATIC,
        export_to=["."],
        endpoints=[
            networking.WorkloadEntry(
                address="10.0.0.1", ports={"http": 8080}, labels={"v": "1"}, weight=3, locality="r/z"
            ),
            networking.WorkloadEntry(address="10.0.0.2"),
        ],
    )
    services, eps = serviceentry.build([entry], [], DOMAIN)
    assert [s.hostname for s in services] == ["a.example.com", "short.web.svc.cluster.local"]
    svc = services[0]
    assert svc.namespace == "web" and svc.resolution is Resolution.STATIC
    assert svc.ports == (Port("http", 80, Protocol.HTTP), Port("tls", 443, Protocol.TLS))
    assert svc.addresses == ("240.0.0.1",) and svc.export_to == (".",)
    assert svc.mesh_external is False and svc.registry == "ServiceEntry" and svc.origin == entry.key
    for host in ("a.example.com", "short.web.svc.cluster.local"):
        # Port: the endpoint's named port, else the service port's targetPort, else its number.
        assert addrs(eps[host], "http") == [("10.0.0.1", 8080), ("10.0.0.2", 80)]
        assert addrs(eps[host], "tls") == [("10.0.0.1", 8443), ("10.0.0.2", 8443)]
    first = eps["a.example.com"].by_port["http"][0]
    assert first == Endpoint(
        "10.0.0.1", 8080, "http", labels={"v": "1"}, weight=3, locality="r/z", origin="ServiceEntry/web/ext"
    )


def test_service_entry_resolutions_and_location() -> None:
    entries = [
        se("none", hosts=["n.example.com"], ports=[HTTP], resolution=Res.NONE),
        se("dns", hosts=["d.example.com"], ports=[HTTP], resolution=Res.DNS),
        se("rr", hosts=["r.example.com"], ports=[HTTP], resolution=Res.DNS_ROUND_ROBIN),
    ]
    services, _ = serviceentry.build(entries, [], DOMAIN)
    by_host = {s.hostname: s for s in services}
    assert by_host["n.example.com"].resolution is Resolution.NONE
    assert by_host["d.example.com"].resolution is Resolution.DNS
    assert by_host["r.example.com"].resolution is Resolution.DNS
    assert all(s.mesh_external for s in services)  # MESH_EXTERNAL is the default


def test_dns_without_endpoints_gets_one_endpoint_per_host() -> None:
    entry = se(
        "dns",
        hosts=["a.example.com", "b.example.com", "*.wild.com"],
        ports=[HTTP, networking.ServicePort(number=443, name="https", protocol="HTTPS", target_port=8443)],
        resolution=Res.DNS,
    )
    services, eps = serviceentry.build([entry], [], DOMAIN)
    assert [s.hostname for s in services] == ["*.wild.com", "a.example.com", "b.example.com"]  # hostname order
    assert addrs(eps["a.example.com"], "http") == [("a.example.com", 80)]
    assert addrs(eps["a.example.com"], "https") == [("a.example.com", 8443)]
    assert addrs(eps["b.example.com"], "http") == [("b.example.com", 80)]
    assert eps["*.wild.com"].by_port.get("http", ()) == ()


def test_workload_selector_selects_same_namespace_workload_entries() -> None:
    entry = se(
        "sel",
        hosts=["sel.example.com"],
        ports=[HTTP],
        resolution=Res.STATIC,
        workload_selector=networking.WorkloadSelector(labels={"app": "vm"}),
    )
    workloads = [
        we("vm-b", address="10.1.0.2", labels={"app": "vm"}, ports={"http": 9090}),
        we("vm-a", address="10.1.0.1", labels={"app": "vm", "v": "2"}, locality="r/z", weight=5),
        we("meta", address="10.1.0.3", meta_labels={"app": "vm"}),  # metadata labels count too
        we("other-app", address="10.1.0.9", labels={"app": "db"}),
        we("other-ns", ns="elsewhere", address="10.2.0.1", labels={"app": "vm"}),
    ]
    _, eps = serviceentry.build([entry], workloads, DOMAIN)
    got = eps["sel.example.com"].by_port["http"]
    assert [(e.address, e.port) for e in got] == [("10.1.0.3", 80), ("10.1.0.1", 80), ("10.1.0.2", 9090)]
    assert got[1].labels == {"app": "vm", "v": "2"} and got[1].locality == "r/z" and got[1].weight == 5
    assert got[1].origin == "WorkloadEntry/default/vm-a"


def test_duplicate_host_first_service_entry_wins_and_order_is_deterministic() -> None:
    a = se(
        "a",
        hosts=["dup.example.com"],
        ports=[HTTP],
        resolution=Res.STATIC,
        endpoints=[networking.WorkloadEntry(address="1.1.1.1")],
    )
    b = se(
        "b",
        hosts=["dup.example.com", "b.example.com"],
        ports=[HTTP],
        resolution=Res.STATIC,
        endpoints=[networking.WorkloadEntry(address="2.2.2.2")],
    )
    s1, e1 = serviceentry.build([b, a], [], DOMAIN)
    s2, e2 = serviceentry.build([a, b], [], DOMAIN)
    assert s1 == s2 and e1 == e2
    assert [(s.hostname, s.origin.name) for s in s1] == [("b.example.com", "b"), ("dup.example.com", "a")]  # type: ignore[union-attr]
    assert addrs(e1["dup.example.com"], "http") == [("1.1.1.1", 80)]


# ----- Kubernetes -----


def kube_world() -> tuple[list[Config], list[Config], list[Config]]:
    services = [
        kobj(
            "Service",
            "reviews",
            ns="bookinfo",
            labels={"app": "reviews"},
            spec={
                "clusterIP": "10.96.0.10",
                "ports": [
                    {"name": "http", "port": 9080, "targetPort": 9080},
                    {"name": "grpc-api", "port": 7070},
                    {"name": "tcp-x", "port": 5000, "appProtocol": "http2"},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                ],
            },
        ),
        kobj("Service", "db", ns="bookinfo", spec={"clusterIP": "None", "ports": [{"port": 5432}]}),
        kobj(
            "Service",
            "ext",
            ns="bookinfo",
            spec={"type": "ExternalName", "externalName": "db.example.com", "ports": [{"name": "tcp", "port": 3306}]},
        ),
    ]
    slices = [
        kobj(
            "EndpointSlice",
            "reviews-b",
            ns="bookinfo",
            labels={"kubernetes.io/service-name": "reviews"},
            addressType="IPv4",
            ports=[{"name": "http", "port": 9080}, {"name": "grpc-api", "port": 17070}],
            endpoints=[
                {
                    "addresses": ["10.1.0.2"],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": "reviews-v2"},
                },
                {
                    "addresses": ["10.1.0.3"],
                    "conditions": {"ready": False},
                    "targetRef": {"kind": "Pod", "name": "reviews-v3"},
                },
            ],
        ),
        kobj(
            "EndpointSlice",
            "reviews-a",
            ns="bookinfo",
            labels={"kubernetes.io/service-name": "reviews"},
            addressType="IPv4",
            ports=[{"name": "http", "port": 9080}],
            endpoints=[
                {"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "name": "reviews-v1"}},
                {"addresses": ["10.1.0.4"], "targetRef": {"kind": "Pod", "name": "missing"}},
            ],
        ),
        kobj(
            "EndpointSlice",
            "db-x",
            ns="bookinfo",
            labels={"kubernetes.io/service-name": "db"},
            addressType="IPv4",
            ports=[{"name": "", "port": 5432}],
            endpoints=[{"addresses": ["10.2.0.1"]}],
        ),
        # Same service name, other namespace: must not attach.
        kobj(
            "EndpointSlice",
            "reviews-z",
            ns="other",
            labels={"kubernetes.io/service-name": "reviews"},
            addressType="IPv4",
            ports=[{"name": "http", "port": 9080}],
            endpoints=[{"addresses": ["10.9.9.9"]}],
        ),
    ]
    pods = [
        kobj(
            "Pod",
            "reviews-v1",
            ns="bookinfo",
            labels={"app": "reviews", "version": "v1", "istio-locality": "us.east.a"},
        ),
        kobj("Pod", "reviews-v2", ns="bookinfo", labels={"app": "reviews", "version": "v2"}),
        kobj("Pod", "reviews-v2", ns="other", labels={"wrong": "namespace"}),
    ]
    return services, slices, pods


def test_kube_services() -> None:
    services, _ = kube.build(*kube_world(), DOMAIN)
    by_host = {s.hostname: s for s in services}
    assert list(by_host) == [
        "db.bookinfo.svc.cluster.local",
        "ext.bookinfo.svc.cluster.local",
        "reviews.bookinfo.svc.cluster.local",
    ]
    reviews = by_host["reviews.bookinfo.svc.cluster.local"]
    assert reviews.ports == (
        Port("http", 9080, Protocol.HTTP),
        Port("grpc-api", 7070, Protocol.GRPC),
        Port("tcp-x", 5000, Protocol.HTTP2),  # appProtocol wins over the name
    )  # the UDP port is left out
    assert reviews.addresses == ("10.96.0.10",) and reviews.resolution is Resolution.STATIC
    assert reviews.registry == "Kubernetes" and reviews.namespace == "bookinfo"
    assert reviews.labels == {"app": "reviews"} and not reviews.mesh_external
    db = by_host["db.bookinfo.svc.cluster.local"]
    assert db.resolution is Resolution.NONE and db.addresses == ()
    assert db.ports == (Port("", 5432, Protocol.UNKNOWN),)
    ext = by_host["ext.bookinfo.svc.cluster.local"]
    assert ext.resolution is Resolution.DNS and ext.addresses == ()


def test_kube_endpoints() -> None:
    _, eps = kube.build(*kube_world(), DOMAIN)
    reviews = eps["reviews.bookinfo.svc.cluster.local"]
    # Not-ready endpoints are dropped; slices of another namespace are ignored; sorted by address.
    assert addrs(reviews, "http") == [("10.1.0.1", 9080), ("10.1.0.2", 9080), ("10.1.0.4", 9080)]
    assert addrs(reviews, "grpc-api") == [("10.1.0.2", 17070)]  # Endpoint.port is the slice port
    assert reviews.by_port.get("tcp-x", ()) == ()
    v1, v2, missing = reviews.by_port["http"]
    assert v1.labels["version"] == "v1" and v1.locality == "us/east/a"
    assert v2.labels == {"app": "reviews", "version": "v2"}
    assert missing.labels == {}
    assert v1.service_port_name == "http" and v1.origin == "Kubernetes"
    # An unnamed slice port matches the single unnamed service port.
    assert addrs(eps["db.bookinfo.svc.cluster.local"], "") == [("10.2.0.1", 5432)]
    assert addrs(eps["ext.bookinfo.svc.cluster.local"], "tcp") == [("db.example.com", 3306)]


def test_kube_export_to_annotation_and_determinism() -> None:
    services, slices, pods = kube_world()
    annotated = Config(
        services[0].key,
        services[0].api_version,
        services[0].spec,
        labels=services[0].labels,
        annotations={"networking.istio.io/exportTo": ".,istio-system"},
    )
    out, _ = kube.build([annotated], [], [], DOMAIN)
    assert out[0].export_to == (".", "istio-system")
    assert kube.build(services, slices, pods, DOMAIN) == kube.build(services[::-1], slices[::-1], pods[::-1], DOMAIN)


def test_push_context_uses_both_registries() -> None:
    from pilot.push.offline import push_of_configs

    services, slices, pods = kube_world()
    entry = se("ext", hosts=["api.example.com"], ports=[HTTP], resolution=Res.DNS)
    push = push_of_configs([*services, *slices, *pods, entry], DOMAIN)
    assert push.service("api.example.com") is not None
    assert push.service("reviews.bookinfo.svc.cluster.local") is not None
    assert addrs(push.service_endpoints("api.example.com"), "http") == [("api.example.com", 80)]
