"""The client-side decode cache: one decode per distinct content, never a wrong answer."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from pilot.loadtest.decode import Decoder, without_nonce
from pilot.loadtest.wire import CDS, EDS


def _cds(nonce: str, *names: str) -> bytes:
    response = discovery_pb2.DiscoveryResponse(type_url=CDS, version_info="v1", nonce=nonce)
    for name in names:
        cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
        response.resources.add().Pack(cluster)
    static = cluster_pb2.Cluster(name="BlackHoleCluster", type=cluster_pb2.Cluster.STATIC)
    response.resources.add().Pack(static)
    return response.SerializeToString()


def test_responses_that_differ_only_by_nonce_are_decoded_once() -> None:
    decoder = Decoder()
    first, nonce1 = decoder.sotw(_cds("17", "a", "b"))
    second, nonce2 = decoder.sotw(_cds("18", "a", "b"))
    assert (nonce1, nonce2) == ("17", "18")
    assert second is first
    assert (decoder.misses, decoder.hits) == (1, 1)
    assert first.eds_names == {"a", "b"}
    assert first.names == {"a", "b", "BlackHoleCluster"}
    other, _ = decoder.sotw(_cds("19", "a"))
    assert other.eds_names == {"a"}
    assert decoder.misses == 2


def test_a_nonce_that_also_occurs_in_the_payload_still_gives_right_answers() -> None:
    decoder = Decoder()
    # The nonce "a" is also a cluster name: whatever is stripped, content stays told apart.
    one, _ = decoder.sotw(_cds("a", "a"))
    two, _ = decoder.sotw(_cds("a", "a", "b"))
    assert one.eds_names == {"a"} and two.eds_names == {"a", "b"}
    assert without_nonce(b"abc", "") == b"abc"


def test_delta_resources_carry_their_versions_and_removals() -> None:
    response = discovery_pb2.DeltaDiscoveryResponse(type_url=EDS, nonce="3", removed_resources=["gone"])
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c1")
    lb = cla.endpoints.add().lb_endpoints.add()
    lb.endpoint.address.socket_address.address = "10.0.0.1"
    lb.endpoint.address.socket_address.port_value = 80
    resource = response.resources.add(name="c1", version="7")
    resource.resource.Pack(cla)
    decoded, nonce = Decoder().delta(response.SerializeToString())
    assert nonce == "3"
    assert decoded.resources == {"c1": frozenset({"10.0.0.1:80"})}
    assert decoded.resource_versions == {"c1": "7"}
    assert decoded.removed == ("gone",)
