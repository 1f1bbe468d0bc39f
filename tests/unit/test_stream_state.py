"""StreamState driven directly: the xDS SotW rules without any server or I/O."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pilot.xds.names import CLUSTER_TYPE, ENDPOINT_TYPE
from pilot.xds.stream import RequestKind, Resource, StreamState


def cluster(name: str, timeout: int = 10) -> Resource:
    c = cluster_pb2.Cluster(name=name)
    c.connect_timeout.seconds = timeout
    return Resource.of(name, c)


def cla(name: str, port: int = 80) -> Resource:
    m = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    m.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = port
    return Resource.of(name, m)


def request(
    type_url: str, names: tuple[str, ...] = (), nonce: str = "", version: str = "", error: str | None = None
) -> discovery_pb2.DiscoveryRequest:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version
    )
    if error is not None:
        req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return req


def names_of(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for any_msg in response.resources:
        if any_msg.type_url.endswith("Cluster"):
            c = cluster_pb2.Cluster()
            any_msg.Unpack(c)
            out.append(c.name)
        else:
            m = endpoint_pb2.ClusterLoadAssignment()
            any_msg.Unpack(m)
            out.append(m.cluster_name)
    return out


def test_initial_wildcard_cds_is_answered_with_everything() -> None:
    state = StreamState()
    decision = state.on_request(request(CLUSTER_TYPE))
    assert decision.kind is RequestKind.INITIAL and decision.respond
    response = state.prepare_response(CLUSTER_TYPE, [cluster("b"), cluster("a")], "v1", only=frozenset())
    assert response is not None
    assert names_of(response) == ["a", "b"]
    assert response.version_info == "v1" and response.nonce


def test_initial_wildcard_with_no_resources_still_gets_an_empty_response() -> None:
    state = StreamState()
    state.on_request(request(CLUSTER_TYPE))
    response = state.prepare_response(CLUSTER_TYPE, [], "v1", only=frozenset())
    assert response is not None and len(response.resources) == 0


def test_ack_is_not_answered_and_unchanged_push_sends_nothing() -> None:
    state = StreamState()
    state.on_request(request(CLUSTER_TYPE))
    response = state.prepare_response(CLUSTER_TYPE, [cluster("a")], "v1", only=frozenset())
    ack = state.on_request(request(CLUSTER_TYPE, nonce=response.nonce, version="v1"))
    assert ack.kind is RequestKind.ACK and not ack.respond
    assert state.types[CLUSTER_TYPE].acked_version == "v1"
    assert state.prepare_response(CLUSTER_TYPE, [cluster("a")], "v2") is None


def test_changed_cds_resends_the_complete_set_and_removal_is_an_absence() -> None:
    state = StreamState()
    state.on_request(request(CLUSTER_TYPE))
    state.prepare_response(CLUSTER_TYPE, [cluster("a"), cluster("b")], "v1", only=frozenset())
    changed = state.prepare_response(CLUSTER_TYPE, [cluster("a"), cluster("b", timeout=5)], "v2")
    assert changed is not None and names_of(changed) == ["a", "b"]
    removed = state.prepare_response(CLUSTER_TYPE, [cluster("a")], "v3")
    assert removed is not None and names_of(removed) == ["a"]


def test_nack_is_recorded_and_the_same_resources_are_not_resent() -> None:
    state = StreamState()
    state.on_request(request(CLUSTER_TYPE))
    first = state.prepare_response(CLUSTER_TYPE, [cluster("a")], "v1", only=frozenset())
    state.on_request(request(CLUSTER_TYPE, nonce=first.nonce, version="v1"))
    bad = state.prepare_response(CLUSTER_TYPE, [cluster("a", timeout=0)], "v2")
    assert bad is not None
    nack = state.on_request(request(CLUSTER_TYPE, nonce=bad.nonce, version="v1", error="invalid cluster"))
    assert nack.kind is RequestKind.NACK and not nack.respond
    assert state.types[CLUSTER_TYPE].last_error == "invalid cluster"
    assert state.types[CLUSTER_TYPE].acked_version == "v1"
    # Same (rejected) content again: nothing to send. Fixed content: sent.
    assert state.prepare_response(CLUSTER_TYPE, [cluster("a", timeout=0)], "v3") is None
    fixed = state.prepare_response(CLUSTER_TYPE, [cluster("a", timeout=3)], "v4")
    assert fixed is not None
    state.on_request(request(CLUSTER_TYPE, nonce=fixed.nonce, version="v4"))
    assert state.types[CLUSTER_TYPE].last_error == ""


def test_stale_nonce_is_ignored_even_with_new_names() -> None:
    state = StreamState()
    state.on_request(request(ENDPOINT_TYPE, ("a",)))
    r1 = state.prepare_response(ENDPOINT_TYPE, [cla("a")], "v1", only=frozenset({"a"}))
    r2 = state.prepare_response(ENDPOINT_TYPE, [cla("a", port=81)], "v2")
    assert r1 is not None and r2 is not None
    stale = state.on_request(request(ENDPOINT_TYPE, ("a", "b"), nonce=r1.nonce, version="v1"))
    assert stale.kind is RequestKind.STALE and not stale.respond
    assert state.subscription(ENDPOINT_TYPE) == (False, frozenset({"a"}))
    current = state.on_request(request(ENDPOINT_TYPE, ("a", "b"), nonce=r2.nonce, version="v2"))
    assert current.kind is RequestKind.ACK and current.respond and current.added == {"b"}


def test_named_resources_are_sent_per_resource_and_only_when_changed() -> None:
    state = StreamState()
    state.on_request(request(ENDPOINT_TYPE, ("a", "b")))
    first = state.prepare_response(ENDPOINT_TYPE, [cla("a"), cla("b")], "v1", only=frozenset({"a", "b"}))
    assert names_of(first) == ["a", "b"]
    second = state.prepare_response(ENDPOINT_TYPE, [cla("a"), cla("b", port=90)], "v2")
    assert second is not None and names_of(second) == ["b"]
    forced = state.prepare_response(ENDPOINT_TYPE, [cla("a"), cla("b", port=90)], "v3", force=True)
    assert forced is not None and names_of(forced) == ["a", "b"]


def test_name_subscribed_before_it_exists_is_sent_when_it_appears() -> None:
    state = StreamState()
    decision = state.on_request(request(ENDPOINT_TYPE, ("later",)))
    assert decision.respond
    assert state.prepare_response(ENDPOINT_TYPE, [], "v1", only=decision.added) is None
    appeared = state.prepare_response(ENDPOINT_TYPE, [cla("later"), cla("not-asked")], "v2")
    assert appeared is not None and names_of(appeared) == ["later"]


def test_unsubscribed_then_resubscribed_name_is_resent() -> None:
    state = StreamState()
    state.on_request(request(ENDPOINT_TYPE, ("a",)))
    r1 = state.prepare_response(ENDPOINT_TYPE, [cla("a")], "v1", only=frozenset({"a"}))
    state.on_request(request(ENDPOINT_TYPE, (), nonce=r1.nonce, version="v1"))
    again = state.on_request(request(ENDPOINT_TYPE, ("a",), nonce=r1.nonce, version="v1"))
    assert again.respond and again.added == {"a"}
    resent = state.prepare_response(ENDPOINT_TYPE, [cla("a")], "v1", only=again.added)
    assert resent is not None and names_of(resent) == ["a"]


def test_wildcard_legacy_rule_and_explicit_names() -> None:
    state = StreamState()
    state.on_request(request(CLUSTER_TYPE))
    assert state.subscription(CLUSTER_TYPE) == (True, frozenset())
    r1 = state.prepare_response(CLUSTER_TYPE, [cluster("a"), cluster("b")], "v1", only=frozenset())
    # Switching to an explicit name list (as gRPC clients do) narrows the subscription.
    narrowed = state.on_request(request(CLUSTER_TYPE, ("a",), nonce=r1.nonce, version="v1"))
    assert narrowed.respond and state.subscription(CLUSTER_TYPE) == (False, frozenset({"a"}))
    r2 = state.prepare_response(CLUSTER_TYPE, [cluster("a"), cluster("b")], "v1", only=narrowed.added)
    assert names_of(r2) == ["a"]
    # Once names were given, an empty list means nothing rather than everything.
    state.on_request(request(CLUSTER_TYPE, (), nonce=r2.nonce, version="v1"))
    assert state.subscription(CLUSTER_TYPE) == (False, frozenset())
    assert not state.watched(CLUSTER_TYPE)
    # '*' explicitly asks for everything again.
    star = state.on_request(request(CLUSTER_TYPE, ("*",), nonce=r2.nonce, version="v1"))
    assert star.respond and state.subscription(CLUSTER_TYPE)[0] is True
