"""The objects ``pilot analyze`` looks at, read from files exactly as pilot loads them (same kinds, same
validation), with where each came from: file, document and the line of any field, for istioctl's
``file.yaml:LINE`` references."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pilot.config.loader import load_text
from pilot.model.config import (
    ISTIO_GROUP,
    ISTIO_NETWORKING_KINDS,
    ISTIO_SECURITY_KINDS,
    ISTIO_VERSIONS,
    KUBE_KINDS,
    SECURITY_GROUP,
    SECURITY_VERSIONS,
    ConfigKey,
)
from pilot.tools.analyze import messages as msg
from pilot.tools.analyze.messages import Message, Origin

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Path_ = tuple[str | int, ...]


@dataclass
class Resource:
    kind: str
    namespace: str
    name: str
    spec: Any  # the typed spec (Istio kinds) or the whole object (Kubernetes kinds)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    document: dict[str, Any] = field(default_factory=dict)  # the object as written (status, ...)
    origin: Origin | None = None
    node: Any = None  # the YAML node of the object, for field lines

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def line(self, *path: str | int) -> int:
        """The 1-based line of the field at ``path`` (e.g. "spec", "http", 0, "route"), 0 when unknown."""
        node = self.node
        for step in path:
            node = _child(node, step)
            if node is None:
                return 0
        return node.start_mark.line + 1 if node is not None else 0


def _child(node: Any, step: str | int) -> Any:
    if isinstance(node, yaml.MappingNode) and isinstance(step, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == step:
                return value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int):
        return node.value[step] if 0 <= step < len(node.value) else None
    return None


@dataclass
class Context:
    """Every object analyzed, by kind, in (namespace, name) order."""

    by_kind: dict[str, list[Resource]] = field(default_factory=dict)
    mesh: dict[str, Any] = field(default_factory=dict)  # the MeshConfig given with --meshConfigFile

    def add(self, resource: Resource) -> None:
        """Add an object; one with the same kind, namespace and name replaces it (the last file read wins, as
        istioctl's file source updates an object it already has)."""
        listed = self.by_kind.setdefault(resource.kind, [])
        for i, known in enumerate(listed):
            if known.namespace == resource.namespace and known.name == resource.name:
                listed[i] = resource
                return
        listed.append(resource)

    def of(self, kind: str) -> list[Resource]:
        return self.by_kind.get(kind, [])

    def find(self, kind: str, namespace: str, name: str) -> Resource | None:
        return next((r for r in self.of(kind) if r.namespace == namespace and r.name == name), None)

    def sort(self) -> None:
        for resources in self.by_kind.values():
            resources.sort(key=lambda r: (r.namespace, r.name))


@dataclass
class Loaded:
    context: Context
    messages: list[Message]  # schema problems found while loading (IST0106, IST0130, IST0131, IST0133)
    file_errors: list[str]  # problems not tied to an object (unreadable file, YAML syntax)
    files: int


def load(paths: Iterable[Path], default_namespace: str = "default") -> Loaded:
    context = Context()
    found: list[Message] = []
    file_errors: list[str] = []
    count = 0
    for path in paths:
        count += 1
        try:
            text = sys.stdin.read() if str(path) == "-" else path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            file_errors.append(f"{path}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}")
            continue
        _load_text(str(path), text, default_namespace, context, found, file_errors)
    context.sort()
    return Loaded(context, found, file_errors, count)


def _load_text(
    source: str, text: str, namespace: str, context: Context, found: list[Message], file_errors: list[str]
) -> None:
    """Schema errors from pilot's loader (IST0106); then every object of a kind pilot reads, valid or not, as
    istioctl's analyzers see objects whatever the schema analyzer says about them."""
    result = load_text(source, text, namespace)
    objects = list(_objects(text, namespace))
    lines = {key: (node, line) for key, node, line, _ in objects}
    for error in result.errors:
        if error.key is None:
            file_errors.append(str(error))
            continue
        if error.key.namespace in IGNORED_NAMESPACES:
            continue
        node, line = lines.get(error.key, (None, 0))
        origin = Origin(error.key.kind, error.key.namespace, error.key.name, source, line)
        found.append(Message(msg.SCHEMA_VALIDATION_ERROR, origin, (error.message,), _field_line(node, error.message)))
    for key, node, line, document in objects:
        if key.namespace in IGNORED_NAMESPACES:
            continue  # istioctl leaves out the namespaces injection ignores (kube-system, ...)
        resource = _resource(key, document, source, node, line)
        if resource is not None:
            context.add(resource)


# Namespaces istioctl's file source drops (pkg/kube/inject IgnoredNamespaces).
IGNORED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "local-path-storage"})
K8S_GATEWAY_GROUP = "gateway.networking.k8s.io"


def _kind_of(document: dict[str, Any]) -> str:
    """The kind as analysis names it: pilot's kinds, Gateway API Gateways as "KubernetesGateway", else ""."""
    api_version, kind = str(document.get("apiVersion") or ""), str(document.get("kind") or "")
    group, _, version = api_version.rpartition("/")
    if group == ISTIO_GROUP and version in ISTIO_VERSIONS and kind in ISTIO_NETWORKING_KINDS:
        return kind
    if group == SECURITY_GROUP and version in SECURITY_VERSIONS and kind in ISTIO_SECURITY_KINDS:
        return kind
    if (group, version, kind) in KUBE_KINDS:
        return kind
    if group == K8S_GATEWAY_GROUP and kind == "Gateway":
        return "KubernetesGateway"
    return ""


def _objects(text: str, namespace: str) -> Iterator[tuple[ConfigKey, Any, int, dict[str, Any]]]:
    """(key, YAML node, first line, the object as parsed) of every object of a kind analysis reads."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_LOADER))
        documents = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError:
        return
    for node, document in zip(nodes, documents, strict=False):
        if not isinstance(document, dict):
            continue
        if document.get("kind") == "List" and isinstance(document.get("items"), list):
            items_node = _child(node, "items")
            item_nodes = items_node.value if isinstance(items_node, yaml.SequenceNode) else []
            pairs = list(zip(item_nodes, document["items"], strict=False))
        else:
            pairs = [(node, document)]
        for item_node, item in pairs:
            if not isinstance(item, dict):
                continue
            kind = _kind_of(item)
            metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
            name = metadata.get("name")
            if not kind or not isinstance(name, str) or not name:
                continue
            ns = "" if kind in ("Namespace", "Node") else str(metadata.get("namespace") or namespace)
            yield ConfigKey(kind, ns, name), item_node, item_node.start_mark.line + 1, item


def _resource(key: ConfigKey, document: dict[str, Any], source: str, node: Any, line: int) -> Resource | None:
    metadata = document.get("metadata") or {}
    spec: Any = document
    if key.kind in ISTIO_NETWORKING_KINDS or key.kind in ISTIO_SECURITY_KINDS:
        spec = _typed_spec(key.kind, document.get("spec"))
        if spec is None:
            return None  # not even its structure converts: only its IST0106 is reported
    return Resource(
        kind=key.kind,
        namespace=key.namespace,
        name=key.name,
        spec=spec,
        labels=_strings(metadata.get("labels")),
        annotations=_strings(metadata.get("annotations")),
        document=document,
        origin=Origin(key.kind, key.namespace, key.name, source, line),
        node=node,
    )


def _typed_spec(kind: str, spec: Any) -> Any:
    from pilot.api.istio.security import v1beta1 as security
    from pilot.config.convert import convert_message, convert_spec

    if kind == "PeerAuthentication":
        message, _ = convert_message(security.PeerAuthentication, {} if spec is None else spec, "spec")
    else:
        message, _ = convert_spec(kind, spec)
    return message


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _scalar(node: Any) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else ""


def _field_line(node: Any, message: str) -> int:
    """The line of the field a "path: problem" message names (``spec.http[0].route[1].weight``), if found."""
    path_text, sep, _ = message.partition(": ")
    if not sep or " " in path_text or node is None:
        return 0
    steps: list[str | int] = []
    for part in path_text.replace("]", "").split("."):
        name, *indexes = part.split("[")
        if name:
            steps.append(name)
        for index in indexes:
            steps.append(int(index) if index.isdigit() else index)
    current = node
    line = 0
    for step in steps:
        current = _child(current, step)
        if current is None:
            break
        line = current.start_mark.line + 1
    return line


def schema_warnings(context: Context) -> list[Message]:
    """schema.ValidationAnalyzer's warnings: what the webhook warns about (unreachable rules, ineffective
    matches, others), for every Istio object analyzed."""
    from pilot.config.validation import validate_spec_full

    out = []
    for resources in context.by_kind.values():
        for resource in resources:
            if isinstance(resource.spec, dict):
                continue
            _, warnings = validate_spec_full(resource.kind, resource.spec, resource.namespace)
            if resource.kind == "ServiceEntry" and _auto_allocated(resource):
                warnings = [w for w in warnings if not w.message.startswith(_ADDRESSES_REQUIRED)]
            out += [_message(resource, w, _field_line(resource.node, f"{w.path}: -")) for w in warnings]
    return out


_ADDRESSES_REQUIRED = "addresses are required for ports serving TCP"


def _auto_allocated(resource: Resource) -> bool:
    """Whether istiod (PILOT_ENABLE_IP_AUTOALLOCATE, on by default) allocates the ServiceEntry an address, so
    its validation does not warn about missing ones: resolution other than NONE, not opted out by label."""
    from pilot.config.convert import enum_name

    opted_out = resource.labels.get("networking.istio.io/enable-autoallocate-ip", "").lower() == "false"
    return enum_name(resource.spec.resolution) != "NONE" and not opted_out and not resource.spec.addresses


def _message(resource: Resource, warning: Any, line: int) -> Message:
    text = warning.message
    ineffective = re.fullmatch(
        r"virtualService rule (.+?) match (.+) is not used \(duplicate/overlapping match in rule (.+)\)", text
    )
    if ineffective:
        return Message(msg.VS_INEFFECTIVE_MATCH, resource.origin, ineffective.groups(), line)
    unreachable = re.fullmatch(r"virtualService rule (.+?) not used \((.*)\)", text)
    if unreachable:
        return Message(msg.VS_UNREACHABLE_RULE, resource.origin, unreachable.groups(), line)
    return Message(msg.SCHEMA_WARNING, resource.origin, (f"{warning.path}: {text}",), line)
