"""Proxy identity, parsed from the Envoy ``Node`` the way Istio's agent sends it.

``node.id`` is ``TYPE~IP~POD.NS~NS.svc.<domain>`` (TYPE ``sidecar`` or ``router``); labels come from
``node.metadata.LABELS`` and the namespace from ``node.metadata.NAMESPACE``, falling back to the id.

The proxy's locality is found as istiod's setTopologyLabels finds it: its topology labels
(``topology.kubernetes.io/region`` / ``zone``, ``topology.istio.io/subzone``) if any is set, else its
``topology.istio.io/locality`` or ``istio-locality`` label, else the Envoy ``node.locality``. (istiod also
reads the topology of the Pod's Node from its registry first; pilot does not look the proxy's Pod up.)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pilot.model.locality import EMPTY_LOCALITY, TOPOLOGY_LABELS, Locality, locality_from_labels


class NodeType(enum.Enum):
    SIDECAR = "sidecar"
    ROUTER = "router"


class ProxyIdError(ValueError):
    pass


@dataclass(frozen=True)
class Proxy:
    type: NodeType
    id: str  # the full node.id
    ip_addresses: tuple[str, ...]
    pod_name: str  # "POD" part of POD.NS
    namespace: str
    dns_domain: str  # e.g. "default.svc.cluster.local"
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    cluster: str = ""  # node.cluster (Istio sets "<app>.<ns>")
    # How the proxy fetches config: "ads" (one aggregated stream, SotW or Delta), or without ADS "grpc",
    # "delta-grpc" (per-type services) or "rest". Its EDS and RDS config sources must use the same transport.
    xds_api: str = "ads"
    locality: Locality = EMPTY_LOCALITY  # see proxy_locality

    @property
    def short_id(self) -> str:
        """``pod.namespace``: what istioctl and ``?proxyID=`` use."""
        return f"{self.pod_name}.{self.namespace}"

    @property
    def is_router(self) -> bool:
        return self.type is NodeType.ROUTER


def proxy_locality(labels: Mapping[str, str], node_locality: Any = None) -> Locality:
    """istiod's proxy locality: topology labels (any of them present), else the locality label, else the
    ``node.locality`` (an Envoy ``Locality`` message, a ``Locality`` or a ``region/zone/subzone`` string)."""
    if any(label in labels for label in TOPOLOGY_LABELS):
        region, zone, sub_zone = (labels.get(label, "") for label in TOPOLOGY_LABELS)
        return Locality(region, zone, sub_zone)
    from_label = locality_from_labels(labels)
    if from_label:
        return Locality.parse(from_label)
    if node_locality is None:
        return Locality()
    if isinstance(node_locality, str):
        return Locality.parse(node_locality)
    return Locality(
        str(getattr(node_locality, "region", "") or ""),
        str(getattr(node_locality, "zone", "") or ""),
        str(getattr(node_locality, "sub_zone", "") or ""),
    )


def parse_proxy(
    node_id: str, metadata: Mapping[str, Any] | None = None, cluster: str = "", locality: Any = None
) -> Proxy:
    """Build a Proxy from node.id, node.metadata (already converted to plain Python values) and, optionally,
    node.locality (see proxy_locality)."""
    metadata = dict(metadata or {})
    parts = node_id.split("~")
    if len(parts) != 4:
        raise ProxyIdError(f"node.id {node_id!r}: expected 4 parts TYPE~IP~POD.NS~DOMAIN, got {len(parts)}")
    type_name, ip_part, pod_ns, domain = parts
    try:
        node_type = NodeType(type_name)
    except ValueError:
        raise ProxyIdError(f"node.id {node_id!r}: type {type_name!r} is not 'sidecar' or 'router'") from None
    ips = tuple(ip for ip in ip_part.split(",") if ip)
    extra_ips = metadata.get("INSTANCE_IPS")
    if isinstance(extra_ips, str):
        ips = tuple(dict.fromkeys(ips + tuple(ip for ip in extra_ips.split(",") if ip)))
    pod_name, _, id_namespace = pod_ns.partition(".")
    namespace = str(metadata.get("NAMESPACE") or id_namespace or "default")
    raw_labels = metadata.get("LABELS") or {}
    if not isinstance(raw_labels, Mapping):
        raise ProxyIdError(f"node {node_id!r}: metadata.LABELS must be a map of strings")
    labels = MappingProxyType({str(k): str(v) for k, v in raw_labels.items()})
    return Proxy(
        type=node_type,
        id=node_id,
        ip_addresses=ips,
        pod_name=pod_name,
        namespace=namespace,
        dns_domain=domain,
        labels=labels,
        metadata=MappingProxyType(metadata),
        cluster=cluster,
        locality=proxy_locality(labels, locality),
    )
