"""Registries updated one object at a time: what each change reports (a service change, or endpoints only),
and that the endpoint index and the services always equal a rebuild from scratch."""

from __future__ import annotations

from typing import Any

from pilot.api.istio.networking import v1alpha3 as networking
from pilot.model.config import Config, ConfigKey
from pilot.model.endpoint_index import EndpointIndex
from pilot.registry import kube, serviceentry
from pilot.registry.aggregate import AggregateRegistry
from pilot.registry.kube import KubernetesRegistry
from pilot.registry.serviceentry import ServiceEntryRegistry
from tests.unit.test_registry import DOMAIN, HTTP, Res, kobj, kube_world, se, we

Loc = networking.ServiceEntryLocation


def svc_key(host: str, ns: str = "default") -> ConfigKey:
    return ConfigKey("ServiceEntry", ns, host)


def eps_key(host: str, ns: str = "default") -> ConfigKey:
    return ConfigKey("Endpoints", ns, host)


def selecting(name: str = "app", **spec: Any) -> Config:
    return se(
        name,
        hosts=[f"{name}.example.com"],
        ports=[HTTP],
        resolution=Res.STATIC,
        location=Loc.MESH_INTERNAL,
        workload_selector=networking.WorkloadSelector(labels={"app": name}),
        **spec,
    )


def workload(name: str, address: str, app: str = "app") -> Config:
    return we(name, address=address, labels={"app": app})


def test_service_entry_added_changed_in_endpoints_only_then_removed() -> None:
    index = EndpointIndex()
    registry = ServiceEntryRegistry(index, DOMAIN)
    entry = se(
        "a",
        hosts=["a.example.com"],
        ports=[HTTP],
        resolution=Res.STATIC,
        endpoints=[networking.WorkloadEntry(address="1.1.1.1")],
    )
    update = registry.apply({entry.key: entry})
    assert update.services == {svc_key("a.example.com")} and update.endpoints == {eps_key("a.example.com")}
    # Same service, other endpoints: an endpoint-only change (istiod's EDS update).
    moved = se(
        "a",
        hosts=["a.example.com"],
        ports=[HTTP],
        resolution=Res.STATIC,
        endpoints=[networking.WorkloadEntry(address="2.2.2.2")],
    )
    update = registry.apply({moved.key: moved})
    assert update.services == set() and update.endpoints == {eps_key("a.example.com")}
    assert [e.address for e in index.get("a.example.com", "default").by_port["http"]] == ["2.2.2.2"]
    # Identical again: nothing.
    assert not registry.apply({moved.key: moved})
    update = registry.apply({moved.key: None})
    assert update.services == {svc_key("a.example.com")} and update.endpoints == {eps_key("a.example.com")}
    assert registry.services() == {} and len(index) == 0


def test_dns_service_endpoint_change_is_a_service_change() -> None:
    """DNS clusters carry their endpoints inline, so CDS must be pushed: istiod makes it a full push."""
    registry = ServiceEntryRegistry(EndpointIndex(), DOMAIN)
    dns = se(
        "d",
        hosts=["d.example.com"],
        ports=[HTTP],
        resolution=Res.DNS,
        endpoints=[networking.WorkloadEntry(address="a.dns")],
    )
    registry.apply({dns.key: dns})
    changed = se(
        "d",
        hosts=["d.example.com"],
        ports=[HTTP],
        resolution=Res.DNS,
        endpoints=[networking.WorkloadEntry(address="b.dns")],
    )
    update = registry.apply({changed.key: changed})
    assert update.services == {svc_key("d.example.com")} and update.endpoints == {eps_key("d.example.com")}


def test_workload_entries_reach_only_the_service_entries_selecting_them() -> None:
    index = EndpointIndex()
    registry = ServiceEntryRegistry(index, DOMAIN)
    app, other = selecting("app"), selecting("other")
    registry.apply({app.key: app, other.key: other})
    w1 = workload("w1", "10.0.0.1")
    update = registry.apply({w1.key: w1})
    assert update.services == set() and update.endpoints == {eps_key("app.example.com")}
    relabelled = workload("w1", "10.0.0.1", app="other")
    update = registry.apply({relabelled.key: relabelled})
    assert update.endpoints == {eps_key("app.example.com"), eps_key("other.example.com")} and not update.services
    assert not index.get("app.example.com", "default").by_port
    update = registry.apply({relabelled.key: None})
    assert update.endpoints == {eps_key("other.example.com")}


def test_duplicate_host_hands_over_when_the_winner_goes() -> None:
    index = EndpointIndex()
    registry = ServiceEntryRegistry(index, DOMAIN)
    a = se(
        "a",
        hosts=["dup.example.com"],
        ports=[HTTP],
        resolution=Res.STATIC,
        endpoints=[networking.WorkloadEntry(address="1.1.1.1")],
    )
    b = se(
        "b",
        hosts=["dup.example.com"],
        ports=[HTTP],
        resolution=Res.STATIC,
        endpoints=[networking.WorkloadEntry(address="2.2.2.2")],
    )
    registry.apply({b.key: b, a.key: a})
    assert registry.services()["dup.example.com"].origin == a.key
    update = registry.apply({a.key: None})
    assert update.services == {svc_key("dup.example.com")}
    assert registry.services()["dup.example.com"].origin == b.key
    assert [e.address for e in index.get("dup.example.com", "default").by_port["http"]] == ["2.2.2.2"]


def test_kubernetes_slices_and_pods_are_endpoint_changes_services_are_service_changes() -> None:
    services, slices, pods = kube_world()
    index = EndpointIndex()
    registry = KubernetesRegistry(index, DOMAIN)
    registry.apply({c.key: c for c in [*services, *slices, *pods]})
    host = "reviews.bookinfo.svc.cluster.local"
    # A pod's labels shape its endpoints: an endpoint-only change of the services it backs.
    relabelled = kobj("Pod", "reviews-v1", ns="bookinfo", labels={"app": "reviews", "version": "v9"})
    update = registry.apply({relabelled.key: relabelled})
    assert update.services == set() and update.endpoints == {eps_key(host, "bookinfo")}
    assert any(e.labels.get("version") == "v9" for e in index.get(host, "bookinfo").by_port["http"])
    # A pod no slice names changes nothing.
    stranger = kobj("Pod", "nobody", ns="bookinfo", labels={"app": "x"})
    assert not registry.apply({stranger.key: stranger})
    # A slice going away: endpoints only.
    update = registry.apply({slices[1].key: None})
    assert update.services == set() and update.endpoints == {eps_key(host, "bookinfo")}
    # The Service itself: a service change.
    update = registry.apply({services[0].key: None})
    assert svc_key(host, "bookinfo") in update.services and host not in registry.services()


def test_incremental_updates_equal_a_rebuild_from_scratch() -> None:
    services, slices, pods = kube_world()
    index = EndpointIndex()
    registry = AggregateRegistry([KubernetesRegistry(index, DOMAIN), ServiceEntryRegistry(index, DOMAIN)])
    entries = [selecting("app"), workload("w1", "10.0.0.1"), workload("w2", "10.0.0.2")]
    everything = [*services, *slices, *pods, *entries]
    for cfg in reversed(everything):  # one object at a time, in another order
        registry.apply({cfg.key: cfg})
    registry.apply({entries[2].key: None})  # and one removal
    expected_kube, kube_eps = kube.build(services, slices, pods, DOMAIN)
    expected_se, se_eps = serviceentry.build(entries[:1], entries[1:2], DOMAIN)
    assert registry.services() == {s.hostname: s for s in [*expected_kube, *expected_se]}
    for host, eps in {**kube_eps, **se_eps}.items():
        svc = registry.services()[host]
        assert index.get(host, svc.namespace).by_port == {k: v for k, v in eps.by_port.items() if v}


def test_endpoint_locality_comes_from_the_pods_node_unless_the_pod_says_otherwise() -> None:
    index = EndpointIndex()
    registry = KubernetesRegistry(index, DOMAIN)
    service = kobj("Service", "web", spec={"clusterIP": "10.96.0.5", "ports": [{"name": "http", "port": 80}]})
    slice_ = kobj(
        "EndpointSlice",
        "web-1",
        labels={"kubernetes.io/service-name": "web"},
        ports=[{"name": "http", "port": 8080}],
        endpoints=[
            {"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "name": "a"}},
            {"addresses": ["10.1.0.2"], "targetRef": {"kind": "Pod", "name": "b"}},
        ],
    )
    pod_a = kobj("Pod", "a", labels={"app": "web"}, spec={"nodeName": "n1"})
    pod_b = kobj("Pod", "b", labels={"app": "web", "istio-locality": "eu.west.x"}, spec={"nodeName": "n1"})
    node = kobj(
        "Node", "n1", ns="", labels={"topology.kubernetes.io/region": "us", "topology.kubernetes.io/zone": "us-1"}
    )
    registry.apply({c.key: c for c in (service, slice_, pod_a, pod_b, node)})
    host = "web.default.svc.cluster.local"

    def localities() -> dict[str, str]:
        return {e.address: e.locality for e in index.get(host, "default").by_port["http"]}

    assert localities() == {"10.1.0.1": "us/us-1", "10.1.0.2": "eu/west/x"}
    moved = kobj(
        "Node", "n1", ns="", labels={"topology.kubernetes.io/region": "us", "topology.kubernetes.io/zone": "us-2"}
    )
    update = registry.apply({moved.key: moved})
    assert update.endpoints == {eps_key(host)} and not update.services
    assert localities() == {"10.1.0.1": "us/us-2", "10.1.0.2": "eu/west/x"}
    unrelated = kobj("Node", "n9", ns="", labels={"topology.kubernetes.io/region": "ap"})
    assert not registry.apply({unrelated.key: unrelated})


def pod(name: str, ip: str, *, app: str = "app", ready: bool = True, **extra: Any) -> Config:
    status: dict[str, Any] = {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    spec = {"serviceAccountName": "app-sa", "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}
    return kobj("Pod", name, labels={"app": app}, spec=spec, status=status, **extra)


def test_a_workload_selector_selects_ready_pods_as_istiod() -> None:
    """istiod's pod cache feeds ServiceEntry workloadSelectors: Pods with an IP, Ready, not terminating; the
    container port named as the ServiceEntry port; the Pod's account as a SPIFFE identity. Pod churn is an
    endpoint-only change; the Kubernetes registry still sees every Pod."""
    index = EndpointIndex()
    registry = AggregateRegistry([KubernetesRegistry(index, DOMAIN), ServiceEntryRegistry(index, DOMAIN)])
    entry = selecting()
    registry.apply({entry.key: entry})
    vm = workload("vm-1", "10.9.0.1")
    first = registry.apply({(p := pod("app-1", "10.1.0.1")).key: p, vm.key: vm})
    assert first.endpoints == {eps_key("app.example.com")}
    eps = index.get("app.example.com", "default").by_port["http"]
    assert sorted((e.address, e.port, e.origin) for e in eps) == [
        ("10.1.0.1", 8080, "Pod/default/app-1"),
        ("10.9.0.1", 80, "WorkloadEntry/default/vm-1"),
    ]
    service = registry.services()["app.example.com"]
    assert "spiffe://cluster.local/ns/default/sa/app-sa" in service.subject_alt_names
    # Not ready, terminating, or relabelled away: no longer an endpoint.
    for gone in (
        pod("app-1", "10.1.0.1", ready=False),
        pod("app-1", "10.1.0.1", metadata={"name": "app-1", "namespace": "default", "deletionTimestamp": "now"}),
        pod("app-1", "10.1.0.1", app="other"),
    ):
        registry.apply({gone.key: gone})
        assert [e.address for e in index.get("app.example.com", "default").by_port["http"]] == ["10.9.0.1"]
        registry.apply({(p := pod("app-1", "10.1.0.1")).key: p})  # back
    assert len(index.get("app.example.com", "default").by_port["http"]) == 2
    # A Pod of another namespace, or one no ServiceEntry selects, changes nothing here.
    elsewhere = kobj("Pod", "app-2", ns="other", labels={"app": "app"}, status={"podIP": "10.1.0.2"})
    assert not registry.apply({elsewhere.key: elsewhere}).services
