"""The XdsCache key (proxy view) and the per-type skip of pushes a change cannot affect."""

from __future__ import annotations

from collections import Counter

from pilot.config.model import ConfigKey
from pilot.proxy import parse_proxy
from pilot.push.request import PushRequest
from pilot.xds.generate import XdsCache, generate, proxy_view
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.server import _unaffected
from tests.support import push_of

BASE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: special, namespace: default}
spec:
  workloadSelector: {labels: {app: special}}
  egress: [{hosts: ["./*"]}]
"""

SOURCE_LABELS_VS = """
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: by-source, namespace: default}
spec:
  hosts: [svc.example.com]
  http:
  - match: [{sourceLabels: {app: a}}]
    route: [{destination: {host: svc.example.com}}]
  - route: [{destination: {host: svc.example.com}}]
"""


def sidecar(app: str, pod: str = "p"):  # type: ignore[no-untyped-def]
    return parse_proxy(f"sidecar~10.0.0.9~{pod}.default~default.svc.cluster.local", {"LABELS": {"app": app}})


def test_labels_matter_only_through_what_they_select() -> None:
    push = push_of(BASE)
    assert proxy_view(sidecar("a", "p1"), push) == proxy_view(sidecar("b", "p2"), push)
    assert proxy_view(sidecar("a"), push) != proxy_view(sidecar("special"), push)


def test_source_label_routing_makes_labels_part_of_the_view() -> None:
    push = push_of(BASE + SOURCE_LABELS_VS)
    assert proxy_view(sidecar("a"), push) != proxy_view(sidecar("b"), push)


def test_proxies_with_equal_views_share_one_generation() -> None:
    push = push_of(BASE)
    cache = XdsCache()
    first = generate(cache, CLUSTER_TYPE, sidecar("a", "p1"), push)
    second = generate(cache, CLUSTER_TYPE, sidecar("b", "p2"), push)
    assert first is second
    assert (cache.hits, cache.misses) == (1, 1)


def request(*kinds: str) -> PushRequest:
    return PushRequest(
        configs_updated=frozenset(ConfigKey(k, "default", f"x{i}") for i, k in enumerate(kinds)),
        reason=Counter(config=1),
    )


def test_pushes_skip_types_the_change_cannot_affect() -> None:
    vs_only = request("VirtualService")
    assert _unaffected(CLUSTER_TYPE, vs_only) and _unaffected(ENDPOINT_TYPE, vs_only)
    assert not _unaffected(LISTENER_TYPE, vs_only) and not _unaffected(ROUTE_TYPE, vs_only)
    endpoints_only = request("EndpointSlice", "Pod")
    assert _unaffected(LISTENER_TYPE, endpoints_only) and _unaffected(ROUTE_TYPE, endpoints_only)
    assert not _unaffected(ENDPOINT_TYPE, endpoints_only) and not _unaffected(CLUSTER_TYPE, endpoints_only)
    mixed = request("VirtualService", "ServiceEntry")
    assert not any(_unaffected(t, mixed) for t in (CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE))
    # An empty change set means "anything may have changed".
    assert not _unaffected(CLUSTER_TYPE, PushRequest())
