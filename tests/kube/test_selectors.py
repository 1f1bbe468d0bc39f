"""discoverySelectors: objects of namespaces no selector matches are not stored; a namespace whose labels
start or stop matching brings its objects in or takes them out at once. Plus the selector syntax itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pilot.model.config import ConfigKey
from pilot.sources.kube.selectors import SelectorError, load_selectors, parse_selectors
from tests.kube import objects as o
from tests.kube.harness import FakeApiServer

pytestmark = pytest.mark.timeout(30)

SELECTORS = parse_selectors(
    [
        {"matchLabels": {"istio-discovery": "enabled"}},
        {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]},
    ]
)


async def until(predicate: Callable[[], object], within: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {within:g}s waiting for {what}"
        await asyncio.sleep(0.01)


def stored_namespaces(pilot: Any, kind: str) -> set[str]:
    return {k.namespace or k.name for k in pilot.store.snapshot() if k.kind == kind}


async def test_only_selected_namespaces_are_stored_and_relabelling_moves_them(
    api: FakeApiServer, start_pilot: Any, proxies: Any
) -> None:
    api.apply(o.namespace("mesh", **{"istio-discovery": "enabled"}))
    api.apply(o.namespace("team-a", team="a"))
    api.apply(o.namespace("other"))
    for i, ns in enumerate(("mesh", "team-a", "other")):
        api.apply(o.service("svc", ns, ip=f"10.96.1.{i + 1}"))
        api.apply(o.endpoint_slice("svc", [(f"10.1.1.{i + 1}", True)], ns))
        api.apply(o.virtual_service("svc", f"svc.{ns}.svc.cluster.local", ns))
    pilot = await start_pilot(selectors=SELECTORS)
    for kind in ("Namespace", "Service", "EndpointSlice", "VirtualService"):
        assert stored_namespaces(pilot, kind) == {"mesh", "team-a"}, kind
    counters = pilot.discovery.counters
    assert counters["pilot_k8s_reg_events{type=Service,event=add}"] == 2, "objects not stored are not counted"
    assert len(pilot.kube.informers["Service"]) == 3, "the informer still caches every namespace"  # type: ignore[union-attr]

    proxy = proxies(pilot.grpc_port, namespace="mesh")
    other = "outbound|80||svc.other.svc.cluster.local"
    team_a = "outbound|80||svc.team-a.svc.cluster.local"
    await proxy.wait(lambda p: team_a in p.clusters and other not in p.clusters, what="the selected services")

    # A new object in a namespace nobody selects: not stored, not pushed.
    api.apply(o.service("late", "other", ip="10.96.1.9"))
    api.apply(o.service("fence", "mesh", ip="10.96.1.10"))
    await until(lambda: pilot.store.get(ConfigKey("Service", "mesh", "fence")) is not None, what="the fence")
    assert pilot.store.get(ConfigKey("Service", "other", "late")) is None

    # "other" starts matching: everything cached for it comes in, and reaches the proxy.
    api.apply(o.namespace("other", **{"istio-discovery": "enabled"}))
    await proxy.wait(lambda p: p.eds("svc.other.svc.cluster.local") == ["10.1.1.3:8080"], what="other's service")
    assert {k.name for k in pilot.store.snapshot() if k.namespace == "other"} == {"svc", "svc-abc", "late"}
    # "team-a" stops matching: its objects leave the store and its cluster the proxy.
    api.apply(o.namespace("team-a", team="b"))
    await proxy.wait(lambda p: team_a not in p.clusters, what="team-a's service to go")
    for kind in ("Namespace", "Service", "EndpointSlice", "VirtualService"):
        assert stored_namespaces(pilot, kind) == {"mesh", "other"}, kind
    # Changes in a deselected namespace are ignored.
    before = dict(counters)
    api.apply(o.service("svc", "team-a", ip="10.96.1.2", port=81))
    api.apply(o.service("fence", "mesh", ip="10.96.1.10", port=82))
    await until(lambda: counters["pilot_k8s_reg_events{type=Service,event=update}"] > before.get(
        "pilot_k8s_reg_events{type=Service,event=update}", 0), what="the second fence")  # fmt: skip
    assert pilot.store.get(ConfigKey("Service", "team-a", "svc")) is None


def test_selector_operators() -> None:
    selectors = parse_selectors(
        [
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [
                    {"key": "team", "operator": "NotIn", "values": ["legacy"]},
                    {"key": "mesh", "operator": "Exists"},
                    {"key": "skip", "operator": "DoesNotExist"},
                ],
            }
        ]
    )
    assert selectors.selects({"env": "prod", "mesh": "", "team": "a"})
    assert selectors.selects({"env": "prod", "mesh": "yes"})
    assert not selectors.selects({"env": "prod", "mesh": "", "team": "legacy"})
    assert not selectors.selects({"env": "prod", "mesh": "", "skip": "1"})
    assert not selectors.selects({"env": "dev", "mesh": ""})
    assert parse_selectors([]).selects({}) and parse_selectors(None).selects({"a": "b"})
    assert parse_selectors([{}]).selects({"anything": "x"}), "an empty selector matches every namespace"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("a string", "expected a list of label selectors"),
        ({"meshNetworks": {}}, "mapping with discoverySelectors"),
        ([{"matchLabel": {}}], "[0]: unknown field 'matchLabel'"),
        ([{"matchExpressions": [{"key": "a", "operator": "Maybe"}]}], "matchExpressions[0].operator: must be one of"),
        ([{"matchExpressions": [{"key": "a", "operator": "In"}]}], "matchExpressions[0].values: required for In"),
        ([{"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}], "must be empty for Exists"),
        ([{"matchLabels": {"a": 1}}], "matchLabels.a: keys and values must be strings"),
    ],
)
def test_selector_errors_name_the_field(doc: Any, message: str) -> None:
    with pytest.raises(SelectorError, match=None) as info:
        parse_selectors(doc)
    assert message in str(info.value)


def test_a_mesh_config_file_is_read_for_its_discovery_selectors(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("defaultConfig: {}\ndiscoverySelectors:\n- matchLabels: {istio-discovery: enabled}\n")
    assert load_selectors(mesh).selects({"istio-discovery": "enabled"})
    assert not load_selectors(mesh).selects({})
    listing = tmp_path / "selectors.yaml"
    listing.write_text("- matchLabels: {team: a}\n")
    assert load_selectors(listing).selects({"team": "a"})
