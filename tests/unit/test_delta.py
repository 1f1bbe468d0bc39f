"""DeltaStream driven directly: the incremental xDS rules without any server or I/O.

Every response is checked by decoding ``Outgoing.body`` (the bytes a transport would send) as a
DeltaDiscoveryResponse, so the hand-assembled encoding is checked along with the protocol decisions.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pilot.xds.delta import DeltaStream
from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE
from pilot.xds.protocol import Outgoing, RequestKind
from pilot.xds.resource import Resource
from pilot.xds.snapshot import Snapshot


def cluster(name: str, timeout: int = 10) -> Resource:
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.seconds = timeout
    return Resource.of(name, c)


def cla(name: str, *ports: int) -> Resource:
    """An assignment with one endpoint per port; no ports: an empty assignment (still a resource)."""
    m = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if ports:
        group = m.endpoints.add()
        for port in ports:
            group.lb_endpoints.add().endpoint.address.socket_address.port_value = port
    return Resource.of(name, m)


def snap(*resources: Resource) -> Snapshot:
    return Snapshot(resources)


def request(
    type_url: str,
    subscribe: tuple[str, ...] = (),
    unsubscribe: tuple[str, ...] = (),
    nonce: str = "",
    error: str | None = None,
    initial: dict[str, str] | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def decoded(out: Outgoing | None) -> discovery_pb2.DeltaDiscoveryResponse:
    assert out is not None, "expected a response"
    response = discovery_pb2.DeltaDiscoveryResponse.FromString(out.body)
    assert response.nonce == out.nonce and response.nonce, "every Delta response carries its nonce"
    assert response.system_version_info == out.version
    return response


def sent(out: Outgoing | None) -> dict[str, str]:
    """name -> version of the resources in a response, checking each wrapper against its body."""
    response = decoded(out)
    found = {}
    for wrapped in response.resources:
        if wrapped.resource.type_url.endswith(".Cluster"):
            c = cluster_pb2.Cluster()
            assert wrapped.resource.Unpack(c)
            assert c.name == wrapped.name
        else:
            m = endpoint_pb2.ClusterLoadAssignment()
            assert wrapped.resource.Unpack(m)
            assert m.cluster_name == wrapped.name
        assert wrapped.name not in found, f"{wrapped.name} sent twice in one response"
        found[wrapped.name] = wrapped.version
    return found


def removed(out: Outgoing | None) -> list[str]:
    return list(decoded(out).removed_resources)


def ack(stream: DeltaStream, out: Outgoing | None) -> None:
    assert out is not None
    decision = stream.on_request(request(out.type_url, nonce=out.nonce))
    assert decision.kind is RequestKind.ACK and not decision.respond


A, B, C = cluster("a"), cluster("b"), cluster("c")
EP_A, EP_B = "outbound|80||a.example.com", "outbound|80||b.example.com"


# ----- wildcard -----


def test_wildcard_cds_via_star_gets_everything() -> None:
    stream = DeltaStream()
    decision = stream.on_request(request(CLUSTER_TYPE, subscribe=("*",)))
    assert decision.kind is RequestKind.INITIAL and decision.respond
    assert stream.subscription(CLUSTER_TYPE) is None and stream.watched(CLUSTER_TYPE)
    out = stream.respond(CLUSTER_TYPE, snap(B, A), "v1", force=True)
    response = decoded(out)
    assert response.type_url == CLUSTER_TYPE
    assert sent(out) == {"a": A.version, "b": B.version}
    assert [r.name for r in response.resources] == ["a", "b"]  # name order
    assert removed(out) == []
    # A later cluster reaches the wildcard subscriber without it asking.
    ack(stream, out)
    later = stream.respond(CLUSTER_TYPE, snap(A, B, C), "v2")
    assert sent(later) == {"c": C.version}


def test_legacy_empty_first_request_is_wildcard_and_later_empty_requests_keep_it() -> None:
    stream = DeltaStream()
    decision = stream.on_request(request(LISTENER_TYPE))
    assert decision.kind is RequestKind.INITIAL and decision.respond
    assert stream.types[LISTENER_TYPE].wildcard
    first = stream.respond(LISTENER_TYPE, snap(), "v1", force=True)
    assert sent(first) == {} and removed(first) == []  # answered even when there is nothing
    ack(stream, first)
    assert stream.types[LISTENER_TYPE].wildcard and stream.watched(LISTENER_TYPE)


def test_empty_first_request_is_not_wildcard_for_named_types() -> None:
    stream = DeltaStream()
    stream.on_request(request(ENDPOINT_TYPE))
    assert not stream.types[ENDPOINT_TYPE].wildcard
    assert not stream.watched(ENDPOINT_TYPE)
    assert stream.subscription(ENDPOINT_TYPE) is not None and len(stream.subscription(ENDPOINT_TYPE)) == 0


def test_wildcard_plus_explicit_name_unsubscribed_is_answered_with_the_resource() -> None:
    # xds_protocol: with "*" and "a", unsubscribing "a" needs a reply; the wildcard still covers "a".
    stream = DeltaStream()
    stream.on_request(request(CLUSTER_TYPE, subscribe=("*", "a")))
    out = stream.respond(CLUSTER_TYPE, snap(A, B), "v1", force=True)
    ack(stream, out)
    decision = stream.on_request(request(CLUSTER_TYPE, unsubscribe=("a",)))
    assert decision.kind is RequestKind.SUBSCRIBE and decision.respond
    again = stream.respond(CLUSTER_TYPE, snap(A, B), "v1")
    assert sent(again) == {"a": A.version} and removed(again) == []


# ----- named subscriptions -----


def test_named_eds_subscribe_and_unsubscribe() -> None:
    stream = DeltaStream()
    first = stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,)))
    assert first.kind is RequestKind.INITIAL and first.respond
    world = snap(cla(EP_A, 1), cla(EP_B, 2))
    out = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v1")
    assert sent(out) == {EP_A: cla(EP_A, 1).version}
    ack(stream, out)

    # A spontaneous subscription (no nonce) is answered with just the new name.
    more = stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_B,)))
    assert more.kind is RequestKind.SUBSCRIBE and more.respond
    assert stream.subscription(ENDPOINT_TYPE).names == {EP_A, EP_B}
    out = stream.respond(ENDPOINT_TYPE, world, "v1")
    assert sent(out) == {EP_B: cla(EP_B, 2).version} and removed(out) == []
    ack(stream, out)

    # A pure unsubscribe needs no answer, and the name is no longer followed nor reported removed.
    less = stream.on_request(request(ENDPOINT_TYPE, unsubscribe=(EP_A,)))
    assert less.kind is RequestKind.SUBSCRIBE and not less.respond
    assert stream.subscription(ENDPOINT_TYPE).names == {EP_B}
    assert stream.respond(ENDPOINT_TYPE, snap(cla(EP_B, 2)), "v2") is None
    changed = stream.respond(ENDPOINT_TYPE, snap(cla(EP_B, 3)), "v3")
    assert sent(changed) == {EP_B: cla(EP_B, 3).version} and removed(changed) == []


def test_unsubscribing_everything_stops_the_type() -> None:
    stream = DeltaStream()
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,)))
    ack(stream, stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v1"))
    stream.on_request(request(ENDPOINT_TYPE, unsubscribe=(EP_A,)))
    assert not stream.watched(ENDPOINT_TYPE)


def test_name_subscribed_before_it_exists_is_sent_when_it_appears() -> None:
    stream = DeltaStream()
    decision = stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,)))
    assert decision.respond
    # Nothing exists yet: nothing to say, and certainly not "removed".
    assert stream.respond(ENDPOINT_TYPE, snap(), "v1") is None
    assert stream.respond(ENDPOINT_TYPE, snap(), "v2") is None
    appeared = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v3")
    assert sent(appeared) == {EP_A: cla(EP_A, 1).version} and removed(appeared) == []


# ----- removals -----


def test_removed_resources_names_a_held_resource_that_was_deleted() -> None:
    stream = DeltaStream()
    stream.on_request(request(CLUSTER_TYPE, subscribe=("*",)))
    ack(stream, stream.respond(CLUSTER_TYPE, snap(A, B), "v1", force=True))
    gone = stream.respond(CLUSTER_TYPE, snap(A), "v2")
    assert sent(gone) == {} and removed(gone) == ["b"]
    ack(stream, gone)
    # Said once: the next push without b says nothing about it.
    assert stream.respond(CLUSTER_TYPE, snap(A), "v3") is None


def test_never_removed_for_a_name_that_never_existed() -> None:
    stream = DeltaStream()
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A, "outbound|80||ghost.example.com")))
    first = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v1")
    assert sent(first) == {EP_A: cla(EP_A, 1).version} and removed(first) == []
    ack(stream, first)
    update = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 2)), "v2")
    assert sent(update) == {EP_A: cla(EP_A, 2).version} and removed(update) == []


def test_eds_cluster_without_endpoints_is_an_empty_assignment_never_a_removal() -> None:
    stream = DeltaStream()
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,)))
    empty = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A)), "v1")
    assert sent(empty) == {EP_A: cla(EP_A).version} and removed(empty) == []
    assert len(decoded(empty).resources) == 1
    ack(stream, empty)
    filled = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v2")
    assert sent(filled) == {EP_A: cla(EP_A, 1).version}
    ack(stream, filled)
    # The last endpoint goes: an empty assignment again, not removed_resources.
    drained = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A)), "v3")
    assert sent(drained) == {EP_A: cla(EP_A).version} and removed(drained) == []


# ----- reconnect -----


def test_reconnect_with_initial_versions_resends_only_what_changed() -> None:
    old_b = cluster("b", timeout=3)
    stream = DeltaStream()
    held = {"a": A.version, "b": old_b.version, "gone": cluster("gone").version}
    decision = stream.on_request(request(CLUSTER_TYPE, subscribe=("*",), initial=held))
    assert decision.kind is RequestKind.INITIAL and decision.respond
    out = stream.respond(CLUSTER_TYPE, snap(A, B, C), "v9", force=True)
    assert sent(out) == {"b": B.version, "c": C.version}  # a is current: not resent
    assert removed(out) == ["gone"]
    ack(stream, out)
    # The wildcard survived the reconnect: a new cluster still arrives unasked.
    d = cluster("d")
    assert sent(stream.respond(CLUSTER_TYPE, snap(A, B, C, d), "v10")) == {"d": d.version}


def test_legacy_wildcard_reconnect_keeps_the_wildcard() -> None:
    # go-control-plane/consul: a reconnect that lists what it holds must not turn wildcard into named.
    stream = DeltaStream()
    stream.on_request(request(CLUSTER_TYPE, initial={"a": A.version}))
    assert stream.types[CLUSTER_TYPE].wildcard
    out = stream.respond(CLUSTER_TYPE, snap(A, B), "v1", force=True)
    assert sent(out) == {"b": B.version} and removed(out) == []


def test_reconnect_with_everything_current_sends_no_resources() -> None:
    stream = DeltaStream()
    stream.on_request(request(CLUSTER_TYPE, subscribe=("*",), initial={"a": A.version, "b": B.version}))
    out = stream.respond(CLUSTER_TYPE, snap(A, B), "v1", force=True)
    assert sent(out) == {} and removed(out) == []
    assert stream.respond(CLUSTER_TYPE, snap(A, B), "v2") is None


def test_named_reconnect_resends_only_stale_names() -> None:
    stream = DeltaStream()
    held = {EP_A: cla(EP_A, 1).version, EP_B: cla(EP_B, 1).version}
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A, EP_B), initial=held))
    out = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1), cla(EP_B, 2)), "v1")
    assert sent(out) == {EP_B: cla(EP_B, 2).version} and removed(out) == []


def test_initial_versions_outside_the_subscription_are_not_reported_removed() -> None:
    # The client lists a version for a name it does not subscribe to: that name is not ours to remove.
    stream = DeltaStream()
    held = {EP_A: cla(EP_A, 1).version, EP_B: cla(EP_B, 1).version}
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,), initial=held))
    out = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 2)), "v1")
    assert sent(out) == {EP_A: cla(EP_A, 2).version} and removed(out) == []


# ----- nonces, ACK and NACK -----


def test_ack_bookkeeping() -> None:
    stream = DeltaStream()
    stream.on_request(request(CLUSTER_TYPE, subscribe=("*",)))
    out = stream.respond(CLUSTER_TYPE, snap(A), "v1", force=True, now=12.5)
    state = stream.types[CLUSTER_TYPE]
    assert (state.sent_nonce, state.sent_version, state.sent_time, state.sent) == (out.nonce, "v1", 12.5, 1)
    assert state.acked_nonce == "" and state.acked_version == ""
    decision = stream.on_request(request(CLUSTER_TYPE, nonce=out.nonce))
    assert decision.kind is RequestKind.ACK and not decision.respond
    assert (state.acked_nonce, state.acked_version, state.last_error) == (out.nonce, "v1", "")


def test_nack_is_recorded_and_not_answered_by_resending() -> None:
    stream = DeltaStream()
    stream.on_request(request(CLUSTER_TYPE, subscribe=("*",)))
    good = stream.respond(CLUSTER_TYPE, snap(A), "v1", force=True)
    ack(stream, good)
    bad_a = cluster("a", timeout=0)
    bad = stream.respond(CLUSTER_TYPE, snap(bad_a), "v2")
    assert sent(bad) == {"a": bad_a.version}
    decision = stream.on_request(request(CLUSTER_TYPE, nonce=bad.nonce, error="invalid cluster a"))
    assert decision.kind is RequestKind.NACK and not decision.respond
    assert decision.error == "invalid cluster a"
    state = stream.types[CLUSTER_TYPE]
    assert (state.last_error, state.nacks, state.acked_nonce) == ("invalid cluster a", 1, bad.nonce)
    assert state.acked_version == "v1"  # the last version the client accepted
    # The rejected content is not pushed again; a fix is, and its ACK clears the error.
    assert stream.respond(CLUSTER_TYPE, snap(bad_a), "v3") is None
    fixed = stream.respond(CLUSTER_TYPE, snap(cluster("a", timeout=2)), "v4")
    assert sent(fixed) == {"a": cluster("a", timeout=2).version}
    ack(stream, fixed)
    assert state.last_error == "" and state.acked_version == "v4" and state.nacks == 1


def test_nack_without_message_reports_the_code() -> None:
    stream = DeltaStream()
    stream.on_request(request(CLUSTER_TYPE, subscribe=("*",)))
    out = stream.respond(CLUSTER_TYPE, snap(A), "v1", force=True)
    nack = request(CLUSTER_TYPE, nonce=out.nonce)
    nack.error_detail.code = 13
    decision = stream.on_request(nack)
    assert decision.kind is RequestKind.NACK and decision.error == "code 13"


def test_stale_nonce_still_applies_subscription_changes() -> None:
    stream = DeltaStream()
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,)))
    first = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v1")
    second = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 2)), "v2")
    assert first is not None and second is not None and first.nonce != second.nonce
    decision = stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_B,), nonce=first.nonce))
    assert decision.kind is RequestKind.STALE and decision.respond
    assert stream.subscription(ENDPOINT_TYPE).names == {EP_A, EP_B}
    assert stream.types[ENDPOINT_TYPE].acked_nonce == ""  # a stale nonce acknowledges nothing
    out = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 2), cla(EP_B, 1)), "v2")
    assert sent(out) == {EP_B: cla(EP_B, 1).version}
    # Unsubscribing with a stale nonce applies too.
    decision = stream.on_request(request(ENDPOINT_TYPE, unsubscribe=(EP_A,), nonce=first.nonce))
    assert decision.kind is RequestKind.STALE and not decision.respond
    assert stream.subscription(ENDPOINT_TYPE).names == {EP_B}


def test_stale_nonce_without_changes_is_not_answered() -> None:
    stream = DeltaStream()
    stream.on_request(request(CLUSTER_TYPE, subscribe=("*",)))
    first = stream.respond(CLUSTER_TYPE, snap(A), "v1", force=True)
    stream.respond(CLUSTER_TYPE, snap(A, B), "v2")
    decision = stream.on_request(request(CLUSTER_TYPE, nonce=first.nonce))
    assert decision.kind is RequestKind.STALE and not decision.respond


def test_resubscribing_a_name_resends_it() -> None:
    stream = DeltaStream()
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,)))
    ack(stream, stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v1"))
    # Subscribed again while subscribed: the client may have dropped it, so it is sent although unchanged.
    again = stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,)))
    assert again.respond
    out = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v1")
    assert sent(out) == {EP_A: cla(EP_A, 1).version}
    ack(stream, out)
    # Unsubscribed, then subscribed again: sent again.
    stream.on_request(request(ENDPOINT_TYPE, unsubscribe=(EP_A,)))
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A,)))
    out = stream.respond(ENDPOINT_TYPE, snap(cla(EP_A, 1)), "v1")
    assert sent(out) == {EP_A: cla(EP_A, 1).version}


def test_forced_names_are_resent_although_unchanged() -> None:
    # After a cluster update, Envoy waits for that cluster's endpoints again.
    stream = DeltaStream()
    stream.on_request(request(ENDPOINT_TYPE, subscribe=(EP_A, EP_B)))
    world = snap(cla(EP_A, 1), cla(EP_B, 1))
    ack(stream, stream.respond(ENDPOINT_TYPE, world, "v1"))
    assert stream.respond(ENDPOINT_TYPE, world, "v2") is None
    out = stream.respond(ENDPOINT_TYPE, world, "v2", force_names=(EP_B, "outbound|80||unknown.example.com"))
    assert sent(out) == {EP_B: cla(EP_B, 1).version} and removed(out) == []


def test_one_body_is_shared_by_streams_holding_the_same_versions() -> None:
    # Encode once: two streams in the same state get the same bytes from a shared snapshot.
    world = snap(A, B)
    streams = [DeltaStream(), DeltaStream()]
    bodies = []
    for stream in streams:
        stream.on_request(request(CLUSTER_TYPE, subscribe=("*",)))
        bodies.append(stream.respond(CLUSTER_TYPE, world, "v1", force=True))
    assert sent(bodies[0]) == sent(bodies[1]) == {"a": A.version, "b": B.version}
    update = world.derive({"b": None, "c": C})
    diffs = [stream.respond(CLUSTER_TYPE, update, "v2") for stream in streams]
    assert diffs[0] is not None and diffs[1] is not None
    assert diffs[0].body is diffs[1].body
    assert sent(diffs[0]) == {"c": C.version} and removed(diffs[0]) == ["b"]
