"""How much one config file, one document and one object may cost: the bounds every source enforces.

Each bound turns an input that would cost the server unbounded memory or CPU (a YAML alias bomb, a deeply
nested document, an object whose routes multiply out to hundreds of thousands) into an ordinary error naming
the file, document, object and field, so the object is rejected and its last good version kept.

Why these numbers:

- ``MAX_FILE_BYTES`` (16 MiB): a file larger than this is not read. A whole 10,000-object mesh in one file
  is ~10 MiB; anything larger is almost certainly not hand-written config.
- ``MAX_DOCUMENT_BYTES`` (1.5 MiB): etcd's default request limit, so the largest object Kubernetes can
  store at all (counted in characters of the YAML text). A ``kind: List`` document may be larger; each of
  its items is held to this bound.
- ``MAX_OBJECTS_PER_FILE`` (50,000 documents plus ``kind: List`` items).
- ``MAX_DEPTH`` (100 levels of mappings/sequences): the deepest real manifests (CRD schemas) nest ~30 levels;
  pilot serializes objects with orjson, which stops at 255, and walks them in Python, whose recursion limit
  is 1,000.
- ``MAX_ALIAS_NODES`` (10,000 nodes reached through YAML aliases per document): anchors reused for a few
  repeated blocks stay far below; a "billion laughs" document (9^9 nodes from 600 bytes) is refused before
  it is constructed. Kubernetes' YAML decoder refuses excessive aliasing for the same reason.
- Expansion bounds per kind, counted before validation on the raw object, for what multiplies in generated
  config: ``MAX_ROUTES`` (5,000 routes of a VirtualService after match expansion: sum of max(1, len(match)) over
  http, tcp and tls; ~30 µs of generation each), ``MAX_HOST_ROUTES`` (100,000: hosts x routes, the entries
  of every virtual host), ``MAX_SERVER_HOSTS`` (10,000 Gateway server hosts), ``MAX_CLUSTERS`` (10,000
  ServiceEntry hosts x ports), ``MAX_LB_ENDPOINTS`` (100,000: ServiceEntry hosts x ports x endpoints and
  EndpointSlice endpoints x addresses x ports), ``MAX_SUBSETS`` (1,000 DestinationRule subsets), and
  Kubernetes' own EndpointSlice limits (1,000 endpoints, 100 addresses each).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DOCUMENT_BYTES = 1_572_864  # 1.5 MiB
MAX_OBJECTS_PER_FILE = 50_000
MAX_DEPTH = 100
MAX_ALIAS_NODES = 10_000

MAX_ROUTES = 5_000
MAX_HOST_ROUTES = 100_000
MAX_SERVER_HOSTS = 10_000
MAX_CLUSTERS = 10_000
MAX_LB_ENDPOINTS = 100_000
MAX_SUBSETS = 1_000
MAX_SLICE_ENDPOINTS = 1_000  # Kubernetes' EndpointSlice validation
MAX_SLICE_ADDRESSES = 100  # per endpoint, as Kubernetes


def size_text(n: int) -> str:
    """1572864 -> '1.5 MiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"


def depth_problem(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """Why an already-parsed object (e.g. JSON from an API server) nests too deeply, or None."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    visited = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return f"nested more than {max_depth} levels deep"
        visited += 1
        if visited > 10 * MAX_DOCUMENT_BYTES:  # only a shared or cyclic structure gets here
            return "too many nested values"
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return None


# ----- per-kind expansion -----


def _list(value: Any, *path: str) -> list[Any]:
    """``value[path[0]][path[1]]…`` if it is a list, else [] (validation reports wrong types)."""
    for key in path:
        if not isinstance(value, dict):
            return []
        value = value.get(key)
    return value if isinstance(value, list) else []


def _size(value: Any, *path: str) -> int:
    """Entries of a list or mapping at ``path``; 0 when absent or of another type."""
    for key in path:
        if not isinstance(value, dict):
            return 0
        value = value.get(key)
    return len(value) if isinstance(value, (list, dict)) else 0


def _over(count: int, limit: int, path: str, what: str) -> list[str]:
    return [f"{path}: {count} {what}, more than the limit of {limit}"] if count > limit else []


def _virtual_service(doc: Mapping[str, Any]) -> list[str]:
    spec = doc.get("spec")
    routes = sum(max(1, _size(entry, "match")) for field in ("http", "tcp", "tls") for entry in _list(spec, field))
    problems = _over(routes, MAX_ROUTES, "spec.http", "routes after match expansion (http, tcp and tls)")
    hosts = max(1, _size(spec, "hosts"))
    problems += _over(hosts * routes, MAX_HOST_ROUTES, "spec.hosts", f"hosts x {routes} routes")
    return problems


def _gateway(doc: Mapping[str, Any]) -> list[str]:
    hosts = sum(_size(server, "hosts") for server in _list(doc.get("spec"), "servers"))
    return _over(hosts, MAX_SERVER_HOSTS, "spec.servers", "server hosts")


def _service_entry(doc: Mapping[str, Any]) -> list[str]:
    spec = doc.get("spec")
    clusters = max(1, _size(spec, "hosts")) * max(1, _size(spec, "ports"))
    problems = _over(clusters, MAX_CLUSTERS, "spec.hosts", "hosts x ports")
    endpoints = clusters * _size(spec, "endpoints")
    problems += _over(endpoints, MAX_LB_ENDPOINTS, "spec.endpoints", "hosts x ports x endpoints")
    return problems


def _destination_rule(doc: Mapping[str, Any]) -> list[str]:
    return _over(_size(doc.get("spec"), "subsets"), MAX_SUBSETS, "spec.subsets", "subsets")


def _endpoint_slice(doc: Mapping[str, Any]) -> list[str]:
    endpoints = _list(doc, "endpoints")
    problems = _over(len(endpoints), MAX_SLICE_ENDPOINTS, "endpoints", "endpoints")
    addresses = 0
    for i, endpoint in enumerate(endpoints):
        count = _size(endpoint, "addresses")
        problems += _over(count, MAX_SLICE_ADDRESSES, f"endpoints[{i}].addresses", "addresses")
        addresses += count
        if len(problems) > 3:
            break
    total = addresses * max(1, _size(doc, "ports"))
    problems += _over(total, MAX_LB_ENDPOINTS, "ports", "addresses x ports")
    return problems


_EXPANSION: dict[str, Callable[[Mapping[str, Any]], list[str]]] = {
    "VirtualService": _virtual_service,
    "Gateway": _gateway,
    "ServiceEntry": _service_entry,
    "DestinationRule": _destination_rule,
    "EndpointSlice": _endpoint_slice,
}


def expansion_problems(kind: str, doc: Mapping[str, Any]) -> list[str]:
    """'field.path: what exceeds which bound' for an object whose generated config would multiply out."""
    check = _EXPANSION.get(kind)
    return check(doc) if check is not None else []
