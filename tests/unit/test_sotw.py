"""SotwStream driven directly: the state-of-the-world xDS rules without any server or I/O."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE
from pilot.xds.protocol import Outgoing, RequestKind
from pilot.xds.resource import Resource
from pilot.xds.snapshot import Snapshot
from pilot.xds.sotw import SotwStream


def cluster(name: str, timeout: int = 10) -> Resource:
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.seconds = timeout
    return Resource.of(name, c)


def cla(name: str, port: int = 80) -> Resource:
    m = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    m.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = port
    return Resource.of(name, m)


def snap(*resources: Resource) -> Snapshot:
    return Snapshot(resources)


def request(
    type_url: str, names: tuple[str, ...] = (), nonce: str = "", version: str = "", error: str | None = None
) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
    )
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def decoded(out: Outgoing | None) -> discovery_pb2.DiscoveryResponse:
    assert out is not None
    return discovery_pb2.DiscoveryResponse.FromString(out.body)


def names_of(out: Outgoing | None) -> list[str]:
    response = decoded(out)
    names = []
    for any_msg in response.resources:
        if any_msg.type_url.endswith("Cluster"):
            c = cluster_pb2.Cluster()
            any_msg.Unpack(c)
            names.append(c.name)
        else:
            m = endpoint_pb2.ClusterLoadAssignment()
            any_msg.Unpack(m)
            names.append(m.cluster_name)
    return names


def test_initial_wildcard_cds_is_answered_with_everything_in_name_order() -> None:
    stream = SotwStream()
    decision = stream.on_request(request(CLUSTER_TYPE))
    assert decision.kind is RequestKind.INITIAL and decision.respond
    out = stream.respond(CLUSTER_TYPE, snap(cluster("b"), cluster("a")), "v1", force=True)
    response = decoded(out)
    assert names_of(out) == ["a", "b"]
    assert response.version_info == "v1" and response.nonce == out.nonce and response.type_url == CLUSTER_TYPE


def test_initial_wildcard_with_no_resources_still_gets_an_empty_response() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER_TYPE))
    out = stream.respond(CLUSTER_TYPE, snap(), "v1", force=True)
    assert out is not None and len(decoded(out).resources) == 0


def test_ack_is_not_answered_and_unchanged_push_sends_nothing() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER_TYPE))
    out = stream.respond(CLUSTER_TYPE, snap(cluster("a")), "v1", force=True)
    ack = stream.on_request(request(CLUSTER_TYPE, nonce=out.nonce, version="v1"))
    assert ack.kind is RequestKind.ACK and not ack.respond
    assert stream.types[CLUSTER_TYPE].acked_version == "v1"
    assert stream.respond(CLUSTER_TYPE, snap(cluster("a")), "v2") is None


def test_changed_cds_resends_the_complete_set_and_removal_is_an_absence() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER_TYPE))
    stream.respond(CLUSTER_TYPE, snap(cluster("a"), cluster("b")), "v1", force=True)
    changed = stream.respond(CLUSTER_TYPE, snap(cluster("a"), cluster("b", timeout=5)), "v2")
    assert names_of(changed) == ["a", "b"] and changed.changed == ("b",)
    removed = stream.respond(CLUSTER_TYPE, snap(cluster("a")), "v3")
    assert names_of(removed) == ["a"]


def test_nack_is_recorded_and_the_same_resources_are_not_resent() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER_TYPE))
    first = stream.respond(CLUSTER_TYPE, snap(cluster("a")), "v1", force=True)
    stream.on_request(request(CLUSTER_TYPE, nonce=first.nonce, version="v1"))
    bad = stream.respond(CLUSTER_TYPE, snap(cluster("a", timeout=0)), "v2")
    assert bad is not None
    nack = stream.on_request(request(CLUSTER_TYPE, nonce=bad.nonce, version="v1", error="invalid cluster"))
    assert nack.kind is RequestKind.NACK and not nack.respond and nack.error == "invalid cluster"
    assert stream.types[CLUSTER_TYPE].last_error == "invalid cluster"
    assert stream.types[CLUSTER_TYPE].acked_version == "v1"
    # Same (rejected) content again: nothing to send. Fixed content: sent.
    assert stream.respond(CLUSTER_TYPE, snap(cluster("a", timeout=0)), "v3") is None
    fixed = stream.respond(CLUSTER_TYPE, snap(cluster("a", timeout=3)), "v4")
    assert fixed is not None
    stream.on_request(request(CLUSTER_TYPE, nonce=fixed.nonce, version="v4"))
    assert stream.types[CLUSTER_TYPE].last_error == ""


def test_stale_nonce_is_ignored_even_with_new_names() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT_TYPE, ("a",)))
    r1 = stream.respond(ENDPOINT_TYPE, snap(cla("a")), "v1")
    r2 = stream.respond(ENDPOINT_TYPE, snap(cla("a", port=81)), "v2")
    assert r1 is not None and r2 is not None
    stale = stream.on_request(request(ENDPOINT_TYPE, ("a", "b"), nonce=r1.nonce, version="v1"))
    assert stale.kind is RequestKind.STALE and not stale.respond
    assert stream.subscription(ENDPOINT_TYPE).names == {"a"}
    current = stream.on_request(request(ENDPOINT_TYPE, ("a", "b"), nonce=r2.nonce, version="v2"))
    assert current.kind is RequestKind.ACK and current.respond
    added = stream.respond(ENDPOINT_TYPE, snap(cla("a", port=81), cla("b")), "v2")
    assert names_of(added) == ["b"]


def test_named_resources_are_sent_per_resource_and_only_when_changed() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT_TYPE, ("a", "b")))
    first = stream.respond(ENDPOINT_TYPE, snap(cla("a"), cla("b")), "v1")
    assert names_of(first) == ["a", "b"]
    second = stream.respond(ENDPOINT_TYPE, snap(cla("a"), cla("b", port=90)), "v2")
    assert names_of(second) == ["b"]
    forced = stream.respond(ENDPOINT_TYPE, snap(cla("a"), cla("b", port=90)), "v3", force_names=("a",))
    assert names_of(forced) == ["a"]
    everything = stream.respond(ENDPOINT_TYPE, snap(cla("a"), cla("b", port=90)), "v4", force=True)
    assert names_of(everything) == ["a", "b"]


def test_name_subscribed_before_it_exists_is_sent_when_it_appears() -> None:
    stream = SotwStream()
    decision = stream.on_request(request(ENDPOINT_TYPE, ("later",)))
    assert decision.respond
    assert stream.respond(ENDPOINT_TYPE, snap(), "v1") is None
    appeared = stream.respond(ENDPOINT_TYPE, snap(cla("later")), "v2")
    assert names_of(appeared) == ["later"]


def test_unsubscribed_then_resubscribed_name_is_resent() -> None:
    stream = SotwStream()
    stream.on_request(request(ENDPOINT_TYPE, ("a",)))
    r1 = stream.respond(ENDPOINT_TYPE, snap(cla("a")), "v1")
    stream.on_request(request(ENDPOINT_TYPE, (), nonce=r1.nonce, version="v1"))
    again = stream.on_request(request(ENDPOINT_TYPE, ("a",), nonce=r1.nonce, version="v1"))
    assert again.respond
    resent = stream.respond(ENDPOINT_TYPE, snap(cla("a")), "v1")
    assert names_of(resent) == ["a"]


def test_wildcard_legacy_rule_and_explicit_names() -> None:
    stream = SotwStream()
    stream.on_request(request(CLUSTER_TYPE))
    assert stream.subscription(CLUSTER_TYPE) is None  # wildcard
    r1 = stream.respond(CLUSTER_TYPE, snap(cluster("a"), cluster("b")), "v1", force=True)
    # Switching to an explicit name list (as gRPC clients do) narrows the subscription.
    narrowed = stream.on_request(request(CLUSTER_TYPE, ("a",), nonce=r1.nonce, version="v1"))
    assert narrowed.respond and stream.subscription(CLUSTER_TYPE).names == {"a"}
    r2 = stream.respond(CLUSTER_TYPE, snap(cluster("a")), "v1", force=True)
    assert names_of(r2) == ["a"]
    # Once names were given, an empty list means nothing rather than everything.
    stream.on_request(request(CLUSTER_TYPE, (), nonce=r2.nonce, version="v1"))
    assert stream.subscription(CLUSTER_TYPE).names == set()
    assert not stream.watched(CLUSTER_TYPE)
    # '*' explicitly asks for everything again.
    star = stream.on_request(request(CLUSTER_TYPE, ("*",), nonce=r2.nonce, version="v1"))
    assert star.respond and stream.subscription(CLUSTER_TYPE) is None


def test_streams_in_the_same_state_share_one_encoded_response() -> None:
    """Encode once: proxies of one class get the very same bytes (and nonce) for the same change."""
    old, new = snap(cla("a"), cla("b")), None
    streams = [SotwStream() for _ in range(3)]
    for stream in streams:
        stream.on_request(request(ENDPOINT_TYPE, ("a", "b")))
        stream.respond(ENDPOINT_TYPE, old, "v1")
    new = old.derive({"b": cla("b", port=90)})
    outs = [stream.respond(ENDPOINT_TYPE, new, "v2") for stream in streams]
    assert all(out is not None for out in outs)
    assert len({id(out.body) for out in outs if out}) == 1
    assert names_of(outs[0]) == ["b"]


def test_an_ack_with_the_same_number_of_names_but_one_swapped_is_a_subscription_change() -> None:
    names = tuple(f"outbound|80||svc{i}.example.com" for i in range(50))
    stream = SotwStream()
    stream.on_request(request(ENDPOINT_TYPE, names))
    out = stream.respond(ENDPOINT_TYPE, snap(*(cla(n) for n in names)), "v1")
    assert not stream.on_request(request(ENDPOINT_TYPE, names, nonce=out.nonce, version="v1")).respond
    swapped = (*names[:-1], "outbound|80||other.example.com")
    assert stream.on_request(request(ENDPOINT_TYPE, swapped, nonce=out.nonce, version="v1")).respond
    assert "outbound|80||other.example.com" in stream.subscription(ENDPOINT_TYPE)
