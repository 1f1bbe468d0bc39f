"""Config objects as the store holds them: one typed, validated object per (kind, namespace, name).

Istio kinds carry a betterproto2 message in ``spec``; Kubernetes kinds (Service, Pod, Namespace,
EndpointSlice) carry the plain parsed dict of the whole object, since only a few of their fields matter; a
Secret carries a ``pilot.model.secret.SecretData`` (decoded, and redacted wherever it is printed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Kinds pilot understands, by (group, kind). The version is checked separately.
ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
ISTIO_NETWORKING_KINDS = (
    "ServiceEntry",
    "WorkloadEntry",
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "Sidecar",
)
# security.istio.io kinds: the schema is the same at v1 and v1beta1.
SECURITY_GROUP = "security.istio.io"
SECURITY_VERSIONS = ("v1", "v1beta1")
ISTIO_SECURITY_KINDS = ("PeerAuthentication",)
KUBE_KINDS = {
    ("", "v1", "Service"),
    ("", "v1", "Pod"),
    ("", "v1", "Namespace"),
    ("", "v1", "Node"),
    ("", "v1", "Secret"),  # gateway credentials (spec: pilot.model.secret.SecretData, never the raw object)
    ("discovery.k8s.io", "v1", "EndpointSlice"),
}


@dataclass(frozen=True, order=True)
class ConfigKey:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, eq=False)
class Config:
    """One accepted object. ``spec`` is a betterproto2 message (Istio kinds) or a dict (Kubernetes kinds)."""

    key: ConfigKey
    api_version: str
    spec: Any
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    source: str = ""  # file path (or other origin) the object came from
    # Changes whenever the object's content changes; lets consumers skip no-op updates.
    content_hash: int = 0
    # For an object merged from several (DestinationRules for one host): the keys of all of them, in order.
    merged_from: tuple[ConfigKey, ...] = ()

    @property
    def keys(self) -> tuple[ConfigKey, ...]:
        """The config keys this object stands for: its own, or those it was merged from."""
        return self.merged_from or (self.key,)

    @property
    def kind(self) -> str:
        return self.key.kind

    @property
    def namespace(self) -> str:
        return self.key.namespace

    @property
    def name(self) -> str:
        return self.key.name


# Pseudo-kinds of push-request keys, as istiod uses them: a service is keyed ServiceEntry/<ns>/<hostname>
# (whichever registry it came from) and an endpoint-only change Endpoints/<ns>/<hostname>.
SERVICE_KIND = "ServiceEntry"
ENDPOINTS_KIND = "Endpoints"

# Kinds the service registries consume (the others are routing config the PushContext indexes).
SERVICE_ENTRY = "ServiceEntry"
WORKLOAD_ENTRY = "WorkloadEntry"
VIRTUAL_SERVICE = "VirtualService"
DESTINATION_RULE = "DestinationRule"
GATEWAY = "Gateway"
SIDECAR = "Sidecar"
PEER_AUTHENTICATION = "PeerAuthentication"
KUBE_SERVICE = "Service"
POD = "Pod"
NAMESPACE = "Namespace"
NODE = "Node"
ENDPOINT_SLICE = "EndpointSlice"
SECRET = "Secret"


def yaml_type_name(value: Any) -> str:
    """How an error message names the type of a YAML (or JSON) value that is not the expected one."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return type(value).__name__
