"""What simulated proxies need to know about xDS responses, decoded once per distinct content.

A fleet receives the same bytes over and over: every proxy of one view gets the same resources, and only
the nonce differs between their responses. So a client process decodes a response once per content (the
payload less its nonce field) and every later copy costs a hash and a lookup. On a miss, resources are
decoded once per distinct ``Any`` payload too, so a response that differs in one resource costs one decode.

Per resource, only the facts the simulation acts on or checks are kept:

- Cluster: whether it is an EDS cluster (the proxy then asks for its ClusterLoadAssignment);
- ClusterLoadAssignment: its endpoints as a frozenset of ``"address:port"``;
- Listener: the RDS route names of its HTTP connection managers;
- RouteConfiguration: the weight of every weighted cluster, by cluster name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from pilot.loadtest.wire import CDS, EDS, LDS, RDS

HCM_TYPE_SUFFIX = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
NONCE_TAG = b"\x2a"  # field 5, length-delimited: ``nonce`` in both DiscoveryResponse and DeltaDiscoveryResponse

EMPTY: Mapping[str, Any] = MappingProxyType({})


def _head_type() -> Any:
    """A message with only the scalar fields that DiscoveryResponse and DeltaDiscoveryResponse share by number
    (1 version_info / system_version_info, 4 type_url, 5 nonce): parsing it skips the resources' contents, ~5x
    faster than the full parse, which a cached content never needs."""
    proto = descriptor_pb2.FileDescriptorProto(name="pilot_loadtest_head.proto", package="pilot.loadtest")
    proto.syntax = "proto3"
    head = proto.message_type.add(name="ResponseHead")
    for name, number in (("version", 1), ("type_url", 4), ("nonce", 5)):
        head.field.add(
            name=name,
            number=number,
            type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pilot.loadtest.ResponseHead"))


ResponseHead = _head_type()


def _cluster(value: bytes) -> tuple[str, bool]:
    c = cluster_pb2.Cluster.FromString(value)
    is_eds = c.WhichOneof("cluster_discovery_type") == "type" and c.type == cluster_pb2.Cluster.EDS
    return c.name, is_eds


def _assignment(value: bytes) -> tuple[str, frozenset[str]]:
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(value)
    addresses = frozenset(
        f"{lb.endpoint.address.socket_address.address}:{lb.endpoint.address.socket_address.port_value}"
        for group in cla.endpoints
        for lb in group.lb_endpoints
    )
    return cla.cluster_name, addresses


def _listener(value: bytes) -> tuple[str, tuple[str, ...]]:
    listener = listener_pb2.Listener.FromString(value)
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    routes = []
    for chain in chains:
        for f in chain.filters:
            if f.typed_config.type_url.endswith(HCM_TYPE_SUFFIX):
                hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                if hcm.HasField("rds"):
                    routes.append(hcm.rds.route_config_name)
    return listener.name, tuple(sorted(set(routes)))


def _route(value: bytes) -> tuple[str, Mapping[str, int]]:
    rc = route_pb2.RouteConfiguration.FromString(value)
    weights = {}
    for vhost in rc.virtual_hosts:
        for r in vhost.routes:
            if r.WhichOneof("action") == "route" and r.route.WhichOneof("cluster_specifier") == "weighted_clusters":
                for c in r.route.weighted_clusters.clusters:
                    weights[c.name] = c.weight.value
    return rc.name, MappingProxyType(weights)


RESOURCE_DECODERS: dict[str, Callable[[bytes], tuple[str, Any]]] = {
    CDS: _cluster,
    EDS: _assignment,
    LDS: _listener,
    RDS: _route,
}


@dataclass(frozen=True, slots=True)
class Decoded:
    """One response's content. Shared by every proxy that received it: never mutate."""

    type_url: str
    version: str  # SotW version_info, Delta system_version_info
    resources: Mapping[str, Any]  # name -> the per-type fact above
    resource_versions: Mapping[str, str]  # Delta: name -> version
    removed: tuple[str, ...]  # Delta removed_resources
    eds_names: frozenset[str]  # CDS: the EDS clusters among ``resources``
    route_names: frozenset[str]  # LDS: the RDS names of ``resources``
    names: frozenset[str]  # resources.keys(), for subset checks in C


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def without_nonce(data: bytes, nonce: str) -> bytes:
    """The payload less its nonce field: the same for every proxy that got the same content.

    Serialisers write fields in number order, so the nonce (5) follows the resources (2) and is found from
    the end. Were another occurrence found first, two identical contents would just map to different keys:
    a cache miss, never a wrong answer.
    """
    if not nonce:
        return data
    raw = nonce.encode()
    field_bytes = NONCE_TAG + _varint(len(raw)) + raw
    at = data.rfind(field_bytes)
    if at < 0:
        return data
    return data[:at] + data[at + len(field_bytes) :]


class Decoder:
    """Per-process decode caches, bounded: a few dozen responses, a few hundred thousand resources."""

    def __init__(self, max_responses: int = 48, max_resources: int = 400_000) -> None:
        self._responses: OrderedDict[tuple[bool, bytes], Decoded] = OrderedDict()
        self._resources: dict[bytes, tuple[str, Any]] = {}
        self.max_responses = max_responses
        self.max_resources = max_resources
        self.hits = 0
        self.misses = 0

    def sotw(self, data: bytes) -> tuple[Decoded, str]:
        """(content, nonce) of a serialised DiscoveryResponse."""
        nonce = ResponseHead.FromString(data).nonce
        key = (False, without_nonce(data, nonce))
        decoded = self._cached(key)
        if decoded is None:
            decoded = self._store(key, self._decode_sotw(discovery_pb2.DiscoveryResponse.FromString(data)))
        return decoded, nonce

    def delta(self, data: bytes) -> tuple[Decoded, str]:
        """(content, nonce) of a serialised DeltaDiscoveryResponse."""
        nonce = ResponseHead.FromString(data).nonce
        key = (True, without_nonce(data, nonce))
        decoded = self._cached(key)
        if decoded is None:
            decoded = self._store(key, self._decode_delta(discovery_pb2.DeltaDiscoveryResponse.FromString(data)))
        return decoded, nonce

    def resource(self, type_url: str, value: bytes) -> tuple[str, Any]:
        """(name, fact) of one serialised resource of a known type."""
        found = self._resources.get(value)
        if found is None:
            if len(self._resources) >= self.max_resources:
                self._resources.clear()
            found = self._resources[value] = RESOURCE_DECODERS[type_url](value)
        return found

    # ----- internals -----

    def _cached(self, key: tuple[bool, bytes]) -> Decoded | None:
        decoded = self._responses.get(key)
        if decoded is not None:
            self._responses.move_to_end(key)
            self.hits += 1
        return decoded

    def _store(self, key: tuple[bool, bytes], decoded: Decoded) -> Decoded:
        self.misses += 1
        self._responses[key] = decoded
        while len(self._responses) > self.max_responses:
            self._responses.popitem(last=False)
        return decoded

    def _facts(self, type_url: str, values: list[tuple[str, bytes]]) -> dict[str, Any]:
        """name -> fact; ``values`` pairs a name (or "" to take it from the resource) with its payload."""
        out: dict[str, Any] = {}
        if type_url not in RESOURCE_DECODERS:
            return out
        for given, value in values:
            name, fact = self.resource(type_url, value)
            out[given or name] = fact
        return out

    def _decode_sotw(self, msg: Any) -> Decoded:
        t = msg.type_url
        facts = self._facts(t, [("", a.value) for a in msg.resources])
        return _decoded(t, msg.version_info, facts)

    def _decode_delta(self, msg: Any) -> Decoded:
        t = msg.type_url
        facts = self._facts(t, [(r.name, r.resource.value) for r in msg.resources if r.HasField("resource")])
        versions = MappingProxyType({r.name: r.version for r in msg.resources})
        return _decoded(t, msg.system_version_info, facts, versions, tuple(msg.removed_resources))


def _decoded(
    type_url: str,
    version: str,
    facts: dict[str, Any],
    versions: Mapping[str, str] = EMPTY,
    removed: tuple[str, ...] = (),
) -> Decoded:
    eds_names: frozenset[str] = frozenset()
    route_names: frozenset[str] = frozenset()
    if type_url == CDS:
        eds_names = frozenset(name for name, is_eds in facts.items() if is_eds)
    elif type_url == LDS:
        route_names = frozenset(r for routes in facts.values() for r in routes)
    return Decoded(
        type_url=type_url,
        version=version,
        resources=MappingProxyType(facts),
        resource_versions=versions,
        removed=removed,
        eds_names=eds_names,
        route_names=route_names,
        names=frozenset(facts),
    )
