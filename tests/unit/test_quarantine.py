"""NACK quarantine (pilot.xds.quarantine) driven through the SotW and Delta stream machines, without I/O."""

from __future__ import annotations

from pilot.model.config import ConfigKey
from pilot.xds.delta import DeltaStream
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE
from pilot.xds.protocol import Outgoing, RequestKind
from pilot.xds.quarantine import Quarantined, QuarantineReport, RecentChanges, culprits, mentions, offending
from pilot.xds.resource import Resource
from pilot.xds.sotw import SotwStream
from tests.unit import test_delta as delta_helpers
from tests.unit.test_sotw import cla, cluster, names_of, request, snap

CDS_MESSAGE = "Error adding/updating cluster(s) b: cluster b: connect_timeout must be positive"


def sotw_with(*resources: Resource) -> tuple[SotwStream, str]:
    """A SotW stream that was sent and ACKed ``resources`` as its CDS (returns the stream and the version)."""
    stream = SotwStream()
    stream.on_request(request(CLUSTER_TYPE))
    first = stream.respond(CLUSTER_TYPE, snap(*resources), "v1", force=True)
    assert first is not None
    stream.on_request(request(CLUSTER_TYPE, nonce=first.nonce, version="v1"))
    return stream, first.nonce


def versions(out: Outgoing | None) -> dict[str, str]:
    assert out is not None
    return {r.name: r.version for r in out.resources}


def test_mentions_matches_whole_names_only() -> None:
    assert mentions("Error adding/updating listener(s) 0.0.0.0_8080: bad", "0.0.0.0_8080")
    assert not mentions("Error adding/updating listener(s) 0.0.0.0_8080: bad", "0.0.0.0_80")
    assert mentions("cluster 'outbound|80||a.example.com' rejected", "outbound|80||a.example.com")
    assert not mentions("route 8080 rejected", "80")
    assert mentions("route 80: rejected", "80")
    assert not mentions("anything", "")


def test_culprits_are_the_named_changes_else_every_change() -> None:
    held = {"a": "1", "b": "1", "c": "1"}
    sent = {"a": "1", "b": "2", "c": "2", "d": "1"}
    assert culprits("cluster b is invalid", sent, held) == (("b",), True)  # c and d are owed again
    assert culprits("something failed", sent, held) == (("b", "c", "d"), False)
    assert culprits("something failed", sent, held, quarantined={"b", "c"}) == (("d",), False)
    # A response that removed a resource carried a change of its own.
    assert culprits("b failed", {"b": "2"}, {"a": "1", "b": "1"}) == (("b",), True)


def test_sotw_keeps_serving_the_rest_and_retries_the_culprit_when_it_changes() -> None:
    a, b = cluster("a"), cluster("b")
    stream, _ = sotw_with(a, b)
    bad_b, new_c = cluster("b", timeout=0), cluster("c", timeout=3)
    rejected = stream.respond(CLUSTER_TYPE, snap(a, bad_b, new_c), "v2")
    assert rejected is not None
    nack = stream.on_request(request(CLUSTER_TYPE, nonce=rejected.nonce, version="v1", error=CDS_MESSAGE))
    assert nack.kind is RequestKind.NACK and nack.quarantined == ("b",) and nack.respond
    state = stream.types[CLUSTER_TYPE]
    assert state.quarantine == {"b": bad_b.version}

    # The answer to the NACK: the whole set again, with b at the version the client holds, and c new.
    again = stream.respond(CLUSTER_TYPE, snap(a, bad_b, new_c), "v2")
    assert versions(again) == {"a": a.version, "b": b.version, "c": new_c.version}
    stream.on_request(request(CLUSTER_TYPE, nonce=again.nonce, version="v2"))
    assert state.last_error == "" and state.quarantine == {"b": bad_b.version}

    # Unrelated changes keep flowing; b stays held back while it is the same rejected content.
    newer_a = cluster("a", timeout=5)
    out = stream.respond(CLUSTER_TYPE, snap(newer_a, bad_b, new_c), "v3")
    assert versions(out)["a"] == newer_a.version and versions(out)["b"] == b.version
    stream.on_request(request(CLUSTER_TYPE, nonce=out.nonce, version="v3"))
    assert stream.respond(CLUSTER_TYPE, snap(newer_a, bad_b, new_c), "v4") is None

    # b changes (its object was edited): it is retried, and leaves quarantine.
    fixed_b = cluster("b", timeout=4)
    retried = stream.respond(CLUSTER_TYPE, snap(newer_a, fixed_b, new_c), "v5")
    assert versions(retried)["b"] == fixed_b.version and state.quarantine == {}


def test_a_new_resource_the_client_never_had_is_left_out() -> None:
    a = cluster("a")
    stream, _ = sotw_with(a)
    bad_new = cluster("z", timeout=0)
    rejected = stream.respond(CLUSTER_TYPE, snap(a, bad_new), "v2")
    nack = stream.on_request(request(CLUSTER_TYPE, nonce=rejected.nonce, version="v1", error="cluster z: bad"))
    assert nack.quarantined == ("z",) and not nack.respond  # nothing else was in that response
    # Another change later: sent without z (which the client never had).
    b = cluster("b")
    out = stream.respond(CLUSTER_TYPE, snap(a, b, bad_new), "v3")
    assert names_of(out) == ["a", "b"]


def test_an_unexplained_nack_holds_back_the_whole_change_and_never_loops() -> None:
    a, b = cluster("a"), cluster("b")
    stream, _ = sotw_with(a, b)
    snapshot = snap(cluster("a", timeout=1), cluster("b", timeout=2))
    rejected = stream.respond(CLUSTER_TYPE, snapshot, "v2")
    nack = stream.on_request(request(CLUSTER_TYPE, nonce=rejected.nonce, version="v1", error="code 13"))
    assert nack.quarantined == ("a", "b") and not nack.respond
    assert stream.respond(CLUSTER_TYPE, snapshot, "v2") is None  # the client has everything it can take


def test_eds_by_name_after_a_nack() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT_TYPE, ("x", "y")))
    first = stream.respond(ENDPOINT_TYPE, snap(cla("x"), cla("y")), "v1")
    stream.on_request(request(ENDPOINT_TYPE, ("x", "y"), nonce=first.nonce, version="v1"))
    rejected = stream.respond(ENDPOINT_TYPE, snap(cla("x", 81), cla("y", 82)), "v2")
    nack = stream.on_request(request(ENDPOINT_TYPE, ("x", "y"), nonce=rejected.nonce, version="v1", error="x: bad"))
    assert nack.quarantined == ("x",) and nack.respond
    again = stream.respond(ENDPOINT_TYPE, snap(cla("x", 81), cla("y", 82)), "v2")
    assert names_of(again) == ["y"]  # only what changed: y; x stays as the client has it


def test_delta_quarantine() -> None:
    req, sent = delta_helpers.request, delta_helpers.sent
    stream = DeltaStream()
    stream.on_request(req(CLUSTER_TYPE, subscribe=("*",)))
    a, b = cluster("a"), cluster("b")
    first = stream.respond(CLUSTER_TYPE, snap(a, b), "v1", force=True)
    delta_helpers.ack(stream, first)
    bad_a, new_b = cluster("a", timeout=0), cluster("b", timeout=7)
    rejected = stream.respond(CLUSTER_TYPE, snap(bad_a, new_b), "v2")
    nack = stream.on_request(req(CLUSTER_TYPE, nonce=rejected.nonce, error="Error adding/updating cluster(s) a: x"))
    assert nack.kind is RequestKind.NACK and nack.quarantined == ("a",) and nack.respond
    again = stream.respond(CLUSTER_TYPE, snap(bad_a, new_b), "v2")
    assert sent(again) == {"b": new_b.version}
    fixed = cluster("a", timeout=9)
    retried = stream.respond(CLUSTER_TYPE, snap(fixed, new_b), "v3")
    assert sent(retried) == {"a": fixed.version}


def test_report_blames_what_changed_and_logs_each_rejected_version_once() -> None:
    sidecar, service = ConfigKey("Sidecar", "default", "default"), ConfigKey("ServiceEntry", "default", "a")
    recent = RecentChanges()
    recent.record(4, [service])
    recent.record(5, [sidecar])
    recent.record(5, [ConfigKey("Endpoints", "default", "a")])  # endpoint-only push on top of 5
    assert recent.at(5) == {sidecar, ConfigKey("Endpoints", "default", "a")}
    assert recent.at(9) is None
    assert offending([sidecar, service], recent.at(5)) == (sidecar,)
    many = [ConfigKey("ServiceEntry", "default", str(i)) for i in range(20)]
    assert offending(many, None) == ()  # a whole listener set: nobody in particular
    report = QuarantineReport()
    entry = Quarantined("p-1", CLUSTER_TYPE, "b", "v9", (sidecar,), "bad", 0.0)
    assert report.add(entry) and not report.add(entry)
    live = {"p-1": {CLUSTER_TYPE: {"b": "v9"}}}
    status = QuarantineReport.status(report.current(live))
    detail = status["pilot_xds_nack_quarantine"]["Sidecar/default/default"]["p-1"]
    assert detail["resource"] == "b" and detail["type"] == "Cluster"
    assert report.current({"p-1": {CLUSTER_TYPE: {"b": "v10"}}}) == []  # lifted (or quarantined anew)
