"""PILOT_ENABLE_STATUS: validation status written on Istio objects in istiod's shape, by the Lease holder only;
a clean hand-over between two pilots; an invalid object keeps its last good version in the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from pilot.model.config import ConfigKey
from pilot.sources.kube.leader import LeaseTiming
from pilot.sources.kube.status import Verdict, desired_status, same_status
from tests.kube import objects as o
from tests.kube.harness import FakeApiServer

pytestmark = pytest.mark.timeout(30)

REVIEWS = "reviews.default.svc.cluster.local"
LEASE = "/apis/coordination.k8s.io/v1/namespaces/istio-system/leases/pilot-status-leader"


async def until(predicate: Callable[[], object], within: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {within:g}s waiting for {what}"
        await asyncio.sleep(0.01)


def condition(api: FakeApiServer, name: str) -> dict[str, Any] | None:
    obj = api.get("VirtualService", name)
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PassedValidation":
            return dict(cond)
    return None


def holder(api: FakeApiServer) -> str:
    lease = api.get("Lease", "pilot-status-leader", "istio-system")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def bad_vs(name: str) -> dict[str, Any]:
    vs = o.virtual_service(name, REVIEWS)
    vs["spec"]["http"][0]["route"][0]["weight"] = -1
    return vs


async def test_the_leader_writes_validation_status(api: FakeApiServer, start_pilot: Any) -> None:
    api.apply(o.virtual_service("good", REVIEWS))
    api.apply(bad_vs("bad"))
    pilot = await start_pilot(enable_status=True)
    await until(lambda: holder(api) == "pilot-test", what="the Lease")
    await until(lambda: condition(api, "good") and condition(api, "bad"), what="status on both")

    good = api.get("VirtualService", "good")
    assert good is not None
    assert good["status"]["conditions"][0] | {"lastProbeTime": "", "lastTransitionTime": ""} == {
        "type": "PassedValidation",
        "status": "True",
        "reason": "NoIssues",
        "message": "the configuration is valid",
        "lastProbeTime": "",
        "lastTransitionTime": "",
    }
    assert good["status"]["observedGeneration"] == good["metadata"]["generation"]
    assert "validationMessages" not in good["status"]
    bad = api.get("VirtualService", "bad")
    assert bad is not None
    assert bad["status"]["validationMessages"] == [
        {
            "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0106/",
            "level": "ERROR",
            "type": {"name": "SchemaValidationError", "code": "IST0106"},
        }
    ]
    cond = condition(api, "bad")
    assert cond is not None and cond["status"] == "False" and cond["reason"] == "SchemaValidationError"
    assert "spec.http[0].route[0].weight" in cond["message"], cond["message"]
    assert pilot.store.get(ConfigKey("VirtualService", "default", "bad")) is None

    # Status writes come back as watch events: they are not changes, and are not written again.
    writes = len(api.requests("patch", "virtualservices"))
    api.apply(o.virtual_service("fence", REVIEWS, timeout="3s"))
    await until(lambda: condition(api, "fence"), what="the fence's status")
    assert len(api.requests("patch", "virtualservices")) == writes + 1
    assert pilot.discovery.counters["pilot_k8s_cfg_events{type=VirtualService,event=update}"] == 0

    # good breaks: the store keeps its last good version, the status says why; fixed again: True.
    api.apply(bad_vs("good"))
    await until(lambda: (condition(api, "good") or {}).get("status") == "False", what="good's failure")
    kept = pilot.store.get(ConfigKey("VirtualService", "default", "good"))
    assert kept is not None and kept.spec.http[0].route[0].weight == 0
    api.apply(o.virtual_service("good", REVIEWS, timeout="9s"))
    await until(lambda: (condition(api, "good") or {}).get("status") == "True", what="good's recovery")
    fixed = api.get("VirtualService", "good")
    assert fixed is not None and fixed["status"]["observedGeneration"] == fixed["metadata"]["generation"] == 3
    assert all(r.user_agent.endswith("(pilot-test)") for r in api.requests("patch", "virtualservices"))


async def test_only_the_lease_holder_writes_and_a_clean_stop_hands_over_at_once(
    api: FakeApiServer, start_pilot: Any
) -> None:
    timing = LeaseTiming(duration=30, renew_deadline=20, retry_period=0.1)  # expiry would take 30 s
    first = await start_pilot(enable_status=True, identity="pilot-a", lease=timing)
    await until(lambda: holder(api) == "pilot-a", what="pilot-a to lead")
    second = await start_pilot(enable_status=True, identity="pilot-b", lease=timing)
    assert second.kube is not None and second.kube.elector is not None
    api.apply(o.virtual_service("one", REVIEWS))
    await until(lambda: condition(api, "one"), what="status by the leader")
    await until(lambda: second.kube.elector.holder == "pilot-a", what="pilot-b to see the leader")  # type: ignore[union-attr]
    assert not second.kube.elector.is_leader
    writers = {r.user_agent for r in api.requests("patch", "virtualservices")}
    assert writers == {"pilot/0.1 (pilot-a)"}

    await first.stop()  # releases the Lease
    await until(lambda: holder(api) == "pilot-b", within=3, what="pilot-b to take the released Lease")
    api.apply(bad_vs("two"))
    await until(lambda: (condition(api, "two") or {}).get("status") == "False", what="status by the new leader")
    later = {r.user_agent for r in api.requests("patch", "virtualservices")} - writers
    assert later == {"pilot/0.1 (pilot-b)"}
    lease = api.get("Lease", "pilot-status-leader", "istio-system")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1


async def test_losing_the_lease_stops_writing_at_once(api: FakeApiServer, start_pilot: Any) -> None:
    pilot = await start_pilot(enable_status=True, lease=LeaseTiming(duration=3, renew_deadline=2, retry_period=0.05))
    elector = pilot.kube.elector  # type: ignore[union-attr]
    await until(lambda: elector.is_leader, what="leading")  # the Lease written and the answer read
    # Someone else takes the Lease (as after a partition): the next renewal sees it and steps down.
    lease = api.get("Lease", "pilot-status-leader", "istio-system")
    assert lease is not None
    api.apply({**lease, "spec": {**lease["spec"], "holderIdentity": "intruder"}})
    await until(lambda: not elector.is_leader, what="stepping down")
    patches = len(api.requests("patch"))
    api.apply(o.virtual_service("unwritten", REVIEWS))
    api.apply(o.service("fence"))
    await until(lambda: pilot.store.get(ConfigKey("Service", "default", "fence")) is not None, what="the fence")
    assert len(api.requests("patch")) == patches and condition(api, "unwritten") is None
    assert holder(api) == "intruder"


def test_status_shape_keeps_other_conditions_and_transition_times() -> None:
    from pilot.sources.kube.resources import ISTIO_TYPES, ServedResource

    resource = ServedResource(ISTIO_TYPES[2], "v1")
    current = {
        "conditions": [
            {"type": "Reconciled", "status": "True", "message": "1/1 proxies up to date"},
            {"type": "PassedValidation", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]
    }
    ok = desired_status(Verdict(resource, "default", "x", 4, (), ()), current, "2026-02-02T00:00:00Z")
    assert [c["type"] for c in ok["conditions"]] == ["Reconciled", "PassedValidation"]
    assert ok["conditions"][1]["lastTransitionTime"] == "2026-01-01T00:00:00Z", "status unchanged: same transition"
    warned = desired_status(Verdict(resource, "default", "x", 4, (), ("w",)), current, "2026-02-02T00:00:00Z")
    assert warned["validationMessages"][0]["type"]["code"] == "IST0133"
    assert warned["validationMessages"][0]["level"] == "WARNING"
    failed = desired_status(Verdict(resource, "default", "x", 5, ("e1", "e2"), ()), current, "2026-02-02T00:00:00Z")
    assert failed["conditions"][1]["lastTransitionTime"] == "2026-02-02T00:00:00Z"
    assert failed["conditions"][1]["message"] == "e1; e2" and len(failed["validationMessages"]) == 2
    assert same_status(ok, {**ok, "observedGeneration": "4"}), "observedGeneration is int-or-string"
    assert not same_status(ok, failed)
