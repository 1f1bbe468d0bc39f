"""The resources pilot watches, how to trim each to what pilot reads, and which version the cluster serves.

Trimming runs before validation and before an update is compared with the cached object, so a change pilot
does not read (a Pod's container statuses, a Node's heartbeat, managedFields, resourceVersion) is not a
change at all: no store update, no push, no event counted.

- every kind: ``metadata.managedFields`` and ``metadata.resourceVersion`` go (the informer keeps the version
  itself);
- Pod: ``spec`` keeps ``nodeName`` and ``serviceAccountName``, ``status`` keeps ``podIP`` / ``podIPs`` (set
  once when the Pod starts; endpoint readiness comes from EndpointSlices, not from Pod conditions);
- Node: only name and labels (locality comes from topology labels);
- Namespace: only name and labels (discoverySelectors match labels);
- Service: ``status`` (load balancer ingress) goes;
- Secret: only name, namespace, labels, ``type`` and ``data`` (annotations may hold kubectl's last-applied copy
  of the data); listed without Helm release and service-account token Secrets (istiod's field selector);
- Istio kinds keep ``status`` so the status writer can compare, but it is left out of change detection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pilot.model.config import (
    ISTIO_GROUP,
    ISTIO_NETWORKING_KINDS,
    ISTIO_VERSIONS,
    SECURITY_GROUP,
    SECURITY_VERSIONS,
)

# Metric families, as istiod names them: Istio config kinds vs service registry kinds.
CONFIG_EVENTS = "pilot_k8s_cfg_events"
REGISTRY_EVENTS = "pilot_k8s_reg_events"

Trim = Callable[[dict[str, Any]], dict[str, Any]]


def _trim_metadata(metadata: Any, *, keep: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        return {}
    if keep is not None:
        return {k: metadata[k] for k in keep if k in metadata}
    return {k: v for k, v in metadata.items() if k not in ("managedFields", "resourceVersion")}


def trim_default(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    out["metadata"] = _trim_metadata(obj.get("metadata"))
    return out


def trim_service(obj: dict[str, Any]) -> dict[str, Any]:
    out = trim_default(obj)
    out.pop("status", None)
    return out


def trim_pod(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
    out["metadata"] = _trim_metadata(obj.get("metadata"))
    spec = obj.get("spec")
    if isinstance(spec, dict):
        kept = {k: spec[k] for k in ("nodeName", "serviceAccountName") if k in spec}
        if kept:
            out["spec"] = kept
    status = obj.get("status")
    if isinstance(status, dict):
        kept = {k: status[k] for k in ("podIP", "podIPs") if k in status}
        if kept:
            out["status"] = kept
    return out


def trim_secret(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind", "type", "data") if k in obj}
    out["metadata"] = _trim_metadata(obj.get("metadata"), keep=("name", "namespace", "labels"))
    return out


def trim_labels_only(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
    out["metadata"] = _trim_metadata(obj.get("metadata"), keep=("name", "labels"))
    return out


def without_status(obj: dict[str, Any]) -> dict[str, Any]:
    """What decides whether an Istio object changed: everything but the status pilot itself writes."""
    if "status" not in obj:
        return obj
    return {k: v for k, v in obj.items() if k != "status"}


@dataclass(frozen=True)
class ResourceType:
    kind: str
    group: str  # "" for the core API
    versions: tuple[str, ...]  # the versions pilot reads, preferred first
    plural: str
    namespaced: bool
    metric: str  # CONFIG_EVENTS or REGISTRY_EVENTS
    trim: Trim = trim_default
    has_status_writer: bool = False  # Istio config: pilot writes its validation status
    field_selector: str = ""  # listed and watched with this fieldSelector

    def significant(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The part of a trimmed object whose change is a change."""
        return without_status(obj) if self.has_status_writer else obj


KUBE_TYPES: tuple[ResourceType, ...] = (
    ResourceType("Namespace", "", ("v1",), "namespaces", False, REGISTRY_EVENTS, trim_labels_only),
    ResourceType("Node", "", ("v1",), "nodes", False, REGISTRY_EVENTS, trim_labels_only),
    ResourceType("Service", "", ("v1",), "services", True, REGISTRY_EVENTS, trim_service),
    ResourceType("Pod", "", ("v1",), "pods", True, REGISTRY_EVENTS, trim_pod),
    ResourceType("EndpointSlice", "discovery.k8s.io", ("v1",), "endpointslices", True, REGISTRY_EVENTS),
    # Gateway credentials (istiod's credentials controller and its SecretsFieldSelector).
    ResourceType(
        "Secret",
        "",
        ("v1",),
        "secrets",
        True,
        REGISTRY_EVENTS,
        trim_secret,
        field_selector="type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token",
    ),
)
ISTIO_PLURALS = {
    "ServiceEntry": "serviceentries",
    "WorkloadEntry": "workloadentries",
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "Gateway": "gateways",
    "Sidecar": "sidecars",
}


def _istio_type(kind: str, group: str, versions: tuple[str, ...], plural: str) -> ResourceType:
    return ResourceType(kind, group, versions, plural, True, CONFIG_EVENTS, has_status_writer=True)


ISTIO_TYPES: tuple[ResourceType, ...] = (
    *(_istio_type(kind, ISTIO_GROUP, ISTIO_VERSIONS, ISTIO_PLURALS[kind]) for kind in ISTIO_NETWORKING_KINDS),
    _istio_type("PeerAuthentication", SECURITY_GROUP, SECURITY_VERSIONS, "peerauthentications"),
)
ALL_TYPES = KUBE_TYPES + ISTIO_TYPES


@dataclass(frozen=True)
class ServedResource:
    """A resource type at the version the cluster serves."""

    type: ResourceType
    version: str

    @property
    def kind(self) -> str:
        return self.type.kind

    @property
    def api_version(self) -> str:
        return f"{self.type.group}/{self.version}" if self.type.group else self.version

    @property
    def label(self) -> str:
        """How logs and /ready name it: ``VirtualService (networking.istio.io/v1)``."""
        return f"{self.type.kind} ({self.api_version})"

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.type.group}/{self.version}" if self.type.group else f"/api/{self.version}"
        parts = [base]
        if namespace is not None and self.type.namespaced:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.type.plural)
        if name is not None:
            parts.append(name)
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)


def choose_versions(
    types: Iterable[ResourceType], served: dict[str, dict[str, set[str]]]
) -> tuple[list[ServedResource], list[ResourceType]]:
    """Pick each type's preferred version among those served.

    ``served`` maps group -> version -> plurals the cluster lists for that group version. Returns the served
    resources and the types the cluster does not serve at any version pilot reads.
    """
    found: list[ServedResource] = []
    missing: list[ResourceType] = []
    for rtype in types:
        versions = served.get(rtype.group, {})
        for version in rtype.versions:
            if rtype.plural in versions.get(version, ()):
                found.append(ServedResource(rtype, version))
                break
        else:
            missing.append(rtype)
    return found, missing
