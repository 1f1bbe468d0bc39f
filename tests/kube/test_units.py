"""Small pure parts of the Kubernetes source: backoff, version choice, trimming, lease timing."""

from __future__ import annotations

import random

import pytest

from pilot.sources.kube.backoff import Backoff
from pilot.sources.kube.leader import LeaseTiming
from pilot.sources.kube.resources import ISTIO_TYPES, KUBE_TYPES, choose_versions, trim_pod


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    delays = [backoff.next() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) == len(delays), "jittered"
    backoff.reset()
    assert backoff.next() <= 0.1
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_the_newest_served_istio_version_is_chosen_per_kind() -> None:
    served = {
        "networking.istio.io": {
            "v1beta1": {"virtualservices", "gateways"},
            "v1alpha3": {"virtualservices", "sidecars"},
        },
        "": {"v1": {"services", "pods", "nodes", "namespaces", "secrets"}},
    }
    found, missing = choose_versions(KUBE_TYPES + ISTIO_TYPES, served)
    versions = {r.kind: r.version for r in found}
    assert versions["VirtualService"] == "v1beta1" and versions["Sidecar"] == "v1alpha3"
    assert versions["Service"] == "v1"
    assert {t.kind for t in missing} == {
        "EndpointSlice",
        "ServiceEntry",
        "WorkloadEntry",
        "DestinationRule",
        "PeerAuthentication",
    }
    vs = next(r for r in found if r.kind == "VirtualService")
    assert vs.path("ns", "x", "status") == "/apis/networking.istio.io/v1beta1/namespaces/ns/virtualservices/x/status"
    assert vs.path() == "/apis/networking.istio.io/v1beta1/virtualservices"


def test_a_pod_keeps_only_what_pilot_reads() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n", "labels": {"a": "b"}, "resourceVersion": "9",
                     "managedFields": [{}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"podIP": "10.0.0.1", "phase": "Running", "conditions": [{"type": "Ready"}]},
    }  # fmt: skip
    assert trim_pod(pod) == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n", "labels": {"a": "b"}},
        "spec": {"nodeName": "n1"},
        "status": {"podIP": "10.0.0.1"},
    }


def test_lease_timing_is_checked() -> None:
    assert LeaseTiming.scaled(15) == LeaseTiming(15, 10, 2)
    with pytest.raises(ValueError, match="renew deadline"):
        LeaseTiming(duration=5, renew_deadline=6, retry_period=1)
