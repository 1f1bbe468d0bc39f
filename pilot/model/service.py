"""The service model every registry produces and every generator consumes.

A ``Service`` is keyed by its hostname (FQDN, e.g. ``reviews.default.svc.cluster.local``). Its endpoints
are kept apart from it (``ServiceEndpoints``) because they churn far more often than the service does.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pilot.model.config import ConfigKey

EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})
DEFAULT_TRUST_DOMAIN = "cluster.local"  # of SPIFFE identities (spiffe://<trust domain>/ns/<ns>/sa/<account>)


class Resolution(enum.Enum):
    """How a proxy finds the service's endpoints (Istio's model.Resolution)."""

    STATIC = "STATIC"  # endpoints listed by pilot over EDS (ClientSideLB)
    DNS = "DNS"  # proxy resolves the hosts itself (STRICT_DNS)
    NONE = "NONE"  # passthrough to the original destination (ORIGINAL_DST)


class Protocol(enum.Enum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "MONGO"
    REDIS = "REDIS"
    MYSQL = "MYSQL"
    UNKNOWN = "UNKNOWN"  # Istio sniffs these; pilot treats them as HTTP for routing

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.UNKNOWN)

    @property
    def is_http2(self) -> bool:
        return self in (Protocol.HTTP2, Protocol.GRPC)

    @classmethod
    def parse(cls, value: str | None) -> Protocol:
        """Istio's protocol.Parse: case-insensitive, unknown names become UNKNOWN."""
        if not value:
            return cls.UNKNOWN
        upper = value.upper()
        if upper == "GRPC-WEB":
            return cls.HTTP
        try:
            return cls(upper)
        except ValueError:
            return cls.UNKNOWN

    @classmethod
    def from_port_name(cls, name: str | None, app_protocol: str | None = None) -> Protocol:
        """Kubernetes convention: appProtocol, else the port name's prefix before '-' (``http-web``)."""
        if app_protocol:
            return cls.parse(app_protocol)
        if not name:
            return cls.UNKNOWN
        return cls.parse(name.split("-", 1)[0])


@dataclass(frozen=True)
class Port:
    name: str
    number: int
    protocol: Protocol


@dataclass(frozen=True)
class Endpoint:
    """One reachable instance of a service port (Istio's IstioEndpoint)."""

    address: str
    port: int  # the port the workload listens on (target port)
    service_port_name: str
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    weight: int = 0  # 0 = unset
    locality: str = ""
    # Who contributed the endpoint (e.g. "Kubernetes" or "ServiceEntry/<ns>/<name>"); used for debug output.
    origin: str = ""


@dataclass(frozen=True)
class Service:
    hostname: str
    namespace: str
    ports: tuple[Port, ...]
    resolution: Resolution = Resolution.STATIC
    addresses: tuple[str, ...] = ()  # VIPs; empty when the service has none
    mesh_external: bool = False
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    export_to: tuple[str, ...] = ()  # empty = visible everywhere ("*")
    # The config object the service came from: a ServiceEntry or a Kubernetes Service.
    origin: ConfigKey | None = None
    # For DNS resolution without endpoints: the hosts themselves are resolved by the proxy.
    registry: str = "ServiceEntry"  # "Kubernetes" or "ServiceEntry"
    # DNS_ROUND_ROBIN (istiod's DNSRoundRobinLB): one connection per resolved address in turn, a LOGICAL_DNS
    # cluster; plain DNS resolves every address into the pool (STRICT_DNS).
    dns_round_robin: bool = False
    # ServiceEntry subjectAltNames: the identities its servers present; client TLS to it checks them when the
    # DestinationRule names none (istiod's ServiceAccounts for the External registry).
    subject_alt_names: tuple[str, ...] = ()

    def port_by_number(self, number: int) -> Port | None:
        for port in self.ports:
            if port.number == number:
                return port
        return None

    def port_by_name(self, name: str) -> Port | None:
        for port in self.ports:
            if port.name == name:
                return port
        return None

    def visible_in(self, namespace: str) -> bool:
        """exportTo semantics: '*' (or unset) everywhere, '.' own namespace, else listed namespaces."""
        if not self.export_to:
            return True
        for target in self.export_to:
            if target == "*" or target == namespace:
                return True
            if target == "." and namespace == self.namespace:
                return True
        return False


@dataclass(frozen=True)
class ServiceEndpoints:
    """All endpoints of one service, grouped by service port name."""

    hostname: str
    by_port: Mapping[str, tuple[Endpoint, ...]] = field(default_factory=dict)

    def for_port(self, port: Port) -> tuple[Endpoint, ...]:
        return self.by_port.get(port.name, ())


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when every selector label is present with the same value (an empty selector matches all)."""
    return all(labels.get(k) == v for k, v in selector.items())
