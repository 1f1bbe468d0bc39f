"""YAML text → accepted Config objects plus errors. Pure: the caller does the reading.

One call handles one file (``source``). Each YAML document (and each item of a ``kind: List`` document) is
one object:

- ``networking.istio.io/{v1,v1beta1,v1alpha3}`` kinds pilot knows, and ``security.istio.io/{v1,v1beta1}``
  PeerAuthentication, are converted and validated by :func:`pilot.config.validation.check`; the typed message
  becomes ``Config.spec``.
- Kubernetes ``v1`` Service, Pod, Namespace and ``discovery.k8s.io/v1`` EndpointSlice get a few structural
  checks and keep the whole parsed object as a plain dict in ``Config.spec``; a ``v1`` Secret is decoded into
  a ``pilot.model.secret.SecretData`` (its TLS keys' PEM checked; messages name keys, never values).
- Anything else is skipped and named in ``LoadResult.skipped_kinds`` (the caller warns once per kind).

An object that fails its checks is left out of ``configs`` and its key is listed in ``rejected`` so the store
can keep its last good version. Errors that cannot be tied to a key (YAML syntax errors, a missing
``metadata.name``) carry ``key=None``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from pilot.config import bounds, validation, yamlsafe
from pilot.model.config import (
    ISTIO_GROUP,
    ISTIO_NETWORKING_KINDS,
    ISTIO_SECURITY_KINDS,
    ISTIO_VERSIONS,
    KUBE_KINDS,
    SECRET,
    SECURITY_GROUP,
    SECURITY_VERSIONS,
    Config,
    ConfigKey,
    yaml_type_name,
)
from pilot.model.secret import parse_secret

log = logging.getLogger(__name__)

# Kinds that are not namespaced: their key has namespace "".
CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "Node"})
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


@dataclass(frozen=True)
class LoadError:
    source: str
    doc_index: int  # 0-based index of the YAML document in the file
    key: ConfigKey | None  # None when the error cannot be tied to an object (syntax error, no name)
    message: str  # "field.path: what is wrong"

    def __str__(self) -> str:
        where = f"{self.source}[doc {self.doc_index}]"
        if self.key is None:
            return f"{where}: {self.message}"
        if self.key.namespace:
            return f"{where} {self.key.kind} {self.key.namespace}/{self.key.name}: {self.message}"
        return f"{where} {self.key.kind} {self.key.name}: {self.message}"


@dataclass(frozen=True)
class LoadResult:
    configs: tuple[Config, ...] = ()
    rejected: tuple[ConfigKey, ...] = ()  # keys present in the text but invalid
    errors: tuple[LoadError, ...] = ()
    skipped_kinds: tuple[str, ...] = ()  # "apiVersion/kind" of documents pilot does not handle, first-seen order


def load_text(source: str, text: str, default_namespace: str = "default") -> LoadResult:
    """Parse one file's text. Never raises for bad input; problems become ``LoadError`` entries.

    Documents beyond pilot.config.bounds are refused one by one (named when their kind and name can be read);
    a syntax error, or a file beyond the bounds as a whole, yields only that error: nothing of the file applies.
    """
    loader = _FileLoader(source, default_namespace)
    try:
        for document in yamlsafe.load_documents(text):
            if document.problem is not None:
                loader.refuse(document.index, document.head, document.problem)
            else:
                loader.load_guarded(document.index, document.value)
    except yaml.YAMLError as exc:
        return LoadResult(errors=(LoadError(source, _doc_index_of(exc, text), None, _yaml_message(exc)),))
    except yamlsafe.FileLimitError as exc:
        return LoadResult(errors=(LoadError(source, 0, None, str(exc)),))
    return loader.result()


def load_object(source: str, doc: Any, default_namespace: str = "default") -> LoadResult:
    """Validate one already-parsed object (from an API server watch, an admission review) as a file's
    document would be: the same kinds, checks, errors, bounds and content hash."""
    loader = _FileLoader(source, default_namespace)
    too_deep = bounds.depth_problem(doc)
    if too_deep is not None:
        loader.refuse(0, doc if isinstance(doc, dict) else {}, too_deep)
    else:
        loader.load_guarded(0, doc)
    return loader.result()


class _FileLoader:
    def __init__(self, source: str, default_namespace: str) -> None:
        self.source = source
        self.default_namespace = default_namespace
        self.configs: dict[ConfigKey, Config] = {}
        self.rejected: dict[ConfigKey, None] = {}
        self.seen: set[ConfigKey] = set()
        self.errors: list[LoadError] = []
        self.skipped: dict[str, None] = {}
        self.loading: ConfigKey | None = None  # the object being validated, for load_guarded

    def result(self) -> LoadResult:
        return LoadResult(
            configs=tuple(self.configs.values()),
            rejected=tuple(self.rejected),
            errors=tuple(self.errors),
            skipped_kinds=tuple(self.skipped),
        )

    def error(self, index: int, key: ConfigKey | None, prefix: str, message: str) -> None:
        self.errors.append(LoadError(self.source, index, key, prefix + message))

    def load_guarded(self, index: int, doc: Any) -> None:
        """load_document, where a failure of pilot's own code costs the object being loaded only, never the
        file or the task reading it."""
        self.loading = None
        try:
            self.load_document(index, doc)
        except Exception as exc:
            log.exception("config: internal error loading %s[doc %d]", self.source, index)
            key = self.loading
            if key is not None and (key in self.configs or key in self.rejected):
                key = None
            self.error(index, key, "", f"internal error while loading: {type(exc).__name__}: {exc}"[:500])
            if key is not None:
                self._reject(key)

    def refuse(self, index: int, head: Mapping[str, Any], message: str) -> None:
        """Reject a document refused before validation (pilot.config.bounds, yamlsafe): as the object its
        ``head`` names (apiVersion, kind, metadata.name/namespace), so its last good version is kept, or
        with no key when it cannot be named."""
        metadata = head.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        api_version, kind = head.get("apiVersion"), head.get("kind")
        if not all(isinstance(v, str) and v for v in (api_version, kind, name)) or kind == "List":
            self.error(index, None, "", message)
            return
        namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
        stub_metadata = {"name": name} if not isinstance(namespace, str) else {"name": name, "namespace": namespace}
        self.load_object(index, "", {"apiVersion": api_version, "kind": kind, "metadata": stub_metadata}, message)

    def load_document(self, index: int, doc: Any) -> None:
        if doc is None:
            return  # empty document (e.g. a trailing '---')
        if not isinstance(doc, dict):
            self.error(index, None, "", f"document is a {yaml_type_name(doc)}, expected a mapping")
            return
        if doc.get("kind") == "List" and doc.get("apiVersion") == "v1":
            items = doc.get("items")
            if items is None:
                return
            if not isinstance(items, list):
                self.error(index, None, "", f"items: expected a list, got {yaml_type_name(items)}")
                return
            for i, item in enumerate(items):
                prefix = f"items[{i}]."
                if not isinstance(item, dict):
                    self.error(index, None, "", f"items[{i}]: expected a mapping, got {yaml_type_name(item)}")
                    continue
                self.load_object(index, prefix, item)
            return
        self.load_object(index, "", doc)

    def load_object(self, index: int, prefix: str, doc: dict[str, Any], refused: str | None = None) -> None:
        api_version = doc.get("apiVersion")
        kind = doc.get("kind")
        if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
            missing = "apiVersion" if not isinstance(api_version, str) or not api_version else "kind"
            self.error(index, None, prefix, f"{missing}: required string")
            return
        group, _, version = api_version.rpartition("/")
        is_istio = (group == ISTIO_GROUP and version in ISTIO_VERSIONS and kind in ISTIO_NETWORKING_KINDS) or (
            group == SECURITY_GROUP and version in SECURITY_VERSIONS and kind in ISTIO_SECURITY_KINDS
        )
        is_kube = (group, version, kind) in KUBE_KINDS
        if not is_istio and not is_kube:
            self.skipped[f"{api_version}/{kind}"] = None
            return

        metadata = doc.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            self.error(index, None, prefix, f"metadata: expected a mapping, got {yaml_type_name(metadata)}")
            return
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            self.error(index, None, prefix, f"metadata.name: required non-empty string ({kind})")
            return
        if kind in CLUSTER_SCOPED_KINDS:
            namespace = ""
        else:
            namespace = metadata.get("namespace")
            if namespace is None or namespace == "":
                namespace = self.default_namespace
            elif not isinstance(namespace, str):
                key = ConfigKey(kind, self.default_namespace, name)
                self.error(
                    index, key, prefix, f"metadata.namespace: expected a string, got {yaml_type_name(namespace)}"
                )
                self._reject(key)
                return
        key = ConfigKey(kind, namespace, name)
        if key in self.seen:
            self.error(index, key, prefix, "duplicate object: already defined earlier in this file; ignored")
            return
        self.seen.add(key)
        self.loading = key
        refusals = [refused] if refused is not None else bounds.expansion_problems(kind, doc)
        if refusals:
            for problem in refusals:
                self.error(index, key, prefix, problem)
            self._reject(key)
            return

        problems: list[str] = []
        warnings: list[str] = []
        labels = _string_map(metadata.get("labels"), "metadata.labels", problems)
        annotations = _string_map(metadata.get("annotations"), "metadata.annotations", problems)
        spec: Any = None
        if kind == SECRET and is_kube:
            # Decoded and never kept as text; annotations may hold kubectl's last-applied copy of the data.
            annotations = {}
            if not problems:
                spec = parse_secret(doc, problems)
        elif not problems:
            if is_istio:
                spec = self._istio_spec(kind, doc, namespace, problems, warnings)
            else:
                _KUBE_CHECKS[kind](doc, problems)
                spec = doc
        for warning in warnings:
            self.error(index, key, prefix, warning)
        if problems or spec is None:
            for problem in problems:
                self.error(index, key, prefix, problem)
            if not problems:
                self.error(index, key, prefix, "spec: invalid")
            self._reject(key)
            return
        self.configs[key] = Config(
            key=key,
            api_version=api_version,
            spec=spec,
            labels=labels,
            annotations=annotations,
            source=self.source,
            content_hash=(
                spec.fingerprint if kind == SECRET else content_hash(doc, labels, annotations, drop_status=is_istio)
            ),
        )

    def _reject(self, key: ConfigKey) -> None:
        self.seen.add(key)
        self.rejected[key] = None

    @staticmethod
    def _istio_spec(kind: str, doc: dict[str, Any], namespace: str, problems: list[str], warnings: list[str]) -> Any:
        spec = doc.get("spec")
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            problems.append(f"spec: expected a mapping, got {yaml_type_name(spec)}")
            return None
        typed, field_errors = validation.check(kind, spec, namespace)
        if typed is None:
            problems.extend(str(e) for e in field_errors)
            return None
        # check() returns findings with a message only if a future version reports warnings: keep the object.
        warnings.extend(str(e) for e in field_errors)
        return typed


# ----- Kubernetes structural checks: append "path: message" strings -----


def _check_service(doc: dict[str, Any], problems: list[str]) -> None:
    spec = doc.get("spec")
    if spec is None:
        return
    if not isinstance(spec, dict):
        problems.append(f"spec: expected a mapping, got {yaml_type_name(spec)}")
        return
    svc_type = spec.get("type")
    if svc_type is not None and not isinstance(svc_type, str):
        problems.append(f"spec.type: expected a string, got {yaml_type_name(svc_type)}")
    if svc_type == "ExternalName":
        external = spec.get("externalName")
        if not isinstance(external, str) or not external:
            problems.append("spec.externalName: required for type ExternalName")
    cluster_ip = spec.get("clusterIP")
    if cluster_ip is not None and not isinstance(cluster_ip, str):
        problems.append(f"spec.clusterIP: expected a string, got {yaml_type_name(cluster_ip)}")
    selector = spec.get("selector")
    if selector is not None:
        _string_map(selector, "spec.selector", problems)
    ports = spec.get("ports")
    if ports is None:
        return
    if not isinstance(ports, list):
        problems.append(f"spec.ports: expected a list, got {yaml_type_name(ports)}")
        return
    names: set[str] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        if not isinstance(port, dict):
            problems.append(f"{path}: expected a mapping, got {yaml_type_name(port)}")
            continue
        _check_port_number(port.get("port"), f"{path}.port", problems, required=True)
        name = port.get("name")
        if name is not None:
            if not isinstance(name, str):
                problems.append(f"{path}.name: expected a string, got {yaml_type_name(name)}")
            elif name in names:
                problems.append(f"{path}.name: duplicate port name {name!r}")
            else:
                names.add(name)
        elif len(ports) > 1:
            problems.append(f"{path}.name: required when the service has more than one port")
        target = port.get("targetPort")
        if target is not None:
            if isinstance(target, str):
                if not target:
                    problems.append(f"{path}.targetPort: must not be empty")
            else:
                _check_port_number(target, f"{path}.targetPort", problems, required=True)
        for field in ("protocol", "appProtocol"):
            value = port.get(field)
            if value is not None and not isinstance(value, str):
                problems.append(f"{path}.{field}: expected a string, got {yaml_type_name(value)}")


def _check_endpoint_slice(doc: dict[str, Any], problems: list[str]) -> None:
    labels = (doc.get("metadata") or {}).get("labels") or {}
    service_name = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, dict) else None
    if not isinstance(service_name, str) or not service_name:
        problems.append(f'metadata.labels["{SERVICE_NAME_LABEL}"]: required')
    address_type = doc.get("addressType")
    if address_type not in _ADDRESS_TYPES:
        problems.append(f"addressType: must be one of {', '.join(_ADDRESS_TYPES)}, got {address_type!r}")
    endpoints = doc.get("endpoints")
    if endpoints is not None:
        if not isinstance(endpoints, list):
            problems.append(f"endpoints: expected a list, got {yaml_type_name(endpoints)}")
        else:
            for i, ep in enumerate(endpoints):
                path = f"endpoints[{i}]"
                if not isinstance(ep, dict):
                    problems.append(f"{path}: expected a mapping, got {yaml_type_name(ep)}")
                    continue
                addresses = ep.get("addresses")
                if not isinstance(addresses, list) or not addresses:
                    problems.append(f"{path}.addresses: required non-empty list")
                else:
                    for j, addr in enumerate(addresses):
                        if not isinstance(addr, str) or not addr:
                            problems.append(f"{path}.addresses[{j}]: expected a non-empty string")
                conditions = ep.get("conditions")
                if conditions is not None:
                    if not isinstance(conditions, dict):
                        problems.append(f"{path}.conditions: expected a mapping, got {yaml_type_name(conditions)}")
                    else:
                        ready = conditions.get("ready")
                        if ready is not None and not isinstance(ready, bool):
                            problems.append(f"{path}.conditions.ready: expected a boolean, got {yaml_type_name(ready)}")
                target = ep.get("targetRef")
                if target is not None and not isinstance(target, dict):
                    problems.append(f"{path}.targetRef: expected a mapping, got {yaml_type_name(target)}")
    ports = doc.get("ports")
    if ports is not None:
        if not isinstance(ports, list):
            problems.append(f"ports: expected a list, got {yaml_type_name(ports)}")
        else:
            for i, port in enumerate(ports):
                path = f"ports[{i}]"
                if not isinstance(port, dict):
                    problems.append(f"{path}: expected a mapping, got {yaml_type_name(port)}")
                    continue
                _check_port_number(port.get("port"), f"{path}.port", problems, required=True)
                name = port.get("name")
                if name is not None and not isinstance(name, str):
                    problems.append(f"{path}.name: expected a string, got {yaml_type_name(name)}")


def _check_pod(doc: dict[str, Any], problems: list[str]) -> None:
    # metadata.labels is checked for every kind; a Pod without labels simply selects nothing.
    _check_pod_spec(doc, problems)
    status = doc.get("status")
    if status is not None and not isinstance(status, dict):
        problems.append(f"status: expected a mapping, got {yaml_type_name(status)}")


def _check_namespace(doc: dict[str, Any], problems: list[str]) -> None:
    return None


def _check_pod_spec(doc: dict[str, Any], problems: list[str]) -> None:
    spec = doc.get("spec")
    if spec is not None and not isinstance(spec, dict):
        problems.append(f"spec: expected a mapping, got {yaml_type_name(spec)}")
    elif spec is not None and not isinstance(spec.get("nodeName", ""), str):
        problems.append(f"spec.nodeName: expected a string, got {yaml_type_name(spec.get('nodeName'))}")


_KUBE_CHECKS = {
    "Service": _check_service,
    "EndpointSlice": _check_endpoint_slice,
    "Pod": _check_pod,
    "Namespace": _check_namespace,
    "Node": _check_namespace,  # only its (already checked) topology labels are read
}


def _check_port_number(value: Any, path: str, problems: list[str], *, required: bool) -> None:
    if value is None:
        if required:
            problems.append(f"{path}: required")
        return
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{path}: expected an integer, got {yaml_type_name(value)}")
    elif not 1 <= value <= 65535:
        problems.append(f"{path}: {value} out of range 1..65535")


def _string_map(value: Any, path: str, problems: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a mapping, got {yaml_type_name(value)}")
        return {}
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            problems.append(f"{path}: key {k!r} is not a string")
        elif not isinstance(v, str):
            problems.append(f"{path}.{k}: expected a string, got {yaml_type_name(v)} (quote it)")
        else:
            out[k] = v
    return out


# ----- helpers -----


def content_hash(
    doc: Mapping[str, Any], labels: Mapping[str, str], annotations: Mapping[str, str], *, drop_status: bool
) -> int:
    """A stable 64-bit hash of what matters in an object: everything but name/namespace bookkeeping."""
    body = {
        k: v
        for k, v in doc.items()
        if k not in ("apiVersion", "kind", "metadata") and not (drop_status and k == "status")
    }
    canonical = {
        "apiVersion": doc.get("apiVersion"),
        "kind": doc.get("kind"),
        "labels": dict(labels),
        "annotations": dict(annotations),
        "body": body,
    }
    try:
        data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=repr)
    except (TypeError, orjson.JSONEncodeError):
        data = repr(canonical).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _yaml_message(exc: yaml.YAMLError) -> str:
    """A one-line YAML error: 'yaml: line L column C: problem'."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}, {problem}" if context else problem
    text = " ".join(text.split())
    if mark is not None:
        return f"yaml: line {mark.line + 1} column {mark.column + 1}: {text}"
    return f"yaml: {text}"


def _doc_index_of(exc: yaml.YAMLError, text: str) -> int:
    """Which document a syntax error is in, counting document markers before the error line."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return 0
    index = 0
    in_document = False
    for line in text.splitlines()[: mark.line]:
        if line.startswith("---") and (len(line) == 3 or line[3] in " \t"):
            if in_document:
                index += 1
            in_document = True
        elif line.startswith("...") and (len(line) == 3 or line[3] in " \t"):
            if in_document:
                index += 1
            in_document = False
        elif line.strip() and not line.lstrip().startswith("#") and not (line.startswith("%") and not in_document):
            in_document = True
    return index
